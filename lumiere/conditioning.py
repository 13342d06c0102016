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
from .options import DEFAULT_OUTPAINT_BORDER


def image_to_video_condition(image: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """I2V: C = the first frame then blank frames; M = 1 on frame 0, 0 elsewhere."""
    _, height, width = image.shape
    condition = torch.zeros(3, num_frames, height, width, dtype=image.dtype)
    condition[:, 0] = image
    keep = torch.zeros(1, num_frames, height, width, dtype=image.dtype)
    keep[:, 0] = 1
    return condition, keep


def keyframes_condition(images: dict[int, torch.Tensor], num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keyframes: C = each image (3, H, W) at its frame index, blank frames elsewhere; M = 1 on those frames.

    ``images`` maps a frame index in [0, num_frames) to its image; negative indices count from the end
    (-1 = the last frame). I2V is ``{0: image}``.

    Raises:
        InputError: no image, an index out of range or given twice (-1 and T-1), images of different sizes.
    """
    if not images:
        raise InputError("keyframes: give at least one image")
    frames: dict[int, torch.Tensor] = {}
    for index, image in images.items():
        if isinstance(index, bool) or not isinstance(index, int):
            raise InputError(f"keyframes: frame indices must be integers, got {index!r}")
        position = index + num_frames if index < 0 else index
        if not 0 <= position < num_frames:
            raise InputError(f"keyframes: frame index {index} is out of range for {num_frames} frames")
        if position in frames:
            raise InputError(f"keyframes: frame {position} is given twice")
        frames[position] = image
    shapes = {tuple(image.shape) for image in frames.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise InputError(f"keyframes: the images must all be (3, H, W) of one size, got {sorted(shapes)}")
    first = next(iter(frames.values()))
    _, height, width = first.shape
    condition = torch.zeros(3, num_frames, height, width, dtype=first.dtype)
    keep = torch.zeros(1, num_frames, height, width, dtype=first.dtype)
    for position, image in frames.items():
        condition[:, position] = image
        keep[:, position] = 1
    return condition, keep


def inpaint_condition(video: torch.Tensor, generate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inpainting/outpainting: C = video with the hole blanked; M = 1 outside the hole.

    ``generate`` is a bool (T, H, W) or (H, W) mask, True where new content is generated.
    """
    _, num_frames, height, width = video.shape
    generate = _broadcast_mask(generate, num_frames, height, width)
    keep = (~generate).to(video.dtype)[None]
    return video * keep, keep


# The cinemagraph application's soft edges (``cinemagraph_condition``'s defaults stay hard: training and the
# evaluation build the paper's binary M). Why: with a hard M the generated region meets the still part in a
# visible seam and the motion jumps in at frame 1; the feather and the fade-in remove both without moving the
# jump to a later frame (tests/test_conditioning.py checks the three on the app's example; measured
# in docs/research/lumiere-tiny.md).
CINEMAGRAPH_FEATHER = 0.06  # ramp width inside the region, as a fraction of min(H, W): 2 px at 32, 8 px at 128
CINEMAGRAPH_FADE_FRAMES = 3  # frames 1..3 cross-fade from the still image into the generated motion


def cinemagraph_condition(image: torch.Tensor, region: torch.Tensor, num_frames: int, *, feather: float = 0.0,
                          fade_frames: int = 0, loop: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Cinemagraph: C = the image on every frame; M = 1 on all of frame 0 and outside the region elsewhere.

    Keeping frame 0 whole anchors the appearance of the animated region to the input image.

    ``feather`` > 0 (a fraction of min(H, W)) softens M inside the region: pixels within that distance of
    its edge keep a share of the image falling linearly to 0, so the generated content meets the still
    part without a seam. ``fade_frames`` > 0 holds frames 1..fade_frames of the region at (1 - k/(fade+1))² of
    the image at least, so the motion fades in from frame 0 instead of jumping at frame 1. Pixels outside
    the region stay exactly 1 (still) either way; M is then float rather than {0, 1}. ``loop`` (a seamless
    loop): the fade mirrors at the end too (frames T-1..T-fade_frames), so the motion also fades back into
    frame 0.
    """
    _, height, width = image.shape
    condition = image[:, None].expand(3, num_frames, height, width).clone()
    region = _broadcast_mask(region, num_frames, height, width)
    keep = (~region).to(image.dtype)[None]
    ramp = round(feather * min(height, width))
    if ramp >= 1:  # feathered_keep on the region (1 = region) ramps up into it; 1 - that ramps the keep down
        keep = (1 - feathered_keep(region.to(image.dtype), ramp)).to(image.dtype)[None]
    for k in range(1, min(int(fade_frames), num_frames - 1) + 1):  # quadratic: the model follows held pixels
        keep[:, k] = keep[:, k].clamp(min=(1 - k / (fade_frames + 1)) ** 2)  # more than their share
        if loop:
            keep[:, -k] = keep[:, -k].clamp(min=(1 - k / (fade_frames + 1)) ** 2)
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


def outpaint_mask(height: int, width: int, border: float = DEFAULT_OUTPAINT_BORDER) -> torch.Tensor:
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
