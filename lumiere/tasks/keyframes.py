"""Keyframes to video (issue 27): the given images are frames of the clip at their indices (the first and the
last, or any set); C = the images there and blanks elsewhere, M = 1 on those frames (Lumiere Sec. 4.2, I2V
with more than one known frame). The conditional model generates the frames between them; the known frames
are held in the sampler's x0 at every step and pasted exactly at base and output resolution
(``common.conditional``), so they are the user's pixels in the result.

:class:`Keyframes` is the request (``pipe.generate(Keyframes(...))``); :func:`keyframe_images` turns the
``keyframes_to_video(first, last, prompt, indices=...)`` arguments into its ``images``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import conditioning as cond
from ..errors import InputError, InputTypeError
from ..preprocessing import image_tensor, to_numpy_image
from ..request import GenerationSettings, ModelFacts, Options, Request
from .common import conditional


def _is_image(value) -> bool:
    return hasattr(value, "convert") or isinstance(value, np.ndarray)


def keyframe_images(first=None, last=None, indices: dict | None = None) -> dict[int, Any]:
    """The ``images`` of a :class:`Keyframes` request from ``keyframes_to_video``'s arguments: ``first`` at
    frame 0 and ``last`` at the clip's last frame (-1), each when given, plus ``indices``, a mapping
    {frame index: image} of any other frames (negative indices count from the end).

    Raises:
        InputTypeError: ``indices`` is not a mapping. InputError: no image at all, or a frame given twice
        by ``first`` / ``last`` and ``indices`` (checked against the clip length when the request resolves).
    """
    if indices is not None and not isinstance(indices, dict):
        raise InputTypeError(f"indices must be a dict {{frame index: image}}, got {type(indices).__name__}")
    images = dict(indices or {})
    for index, image in ((0, first), (-1, last)):
        if image is None:
            continue
        if index in images:
            raise InputError(f"frame {index} is given twice: as {'first' if index == 0 else 'last'} and in indices")
        images[index] = image
    if not images:
        raise InputError("keyframes: give at least one image (first, last or indices)")
    return images


@dataclass(frozen=True)
class Keyframes(Request):
    """A clip through given frames. ``images``: a (first, last) pair (frames 0 and T-1) or a mapping
    {frame index: image} (negative indices count from the end; -1 is the last frame); each image a uint8
    (H, W, 3) array or a PIL image, resized and centre-cropped to the model's aspect like I2V's."""

    images: Any
    prompt: str
    options: Options = Options()
    task: ClassVar[str] = "keyframes"
    unsupported: ClassVar[tuple[str, ...]] = ("loop",)

    def frame_images(self, num_frames: int) -> dict[int, Any]:
        """{frame in [0, num_frames): image}, every index and image checked.

        Raises:
            InputTypeError: ``images`` neither a pair nor a mapping; an index that is not an int; an image
                that is not an array or PIL image.
            InputError: no image, an index out of range, one frame given twice (e.g. -1 and T-1).
        """
        images = self.images
        if isinstance(images, (tuple, list)):
            if len(images) != 2:
                raise InputError(f"keyframes: a sequence of images must be the pair (first, last), got {len(images)}")
            images = {0: images[0], -1: images[1]}
        if not isinstance(images, dict):
            raise InputTypeError("keyframes: images must be a (first, last) pair or a dict {frame index: image}, "
                                 f"got {type(images).__name__}")
        if not images:
            raise InputError("keyframes: give at least one image")
        frames: dict[int, Any] = {}
        for index, image in images.items():
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise InputTypeError(f"keyframes: frame indices must be integers, got {index!r}")
            position = int(index) + num_frames if index < 0 else int(index)
            if not 0 <= position < num_frames:
                raise InputError(f"keyframes: frame index {int(index)} is out of range for a clip of {num_frames} "
                                 f"frames (0..{num_frames - 1}, or -{num_frames}..-1 from the end)")
            if position in frames:
                raise InputError(f"keyframes: frame {position} is given twice")
            if not _is_image(image):
                raise InputTypeError(f"keyframes: the image for frame {int(index)} must be a numpy array or PIL "
                                     f"image, got {type(image).__name__}")
            frames[position] = image
        return dict(sorted(frames.items()))

    def resolve(self, facts: ModelFacts, generator=None, callback=None) -> GenerationSettings:
        settings = super().resolve(facts, generator=generator, callback=callback)
        for image in self.frame_images(settings.num_frames).values():
            to_numpy_image(image)  # shape and dtype refused here, before any model work
        return settings


def run(pipe, request: Keyframes, settings: GenerationSettings) -> np.ndarray:
    # 1. The keyframes as uint8 RGB at their frame positions; 2. (C, M) at each resolution the program asks.
    frames = settings.num_frames
    images = {index: to_numpy_image(image) for index, image in request.frame_images(frames).items()}
    return conditional(pipe, settings, lambda h, w: cond.keyframes_condition(
        {index: image_tensor(image, h, w) for index, image in images.items()}, frames))
