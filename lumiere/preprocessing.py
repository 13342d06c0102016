"""Validate user inputs (images, videos, masks) and convert them to model tensors and back.

Everything a person can pass in wrongly is checked here, with messages that say what to change
(:class:`~lumiere.errors.InputError`). Model tensors are float in [-1, 1], channels first; user
arrays are uint8, channels last.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .errors import InputError, InputTypeError
from .io import mask_from_array, mask_from_pil


def _as_uint8_rgb(array: np.ndarray, what: str, ndim: int) -> np.ndarray:
    if array.ndim == ndim - 1 and ndim >= 3:  # greyscale -> RGB
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != ndim or array.shape[-1] not in (3, 4):
        shape = "(H, W, 3)" if ndim == 3 else "(T, H, W, 3)"
        raise InputError(f"{what} must be an RGB array of shape {shape}, got shape {array.shape}")
    if array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.min() >= 0.0 and array.max() <= 1.0:
            array = (array * 255.0).round()
        array = np.clip(array, 0, 255).astype(np.uint8)
    if 0 in array.shape:
        raise InputError(f"{what} is empty (shape {array.shape})")
    return array


def to_numpy_image(image) -> np.ndarray:
    """PIL image or (H, W, 3) array -> uint8 (H, W, 3) RGB."""
    if image is None:
        raise InputError("an input image is required")
    if hasattr(image, "convert"):  # PIL.Image
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise InputTypeError(f"image must be a numpy array or PIL image, got {type(image).__name__}")
    return _as_uint8_rgb(image, "image", 3)


def to_numpy_video(video) -> np.ndarray:
    """(T, H, W, 3) array or a list of frames -> uint8 (T, H, W, 3) RGB (floats in [0, 1] are scaled)."""
    if video is None:
        raise InputError("an input video is required")
    if isinstance(video, (list, tuple)):
        video = np.stack([to_numpy_image(frame) for frame in video])
    if not isinstance(video, np.ndarray):
        raise InputTypeError(f"video must be a numpy array (T, H, W, 3) uint8, got {type(video).__name__}")
    return _as_uint8_rgb(video, "video", 4)


def resize_center_crop(image: np.ndarray, height: int, width: int, interpolation=cv2.INTER_AREA,
                       upscale_interpolation=cv2.INTER_CUBIC) -> np.ndarray:
    """Scale so the image covers (height, width), then crop the centre (keeps the model's aspect, no bars).

    ``interpolation`` shrinks, ``upscale_interpolation`` enlarges; ``cv2.INTER_NEAREST`` (masks) is
    used both ways so labels stay labels. The user inputs and the real-video training data both go
    through here (training enlarges bilinearly), so the model sees frames framed the same way.
    """
    h, w = image.shape[:2]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        enlarge = cv2.INTER_NEAREST if interpolation == cv2.INTER_NEAREST else upscale_interpolation
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation if scale < 1 else enlarge)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return image[top:top + height, left:left + width]


def resample_frames(num_available: int, num_frames: int) -> np.ndarray:
    """Indices of ``num_frames`` frames spread evenly over a clip of ``num_available`` frames."""
    return np.round(np.linspace(0, num_available - 1, num_frames)).astype(int)


def uint8_to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 (..., C) channels-last -> float (C, ...) in [-1, 1] (the inverse of :func:`tensor_to_uint8`)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float() / 127.5 - 1.0
    return tensor.permute(tensor.ndim - 1, *range(tensor.ndim - 1))


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (C, ...) in [-1, 1] (clamped) -> uint8 (..., C) channels-last, rounded to nearest."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(*range(1, x.ndim), 0).cpu().numpy()


def image_tensor(image, height: int, width: int) -> torch.Tensor:
    """User image -> (3, H, W) float in [-1, 1] at the model's resolution."""
    return uint8_to_tensor(resize_center_crop(to_numpy_image(image), height, width))


def video_tensor(video, num_frames: int, height: int, width: int) -> torch.Tensor:
    """User video -> (3, T, H, W) in [-1, 1]: frames resampled evenly, each resized + centre-cropped."""
    array = to_numpy_video(video)
    frames = [resize_center_crop(array[i], height, width) for i in resample_frames(len(array), num_frames)]
    return uint8_to_tensor(np.stack(frames))


def mask_tensor(mask, num_frames: int, height: int, width: int, source_shape: tuple[int, int] | None = None) -> torch.Tensor:
    """User mask (True = generate) of shape (H, W) or (T, H, W) -> bool (T, H, W) at model resolution.

    bool, or numbers (> 127; 0/1 arrays count as bool); a PIL image or an (H, W, 3/4) picture is
    decoded by ``io.mask_from_array`` (painted alpha if used, else bright pixels), as mask files are.
    Resized with nearest-neighbour after the same centre crop as the image/video it belongs to.
    """
    if mask is None:
        raise InputError("a mask is required: brush the region to generate")
    if hasattr(mask, "convert"):  # a PIL picture
        mask = mask_from_pil(mask)
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4) and mask.dtype != bool:
        mask = mask_from_array(mask)  # an RGB(A) picture: the same rules as a mask file
    if mask.ndim not in (2, 3):
        raise InputError(f"mask must have shape (H, W) or (T, H, W), got {mask.shape}")
    mask = mask.astype(bool) if mask.dtype == bool or mask.max() <= 1 else mask > 127
    if not mask.any():
        raise InputError("the mask is empty: mark (brush) the region the model should generate")
    frames = mask[None] if mask.ndim == 2 else mask
    if mask.ndim == 3 and len(frames) != num_frames:
        frames = frames[resample_frames(len(frames), num_frames)]
    resized = [resize_center_crop(f.astype(np.uint8) * 255, height, width, cv2.INTER_NEAREST) > 127 for f in frames]
    out = torch.from_numpy(np.stack(resized))
    if not out.any():
        raise InputError("the mask vanished when resized to the model resolution: brush a larger region")
    return out.expand(num_frames, height, width) if mask.ndim == 2 else out
