"""Cinemagraphs: only the masked region of an image moves; everything else stays the image (its known
region feathered in and faded over the first frames: ``conditioning.cinemagraph_condition``)."""
from __future__ import annotations

import numpy as np

from .. import conditioning as cond
from ..preprocessing import image_tensor, mask_tensor
from ..request import Cinemagraph, GenerationSettings
from .common import conditional


def run(pipe, request: Cinemagraph, settings: GenerationSettings) -> np.ndarray:
    frames = settings.num_frames
    return conditional(pipe, settings, lambda h, w: cond.cinemagraph_condition(
        image_tensor(request.image, h, w), mask_tensor(request.mask, 1, h, w)[0], frames,
        feather=cond.CINEMAGRAPH_FEATHER, fade_frames=cond.CINEMAGRAPH_FADE_FRAMES, loop=settings.loop))
