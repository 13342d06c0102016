"""Conditioning signals for the 7-channel model (Lumiere Sec. 4.2).

The conditional model sees concat(J, C, M): the noisy video J, a masked conditioning video C and a
one-channel mask M where **1 = known content to keep** (the paper's convention). User-facing masks
use the opposite convention (True = region to generate), so every builder here takes the user mask
and returns the paper's (C, M).

Tensors are (3, T, H, W) in [-1, 1]; blank (unknown) content is 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import InputError
from .models.temporal import frames_to_video, video_to_frames


def image_to_video_condition(image: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """I2V: C = the first frame then blank frames; M = 1 on frame 0, 0 elsewhere."""
    _, height, width = image.shape
    condition = torch.zeros(3, num_frames, height, width, dtype=image.dtype)
    condition[:, 0] = image
    keep = torch.zeros(1, num_frames, height, width, dtype=image.dtype)
    keep[:, 0] = 1
    return condition, keep


def inpaint_condition(video: torch.Tensor, generate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inpainting/outpainting: C = video with the hole blanked; M = 1 outside the hole.

    ``generate`` is a bool (T, H, W) or (H, W) mask, True where new content is generated.
    """
    _, num_frames, height, width = video.shape
    generate = _broadcast_mask(generate, num_frames, height, width)
    keep = (~generate).to(video.dtype)[None]
    return video * keep, keep


def cinemagraph_condition(image: torch.Tensor, region: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cinemagraph: C = the image on every frame; M = 1 on all of frame 0 and outside the region elsewhere.

    Keeping frame 0 whole anchors the appearance of the animated region to the input image.
    """
    _, height, width = image.shape
    condition = image[:, None].expand(3, num_frames, height, width).clone()
    region = _broadcast_mask(region, num_frames, height, width)
    keep = (~region).to(image.dtype)[None]
    keep[:, 0] = 1
    return condition, keep


def feathered_keep(keep: torch.Tensor, width: int) -> torch.Tensor:
    """Soft version of a keep mask M (1 = known), per frame: known pixels at chessboard distance d <= width
    from the generated region get d / (width + 1), the others stay 1; the generated region stays 0.

    Why: pasting user pixels with a hard edge leaves a visible seam where they meet generated content;
    the ramp lies entirely inside the known region, so the generated region stays untouched and known
    pixels farther than ``width`` from it are exactly the user's. Accepts (..., H, W); returns float.
    """
    keep = keep.float()
    if width < 1:
        return keep
    hole = (1 - keep).reshape(-1, 1, *keep.shape[-2:])
    total = keep.clone()
    for k in range(1, width + 1):  # pixels with no hole within distance k (max_pool pads with -inf)
        total += 1 - torch.nn.functional.max_pool2d(hole, 2 * k + 1, stride=1, padding=k).reshape(keep.shape)
    return total / (width + 1)


def ssr_condition(low: torch.Tensor, size: tuple[int, int], levels: torch.Tensor, schedule,
                  noise: torch.Tensor) -> torch.Tensor:
    """The SSR model's conditioning input, the same in training and sampling (Imagen / IF stage II).

    ``low`` (B, 3, T, h, w) in [-1, 1] is bilinearly up-sampled per frame to ``size`` (H, W), clamped,
    and noised to the augmentation ``levels`` (B,) with ``schedule.add_noise`` and ``noise``
    (B, 3, T, H, W): the model learns to trust the low-res input only as far as its noise level says.
    """
    up = F.interpolate(video_to_frames(low), size=tuple(size), mode="bilinear", align_corners=False)
    up = frames_to_video(up, low.shape[2]).clamp(-1, 1)
    return schedule.add_noise(up, noise.to(up), levels)


def outpaint_mask(height: int, width: int, border: float = 0.25) -> torch.Tensor:
    """A generate-mask covering a border of ``border`` x width/height on every side (outpainting)."""
    if not 0.0 < border < 0.5:
        raise InputError(f"outpaint border must be in (0, 0.5), got {border}")
    mask = torch.ones(height, width, dtype=torch.bool)
    dy, dx = max(1, round(height * border)), max(1, round(width * border))
    mask[dy:height - dy, dx:width - dx] = False
    return mask


def _broadcast_mask(mask: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
    mask = mask.bool()
    if mask.ndim == 2:
        mask = mask[None].expand(num_frames, height, width)
    if tuple(mask.shape) != (num_frames, height, width):
        raise InputError(f"mask shape {tuple(mask.shape)} does not match video ({num_frames}, {height}, {width})")
    return mask
