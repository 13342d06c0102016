"""Temporal MultiDiffusion (Lumiere Sec. 3.2, App. C; Bar-Tal et al., 2023).

The SSR model only sees short temporal windows. At every denoising step each window's model output
is computed and the overlapping outputs are averaged per frame; the scheduler then takes one step on
the whole video. (The least-squares solution of App. C is this average; averaging the model output is
equivalent to averaging x_{t-1} for DDPM/DDIM and remains consistent for multistep solvers.)
"""
from __future__ import annotations

from typing import Callable

import torch

from .errors import InputError


def temporal_windows(num_frames: int, window: int, overlap: int = 2, circular: bool = False) -> list[tuple[int, int]]:
    """[start, end) windows of length ``window`` with ``overlap`` shared frames, covering every frame.

    The last window always ends at the last frame (it may overlap its neighbour by more than
    ``overlap``). A window at least as long as the clip gives one window: a single pass.
    ``circular`` (a seamless loop): the windows go around the clip, every one of length ``window``
    and each sharing at least ``overlap`` frames with the next, the last with the first; a window may
    wrap (``end > num_frames``: frames start..T-1 then 0..end-T-1, see :func:`take_window`).
    """
    if num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if window < 1:
        raise InputError(f"window must be >= 1, got {window}")
    if not 0 <= overlap < window:
        raise InputError(f"overlap must be in [0, window) = [0, {window}), got {overlap}")
    if window >= num_frames:
        return [(0, num_frames)]
    stride = window - overlap
    if circular:
        count = -(-num_frames // stride)  # windows around the loop; spread the extra overlap evenly
        starts = sorted({round(i * num_frames / count) for i in range(count)})
        return [(s, s + window) for s in starts]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)  # tail window ends exactly at the last frame
    return [(s, s + window) for s in starts]


def window_frames(start: int, end: int, num_frames: int) -> slice | torch.Tensor:
    """The frame indices of window [start, end): a slice, or an index tensor for a wrapping window."""
    if end <= num_frames:
        return slice(start, end)
    return torch.arange(start, end) % num_frames


def take_window(x: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Frames [start, end) of ``x`` along dim 2; a wrapping window (``end`` > frames) continues at frame 0."""
    index = window_frames(start, end, x.shape[2])
    return x[:, :, index] if isinstance(index, slice) else x.index_select(2, index.to(x.device))


def window_weights(num_frames: int, windows: list[tuple[int, int]]) -> torch.Tensor:
    """How many windows cover each frame (the averaging denominator)."""
    counts = torch.zeros(num_frames)
    for start, end in windows:
        counts[window_frames(start, end, num_frames)] += 1
    if (counts == 0).any():
        raise ValueError("temporal windows leave frames uncovered")
    return counts


def windowed_prediction(predict_window: Callable[[torch.Tensor, int, int], torch.Tensor], x: torch.Tensor,
                        windows: list[tuple[int, int]]) -> torch.Tensor:
    """Average ``predict_window(take_window(x, s, e), s, e)`` over overlapping windows along time (dim 2).

    Windows are evaluated one at a time, so peak activation memory is bounded by the window length,
    not the clip length.
    """
    total = None
    counts = window_weights(x.shape[2], windows).to(x.device, torch.float32)
    for start, end in windows:
        out = predict_window(take_window(x, start, end), start, end)
        if total is None:
            total = torch.zeros(out.shape[:2] + x.shape[2:], device=out.device, dtype=torch.float32)
        index = window_frames(start, end, x.shape[2])
        if isinstance(index, slice):
            total[:, :, index] += out.float()
        else:  # a wrapping window's frames are distinct (window <= frames): index_add_ is exact
            total.index_add_(2, index.to(total.device), out.float())
    return (total / counts.view(1, 1, -1, 1, 1)).to(x.dtype)
