"""Denoising loops on top of diffusers schedulers: classifier-free guidance, progress, cancellation."""
from __future__ import annotations

import inspect
import math
import secrets
from typing import Callable

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       UniPCMultistepScheduler)

from . import options
from .components import flush_denormals
from .errors import InputError

# The diffusers solver behind each name of ``options.SAMPLERS`` (tests check the two agree). These classes
# are also the ones a pipeline's scheduler/scheduler_config.json may name in ``_class_name``
# (``scheduler_sampler``); any other class is refused when the pipeline opens.
SCHEDULER_CLASSES = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}

Callback = Callable[..., None]  # callback(step, total), or callback(step, total, x0) (``Progress``)


def noise_schedule_config(config: dict) -> dict:
    """The diffusers scheduler config a model's ``config`` means: Lumiere's ``snr_shift`` resolved into
    ``trained_betas`` (every diffusers scheduler takes them), all other keys as they are.

    ``snr_shift`` s multiplies the SNR of every noise level by 1 / s² (log-SNR - 2 ln s: "simple
    diffusion", Hoogeboom et al., 2023; the timestep shift of SD3 and video models). Why: a 16-frame
    clip carries so much redundant evidence that the noisy clip itself reveals its layout and motion up
    to very high noise; s > 1 moves the schedule where the video is still undecided. The shift applies
    to the base schedule (``beta_schedule`` / ``trained_betas``) before diffusers' own
    ``rescale_betas_zero_snr``, so the two combine. The training objective and every sampler resolve the
    config through this one function, so they cannot disagree; a config without ``snr_shift`` (every
    pipeline saved before it existed) is returned unchanged.

    Raises:
        InputError: ``snr_shift`` not a number > 0.
    """
    resolved = {key: value for key, value in config.items() if key != "snr_shift"}
    shift = config.get("snr_shift")
    if shift is None:
        return resolved
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not shift > 0:
        raise InputError(f"scheduler snr_shift must be a number > 0 (1 = no shift), got {shift!r}")
    if float(shift) == 1.0:
        return resolved
    base = DDPMScheduler.from_config({**resolved, "rescale_betas_zero_snr": False})
    alphas = base.alphas_cumprod.double()
    log_snr = torch.log(alphas) - torch.log1p(-alphas) - 2 * math.log(float(shift))
    shifted = torch.sigmoid(log_snr)
    previous = torch.cat([torch.ones(1, dtype=shifted.dtype), shifted[:-1]])
    resolved["trained_betas"] = (1 - shifted / previous).tolist()
    return resolved


def scheduler_sampler(config: dict) -> str | None:
    """The sampler name (a key of ``SCHEDULER_CLASSES``) of the diffusers class a scheduler config names in
    ``_class_name``; None when it names none.

    Raises:
        InputError: ``_class_name`` is not one of the supported classes (the message names it and them).
    """
    name = config.get("_class_name")
    if name is None:
        return None
    sampler = next((key for key, cls in SCHEDULER_CLASSES.items() if cls.__name__ == name), None)
    if sampler is None:
        supported = ", ".join(f"{cls.__name__} ({key})" for key, cls in SCHEDULER_CLASSES.items())
        raise InputError(f"the scheduler config names an unsupported scheduler class {name!r}; supported: {supported}")
    return sampler


def make_scheduler(config: dict, sampler: str | None = None):
    """A fresh scheduler per request (schedulers keep per-run state, so they are never shared).

    ``config`` is the model's scheduler config (training noise schedule, prediction type; resolved by
    ``noise_schedule_config``); ``sampler`` (a key of ``SCHEDULER_CLASSES``) picks the solver class, None the
    class the config names in ``_class_name`` (``scheduler_sampler``; DDIM when it names none). Multistep
    DPM-Solver is run as DPM-Solver++ (the better few-step solver).

    Raises:
        InputError: an unknown ``sampler``, or a ``_class_name`` that is not a supported class.
    """
    name = sampler or scheduler_sampler(config) or "ddim"
    cls = SCHEDULER_CLASSES.get(name)
    if cls is None:
        raise InputError(f"unknown sampler {name!r}; choose one of {', '.join(options.SAMPLERS)}")
    extra = {"algorithm_type": "dpmsolver++"} if cls is DPMSolverMultistepScheduler else {}
    return cls.from_config(noise_schedule_config(config), **extra)


def random_seed() -> int:
    """A fresh seed for a request that gave none (from the OS, so the global RNGs are never touched)."""
    return secrets.randbelow(2**31)


