"""Spatial super-resolution (SSR) of a whole clip: temporal MultiDiffusion windows (Lumiere App. C),
the low-res consistency projection and the user's known pixels.

``LumierePipeline`` calls :func:`sample_ssr` after the base model (and for ``super_resolve``); the
model's conditioning input is ``conditioning.ssr_condition``, the function training uses too.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .components import module_device
from .conditioning import feathered_keep, ssr_condition
from .models.stunet import STUNet
from .models.temporal import frames_to_video, video_to_frames
from .denoisers import Constrained, Guided, Parametrisation, sample, windowed, with_channels
from .multidiffusion import temporal_windows
from .options import DEFAULT_SSR_OVERLAP, SSROptions
from .progress import Progress
from .sampling import augmentation_scheduler, initial_noise, make_scheduler, sdedit_start


def sample_ssr(ssr: STUNet, low: torch.Tensor, text: torch.Tensor, uncond: torch.Tensor | None, *,
               options: SSROptions, scheduler_config: dict, sampler: str, guidance: float,
               generator: torch.Generator, progress: Progress, window: int | None = None,
               overlap: int = DEFAULT_SSR_OVERLAP, multidiffusion: bool = True, steps: int | None = None,
               known: tuple[torch.Tensor, torch.Tensor] | None = None, loop: bool = False) -> torch.Tensor:
    """Super-resolve ``low`` (1, 3, T, H, W) in [-1, 1] by ``options.scale``; returns (1, 3, T, sH, sW).

    Args:
        ssr: the SSR STUNet; it runs on its own device and dtype.
        text / uncond: prompt and negative-prompt states (``uncond`` None when ``guidance`` is 1).
        options: the model's ``config["ssr"]``: ``low_res_consistency`` projects the x0 estimate onto
            ``low`` at "every_step", only the "final" output, or "off"; ``detail_gain`` is how much of
            the model's own detail the projection keeps; ``known_pixels_in_loop`` also replaces the
            known region of x0 by the user's pixels every step; ``feather`` is the soft edge where
            they are pasted at the end.
        sampler / guidance: the solver and CFG scale of this call.
        window / overlap: frames per MultiDiffusion window (default ``options.window``; a positive int,
            checked by the request) and frames shared by neighbours (capped at window - 1);
            ``multidiffusion`` False: no overlap.
        steps: the schedule's steps (default ``options.num_inference_steps``); the last
            ``options.strength`` of them run (``options.steps_run``).
        known: (C, M) at output resolution: the user's pixels, kept where M = 1.
        loop: ``low`` is a seamless loop: the windows go around it (one may span the last and the first
            frames), and a single window covering the clip runs the model in ``looping`` mode.
    """
    device, dtype = module_device(ssr), ssr.dtype
    scale = int(options.scale)
    window = int(window if window is not None else options.window)
    overlap = min(int(overlap), window - 1)  # the paper's 2-frame overlap, capped for very short windows
    _, _, frames, height, width = low.shape
    windows = temporal_windows(frames, window, overlap if multidiffusion else 0, circular=loop)

    # Condition on the bilinearly up-sampled low-res video, noise-augmented (shared with training).
    low = low.to(device, torch.float32)
    noise_level = torch.tensor([options.noise_level], device=device)
    size = (height * scale, width * scale)
    aug_noise = initial_noise((1, 3, frames, *size), generator, device, torch.float32)
    upsampled = ssr_condition(low, size, noise_level, augmentation_scheduler(scheduler_config), aug_noise).to(dtype)

    scheduler = make_scheduler(scheduler_config, sampler)
    total = steps or options.num_inference_steps
    noise = initial_noise((1, 3, frames, *size), generator, device, dtype)
    if options.strength < 1.0:
        # SDEdit start: the bicubic up-sampling (the projection of nothing onto ``low``) noised to the
        # first step that runs; only the last options.steps_run(total) steps are run.
        bicubic = low_res_projection(torch.zeros(1, 3, frames, *size, device=device), low, scale, detail_gain=0.0)
        x, timesteps = sdedit_start(scheduler, total, options.steps_run(total) / total, bicubic.to(dtype), noise)
    else:
        scheduler.set_timesteps(total, device=device)
        timesteps = scheduler.timesteps
        x = noise * scheduler.init_noise_sigma

    model = windowed(with_channels(ssr, upsampled, class_labels=noise_level), windows)

    alpha = target = None
    if known is not None:
        target = known[0][None].to(device, torch.float32)
        alpha = feathered_keep(known[1][None].to(device), options.feather_pixels)
    in_loop = known is not None and options.known_pixels_in_loop
    every_step = options.low_res_consistency == "every_step"

    def constrain(x0: torch.Tensor) -> torch.Tensor:
        if every_step:
            x0 = low_res_projection(x0, low, scale, options.detail_gain)
        if in_loop:
            x0 = alpha * target + (1 - alpha) * x0
        return x0

    denoiser = Guided(model, text, uncond, guidance, Parametrisation(scheduler))
    if every_step or in_loop:
        denoiser = Constrained(denoiser, constrain)
    with torch.inference_mode(), ssr.looping() if loop and len(windows) == 1 else nullcontext():
        high = sample(denoiser, x, scheduler, timesteps, generator, progress)
        if options.low_res_consistency == "final":
            high = low_res_projection(high.float(), low, scale, options.detail_gain).to(dtype)
        if known is not None:
            # The user's own pixels at output resolution, with a soft edge into the generated region.
            high = (alpha * target + (1 - alpha) * high.float()).to(dtype)
    return high


def low_res_projection(high: torch.Tensor, low: torch.Tensor, scale: int, detail_gain: float = 1.0) -> torch.Tensor:
    """Make ``high`` (B, C, T, H*s, W*s) area-down-sample exactly to ``low`` (1, C, T, H, W).

    A range/null-space split as in DDNM (Wang et al., 2023): the low frequencies come from ``low``
    (bicubic up-sampled: smooth, unlike the blocky nearest pseudo-inverse), the detail
    high - bicubic(down(high)) from the model, scaled by ``detail_gain``; a last nearest-up-sampled
    residual makes every s x s block mean equal ``low`` exactly (it is tiny: bicubic nearly keeps means).
    """
    batch, frames = high.shape[0], high.shape[2]
    flat = video_to_frames(high)
    target = video_to_frames(low.to(high).expand(batch, -1, -1, -1, -1))

    def up(x):
        return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)

    flat = up(target) + detail_gain * (flat - up(F.avg_pool2d(flat, scale)))
    residual = target - F.avg_pool2d(flat, scale)
    flat = flat + residual.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return frames_to_video(flat, frames)
