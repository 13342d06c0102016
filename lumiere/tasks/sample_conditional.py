"""The conditional model on a (C, M) pair built by the caller: the applications are this with their own
(C, M); evaluation runs it with ``paste_known=False`` to measure what the model itself produced."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..request import ConditionalSample, GenerationSettings
from .common import conditional


def run(pipe, request: ConditionalSample, settings: GenerationSettings) -> np.ndarray:
    condition, keep = request.condition, request.keep
    _, height, width = pipe.base_resolution
    if condition.ndim != 4 or condition.shape[0] != 3 or tuple(condition.shape[2:]) != (height, width):
        raise InputError(f"condition must be (3, T, {height}, {width}), got {tuple(condition.shape)}")
    if tuple(keep.shape) != (1, *condition.shape[1:]):
        raise InputError(f"keep must be (1, {', '.join(map(str, condition.shape[1:]))}), got {tuple(keep.shape)}")
    return conditional(pipe, settings, lambda h, w: (condition, keep), paste_known=request.paste_known,
                       keep_full_resolution=False)
