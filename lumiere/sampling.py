"""Noise schedules and their solvers: the scheduler a model's config means, its initial noise, SDEdit's start.

The denoising loop and the model wrappers it runs are ``denoisers``; progress reporting is ``progress``.
"""
from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Mapping

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler)

from . import options
from .errors import InputError
from .request import in_range

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


class FlowMatchEuler(FlowMatchEulerDiscreteScheduler):
    """diffusers' ``FlowMatchEulerDiscreteScheduler`` (rectified flow: x_t = (1 - σ) x0 + σ ε, the model
    predicting the velocity ε - x0, σ shifted by the config's ``shift``), with the two members Lumiere's
    sampling code reads from every solver and diffusers' flow class lacks: ``init_noise_sigma`` 1 (x at
    σ = 1 is the noise itself) and ``scale_model_input`` the identity (the model takes x_t as it is)."""

    init_noise_sigma = 1.0

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample


# The diffusers class a scheduler config names in ``_class_name`` to make its model a rectified-flow model
# (``is_flow``); its ``__init__`` arguments are the keys such a config may hold.
FLOW_SCHEDULER_CLASS = FlowMatchEulerDiscreteScheduler
FLOW_CLASS_NAME = FLOW_SCHEDULER_CLASS.__name__


def is_flow(schedule) -> bool:
    """Whether ``schedule`` (a scheduler config, or a scheduler) is a rectified-flow model's: the config names
    ``FlowMatchEulerDiscreteScheduler`` in ``_class_name``. The one place that decides it (sampling, the
    denoisers' parametrisation and the training objective all ask here)."""
    if isinstance(schedule, FlowMatchEulerDiscreteScheduler):
        return True
    return isinstance(schedule, Mapping) and schedule.get("_class_name") == FLOW_CLASS_NAME


