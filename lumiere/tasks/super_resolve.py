"""Spatial super-resolution of a base-resolution video: the SSR model on overlapping temporal windows joined
by MultiDiffusion (Lumiere App. C), the output projected onto the low-res input."""
from __future__ import annotations

import numpy as np

from ..preprocessing import tensor_to_uint8, to_numpy_video, video_tensor
from ..progress import Progress
from ..request import GenerationSettings, SuperResolve
from .common import super_resolve


def run(pipe, request: SuperResolve, settings: GenerationSettings) -> np.ndarray:
    # 1. The video at base resolution (any length).
    array = to_numpy_video(request.video)
    _, height, width = pipe.base_resolution
    low = video_tensor(array, len(array), height, width)[None]
    # 2. SSR over its windows; the callback counts the steps that run.
    with Progress(settings.ssr_steps, settings.callback, pipe.progress_bar, "super-resolution") as progress:
        high = super_resolve(pipe, low, settings, progress, window=request.window, overlap=request.overlap,
                             multidiffusion=request.multidiffusion, steps=settings.num_inference_steps,
                             guidance=settings.guidance_scale)
    return tensor_to_uint8(high[0])
