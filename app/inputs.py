"""Server-side validation of everything a request can carry (API calls bypass the UI's sliders).

Every check raises :class:`InputError` (a ValueError) with a sentence that names the field and says
what to do; the UI turns it into ``gr.Error``. Files are checked from their headers *before* decoding,
and videos are decoded only as far as the model will look (see :func:`load_video`), so a small upload
cannot expand into gigabytes.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from lumiere import errors
from lumiere.io import mask_from_array
from lumiere.options import MAX_SEED, SAMPLERS

MAX_VIDEO_SECONDS = 20.0
MAX_SIDE = 1920                      # longest side of an uploaded video
MAX_DECODE_PIXELS = 1_300_000_000    # width x height x frames a video may hold (a 20 s 1080p30 clip: 1.24e9)
MAX_IMAGE_SIDE = 4096                # phone photos (4032 x 3024) pass
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_STEPS = 100
MAX_FRAMES_FACTOR = 4  # frames <= 4 x the base model's clip length
MAX_PROMPT_CHARS = 500

# API parameter -> the label a person sees; messages name both so either reader finds the field.
FIELD_LABELS = {
    "prompt": "Prompt", "negative_prompt": "Negative prompt", "seed": "Seed", "num_frames": "Frames",
    "steps": "Denoising steps", "guidance_scale": "Guidance scale", "super_resolve": "Super-resolution",
    "sampler": "Sampler", "fps": "Playback fps", "reference_guided": "Reference-guided", "outpaint": "Outpaint",
    "outpaint_border": "Outpaint border", "style": "Style", "style_weight": "Style weight",
    "strength": "Strength", "image": "Image", "video": "Video", "mask": "Mask",
}


class InputError(errors.InputError):
    """A request the user can fix (a :class:`lumiere.errors.LumiereError`, so the UI catches one family)."""


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
    prompt = prompt.strip()
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"The prompt is too long ({len(prompt)} characters); keep it under {MAX_PROMPT_CHARS}.")
    return prompt


def optional_text(text, name: str = "negative_prompt") -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InputError(f"{field(name)} must be text, got {_kind(text)}.")
    return text.strip()[:MAX_PROMPT_CHARS]


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


def frames_value(num_frames, base_frames: int, factor: int) -> int:
    if num_frames is None or num_frames == "":
        return base_frames
    frames = integer(num_frames, "num_frames")
    limit = MAX_FRAMES_FACTOR * base_frames
    factor = max(1, factor)
    if frames < factor or frames > limit:
        raise InputError(f"{field('num_frames')} must be between {factor} and {limit} for this model, got {frames}.")
    if frames % factor:
        raise InputError(f"{field('num_frames')} must be a multiple of {factor} for this model, got {frames} "
                         f"(try {max(factor, frames - frames % factor)}).")
    return frames


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
    if isinstance(value, dict):
        value = value.get("path") or (value.get("video") or {}).get("path")
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise InputError(f"Upload {what} first.")
    path = Path(os.fspath(value))
    if not path.is_file():
        raise InputError(f"The uploaded file for {what} is missing on the server; upload it again.")
    return path


def check_video(path: Path, num_frames: int, fps: float):
    """Refuse a video by what its header says before any frame is decoded; returns its VideoInfo."""
    from lumiere.io import probe_video

    name = path.name
    try:
        info = probe_video(path)
    except (ValueError, OSError):
        raise InputError(f"Could not read the uploaded video '{name}': it is not a video file or it is damaged. "
                         "Upload an mp4, webm, mov or gif file.") from None
    if info.width < 1 or info.height < 1:
        raise InputError(f"The uploaded video '{name}' has no picture; upload an mp4, webm, mov or gif file.")
    if max(info.width, info.height) > MAX_SIDE:
        raise InputError(f"The video is {info.width}x{info.height}; upload one at most {MAX_SIDE}x{MAX_SIDE} pixels.")
    if info.seconds > MAX_VIDEO_SECONDS:
        raise InputError(f"The video is {info.seconds:.0f} s long; upload a clip of at most "
                         f"{MAX_VIDEO_SECONDS:.0f} s.")
    total = info.width * info.height * info.frames
    if total > MAX_DECODE_PIXELS:
        raise InputError(
            f"The video holds too many pixels to process: {info.width}x{info.height} at {info.fps:.0f} fps for "
            f"{info.seconds:.0f} s is {total / 1e9:.1f} billion pixels, the limit is {MAX_DECODE_PIXELS / 1e9:.1f} "
            "billion. Upload a shorter, smaller or lower-frame-rate clip (the model only uses the first "
            f"{num_frames / fps:.0f} s at {fps:g} fps).")
    return info


def load_video(path, num_frames: int | None = None, fps: float | None = None,
               cover: tuple[int, int] | None = None) -> np.ndarray:
    """A user's uploaded video -> uint8 (T, H, W, 3), decoding only what the model will use.

    ``num_frames`` frames from the start of the clip resampled to ``fps`` (the model's rate), each frame
    scaled down while decoding to just cover ``cover`` = (height, width) (the output resolution). The
    header is checked first (:func:`check_video`), so memory stays bounded whatever the file holds.
    """
    from lumiere.io import read_video

    if path is None or path == "":
        raise InputError("Upload a video first (mp4, webm, mov or gif).")
    path = file_path(path, "a video")
    check_video(path, num_frames or 16, fps or 8.0)
    try:
        frames, _ = read_video(path, fps=fps, max_frames=num_frames, cover=cover)
    except ValueError:
        raise InputError(f"Could not decode the uploaded video '{path.name}': it is damaged or in an unsupported "
                         "format. Upload an mp4, webm, mov or gif file.") from None
    if frames.ndim != 4 or len(frames) == 0:
        raise InputError(f"The uploaded video '{path.name}' has no frames.")
    return frames


def open_image(value, name: str = "image"):
    """A PIL image from an upload, refused by its header (not an image, too many pixels) before decoding,
    then decoded (a truncated or damaged file is refused here). ``name`` is the API parameter."""
    from PIL import Image, UnidentifiedImageError

    label = FIELD_LABELS.get(name, name)
    path = file_path(value, f"the {label.lower()}")
    filename = path.name
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as error:
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f" ({int(pixels.group(1)) / 1e6:.0f} megapixels)" if pixels else ""
        raise InputError(f"{label}: the picture '{filename}' is far too large{size}; upload one at most "
                         f"{MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels.") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(f"{label}: the file '{filename}' is not an image file (or it is damaged): upload a png, "
                         "jpg or webp picture.") from None
    width, height = im.size
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        im.close()
        raise InputError(f"{label}: the picture '{filename}' is {width}x{height}; upload one at most "
                         f"{MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels.")
    try:
        im.load()
    except Exception:  # Pillow raises OSError/SyntaxError/ValueError/... for damaged data
        im.close()
        raise InputError(f"{label}: the file '{filename}' is truncated or damaged: re-save it as png or jpg and "
                         "upload it again.") from None
    try:
        from PIL import ImageOps

        im = ImageOps.exif_transpose(im)  # phone photos: the way up they were taken
    except Exception:
        pass
    return im


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
