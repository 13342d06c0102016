"""Image-to-video: the image is the first frame (C = image then blanks, M = 1 on frame 0, Lumiere Sec. 4.2);
the conditional model generates the rest."""
from __future__ import annotations

import numpy as np

from .. import conditioning as cond
from ..preprocessing import image_tensor
from ..request import GenerationSettings, ImageToVideo
from .common import conditional


def run(pipe, request: ImageToVideo, settings: GenerationSettings) -> np.ndarray:
    frames = settings.num_frames
    return conditional(pipe, settings, lambda h, w: cond.image_to_video_condition(image_tensor(request.image, h, w),
                                                                                 frames))
