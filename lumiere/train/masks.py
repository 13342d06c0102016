"""Random conditioning for fine-tuning the 7-channel model (Sec. 4.2): every application's mask kind.

Each draw returns the paper's (C, M) for one training clip, built with the same functions the
pipeline uses at inference, so training and sampling can never disagree on the convention.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch

from .. import conditioning as cond
from ..errors import InputError

MASK_KINDS = ("first_frame", "box", "strokes", "cinemagraph", "outpaint", "keyframes")
# "keyframes" (first + last frame, or a few frames, given) takes its share from the others in
# proportion, so their ratios stay those the bundled conditional model was trained with (0.35 : 0.2 : 0.15 x 3).
KEYFRAMES_SHARE = 0.25
MASK_PROBABILITIES = tuple(p * (1 - KEYFRAMES_SHARE) for p in (0.35, 0.2, 0.15, 0.15, 0.15)) + (KEYFRAMES_SHARE,)
# A "keyframes" draw gives the first and last frame with this probability, else 2-3 frames, the first among them.
FIRST_LAST_PROBABILITY = 0.6


def random_box(height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    mask = torch.zeros(height, width, dtype=torch.bool)
    h = int(rng.integers(height // 4, height * 3 // 4 + 1))
    w = int(rng.integers(width // 4, width * 3 // 4 + 1))
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    mask[top:top + h, left:left + w] = True
    return mask


def random_strokes(height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    """A few thick random polylines, like a brush in the app."""
    canvas = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        points = rng.integers(0, [width, height], size=(int(rng.integers(2, 6)), 2)).astype(np.int32)
        thickness = max(1, int(rng.integers(max(2, width // 10), max(3, width // 4))))
        cv2.polylines(canvas, [points], False, 255, thickness)
    if not canvas.any():
        canvas[height // 2, width // 2] = 255
    return torch.from_numpy(canvas > 0)


def random_half(height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    """One side of a random vertical or horizontal cut, like "animate the water on the right"."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    vertical_cut = bool(rng.integers(2))
    size = width if vertical_cut else height
    cut = int(rng.integers(size // 4, 3 * size // 4 + 1))
    before_cut = bool(rng.integers(2))
    side = slice(0, cut) if before_cut else slice(cut, size)
    if vertical_cut:
        mask[:, side] = True
    else:
        mask[side, :] = True
    return mask


def moving_region(video: torch.Tensor, margin: int = 2) -> torch.Tensor:
    """Where the clip changes over time (dilated): the region a cinemagraph animates."""
    changing = (video - video[:, :1]).abs().amax(dim=(0, 1)) > 0.1
    if not changing.any():
        changing[video.shape[2] // 4: 3 * video.shape[2] // 4, video.shape[3] // 4: 3 * video.shape[3] // 4] = True
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    return torch.from_numpy(cv2.dilate(changing.numpy().astype(np.uint8), kernel) > 0)


def random_keyframes(num_frames: int, rng: np.random.Generator,
                     first_last_probability: float = FIRST_LAST_PROBABILITY) -> list[int]:
    """Frame indices a "keyframes" draw gives, sorted: the first and last frame with probability
    ``first_last_probability``, otherwise the first frame and 1-2 other distinct frames (never more than
    the clip has)."""
    if num_frames < 2:
        return [0]
    if rng.random() < first_last_probability:
        return [0, num_frames - 1]
    extra = min(int(rng.integers(1, 3)), num_frames - 1)
    others = rng.choice(np.arange(1, num_frames), size=extra, replace=False)
    return sorted({0, *(int(i) for i in others)})


class TrainingCondition(NamedTuple):
    """One conditional-training draw: the paper's (C, M), the mask kind, and the clean clip the model
    must produce (the input clip, except for cinemagraphs drawn with a user-like region)."""
    condition: torch.Tensor
    keep: torch.Tensor
    kind: str
    target: torch.Tensor


def mask_probabilities(shares: dict | None = None) -> tuple[float, ...]:
    """Per ``MASK_KINDS`` entry, the probability of a draw: ``shares`` (kind -> weight >= 0; the kinds it
    leaves out are never drawn) normalised to sum 1, or ``MASK_PROBABILITIES`` when None or empty.

    Raises:
        InputError: an unknown kind, a negative or non-numeric weight, or weights summing to 0.
    """
    if not shares:
        return MASK_PROBABILITIES
    unknown = sorted(set(shares) - set(MASK_KINDS))
    if unknown:
        raise InputError(f"stages.conditional.mask_shares: unknown mask kind {unknown[0]!r}; allowed: "
                         f"{', '.join(MASK_KINDS)}")
    bad = {kind: w for kind, w in shares.items() if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0}
    if bad:
        kind, weight = next(iter(bad.items()))
        raise InputError(f"stages.conditional.mask_shares.{kind} must be a number >= 0, got {weight!r}")
    total = float(sum(shares.values()))
    if total <= 0:
        raise InputError("stages.conditional.mask_shares: the weights sum to 0; give at least one kind a share")
    return tuple(float(shares.get(kind, 0.0)) / total for kind in MASK_KINDS)


def random_condition(video: torch.Tensor, rng: np.random.Generator,
                     user_region_fraction: float = 0.5,
                     probabilities: tuple[float, ...] = MASK_PROBABILITIES) -> TrainingCondition:
    """A random (C, M) for a clip (3, T, H, W) in [-1, 1]; M = 1 marks known content. ``probabilities``:
    of each ``MASK_KINDS`` entry (``mask_probabilities``).

    Cinemagraphs: a share ``1 - user_region_fraction`` animate the clip's own moving region (the target
    is the clip as rendered, static outside the region); the rest animate a box, brush strokes or half
    the frame drawn like a user would, which may freeze part of a moving object. Their target is the
    clip inside the region and frame 0 outside it, the cinemagraph that mask asks for. Why: trained on
    moving regions only, the model never sees known pixels it must hold still against the prompt's
    motion, and its raw output moved the still region (temporal std 16/255 there).
    """
    kind = MASK_KINDS[int(rng.choice(len(MASK_KINDS), p=probabilities))]
    _, frames, height, width = video.shape
    target = video
    if kind == "first_frame":
        c, m = cond.image_to_video_condition(video[:, 0], frames)
    elif kind == "keyframes":
        c, m = cond.keyframes_condition({i: video[:, i] for i in random_keyframes(frames, rng)}, frames)
    elif kind == "cinemagraph":
        if rng.random() < user_region_fraction:
            region = (random_box, random_strokes, random_half)[int(rng.integers(3))](height, width, rng)
            target = torch.where(region, video, video[:, :1])
        else:  # the clip's own motion lies inside the region, so the clip is already a cinemagraph of it
            region = moving_region(video)
        c, m = cond.cinemagraph_condition(video[:, 0], region, frames)
    else:
        mask = {"box": random_box, "strokes": random_strokes}.get(kind)
        generate = mask(height, width, rng) if mask else cond.outpaint_mask(height, width, float(rng.uniform(0.15, 0.35)))
        c, m = cond.inpaint_condition(video, generate)
    return TrainingCondition(c, m, kind, target)
