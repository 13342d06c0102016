"""Inpainting and outpainting: the conditional model fills the masked region of a video (outpainting is a
mask over the border); outside the mask the result is the user's pixels."""
from __future__ import annotations

import numpy as np

from .. import conditioning as cond
from ..preprocessing import mask_tensor, video_tensor
from ..request import GenerationSettings, Inpaint
from .common import conditional


def run(pipe, request: Inpaint, settings: GenerationSettings) -> np.ndarray:
    frames = settings.num_frames
    return conditional(pipe, settings, lambda h, w: cond.inpaint_condition(video_tensor(request.video, frames, h, w),
                                                                           mask_tensor(request.mask, frames, h, w)))
