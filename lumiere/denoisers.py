"""The denoiser layer: ``prediction = denoiser(x, t)``, the wrappers it is composed of, and the sampling loop.

A *model function* is ``fn(x, t, states, window)``: a network's raw output for the frames ``window`` =
(start, end) of the clip (its conditioning channels cut to the same frames). :func:`windowed` runs one
over overlapping temporal windows and averages them (MultiDiffusion). A *denoiser* wraps a model function
with classifier-free guidance and the scheduler's parametrisation (:class:`Guided`) and returns a
:class:`Prediction`: the output in the parametrisation the diffusers solver steps with (v, epsilon or x0),
and, derived from it on demand, the clean-sample estimate x0 — k-diffusion's denoiser view. Constraints
known in pixel space (the user's pixels, a low-res input the output must down-sample to) wrap a denoiser
as :class:`Constrained`: they act on x0, and the solver gets the output that implies the constrained x0.
:func:`sample` runs a solver over a denoiser and reports every step's x0 to the progress counter.

Why this split: the parametrisation is converted in one place (:class:`Parametrisation`), so guidance,
windows and constraints compose in any order without re-deriving v / epsilon / x0, and the output the
solver sees is bit-identical to calling the network directly when nothing constrains it.
"""
from __future__ import annotations

import inspect
from typing import Callable, Protocol

import torch

from .components import flush_denormals
from .multidiffusion import take_window, windowed_prediction
from .progress import Progress
from .sampling import is_flow

Window = tuple[int, int]
ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Window], torch.Tensor]
ClipFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, t, states) over the whole clip


