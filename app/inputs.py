"""Server-side validation of everything a request can carry (API calls bypass the UI's sliders).

Every check raises :class:`InputError` (a ValueError) with a sentence a person can act on; the UI turns
it into ``gr.Error``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

MAX_VIDEO_SECONDS = 20.0
MAX_SIDE = 1920
MAX_STEPS = 100
MAX_FRAMES_FACTOR = 4  # frames <= 4 x the base model's clip length
MAX_PROMPT_CHARS = 500
SAMPLERS = ("dpm++", "ddim", "ddpm", "euler")


class InputError(ValueError):
    """A request the user can fix."""


# ----------------------------------------------------------------------------- scalars
def prompt_text(prompt, what: str = "the video") -> str:
    if prompt is None or not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"The prompt is empty: describe {what}, e.g. \"a red circle bouncing on the grass\".")
    prompt = prompt.strip()
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"The prompt is too long ({len(prompt)} characters); keep it under {MAX_PROMPT_CHARS}.")
    return prompt


def optional_text(text) -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InputError("The negative prompt must be text.")
    return text.strip()[:MAX_PROMPT_CHARS]


def _integer(value, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {value!r}.") from None
    if not math.isfinite(number) or not number.is_integer():
        raise InputError(f"{name} must be a whole number, got {value!r}.")
    return int(number)


def seed_value(seed) -> int | None:
    """-1 / None / empty = random (None); otherwise a non-negative integer below 2**63."""
    if seed is None or seed == "":
        return None
    seed = _integer(seed, "Seed")
    if seed < 0:
        return None
    if seed >= 2**63:
        raise InputError("Seed is too large: use a number below 2^63, or -1 for a random seed.")
    return seed


def frames_value(num_frames, base_frames: int, factor: int) -> int:
    if num_frames is None or num_frames == "":
        return base_frames
    frames = _integer(num_frames, "Frames")
    limit = MAX_FRAMES_FACTOR * base_frames
    factor = max(1, factor)
    if frames < factor or frames > limit:
        raise InputError(f"Frames must be between {factor} and {limit} for this model, got {frames}.")
    if frames % factor:
        raise InputError(f"Frames must be a multiple of {factor} for this model, got {frames} "
                         f"(try {max(factor, frames - frames % factor)}).")
    return frames


def steps_value(steps, default: int) -> int:
    if steps is None or steps == "":
        return default
    steps = _integer(steps, "Steps")
    if not 1 <= steps <= MAX_STEPS:
        raise InputError(f"Steps must be between 1 and {MAX_STEPS}, got {steps}.")
    return steps


def float_value(value, name: str, low: float, high: float, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number between {low} and {high}, got {value!r}.") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {value!r}.")
    return number


def sampler_value(sampler) -> str | None:
    if sampler is None or sampler == "":
        return None
    if sampler not in SAMPLERS:
        raise InputError(f"Unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}.")
    return sampler


# ----------------------------------------------------------------------------- files
def _probe_video(path: Path) -> tuple[int, int, float]:
    """(width, height, seconds) without decoding every frame."""
    if path.suffix.lower() == ".gif":
        from PIL import Image

        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            duration = im.info.get("duration", 100) or 100
            return im.width, im.height, frames * duration / 1000.0
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
    finally:
        reader.close()
    width, height = meta["size"]
    return int(width), int(height), float(meta.get("duration") or 0.0)


def load_video(path) -> np.ndarray:
    """A user's uploaded video -> uint8 (T, H, W, 3); checks it decodes, its length and its size."""
    from lumiere.io import read_video

    if path is None or path == "":
        raise InputError("Upload a video first (mp4, webm, mov or gif).")
    if isinstance(path, dict):  # raw API payload
        path = path.get("path") or path.get("video", {}).get("path")
    path = Path(os.fspath(path))
    name = path.name
    try:
        width, height, seconds = _probe_video(path)
    except Exception:
        raise InputError(f"Could not read the uploaded video '{name}': upload an mp4, webm, mov or gif file.") from None
    if max(width, height) > MAX_SIDE:
        raise InputError(f"The video is {width}x{height}; upload one at most {MAX_SIDE}x{MAX_SIDE} pixels.")
    if seconds > MAX_VIDEO_SECONDS:
        raise InputError(f"The video is {seconds:.0f} s long; upload a clip of at most {MAX_VIDEO_SECONDS:.0f} s.")
    try:
        frames, _ = read_video(path)
    except ValueError:
        raise InputError(f"Could not decode the uploaded video '{name}': upload an mp4, webm, mov or gif file.") from None
    if frames.ndim != 4 or len(frames) == 0:
        raise InputError(f"The uploaded video '{name}' has no frames.")
    return frames


