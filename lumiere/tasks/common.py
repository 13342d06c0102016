"""The steps the task programs share: text states, base-model sampling (whole clip or windows), the
conditional model with the user's known content, and the finish (decode, SSR, uint8).

``pipe`` is the ``LumierePipeline`` (its components, config and codec); ``settings`` the call's resolved
``request.GenerationSettings``.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch

from ..components import module_device
from ..denoisers import Constrained, Guided, Parametrisation, by_noise_level, sample, windowed, with_channels
from ..errors import InputError
from ..models.vae import latent_condition
from .. import options
from ..multidiffusion import temporal_windows
from ..options import DEFAULT_SSR_OVERLAP
from ..preprocessing import tensor_to_uint8
from ..progress import Progress
from ..request import GenerationSettings
from ..sampling import initial_noise, make_scheduler, sdedit_start, shared_window_noise
from ..styles import styled
from ..super_resolution import sample_ssr

Condition = tuple[torch.Tensor, torch.Tensor]  # (C, M): known content and where it is known (1 = keep)


def base_windows(num_frames: int, base_frames: int, circular: bool = False) -> list[tuple[int, int]]:
    """The [start, end) frame windows the base model samples ``num_frames`` in: one window up to
    ``ONE_PASS_FRAMES_FACTOR`` x its clip length ``base_frames``, beyond that windows of that length
    starting ``BASE_WINDOW_STRIDE_CLIPS`` x the clip apart (temporal MultiDiffusion, as the SSR's windows);
    ``circular`` (a loop): the windows go around the clip (:func:`temporal_windows`)."""
    window = options.ONE_PASS_FRAMES_FACTOR * int(base_frames)
    return temporal_windows(int(num_frames), window, window - options.base_window_stride(base_frames), circular)


def layout_windows(num_frames: int, base_frames: int) -> list[tuple[int, int]]:
    """The windows of a long text-to-video clip's layout steps: the model's clip ``base_frames`` long, one
    shared-noise block (``options.shared_noise_stride``) apart, so each starts from the first window's
    noise (``sampling.shared_window_noise``)."""
    clip = int(base_frames)
    return temporal_windows(int(num_frames), clip, clip - options.shared_noise_stride(clip))


def require(pipe, name: str) -> None:
    """Raises InputError when the pipeline has no component ``name``."""
    if not pipe.has_component(name):
        raise InputError(f"this pipeline has no {name!r} model")


def with_style(pipe, model, settings: GenerationSettings):
    """``model`` with the request's style interpolated in for the block (``styles.styled``)."""
    return styled(model, pipe.style_state(settings.style) if settings.style else None, settings.style_weight)


def text_states(pipe, prompt: str, negative_prompt: str, guidance: float,
                like: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prompt (and, with guidance, negative prompt) states on ``like``'s device and dtype."""
    encoder = pipe.text_encoder
    device, dtype = module_device(like), like.dtype
    if guidance == 1.0:
        return encoder.encode([prompt]).to(device, dtype), None
    states = encoder.encode([prompt, negative_prompt]).to(device, dtype)
    return states[:1], states[1:]


def sample_video(pipe, model, settings: GenerationSettings, progress: Progress, condition: Condition | None = None,
                 init_video: torch.Tensor | None = None, strength: float | None = None,
                 guide_known: bool = False) -> torch.Tensor:
    """Sample a base-resolution clip with ``model``: pixels (1, 3, T, H, W) in [-1, 1], or latents
    (1, C, T, h, w) for a latent pipeline (``condition`` and ``init_video`` are in the same space).

    The whole clip in one pass, or, beyond ``ONE_PASS_FRAMES_FACTOR`` x the model's clip, its windows
    (:func:`base_windows`) averaged every step. Text to video longer than the model's clip starts,
    with ``options.LONG_CLIP_SHARED_NOISE``, from noise its windows share (``sampling.shared_window_noise``),
    and runs its noisiest ``LONG_CLIP_LAYOUT_SHARE`` of the steps in windows of the model's clip
    (:func:`layout_windows`); a loop, a condition or an input video keep independent noise and
    :func:`base_windows` throughout. ``init_video`` starts SDEdit at ``strength``; ``guide_known`` holds
    the condition's known content in every step's x0.
    """
    # 1. Text states, the solver and the initial noise (with the noise prior the model was trained with).
    device, dtype = module_device(model), model.dtype
    channels, height, width = pipe.model_sample_shape
    text, uncond = text_states(pipe, settings.prompt, settings.negative_prompt, settings.guidance_scale, model)
    scheduler = make_scheduler(pipe.scheduler_config, settings.sampler)
    shape = (1, channels, settings.num_frames, height, width)
    clip = pipe.base_resolution[0]
    shared = (options.LONG_CLIP_SHARED_NOISE and settings.num_frames > clip and not settings.loop
              and condition is None and init_video is None)  # long text-to-video: FreeNoise's shared noise
    if shared:
        noise = shared_window_noise(shape, settings.generator, device, dtype, clip, options.shared_noise_stride(clip),
                                    pipe.settings.noise_prior)
    else:
        noise = initial_noise(shape, settings.generator, device, dtype, pipe.settings.noise_prior,
                              circular=settings.loop)
    # 2. The starting point: pure noise, or the input noised to SDEdit's first step.
    if init_video is None:
        scheduler.set_timesteps(settings.num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        x = noise * scheduler.init_noise_sigma
    else:
        source = init_video[None].to(device, dtype)
        x, timesteps = sdedit_start(scheduler, settings.num_inference_steps, strength, source, noise)
        if x is None:  # strength 0: nothing to denoise (the step plan counted no steps)
            return source
    # 3. The denoiser: the model (with the condition's channels) over its windows, guided, known content held.
    extra = None
    if condition is not None:
        extra = torch.cat(list(condition), dim=0)[None].to(device, dtype)
    network = with_channels(model, extra)
    windows = base_windows(settings.num_frames, clip, circular=settings.loop)
    model_fn = windowed(network, windows)
    layout_steps = math.ceil(len(timesteps) * options.LONG_CLIP_LAYOUT_SHARE) if shared else 0
    if layout_steps:  # the layout in windows of the model's clip, then the whole clip refined
        boundary = float(timesteps[layout_steps]) if layout_steps < len(timesteps) else float("-inf")
        model_fn = by_noise_level(windowed(network, layout_windows(settings.num_frames, clip)), model_fn, boundary)
    denoiser = Guided(model_fn, text, uncond, settings.guidance_scale, Parametrisation(scheduler))
    if guide_known and condition is not None:
        denoiser = Constrained(denoiser, known_content(*condition))
    # 4. Denoise. A loop in one pass: the model wraps around in time; in windows, the windows wrap.
    with torch.inference_mode(), model.looping() if settings.loop and len(windows) == 1 else nullcontext():
        return sample(denoiser, x, scheduler, timesteps, settings.generator, progress)


def sample_image(pipe, settings: GenerationSettings, progress: Progress) -> torch.Tensor:
    """One image (3, H, W) in pixels from the base's frozen T2I U-Net alone."""
    unet = pipe.base.t2i
    device, dtype = module_device(unet), unet.dtype
    channels, height, width = pipe.model_sample_shape
    text, uncond = text_states(pipe, settings.prompt, settings.negative_prompt, settings.guidance_scale, unet)
    scheduler = make_scheduler(pipe.scheduler_config, settings.sampler)
    scheduler.set_timesteps(settings.num_inference_steps, device=device)
    x = initial_noise((1, channels, height, width), settings.generator, device, dtype) * scheduler.init_noise_sigma

    def predict(x_in, t, states):
        return unet(x_in, t, states).sample

    with torch.inference_mode():
        denoiser = Guided(predict, text, uncond, settings.guidance_scale, Parametrisation(scheduler))
        image = sample(denoiser, x, scheduler, scheduler.timesteps, settings.generator, progress)
    image = pipe.decode_frames(image[:, :, None])[:, :, 0]
    return image[0].float().clamp(-1, 1)


def conditional(pipe, settings: GenerationSettings, build: Callable[[int, int], Condition], *,
                paste_known: bool = True, keep_full_resolution: bool = True, reference_steps: int = 0,
                progress: Progress | None = None) -> np.ndarray:
    """Sample the conditional model with (C, M) = ``build(height, width)`` at base resolution.

    Known pixels (M = 1) are the user's: with ``paste_known`` they are held in the x0 estimate at every
    denoising step (the generated content is denoised next to them, which the model's reading of C alone
    does not achieve: measured in docs/research/lumiere-tiny.md), then pasted back exactly at base
    resolution, so SSR starts from them, and (``keep_full_resolution``) ``build`` is called again at output
    resolution so SSR keeps the user's original pixels rather than repainting them from 1/scale of the
    information. A latent pipeline samples on the encoded (C, M), pastes the known latents, decodes, and
    pastes the known pixels at base resolution.
    """
    # 1. The condition at base resolution (and at output resolution, for SSR to keep).
    require(pipe, "conditional")
    _, height, width = pipe.base_resolution
    condition, keep = build(height, width)
    known = None
    if paste_known and keep_full_resolution and settings.super_resolve:
        _, out_height, out_width = pipe.output_resolution
        known = build(out_height, out_width)
    if progress is None:
        progress = settings.progress(settings.step_plan(reference_steps=reference_steps), pipe.progress_bar)
    with progress:
        # 2. Encoded for a latent model; 3. sampled with the known content held; 4. pasted back exactly.
        encoded = model_condition(pipe, condition, keep)
        with with_style(pipe, pipe.conditional, settings):
            video = sample_video(pipe, pipe.conditional, settings, progress, condition=encoded,
                                 guide_known=paste_known)
        if paste_known:
            video = paste(video, *encoded)
        if pipe.is_latent:
            video = pipe.decode_frames(video)
            if paste_known:
                video = paste(video, condition, keep)
        # 5. SSR and uint8.
        return finish(pipe, video, settings, progress, known=known)


def model_condition(pipe, condition: torch.Tensor, keep: torch.Tensor) -> Condition:
    """The conditional model's (C, M) from the pixel (C, M) at base resolution: as they are for a pixel
    pipeline, encoded and min-pooled to latent resolution for a latent one."""
    if not pipe.is_latent:
        return condition, keep
    with torch.inference_mode():
        latents, keep_latent = latent_condition(pipe.vae, condition[None].float(), keep[None].float(),
                                                pipe.vae_frames_per_call)
    return latents[0], keep_latent[0]


def finish(pipe, video: torch.Tensor, settings: GenerationSettings, progress: Progress,
           known: Condition | None = None) -> np.ndarray:
    """Pixels (1, 3, T, H, W) in [-1, 1] -> SSR (when the request asks for it) -> uint8 (T, H, W, 3)."""
    if settings.super_resolve:
        video = super_resolve(pipe, video.clamp(-1, 1), settings, progress, known=known, loop=settings.loop)
    return tensor_to_uint8(video[0])


def super_resolve(pipe, low: torch.Tensor, settings: GenerationSettings, progress: Progress, *,
                  window: int | None = None, overlap: int = DEFAULT_SSR_OVERLAP, multidiffusion: bool = True,
                  steps: int | None = None, guidance: float | None = None, known: Condition | None = None,
                  loop: bool = False) -> torch.Tensor:
    """SSR of ``low`` (1, 3, T, H, W) in [-1, 1] with this model's settings (``super_resolution.sample_ssr``);
    ``known`` = (C, M) at output resolution: user pixels; ``loop``: ``low`` is a seamless loop."""
    ssr, options = pipe.ssr, pipe.ssr_options
    guidance = float(guidance if guidance is not None else options.guidance_scale)
    text, uncond = text_states(pipe, settings.prompt, settings.negative_prompt, guidance, ssr)
    return sample_ssr(ssr, low, text, uncond, options=options, scheduler_config=pipe.scheduler_config,
                      sampler=options.sampler or pipe.defaults.sampler, guidance=guidance,
                      generator=settings.generator, progress=progress, window=window, overlap=overlap,
                      multidiffusion=multidiffusion, steps=steps, known=known, loop=loop)


def known_content(condition: torch.Tensor, keep: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """video (B, C, T, H, W) -> video with the known content of (C, M) (unbatched) where M = 1: the
    per-step x0 constraint of the applications and, applied once to the sample, :func:`paste`."""
    def with_known(video: torch.Tensor) -> torch.Tensor:
        known = keep[None].to(video.device, video.dtype)
        return known * condition[None].to(video.device, video.dtype) + (1 - known) * video
    return with_known


def paste(video: torch.Tensor, condition: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``video`` (1, C, T, H, W) with the known content of (C, M) (unbatched) where M = 1."""
    return known_content(condition, keep)(video)
