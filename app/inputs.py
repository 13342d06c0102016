"""Server-side validation of everything a request can carry (API calls bypass the UI's sliders).

Every check raises :class:`InputError` (a ValueError) with a sentence that names the field and says
what to do; the UI turns it into ``gr.Error``. The rules and limits are the library's, shared with the
CLI and the Python API: uploads are read by ``lumiere.io`` (refused by their headers *before* decoding,
videos decoded only as far as the model will look, see :func:`load_video`, so a small upload cannot
expand into gigabytes), prompts and frame counts are checked by ``lumiere.request``. This module adds
what is the app's own: Gradio's value shapes (FileData dicts, editor layers) and the field labels.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from lumiere import errors
from lumiere.io import mask_from_array, read_video
from lumiere.io import open_image as read_image_file
# MAX_FRAMES_FACTOR, MAX_PROMPT_CHARS: the UI reads them from here.
from lumiere.options import (  # noqa: F401
    DEFAULT_INPUT_LIMITS, DEFAULT_OUTPAINT_BORDER, DEFAULT_STRENGTH, DEFAULT_STYLE_WEIGHT, MAX_FPS, MAX_FRAMES_FACTOR,
    MAX_PROMPT_CHARS, MAX_SEED, MIN_FPS, SAMPLERS, STRENGTH_RANGE, STYLE_WEIGHT_RANGE)
from lumiere.request import check_num_frames, check_text

from .components import local_path

# The library's limits under the names the UI reads (one definition: lumiere.options).
MAX_VIDEO_SECONDS = DEFAULT_INPUT_LIMITS.max_video_seconds
MAX_SIDE = DEFAULT_INPUT_LIMITS.max_video_side
MAX_DECODE_PIXELS = DEFAULT_INPUT_LIMITS.max_decode_pixels
MAX_IMAGE_SIDE = DEFAULT_INPUT_LIMITS.max_image_side
MAX_IMAGE_PIXELS = DEFAULT_INPUT_LIMITS.max_image_pixels
MAX_STEPS = 100  # a shared server's cap on denoising steps per request (the library has none)
# The part of outpaint_mask's open range (0, 0.5) the slider offers.
OUTPAINT_BORDER_RANGE = (0.05, 0.45)

# API parameter -> the label a person sees; messages name both so either reader finds the field.
FIELD_LABELS = {
    "prompt": "Prompt", "negative_prompt": "Negative prompt", "seed": "Seed", "num_frames": "Frames",
    "steps": "Denoising steps", "guidance_scale": "Guidance scale", "super_resolve": "Super-resolution",
    "sampler": "Sampler", "fps": "Playback fps", "reference_guided": "Reference-guided", "outpaint": "Outpaint",
    "outpaint_border": "Outpaint border", "style": "Style", "style_weight": "Style weight",
    "strength": "Strength", "image": "Image", "video": "Video", "mask": "Mask", "loop": "Loop",
    "last_image": "Last frame",
}


# A request the user can fix: the library's own class, so what lumiere.io and lumiere.request raise for an
# upload or a value is caught as this (and, as a LumiereError, by the UI's one handler).
InputError = errors.InputError


def field(name: str) -> str:
    """'Denoising steps (steps)': the UI label and the API parameter name."""
    label = FIELD_LABELS.get(name, name)
    return label if label.lower() == name.replace("_", " ") else f"{label} ({name})"


def _kind(value) -> str:
    return {list: "a list", dict: "an object", tuple: "a list", bool: "true/false", str: "text"}.get(
        type(value), type(value).__name__)


# ----------------------------------------------------------------------------- scalars
def prompt_text(prompt, what: str = "the video", name: str = "prompt") -> str:
    if prompt is not None and not isinstance(prompt, str):
        raise InputError(f"{field(name)} must be text, got {_kind(prompt)}.")
    if prompt is None or not prompt.strip():
        raise InputError(f"The prompt is empty: describe {what}, e.g. \"a red circle bouncing on the grass\".")
    return check_text(prompt, field(name))


def optional_text(text, name: str = "negative_prompt") -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InputError(f"{field(name)} must be text, got {_kind(text)}.")
    return check_text(text, field(name))


def flag(value, name: str, default: bool) -> bool:
    """A checkbox: true or false (None = the default). "yes", 2 or "false" are refused, not guessed."""
    if value is None:
        return default
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InputError(f"{field(name)} must be true or false, got {value!r}.")


_INTEGER_TEXT = re.compile(r"[+-]?\d+")


def integer(value, name: str) -> int:
    """An exact integer: ints (any size), integral floats, digit strings. Fractions are refused."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{field(name)} must be a whole number, got {value!r}.")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise InputError(f"{field(name)} must be a whole number, got {value!r}.")
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    raise InputError(f"{field(name)} must be a whole number, got {value!r}.")


def seed_value(seed) -> int | None:
    """Blank / None / -1 = random (None); otherwise an exact integer 0 .. 2^63-1."""
    if seed is None or (isinstance(seed, str) and not seed.strip()):
        return None
    number = integer(seed, "seed")
    if number < 0:
        return None
    if number > MAX_SEED:
        raise InputError(f"Seed must be at most 2^63-1 = {MAX_SEED}, got {number}; leave it blank (or -1) "
                         "for a random seed.")
    return number