def flow_shift(sigma, shift: float):
    """σ shifted as diffusers' flow scheduler shifts its sigmas: s σ / (1 + (s - 1) σ) (SD3's timestep
    shift; s > 1 spends more of the draws / steps at high noise). Works on floats and tensors alike."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def flow_scheduler_config(config: dict) -> dict:
    """The diffusers config a flow model's scheduler ``config`` means: the keys
    ``FlowMatchEulerDiscreteScheduler`` reads (the DDPM keys a training config merges in, e.g.
    ``beta_schedule`` / ``prediction_type``, mean nothing to a flow model and are dropped).

    Raises:
        InputError: a DDPM-only schedule option (``snr_shift``: a flow model's is ``shift``;
            ``rescale_betas_zero_snr``: σ = 1 is already pure noise), ``shift`` not a number > 0, or a
            diffusers option Lumiere's flow sampling does not support (``use_dynamic_shifting`` needs a
            per-resolution mu; ``invert_sigmas`` is Mochi's reversed time).
    """
    if config.get("snr_shift") not in (None, 1, 1.0):
        raise InputError("a rectified-flow scheduler config takes `shift` (as diffusers' "
                         f"{FLOW_CLASS_NAME}), not snr_shift (got {config['snr_shift']!r})")
    if config.get("rescale_betas_zero_snr"):
        raise InputError("rescale_betas_zero_snr is a DDPM schedule option; a rectified-flow model's top "
                         "noise level (sigma = 1) is already pure noise")
    shift = config.get("shift", 1.0)
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not shift > 0:
        raise InputError(f"scheduler shift must be a number > 0 (1 = no shift), got {shift!r}")
    for key in ("use_dynamic_shifting", "invert_sigmas"):
        if config.get(key):
            raise InputError(f"{FLOW_CLASS_NAME} option {key} is not supported by Lumiere's flow sampling")
    keys = inspect.signature(FlowMatchEulerDiscreteScheduler.__init__).parameters
    return {key: value for key, value in config.items() if key in keys or key.startswith("_")}

@functools.lru_cache(maxsize=None)
def scheduler_keys() -> frozenset[str]:
    """The keys a "scheduler" section may hold: every ``__init__`` argument of the diffusers classes a
    sampler can run (``SCHEDULER_CLASSES`` and the flow class ``FLOW_SCHEDULER_CLASS``; what their
    ``from_config`` reads) and Lumiere's ``snr_shift``. diffusers' own "_" keys (``_class_name``,
    ``_diffusers_version``) are allowed too."""
    keys = {"snr_shift"}
    for cls in (*SCHEDULER_CLASSES.values(), FLOW_SCHEDULER_CLASS):
        keys.update(name for name, parameter in inspect.signature(cls.__init__).parameters.items()
                    if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD))
    return frozenset(keys)


# The SSR's conditioning-augmentation levels of a flow model: a DDPM schedule of its own (the levels are a
# class label of the SSR, not its denoising schedule), the cosine one of Lumiere's DDPM models.
FLOW_AUGMENTATION_SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                              "prediction_type": "v_prediction", "clip_sample": False}


def augmentation_scheduler(config: dict) -> DDPMScheduler:
    """The DDPM scheduler whose ``add_noise`` augments the SSR's low-res conditioning (``conditioning.
    ssr_condition``), in training and sampling alike: the model's own schedule, or for a flow model
    ``FLOW_AUGMENTATION_SCHEDULE``."""
    if is_flow(config):
        return DDPMScheduler.from_config(FLOW_AUGMENTATION_SCHEDULE)
    return DDPMScheduler.from_config(noise_schedule_config(config))


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

    A flow model's config (``is_flow``) is not a DDPM schedule: see ``flow_scheduler_config``.

    Raises:
        InputError: ``snr_shift`` not a number > 0; a flow config, or a DDPM one with the flow ``shift``.
    """
    if is_flow(config):
        raise InputError(f"{FLOW_CLASS_NAME} is a rectified-flow schedule, not a DDPM one "
                         "(sampling.flow_scheduler_config resolves it)")
    if "shift" in config:
        raise InputError("`shift` is the rectified-flow scheduler's option (FlowMatchEulerDiscreteScheduler); "
                         "a DDPM-family schedule is shifted with snr_shift")
    if config.get("use_flow_sigmas") or config.get("prediction_type") == "flow_prediction":
        raise InputError(f"a rectified-flow model names {FLOW_CLASS_NAME} in _class_name (with its shift); "
                         "use_flow_sigmas / prediction_type 'flow_prediction' on a DDPM-family solver are not supported")
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
    ``_class_name``; None when it names none; "euler" for a rectified-flow model (``is_flow``), whose only
    solver is its Euler flow solver.

    Raises:
        InputError: ``_class_name`` is not one of the supported classes (the message names it and them).
    """
    name = config.get("_class_name")
    if name is None:
        return None
    if is_flow(config):
        return "euler"  # a flow model's one solver: its Euler flow solver, under the sampler name "euler"
    sampler = next((key for key, cls in SCHEDULER_CLASSES.items() if cls.__name__ == name), None)
    if sampler is None:
        supported = ", ".join(f"{cls.__name__} ({key})" for key, cls in SCHEDULER_CLASSES.items())
        supported += f", {FLOW_CLASS_NAME} (rectified flow)"
        raise InputError(f"the scheduler config names an unsupported scheduler class {name!r}; supported: {supported}")
    return sampler


def make_scheduler(config: dict, sampler: str | None = None):
    """A fresh scheduler per request (schedulers keep per-run state, so they are never shared).

    ``config`` is the model's scheduler config (training noise schedule, prediction type; resolved by
    ``noise_schedule_config``); ``sampler`` (a key of ``SCHEDULER_CLASSES``) picks the solver class, None the
    class the config names in ``_class_name`` (``scheduler_sampler``; DDIM when it names none). Multistep
    DPM-Solver is run as DPM-Solver++ (the better few-step solver).

    A rectified-flow model (``is_flow``: ``_class_name`` "FlowMatchEulerDiscreteScheduler") is sampled by its
    Euler flow solver (``FlowMatchEuler``), for ``sampler`` None or "euler"; the DDPM-family solvers cannot
    run it, nor can the flow solver run a DDPM model (no sampler name picks it).

    Raises:
        InputError: an unknown ``sampler``, a ``_class_name`` that is not a supported class, another
            sampler than "euler" for a flow model, or a bad flow config (``flow_scheduler_config``).
    """
    if is_flow(config):
        if sampler not in (None, "euler"):
            raise InputError(f"this is a rectified-flow model ({FLOW_CLASS_NAME}): it samples with its Euler flow "
                             f"solver only (sampler 'euler'), not {sampler!r}")
        return FlowMatchEuler.from_config(flow_scheduler_config(config))
    name = sampler or scheduler_sampler(config) or "ddim"
    cls = SCHEDULER_CLASSES.get(name)
    if cls is None:
        raise InputError(f"unknown sampler {name!r}; choose one of {', '.join(options.SAMPLERS)}")
    extra = {"algorithm_type": "dpmsolver++"} if cls is DPMSolverMultistepScheduler else {}
    return cls.from_config(noise_schedule_config(config), **extra)


def sdedit_steps(num_inference_steps: int, strength: float) -> int:
    """How many of ``num_inference_steps`` SDEdit runs at ``strength`` (the step plan counts these)."""
    in_range(strength, *options.STRENGTH_RANGE, "strength")
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
    if is_flow(scheduler):  # diffusers' flow scheduler noises with scale_noise (at its begin index's sigma)
        return scheduler.scale_noise(source, start.reshape(1), noise), timesteps
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


def shared_window_noise(shape, generator: torch.Generator | None, device, dtype, window: int, stride: int,
                        prior: options.NoisePrior | None = None) -> torch.Tensor:
    """A long clip's initial noise, shared by its windows (noise rescheduling, FreeNoise: Qiu et al., 2023).

    The first ``window`` frames (the model's clip) are drawn as :func:`initial_noise` draws a clip (with
    ``prior``); every later block of ``stride`` frames is the block ``window`` frames before it, its frames
    in a random order (a permutation drawn from ``generator``). So each window of ``window`` frames that
    starts at a multiple of ``stride`` holds exactly the first window's noise frames, locally reordered:
    every window starts from the same noise, the windows agree on the object and its place, and the
    local shuffles keep the clip from repeating itself. Deterministic per generator, drawn on the CPU (on
    ``device`` without a generator), as all noise; a clip no longer than ``window`` gets
    :func:`initial_noise`'s noise unchanged.
    """
    frames = shape[2]
    if frames <= window:
        return initial_noise(shape, generator, device, dtype, prior)
    if not 1 <= stride <= window:
        raise InputError(f"stride must be in [1, window] = [1, {window}], got {stride}")
    draw_on = "cpu" if generator is not None else device
    noise = initial_noise((*shape[:2], window, *shape[3:]), generator, draw_on, torch.float32, prior)
    frame_of = torch.arange(window, device=draw_on)  # which of the first window's noise frames each frame holds
    for start in range(window, frames, stride):
        size = min(stride, frames - start)
        order = torch.randperm(size, generator=generator, device=draw_on) + (start - window)
        frame_of = torch.cat([frame_of, frame_of[order]])
    return noise.index_select(2, frame_of).to(device=device, dtype=dtype)
