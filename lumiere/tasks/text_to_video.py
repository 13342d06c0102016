"""Text-to-video: the base STUNet generates the whole clip at once, then SSR (Lumiere Sec. 3).

With a reference image (VideoGen-style reference guidance) the first frame is drawn by the frozen T2I
U-Net alone ("t2i") or given, and the conditional model animates it (as image-to-video does).
"""
from __future__ import annotations

import numpy as np

from .. import conditioning as cond
from ..errors import InputError
from ..preprocessing import image_tensor
from ..request import GenerationSettings, TextToVideo
from .common import conditional, finish, require, sample_image, sample_video, with_style


def run(pipe, request: TextToVideo, settings: GenerationSettings) -> np.ndarray:
    if request.reference_image is not None:
        return _reference_guided(pipe, settings, request.reference_image)
    # 1. The base model, one progress counter over every stage.
    require(pipe, "base")
    with settings.progress(settings.step_plan(), pipe.progress_bar) as progress:
        # 2. The whole clip at base resolution (with the request's style).
        with with_style(pipe, pipe.base, settings):
            video = sample_video(pipe, pipe.base, settings, progress)
        # 3. Decode (latent models), SSR, uint8.
        return finish(pipe, pipe.decode_frames(video), settings, progress)


def _reference_guided(pipe, settings: GenerationSettings, reference_image) -> np.ndarray:
    """First frame from the T2I U-Net ("t2i") or the given image, then image-to-video."""
    require(pipe, "conditional")
    frames = settings.num_frames
    if isinstance(reference_image, str):
        if reference_image != "t2i":
            raise InputError(f"reference_image must be 't2i' or an image, got {reference_image!r}")
        require(pipe, "base")
        # 1. The first frame from the T2I U-Net; 2. animated by the conditional model.
        progress = settings.progress(settings.step_plan(reference_steps=settings.num_inference_steps),
                                     pipe.progress_bar)
        with progress:
            image = sample_image(pipe, settings, progress).cpu()
            return conditional(pipe, settings, lambda h, w: cond.image_to_video_condition(image, frames),
                               keep_full_resolution=False, progress=progress)
    return conditional(pipe, settings, lambda h, w: cond.image_to_video_condition(
        image_tensor(reference_image, h, w), frames))