def frames_value(num_frames, base_frames: int, factor: int, footage: bool = False) -> int | None:
    """The frame count a request asks for: blank = the model's clip; for a tab on the user's video
    (``footage``) blank or 0 = None, the video's own length (``request.ModelFacts.footage_frames``)."""
    if num_frames is None or num_frames == "":
        return None if footage else base_frames
    frames = integer(num_frames, "num_frames")
    if footage and frames == 0:
        return None
    return check_num_frames(frames, base_frames, factor, field("num_frames"))


def steps_value(steps, default: int) -> int:
    if steps is None or steps == "":
        return default
    steps = integer(steps, "steps")
    if not 1 <= steps <= MAX_STEPS:
        raise InputError(f"{field('steps')} must be between 1 and {MAX_STEPS}, got {steps}.")
    return steps


def float_value(value, name: str, low: float, high: float, default: float) -> float:
    """A number in [low, high]; ``name`` is the API parameter (the message also gives the UI label)."""
    if value is None or value == "":
        return default
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{field(name)} must be a number between {low:g} and {high:g}, got {value!r}.")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise InputError(f"{field(name)} must be between {low:g} and {high:g}, got {value!r}.")
    return number


def choice(value, name: str, options, default=None):
    if value is None or value == "":
        if default is not None:
            return default
        raise InputError(f"Choose a {field(name).lower()}: one of {', '.join(map(str, options))}.")
    if not isinstance(value, str) or value not in options:
        raise InputError(f"{field(name)} {value!r} is not available: choose one of {', '.join(map(str, options))}.")
    return value


def sampler_value(sampler) -> str | None:
    if sampler is None or sampler == "":
        return None
    return choice(sampler, "sampler", SAMPLERS)


# ----------------------------------------------------------------------------- files
def file_path(value, what: str) -> Path:
    """The local path of an uploaded file (a path string, or the FileData dict raw API payloads carry)."""
    value = local_path(value)
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise InputError(f"Upload {what} first.")
    path = Path(os.fspath(value))
    if not path.is_file():
        raise InputError(f"The uploaded file for {what} is missing on the server; upload it again.")
    return path


def load_video(path, num_frames: int | None = None, fps: float | None = None,
               cover: tuple[int, int] | None = None) -> np.ndarray:
    """A user's uploaded video -> uint8 (T, H, W, 3), decoding only what the model will use.

    ``num_frames`` frames from the start of the clip resampled to ``fps`` (the model's rate), each frame
    scaled down while decoding to just cover ``cover`` = (height, width) (the output resolution):
    :func:`lumiere.io.read_video`, which checks the header first, so memory stays bounded whatever the
    file holds. The CLI reads ``--video`` the same way.
    """
    if path is None or path == "":
        raise InputError("Upload a video first (mp4, webm, mov or gif).")
    frames, _ = read_video(file_path(path, "a video"), fps=fps, max_frames=num_frames, cover=cover,
                           name="the uploaded video")
    return frames


def open_image(value, name: str = "image"):
    """A PIL image from an upload, refused by its header (not an image, too many pixels) before decoding,
    then decoded and turned the way up it was taken: :func:`lumiere.io.open_image`. ``name`` is the API
    parameter; messages start with its label."""
    label = FIELD_LABELS.get(name, name)
    return read_image_file(file_path(value, f"the {label.lower()}"), name=label)


def image_array(image, what: str = "an image") -> np.ndarray:
    """Image from gr.Image / an editor background / a file path -> uint8 (H, W, 3) RGB."""
    if isinstance(image, dict) and ("background" in image or "layers" in image or "composite" in image):
        image = image.get("background") if image.get("background") is not None else image.get("composite")
    if image is None:
        raise InputError(f"Upload {what} first.")
    if isinstance(image, (str, os.PathLike, dict)):
        image = np.array(open_image(image, "image").convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4) or 0 in array.shape:
        raise InputError("Image: the picture could not be used: upload an RGB png, jpg or webp file.")
    if max(array.shape[:2]) > MAX_IMAGE_SIDE:
        raise InputError(f"Image: the picture is {array.shape[1]}x{array.shape[0]}; upload one at most "
                         f"{MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels.")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array[..., :3])


# ----------------------------------------------------------------------------- masks
def _as_array(value) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) or (isinstance(value, dict) and "path" in value):
        with open_image(value, "mask") as im:
            return np.asarray(im.convert("RGBA"))
    if isinstance(value, dict):
        raise InputError("The mask must be an image (a png where white or painted = the region).")
    return np.asarray(value)


def _alpha_used(array: np.ndarray) -> bool:
    return array.ndim == 3 and array.shape[-1] == 4 and array[..., 3].min() < 255


def mask_from_image(value) -> np.ndarray:
    """A mask image -> bool (H, W) by :func:`lumiere.io.mask_from_array`'s rules (as mask files decode):
    painted (alpha > 0) pixels if it has transparency, else bright (luma > 127) pixels."""
    return mask_from_array(_as_array(value))


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
    if isinstance(value, dict) and "path" in value:  # a plain image file sent where the editor value goes
        value = value["path"]
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