def image_array(image, what: str = "an image") -> np.ndarray:
    """Image from gr.Image / an editor background / a file path -> uint8 (H, W, 3) RGB."""
    if isinstance(image, dict):  # editor value
        image = image.get("background") if image.get("background") is not None else image.get("composite")
    if image is None:
        raise InputError(f"Upload {what} first.")
    if isinstance(image, (str, os.PathLike)):
        from lumiere.io import read_image

        try:
            image = read_image(image)
        except (ValueError, FileNotFoundError):
            raise InputError("Could not read the uploaded image: upload a png, jpg or webp file.") from None
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4) or 0 in array.shape:
        raise InputError("The uploaded image could not be used: upload an RGB png, jpg or webp file.")
    if max(array.shape[:2]) > MAX_SIDE:
        raise InputError(f"The image is {array.shape[1]}x{array.shape[0]}; upload one at most "
                         f"{MAX_SIDE}x{MAX_SIDE} pixels.")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array[..., :3])


# ----------------------------------------------------------------------------- masks
def _as_array(value) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        from PIL import Image

        try:
            with Image.open(value) as im:
                return np.asarray(im.convert("RGBA"))
        except Exception:
            raise InputError("Could not read the mask image: upload a png (white or painted = generate).") from None
    return np.asarray(value)


def _alpha_used(array: np.ndarray) -> bool:
    return array.ndim == 3 and array.shape[-1] == 4 and array[..., 3].min() < 255


def mask_from_image(value) -> np.ndarray:
    """A mask image -> bool (H, W): painted (alpha > 0) pixels if it has transparency, else bright pixels."""
    array = _as_array(value)
    if array.ndim == 2:
        return array > (127 if array.dtype != bool else 0)
    if _alpha_used(array):
        return array[..., 3] > 0
    return array[..., :3].astype(np.float32).mean(axis=-1) > 127


def _looks_like_mask(array: np.ndarray) -> bool:
    """A black/white (or transparent + painted) picture rather than a photo/frame."""
    if _alpha_used(array):
        return True
    rgb = array[..., :3].astype(np.int16) if array.ndim == 3 else array[..., None].astype(np.int16)
    grey = (rgb.max(axis=-1) - rgb.min(axis=-1)) <= 16
    extreme = (rgb.mean(axis=-1) < 40) | (rgb.mean(axis=-1) > 215)
    return bool(grey.mean() > 0.99 and extreme.mean() > 0.98)


def _resize_mask(mask: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    if shape is None or mask.shape == tuple(shape):
        return mask
    import cv2

    return cv2.resize(mask.astype(np.uint8) * 255, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 127


def mask_from_editor(value, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """The region the user brushed, as bool (H, W) resized to ``shape``; None when nothing was marked.

    An editor value uses its brushed layers; a plain image (or an editor value whose background is a
    black/white mask and has no strokes, as API clients send) is read as a mask image.
    """
    if value is None:
        return None
    mask = None
    if isinstance(value, dict):
        for layer in value.get("layers") or []:
            layer = _as_array(layer)
            if layer is None or layer.ndim != 3:
                continue
            painted = layer[..., 3] > 0 if layer.shape[-1] == 4 else layer.max(axis=-1) > 0
            painted = _resize_mask(painted, mask.shape if mask is not None else None)
            mask = painted if mask is None else (mask | painted)
        if mask is None or not mask.any():
            background = _as_array(value.get("background"))
            if background is not None and _looks_like_mask(background):
                mask = mask_from_image(background)
    else:
        mask = mask_from_image(value)
    if mask is None or not mask.any():
        return None
    return _resize_mask(mask, shape)
