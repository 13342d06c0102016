"""Keyframes to video: the given images are frames of the clip at their indices (the first and the
last, or any set); C = the images there and blanks elsewhere, M = 1 on those frames (Lumiere Sec. 4.2, I2V
with more than one known frame). The conditional model generates the frames between them; the known frames
are held in the sampler's x0 at every step and pasted exactly at base and output resolution
(``common.conditional``), so they are the user's pixels in the result.

:class:`Keyframes` is the request (``pipe.generate(Keyframes(...))``); :func:`keyframe_images` turns the
``keyframes_to_video(first, last, prompt, indices=...)`` arguments into its ``images`` (both in
``lumiere.request``).
"""
from __future__ import annotations

import numpy as np

from .. import conditioning as cond
from ..preprocessing import image_tensor, to_numpy_image
from ..request import GenerationSettings, Keyframes
from .common import conditional


def run(pipe, request: Keyframes, settings: GenerationSettings) -> np.ndarray:
    # 1. The keyframes as uint8 RGB at their frame positions; 2. (C, M) at each resolution the program asks.
    frames = settings.num_frames
    images = {index: to_numpy_image(image) for index, image in request.frame_images(frames).items()}
    return conditional(pipe, settings, lambda h, w: cond.keyframes_condition(
        {index: image_tensor(image, h, w) for index, image in images.items()}, frames))