def split_variance(output: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mean, variance) of a model output for a sample of ``channels`` channels.

    U-Nets with a learned variance (DeepFloyd IF: out_channels = 2 x in_channels) output the model's
    usual prediction (epsilon / v / x0) in the first C channels and the variance interpolation in the
    other C; any other output is all mean (variance None).
    """
    if output.shape[1] == 2 * channels:
        return output[:, :channels], output[:, channels:]
    return output, None


def uses_learned_variance(scheduler) -> bool:
    """Whether ``scheduler.step`` reads a learned variance from 2C-channel outputs: DDPM with
    ``variance_type`` "learned" / "learned_range" (IF's own setting). The other solvers (DDIM, Euler,
    DPM-Solver++) take only the C-channel prediction."""
    from diffusers import DDPMScheduler

    return isinstance(scheduler, DDPMScheduler) and scheduler.config.get("variance_type") in ("learned", "learned_range")


class Parametrisation:
    """What a model output means at timestep t: the scheduler's ``prediction_type`` (v, epsilon or x0) on
    its variance-preserving schedule, x_t = a x0 + s eps with a² + s² = 1 (a² = ``alphas_cumprod[t]``);
    or, for a rectified-flow model (``sampling.is_flow``; kind "flow"), the velocity v = eps - x0 on
    x_t = (1 - σ) x0 + σ eps, so x0 = x_t - σ v, σ the flow scheduler's sigma at t.

    ``x`` is always ``scheduler.scale_model_input(x_t, t)``: the variance-preserving x_t for every solver
    (Euler's scaled sample included); the flow solver's x_t itself (its ``scale_model_input`` is the identity).
    """

    def __init__(self, scheduler):
        if is_flow(scheduler):
            self.kind, self.scheduler = "flow", scheduler
            return
        self.kind = scheduler.config.prediction_type
        if self.kind not in ("v_prediction", "epsilon", "sample"):
            raise ValueError(f"unsupported prediction_type {self.kind!r}")
        self.alphas_cumprod = scheduler.alphas_cumprod

    def coefficients(self, t) -> tuple[float, float]:
        """(a, s) at timestep ``t``."""
        acp = self.alphas_cumprod[int(round(float(t)))].to(torch.float32)
        return acp.sqrt().item(), (1 - acp).sqrt().item()

    def sigma(self, t) -> float:
        """A flow model's σ at timestep ``t``: the flow scheduler's ``sigmas`` entry for the ``timesteps``
        entry t is (the σ its solver steps from), else t / ``num_train_timesteps`` (diffusers' flow
        timesteps are σ x T: what the model was trained on at a t off the solver's schedule)."""
        timesteps = self.scheduler.timesteps
        t = float(t)
        index = int(torch.argmin((timesteps.float() - t).abs()))
        if abs(float(timesteps[index]) - t) <= 1e-3:
            return float(self.scheduler.sigmas[index])
        return t / self.scheduler.config.num_train_timesteps

    def to_x0(self, x: torch.Tensor, t, output: torch.Tensor) -> torch.Tensor:
        """The clean sample ``output`` implies for ``x`` at ``t``, in float32."""
        if self.kind == "flow":
            return x.float() - self.sigma(t) * output.float()
        a, s = self.coefficients(t)
        xf, of = x.float(), output.float()
        if self.kind == "v_prediction":
            return a * xf - s * of
        if self.kind == "epsilon":
            return (xf - s * of) / a
        return of

    def from_x0(self, x: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
        """The output that implies ``x0`` for ``x`` at ``t`` (the inverse of :meth:`to_x0`), in ``x``'s dtype."""
        if self.kind == "flow":  # σ > 0 at every step a flow solver runs (its final σ = 0 is never a timestep)
            return ((x.float() - x0) / self.sigma(t)).to(x.dtype)
        a, s = self.coefficients(t)
        xf = x.float()
        if self.kind == "v_prediction":
            out = (a * xf - x0) / s
        elif self.kind == "epsilon":
            out = (xf - a * x0) / s
        else:
            out = x0
        return out.to(x.dtype)


class Prediction:
    """A denoiser's answer at (x, t): ``output`` in the parametrisation, a learned ``variance`` (or None),
    and :attr:`x0`, the clean-sample estimate it implies (computed on first use)."""

    def __init__(self, output: torch.Tensor, x: torch.Tensor, t, parametrisation: Parametrisation,
                 variance: torch.Tensor | None = None, x0: torch.Tensor | None = None):
        self.output, self.variance = output, variance
        self.x, self.t, self.parametrisation = x, t, parametrisation
        self._x0 = x0

    @property
    def x0(self) -> torch.Tensor:
        if self._x0 is None:
            self._x0 = self.parametrisation.to_x0(self.x, self.t, self.output)
        return self._x0

    def with_x0(self, x0: torch.Tensor) -> "Prediction":
        """The prediction whose clean-sample estimate is ``x0`` (same x, t and learned variance)."""
        output = self.parametrisation.from_x0(self.x, self.t, x0)
        variance = None if self.variance is None else self.variance.to(self.x.dtype)
        return Prediction(output, self.x, self.t, self.parametrisation, variance, x0=x0)

    def solver_input(self, keep_variance: bool) -> torch.Tensor:
        """What ``scheduler.step`` takes: the output, with the learned variance appended if it reads one."""
        if keep_variance and self.variance is not None:
            return torch.cat([self.output, self.variance], dim=1)
        return self.output


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> Prediction: ...


class Guided:
    """A model function with classifier-free guidance, as a denoiser.

    Conditional and unconditional passes are batched into one forward (one weight read instead of two);
    ``uncond`` None or ``scale`` 1 runs the conditional pass alone. A learned-variance output
    (:func:`split_variance`) is guided on its mean channels only and keeps the conditional pass's
    variance, as diffusers' IF pipelines do.
    """

    def __init__(self, model: ClipFn,
                 text: torch.Tensor, uncond: torch.Tensor | None, scale: float, parametrisation: Parametrisation):
        self.model, self.text, self.uncond, self.scale = model, text, uncond, scale
        self.parametrisation = parametrisation

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> Prediction:
        channels = x.shape[1]
        if self.uncond is None or self.scale == 1.0:
            output, variance = split_variance(self.model(x, t, self.text), channels)
        else:
            both = self.model(torch.cat([x, x]), t, torch.cat([self.text, self.uncond]))
            cond, unc = both.chunk(2)
            cond, variance = split_variance(cond, channels)
            unc, _ = split_variance(unc, channels)
            output = unc + self.scale * (cond - unc)
        return Prediction(output, x, t, self.parametrisation, variance)


class Constrained:
    """A denoiser whose clean-sample estimate is ``constrain(x0)``.

    Why: constraints known in pixel space (user pixels, a low-res input the output must down-sample to)
    apply to x0, but solvers consume the model's parametrisation; converting back with the same x_t
    gives any solver a model that predicts the constrained x0 (RePaint / DDNM-style guidance).
    """

    def __init__(self, denoiser: Denoiser, constrain: Callable[[torch.Tensor], torch.Tensor]):
        self.denoiser, self.constrain = denoiser, constrain

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> Prediction:
        prediction = self.denoiser(x, t)
        return prediction.with_x0(self.constrain(prediction.x0))


def windowed(model: ModelFn, windows: list[Window]) -> ClipFn:
    """``model`` over the clip's temporal ``windows``, its overlapping outputs averaged per frame (temporal
    MultiDiffusion, ``multidiffusion.windowed_prediction``: one window at a time, so memory is bounded by
    the window); one window covering the clip is one plain call.
    """
    def predict(x: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        if len(windows) == 1 and windows[0] == (0, x.shape[2]):
            return model(x, t, states, windows[0])
        return windowed_prediction(lambda part, start, end: model(part, t, states, (start, end)), x, windows)

    return predict


def by_noise_level(high: ClipFn, low: ClipFn, boundary: float) -> ClipFn:
    """``high`` at the timesteps above ``boundary`` (the noisiest steps: every solver here runs its
    timesteps from high to low), ``low`` at and below it. Why: a sampler can differ between the steps
    that decide the layout and the motion and the steps that only refine them (e.g. a long clip laid
    out in windows of the trained length, then refined in one pass)."""
    def predict(x: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return (high if float(torch.as_tensor(t).flatten()[0]) > boundary else low)(x, t, states)

    return predict


def with_channels(network: Callable[..., torch.Tensor], extra: torch.Tensor | None,
                  class_labels: torch.Tensor | None = None) -> ModelFn:
    """A model function for ``network(x, t, states)`` whose input is x with the conditioning channels
    ``extra`` (1, C', T, H, W) of the same frames appended (None: x alone); ``class_labels`` (1,) is passed
    to the network for every batch row (the SSR's noise-augmentation level)."""
    def model(x: torch.Tensor, t: torch.Tensor, states: torch.Tensor, window: Window) -> torch.Tensor:
        batch = x.shape[0]
        if extra is not None:
            x = torch.cat([x, take_window(extra, *window).expand(batch, -1, -1, -1, -1)], dim=1)
        if class_labels is None:
            return network(x, t, states)
        return network(x, t, states, class_labels=class_labels.expand(batch))

    return model


def sample(denoiser: Denoiser, x: torch.Tensor, scheduler, timesteps, generator: torch.Generator | None,
           progress: Progress | None = None) -> torch.Tensor:
    """Run the scheduler over ``timesteps`` starting from ``x`` (already at the first timestep's noise).

    On the CPU denormals are flushed for the duration of the loop (``components.flush_denormals``). A
    learned variance reaches the solver only if it reads one (:func:`uses_learned_variance`). The progress
    counter gets each step's x0 when its callback asks for it (a live preview).
    """
    # DDPM/DDIM(eta>0)/Euler draw noise in step(); DPM-Solver++ (deterministic) takes no generator.
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    keep_variance = uses_learned_variance(scheduler)
    with flush_denormals(x.device.type == "cpu"):
        for t in timesteps:
            prediction = denoiser(scheduler.scale_model_input(x, t), t)
            x0 = prediction.x0 if progress is not None and progress.wants_estimate else None
            x = scheduler.step(prediction.solver_input(keep_variance), t, x, return_dict=False, **step_kwargs)[0]
            if progress is not None:
                progress.step(x0)
    return x
