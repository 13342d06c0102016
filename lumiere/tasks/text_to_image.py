"""Text-to-image: one image from the base's frozen T2I U-Net alone (no temporal layers) — the spatial model
every video stage inflates; what it draws for a prompt bounds what the video model can draw."""
from __future__ import annotations

import numpy as np

from ..preprocessing import tensor_to_uint8
from ..request import GenerationSettings, TextToImage
from .common import require, sample_image


def run(pipe, request: TextToImage, settings: GenerationSettings) -> np.ndarray:
    require(pipe, "base")
    with settings.progress({"image": settings.num_inference_steps}, pipe.progress_bar) as progress:
        return tensor_to_uint8(sample_image(pipe, settings, progress))