class Progress:
    """Counts denoising steps across every stage of one call and forwards them to a user callback.

    The total is fixed up front from the call's step plan (e.g. base + SSR steps), so a UI can show
    one bar for the whole request. An exception raised by the callback propagates and cancels the
    generation.

    A callback with a third positional parameter, ``callback(step, total, x0)``, also gets the step's
    clean-sample estimate (for a live preview): the (1, C, ...) tensor the sampler currently predicts the
    finished sample to be, in the space that stage denoises (pixels in [-1, 1], or latents before the
    VAE: ``LumierePipeline.decode_frames``), read-only, computed only for such callbacks; None when the
    step has none. Every other callback is called as ``callback(step, total)``, as always.
    """

    def __init__(self, total: int, callback: Callback | None = None, bar: bool | dict = False,
                 description: str = "denoising"):
        """``bar``: True shows a tqdm bar, a dict one with those tqdm options over the defaults
        (``LumierePipeline.set_progress_bar_config``; ``{"disable": True}`` shows none)."""
        self.total = int(total)
        self.done = 0
        self.callback = callback
        self.wants_estimate = callback is not None and _takes_third_argument(callback)
        self._bar = None
        if bar is True or isinstance(bar, dict):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, **{"desc": description, "leave": False, **(bar if bar is not True else {})})

    def step(self, x0: torch.Tensor | None = None) -> None:
        """One denoising step done; ``x0``: its clean-sample estimate (passed on only if the callback wants it)."""
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        if self.callback is not None:
            if self.wants_estimate:
                self.callback(self.done, self.total, x0)
            else:
                self.callback(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _takes_third_argument(callback) -> bool:
    """Whether ``callback`` names a third positional parameter (``*args`` alone does not count: such a
    callback may forward to a two-argument one)."""
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3


def x0_estimate(scheduler, model_input: torch.Tensor, t, output: torch.Tensor) -> torch.Tensor:
    """The clean sample a model ``output`` (the scheduler's ``prediction_type``: v, epsilon or x0) implies for
    ``model_input`` at timestep ``t``, in float32. ``model_input`` is ``scheduler.scale_model_input(x, t)``:
    the variance-preserving x_t for every solver (Euler's scaled sample included)."""
    kind = scheduler.config.prediction_type
    acp = scheduler.alphas_cumprod[int(round(float(t)))].to(torch.float32)
    a, s = acp.sqrt().item(), (1 - acp).sqrt().item()
    xf, of = model_input.float(), output.float()
    if kind == "v_prediction":
        return a * xf - s * of
    if kind == "epsilon":
        return (xf - s * of) / a
    if kind == "sample":
        return of
    raise ValueError(f"unsupported prediction_type {kind!r}")


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
    return isinstance(scheduler, DDPMScheduler) and scheduler.config.get("variance_type") in ("learned", "learned_range")


def guided(predict: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], text: torch.Tensor,
           uncond: torch.Tensor | None, guidance_scale: float):
    """Wrap ``predict(x, t, text_states)`` with classifier-free guidance.

    Conditional and unconditional passes are batched into one forward (one weight read instead of two).
    A learned-variance output (``split_variance``) is guided on its mean channels only and keeps the
    conditional pass's variance, as diffusers' IF pipelines do.
    """

    def prediction(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if uncond is None or guidance_scale == 1.0:
            return predict(x, t, text)
        both = predict(torch.cat([x, x]), t, torch.cat([text, uncond]))
        cond, unc = both.chunk(2)
        cond, variance = split_variance(cond, x.shape[1])
        unc, _ = split_variance(unc, x.shape[1])
        guided_mean = unc + guidance_scale * (cond - unc)
        return guided_mean if variance is None else torch.cat([guided_mean, variance], dim=1)

    return prediction


def denoise(prediction: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, scheduler,
            timesteps, generator: torch.Generator | None, progress: Progress | None = None) -> torch.Tensor:
    """Run the scheduler over ``timesteps`` starting from ``x`` (already at the first timestep's noise).

    On the CPU denormals are flushed for the duration of the loop (``components.flush_denormals``).
    A learned-variance prediction (2C channels) reaches the scheduler whole only if it uses the
    variance (``uses_learned_variance``); every other solver gets the first C channels.
    """
    # DDPM/DDIM(eta>0)/Euler draw noise in step(); DPM-Solver++ (deterministic) takes no generator.
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    keep_variance = uses_learned_variance(scheduler)
    with flush_denormals(x.device.type == "cpu"):
        for t in timesteps:
            model_input = scheduler.scale_model_input(x, t)
            output = prediction(model_input, t)
            if not keep_variance:
                output, _ = split_variance(output, x.shape[1])
            x0 = None
            if progress is not None and progress.wants_estimate:  # a live preview: only when asked for
                x0 = x0_estimate(scheduler, model_input, t, split_variance(output, x.shape[1])[0])
            x = scheduler.step(output, t, x, return_dict=False, **step_kwargs)[0]
            if progress is not None:
                progress.step(x0)
    return x


def constrain_x0(prediction: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scheduler,
                 constrain: Callable[[torch.Tensor], torch.Tensor]):
    """Wrap a model prediction so that the clean-sample estimate it implies is ``constrain(x0)``.

    Why: constraints that are known in pixel space (user pixels, a low-res input the output must
    down-sample to) apply to x0, but schedulers consume the model's parametrisation (v, epsilon or
    x0). The estimate is converted to x0, constrained, and converted back with the same x_t, so any
    solver sees a model that predicts the constrained x0 (RePaint / DDNM-style guidance). A learned
    variance (``split_variance``) passes through unchanged.
    """
    kind = scheduler.config.prediction_type
    alphas_cumprod = scheduler.alphas_cumprod

    def prediction_constrained(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out, variance = split_variance(prediction(x, t), x.shape[1])
        acp = alphas_cumprod[int(round(float(t)))].to(torch.float32)
        a, s = acp.sqrt().item(), (1 - acp).sqrt().item()
        xf = x.float()
        x0 = constrain(x0_estimate(scheduler, x, t, out))
        if kind == "v_prediction":
            out = (a * xf - x0) / s
        elif kind == "epsilon":
            out = (xf - a * x0) / s
        else:
            out = x0
        out = out.to(x.dtype)
        return out if variance is None else torch.cat([out, variance.to(x.dtype)], dim=1)

    return prediction_constrained


def sdedit_steps(num_inference_steps: int, strength: float) -> int:
    """How many of ``num_inference_steps`` SDEdit runs at ``strength`` (the step plan counts these)."""
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"strength must be in [0, 1], got {strength}")
    return min(int(round(num_inference_steps * strength)), num_inference_steps)


def sdedit_timesteps(scheduler, num_inference_steps: int, strength: float):
    """Timesteps for SDEdit: skip the first (1 - strength) of the schedule (Meng et al., 2022).

    Returns (timesteps, start_timestep); an empty schedule means "return the input unchanged".
    """
    steps_to_run = sdedit_steps(num_inference_steps, strength)
    scheduler.set_timesteps(num_inference_steps)
    start = num_inference_steps - steps_to_run
    timesteps = scheduler.timesteps[start * scheduler.order:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start * scheduler.order)
    return timesteps, (timesteps[0] if len(timesteps) else None)


def sdedit_start(scheduler, num_inference_steps: int, strength: float, source: torch.Tensor, noise: torch.Tensor):
    """SDEdit's starting point: ``source`` noised to the first timestep that runs, and the timesteps to run.

    Returns (x, timesteps); x is None when no step runs (strength 0: the input is the result).
    Shared by video-to-video and the SSR's start from the up-sampled input.
    """
    timesteps, start = sdedit_timesteps(scheduler, num_inference_steps, strength)
    if start is None:
        return None, timesteps
    return scheduler.add_noise(source, noise, start.reshape(1)), timesteps


def initial_noise(shape, generator: torch.Generator | None, device, dtype, prior: options.NoisePrior | None = None,
                  circular: bool = False) -> torch.Tensor:
    """Gaussian noise, drawn on the CPU from the request's generator (same seed -> same video on any device).

    ``prior`` correlates a video's (B, C, F, H, W) noise across frames (``options.NoisePrior``); the
    training objective draws its noise through this function too, so a model is sampled with the prior
    it was trained with. Without a generator (training) the noise is drawn on ``device`` directly.
    ``circular`` (a seamless loop): the "progressive" prior becomes a circular AR(1) process, each frame
    ``sum_k rho^k e[t-k mod F]`` normalised to unit variance (rho = alpha / sqrt(1 + alpha^2), the chain's
    neighbour correlation; a short loop's neighbours are a little more correlated), so every two frames are correlated by their distance around the loop alone:
    frames F-1 and 0 as much as any neighbours. Independent and "mixed" noise are already circular.
    """
    draw_on = "cpu" if generator is not None else device

    def draw(size):
        return torch.randn(size, generator=generator, dtype=torch.float32, device=draw_on)

    noise = draw(shape)
    if prior is not None and prior.kind != "independent" and len(shape) == 5:
        keep = 1.0 / math.sqrt(1.0 + prior.alpha**2)  # own-draw weight; alpha * keep for the correlated part
        if prior.kind == "mixed":
            noise = keep * (prior.alpha * draw((*shape[:2], 1, *shape[3:])) + noise)
        elif circular:  # progressive around a loop: circular AR(1) (see above)
            rho = prior.alpha * keep
            weights = rho ** torch.arange(shape[2], dtype=torch.float64)
            noise = sum(float(w) * torch.roll(noise, k, dims=2) for k, w in enumerate(weights))
            noise = noise / float(weights.square().sum().sqrt())
        else:  # progressive: an AR(1) chain along the frames, stationary at unit variance
            frames = [noise[:, :, 0]]
            for f in range(1, shape[2]):
                frames.append(keep * (prior.alpha * frames[-1] + noise[:, :, f]))
            noise = torch.stack(frames, dim=2)
    return noise.to(device=device, dtype=dtype)
