"""Batched torch renderer of the procedural world (``world.py``) that runs on the training device.

Why: ``world.render_clip`` renders one clip at a time with numpy on the CPU, so feeding a GPU from it
needs many DataLoader workers and a host->device copy of every frame. Here the work is split in two:

* :func:`clip_parameters` (CPU, cheap, runs in DataLoader workers) draws everything random about a
  clip from its seed with *exactly* the numpy rng calls, in the order, that ``render_clip`` makes, and
  returns small fixed-size arrays (a default torch collate stacks them);
* :func:`render_parameters` (any device) rasterises a whole batch of those parameters at once with the
  same geometry as ``render_clip``: supersampling factor and sample grid, signed distance functions,
  aspect handling, background formulas, compositing order, area-average down-sampling and uint8
  quantisation.

The two renderers agree up to float32 rounding: the torch renderer computes in float32 (what GPUs are
fast at) while numpy uses float64, so a sub-sample lying within rounding distance of a shape or star
edge can land on the other side (one pixel then moves by at most 255 / ss**2 grey levels) and a value
within rounding distance of a quantisation step can round the other way (one grey level). Flat colours
are summed exactly (integer-valued float32 sums), so flat backgrounds and object interiors match exactly.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import default_collate

from lumiere.data.world import (
    BACKGROUND_COLOURS, BACKGROUNDS, PALETTE, SHAPES, STYLES, ClipSpec, _grid, _placements, default_times,
    _supersample_factor, motion_time, object_state,
)

MAX_OBJECTS = 2      # world._placements lays out at most two objects (two lanes)
MAX_STARS = 30       # night draws rng.integers(18, 30) stars, i.e. at most 29; one spare slot
GRASS_WAVES = 6      # render_background("grass"): _waves(gx, gy, rng, 6, 3.0)
GRASS_MAX_FREQ = 3.0
GRAIN_WAVES = 12     # _watercolor_finish: _waves(gx, gy, default_rng(seed + 1), 12, 9.0)
GRAIN_MAX_FREQ = 9.0
# Sub-samples (frames x sub-sample grid) rasterised at once. On a CPU, chunks whose temporaries stay in
# cache run several times faster than big ones; on an accelerator, big chunks amortise kernel launches
# (peak memory is under about a hundred bytes per sub-sample of a chunk: 2**23 stays under 1 GB).
CPU_CHUNK_SAMPLES = 2 ** 17
DEVICE_CHUNK_SAMPLES = 2 ** 23

_STAR_COLOUR = (235.0, 235.0, 255.0)
_PAPER = (242.0, 236.0, 224.0)
_LINE_HALF_WIDTH = 0.022  # world.render_clip "line drawing": |sdf| < 0.022
_SEA_TINT = (1.0, 1.2, 1.0)

_SHAPE_IDS = {name: i for i, name in enumerate(SHAPES)}
_BACKGROUND_IDS = {name: i for i, name in enumerate(BACKGROUNDS)}
# Gradient ends per background id (flat backgrounds repeat their colour).
_ENDS = np.array([[BACKGROUND_COLOURS[b][0], BACKGROUND_COLOURS[b][-1]] for b in BACKGROUNDS], float)


# ----------------------------------------------------------------------------- parameters (CPU)
def _wave_parameters(rng: np.random.Generator, count: int, max_freq: float) -> np.ndarray:
    """(count, 3) rows (fx, fy, phase) of ``world._waves``' plane waves.

    Same draws as ``_waves`` (per wave ``uniform(-m, m, 2)`` then ``uniform(0, 2 pi)``): one broadcast
    ``uniform`` call consumes the generator in the same C order with the same ``low + (high - low) * u``.
    """
    return rng.uniform([-max_freq, -max_freq, 0.0], [max_freq, max_freq, 2 * np.pi], size=(count, 3))


def clip_parameters(spec: ClipSpec, times: np.ndarray, span: float = 1.0) -> dict[str, np.ndarray]:
    """Everything random about ``spec`` at clip ``times`` (shape (F,), values in [0, 1]) of a clip ``span``
    clips long (``world.motion_time``), as numpy arrays.

    The rng is consumed exactly as ``world.render_clip`` does it (``default_rng(spec.seed)``: placements,
    then the background's draws; the watercolor grain from ``default_rng(spec.seed + 1)``), and the
    motion comes from ``world.object_state``, so rendering these parameters reproduces ``render_clip``.
    Arrays have fixed shapes whatever the clip (absent objects and stars are masked), so
    ``torch.utils.data.default_collate`` batches them into what :func:`render_parameters` takes:

    ``times`` (F,); per object slot: ``present`` (2,) bool, ``shape`` (2,) index into SHAPES, ``colour``
    (2, 3) RGB, ``x``, ``y`` (normalised centre), ``radius`` (units of min(H, W)), ``angle`` (2, F);
    ``background`` () index into BACKGROUNDS; ``waves`` (6, 3) grass (fx, fy, phase); ``sea_phase`` ();
    ``stars`` (30, 3) night (x, y, size) with ``star_mask`` (30,) bool; ``grain`` (12, 3) watercolor grain.
    Style does not change any draw, so the same parameters serve every style.
    """
    times = np.asarray(times, float).reshape(-1)
    if times.size == 0:
        raise ValueError("need at least one time")
    if spec.background not in _BACKGROUND_IDS:
        raise ValueError(f"unknown background {spec.background!r}; expected one of {BACKGROUNDS}")
    num_frames = len(times)
    rng = np.random.default_rng(spec.seed)
    placements = _placements(spec, rng)
    present = np.zeros(MAX_OBJECTS, bool)
    shape = np.zeros(MAX_OBJECTS, np.int64)
    colour = np.zeros((MAX_OBJECTS, 3))
    state = np.zeros((4, MAX_OBJECTS, num_frames))  # x, y, radius, angle
    for k, (obj, place) in enumerate(zip(spec.objects, placements)):
        if obj.shape not in _SHAPE_IDS:
            raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")
        present[k], shape[k], colour[k] = True, _SHAPE_IDS[obj.shape], PALETTE[obj.colour]
        for t, s in enumerate(times):
            state[:, k, t] = object_state(obj.motion, place, float(motion_time(obj.motion, s, span)))
    waves = np.zeros((GRASS_WAVES, 3))
    sea_phase = 0.0
    stars = np.zeros((MAX_STARS, 3))
    star_mask = np.zeros(MAX_STARS, bool)
    if spec.background == "grass":
        waves = _wave_parameters(rng, GRASS_WAVES, GRASS_MAX_FREQ)
    elif spec.background == "sea":
        sea_phase = rng.uniform(0, 6)
    elif spec.background == "night":
        count = int(rng.integers(18, 30))
        # per star uniform(0, 1), uniform(0, 1), uniform(0.006, 0.012), in that order
        stars[:count] = rng.uniform([0.0, 0.0, 0.006], [1.0, 1.0, 0.012], size=(count, 3))
        star_mask[:count] = True
    grain = _wave_parameters(np.random.default_rng(spec.seed + 1), GRAIN_WAVES, GRAIN_MAX_FREQ)
    return {
        "times": times, "present": present, "shape": shape, "colour": colour,
        "x": state[0], "y": state[1], "radius": state[2], "angle": state[3],
        "background": np.asarray(_BACKGROUND_IDS[spec.background], np.int64),
        "waves": waves, "sea_phase": np.asarray(sea_phase, float),
        "stars": stars, "star_mask": star_mask, "grain": grain,
    }


def parameters_to_tensors(params: dict, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """``params`` (one clip's or a batch's arrays) as torch tensors on ``device``."""
    return {key: torch.as_tensor(value, device=device) for key, value in params.items()}


# ----------------------------------------------------------------------------- rendering (device)
def render_parameters(params: dict[str, torch.Tensor], height: int, width: int, style: str | None = None,
                      *, chunk_samples: int | None = None) -> torch.Tensor:
    """Render batched :func:`clip_parameters` (leading dim B) as uint8 frames (B, F, H, W, 3).

    Computed in float32 on the device of ``params`` and vectorised over clips, frames and pixels; the
    result matches ``world.render_clip`` up to the float32 rounding described in the module docstring.
    Work is split into chunks of about ``chunk_samples`` sub-samples (frames x (H ss) x (W ss); None picks
    CPU_CHUNK_SAMPLES on a CPU, DEVICE_CHUNK_SAMPLES elsewhere), which bounds memory whatever the batch.
    Styles: None, "line drawing", "watercolor" and "pixel art" (rendered small, posterised, up-sampled
    as ``world._pixel_art`` does).
    """
    if height < 4 or width < 4:
        raise ValueError(f"need height, width >= 4, got {height}, {width}")
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES} or None")
    if params["x"].ndim != 3:
        raise ValueError("params must be batched: x of shape (B, objects, F); collate clip_parameters outputs")
    if style == "pixel art":
        return _pixel_art(params, height, width, chunk_samples)
    device = params["x"].device
    batch, _, num_frames = params["x"].shape
    p = {key: value.to(device=device, dtype=torch.float32) if value.is_floating_point() else value.to(device)
         for key, value in params.items()}
    geometry = _object_geometry(p)
    ss = _supersample_factor(height, width)
    gx_np, gy_np = _grid(height, width, ss)
    gx = torch.as_tensor(gx_np[0], dtype=torch.float32, device=device)      # (W ss,) column positions
    gy = torch.as_tensor(gy_np[:, 0], dtype=torch.float32, device=device)   # (H ss,) row positions
    unit = min(height, width)
    scale_x, scale_y = width / unit, height / unit  # normalised -> min(H, W) units
    out = torch.empty((batch, num_frames, height, width, 3), dtype=torch.uint8, device=device)
    if chunk_samples is None:
        chunk_samples = CPU_CHUNK_SAMPLES if device.type == "cpu" else DEVICE_CHUNK_SAMPLES
    frames_per_chunk = max(1, chunk_samples // (gx.numel() * gy.numel()))
    # Backgrounds (one per clip) are built for up to frames_per_chunk clips at once; the frames of those
    # clips are then rasterised in blocks of whole clips, or of frame ranges when a clip alone is too big.
    for g0 in range(0, batch, frames_per_chunk):
        group = slice(g0, min(batch, g0 + frames_per_chunk))
        background = _background(p, group, gx, gy, width / height, style)  # (g, 3, H ss, W ss)
        for clips, frames in _blocks(group, num_frames, frames_per_chunk):
            image = _composite(p, geometry, clips, frames, background[clips.start - g0:clips.stop - g0],
                               gx, gy, scale_x, scale_y, ss, style)
            if style == "watercolor":
                image = _watercolor_finish(image, p["grain"][clips], unit)
            out[clips, frames] = (image + 0.5).clamp_(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2)
    return out


def _blocks(group: slice, num_frames: int, frames_per_chunk: int):
    """(clips, frames) slices covering ``group`` x all frames with at most frames_per_chunk frames each."""
    if frames_per_chunk >= num_frames:
        step = frames_per_chunk // num_frames
        for c0 in range(group.start, group.stop, step):
            yield slice(c0, min(group.stop, c0 + step)), slice(0, num_frames)
        return
    for c0 in range(group.start, group.stop):
        for f0 in range(0, num_frames, frames_per_chunk):
            yield slice(c0, c0 + 1), slice(f0, min(num_frames, f0 + frames_per_chunk))


def _background(p, clips, gx, gy, aspect: float, style):
    """(b, 3, Hs, Ws) float background of the clips (``world.render_background`` plus the style's paper).

    Every background is ``lerp(A, B, T) + extra``, so a batch of mixed backgrounds costs one pass per
    texture instead of one image per background kind.
    """
    ids = p["background"][clips]
    b, dev = ids.shape[0], gx.device
    if style == "line drawing":  # the background is replaced by white paper
        return torch.full((b, 3, 1, 1), 245.0, device=dev)
    ends = torch.as_tensor(_ENDS, dtype=torch.float32, device=dev)[ids]  # (b, 2, 3)
    grass, sea, night = (ids == _BACKGROUND_IDS[name] for name in ("grass", "sea", "night"))
    yy, xx = gy.view(1, -1, 1), gx.view(1, 1, -1)
    start = torch.where(sea[:, None], ends[:, 1], ends[:, 0])  # sea runs from its light end down
    stop = torch.where(sea[:, None], ends[:, 0], ends[:, 1])
    # grass texture: t = clip(0.5 + 0.25 * waves, 0, 1)
    t_grass = (0.5 + 0.25 * _waves(xx, yy, p["waves"][clips])).clamp_(0, 1)
    t = torch.where(grass.view(b, 1, 1), t_grass, torch.where(night.view(b, 1, 1), 1 - yy, yy))
    image = start.view(b, 3, 1, 1) + (stop - start).view(b, 3, 1, 1) * t[:, None]
    # grass blades (vertical stripes) and sea swell highlights, weighted per clip and channel
    blades = torch.sin(2 * np.pi * (14 * xx * aspect + 1.5 * torch.sin(6 * yy)))  # (1, Hs, Ws)
    phase = p["sea_phase"][clips].view(b, 1, 1)
    swell = torch.sin(2 * np.pi * (7 * yy + 0.06 * torch.sin(2 * np.pi * 2 * xx * aspect + phase)))
    grass_gain = 10.0 * grass.float().view(b, 1, 1, 1)
    sea_gain = 14.0 * sea.float().view(b, 1, 1, 1) * torch.tensor(_SEA_TINT, device=dev).view(1, 3, 1, 1)
    image = image + (grass_gain * blades[:, None] + (swell - 0.4).clamp_(min=0)[:, None] * sea_gain)
    # night stars: discs of the star colour
    stars = p["stars"][clips]
    size = torch.where(p["star_mask"][clips] & night[:, None], stars[..., 2], -1.0)  # (b, 30); -1: no star
    # hypot(dx, dy) < size as dx**2 + dy**2 < size**2: an outer sum of a row and a column term
    dx2 = ((xx - stars[:, :, 0, None, None]) * aspect).square()  # (b, 30, 1, Ws)
    dy2 = (yy - stars[:, :, 1, None, None]).square()             # (b, 30, Hs, 1)
    size2 = torch.where(size < 0, -1.0, size.square())
    inside = torch.zeros(image.shape[:1] + image.shape[2:], dtype=torch.bool, device=dev)
    for k in range(stars.shape[1]):
        inside |= (dx2[:, k] + (dy2[:, k] - size2[:, k, None, None])) < 0
    image = torch.where(inside[:, None], torch.tensor(_STAR_COLOUR, device=dev).view(1, 3, 1, 1), image)
    if style == "watercolor":
        image = 0.55 * image + 0.45 * torch.tensor(_PAPER, device=dev).view(1, 3, 1, 1)
    return image


def _waves(xx, yy, waves):
    """``world._waves`` on the grid ``xx`` (1, 1, W), ``yy`` (1, H, 1) for (b, n, 3) wave rows -> (b, H, W)."""
    b, count = waves.shape[:2]
    total = torch.zeros(b, yy.shape[1], xx.shape[2], device=xx.device)
    for k in range(count):
        fx, fy, phase = (waves[:, k, i].view(b, 1, 1) for i in range(3))
        total += torch.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    return total / np.sqrt(count / 2)


def _object_geometry(p):
    """Per object and frame SDF coefficients, computed once for the whole batch.

    ``world.shape_sdf`` rotates points by -angle, then takes ``hypot - r`` (circle) or a max of edge
    distances (square, triangle). Folding the rotation into each edge normal turns every edge into
    ``px A + py B - offset``, an outer sum of a column term and a row term, so only the sums and the
    max run over the full sub-sample grid. Returns A, B (4, B, S, F) (a triangle repeats its first
    edge; a square's edges are u, -u, v, -v with u = c px + s py, v = -s px + c py), the polygon offset
    (inradius / half-side) and circle radius (B, S, F), and whether each slot is drawn as a circle
    (B, S). An absent object is drawn as a circle of radius -1: sdf >= 1 covers nothing in any style.
    """
    shape, radius, angle, present = p["shape"], p["radius"], p["angle"], p["present"]
    c, s = torch.cos(angle), torch.sin(angle)
    square_a = torch.stack([c, -c, -s, s])
    square_b = torch.stack([s, -s, c, -c])
    normals = [np.pi / 2 + 2 * np.pi * k / 3 for k in (0, 1, 2, 0)]  # 90, 210, 330 degrees (y down, apex up)
    tri_a = torch.stack([c * np.cos(a) - s * np.sin(a) for a in normals])
    tri_b = torch.stack([s * np.cos(a) + c * np.sin(a) for a in normals])
    is_tri = (shape == _SHAPE_IDS["triangle"])[..., None]  # (B, S, 1)
    plane_a = torch.where(is_tri, tri_a, square_a)
    plane_b = torch.where(is_tri, tri_b, square_b)
    offset = torch.where(is_tri, 0.65 * radius, 0.85 * radius)
    circle_radius = torch.where(present[..., None], radius, -1.0)
    is_circle = (shape == _SHAPE_IDS["circle"]) | ~present
    return plane_a, plane_b, offset, circle_radius, is_circle


def _composite(p, geometry, clips, frames, background, gx, gy, scale_x, scale_y, ss: int, style):
    """(b, f, 3, H, W) area-averaged frames: objects over the background, later slots on top.

    All object slots are rasterised together. Coverage is binary per sub-sample, so each sub-sample
    shows exactly one source; a pixel is the sum of its visible background sub-samples plus colour x
    visible count per object, over ss**2. Summing before dividing keeps flat colours exact, as numpy's
    sum-then-divide mean is.
    """
    plane_a, plane_b = (g[:, clips, :, frames] for g in geometry[:2])  # (4, b, S, f)
    offset, circle_radius = (g[clips, :, frames] for g in geometry[2:4])  # (b, S, f)
    is_circle = geometry[4][clips]  # (b, S)
    b, slots, f = offset.shape
    hs, ws = gy.numel(), gx.numel()
    x, y = p["x"][clips, :, frames], p["y"][clips, :, frames]
    px = (gx.view(1, 1, 1, 1, ws) - x[..., None, None]) * scale_x  # (b, S, f, 1, Ws)
    py = (gy.view(1, 1, 1, hs, 1) - y[..., None, None]) * scale_y  # (b, S, f, Hs, 1)
    poly = (px * plane_a[..., None, None] + (py * plane_b[..., None, None] - offset[..., None, None])).amax(0)
    circle = torch.hypot(px, py) - circle_radius[..., None, None]
    sdf = torch.where(is_circle.view(b, slots, 1, 1, 1), circle, poly)  # (b, S, f, Hs, Ws)
    cover = sdf.abs() < _LINE_HALF_WIDTH if style == "line drawing" else sdf < 0
    visible = cover.clone()
    for k in range(slots - 1):  # a slot is hidden where any later slot covers it
        visible[:, k] &= ~cover[:, k + 1:].any(1)
    occluded = cover.any(1)  # (b, f, Hs, Ws)

    def block_sum(x):  # (..., Hs, Ws) -> (..., H, W) sums over ss x ss blocks (rows first: contiguous adds)
        return x.unflatten(-2, (-1, ss)).sum(-2).unflatten(-1, (-1, ss)).sum(-1)

    counts = block_sum(visible.to(torch.float32))  # (b, S, f, H, W)
    colours = _object_colour(p["colour"][clips], style)  # (b, S, 3)
    objects = (colours.view(b, slots, 1, 3, 1, 1) * counts[:, :, :, None]).sum(1)  # (b, f, 3, H, W)
    total = block_sum(torch.where(occluded[:, :, None], 0.0, background[:, None])) + objects
    return total / (ss * ss)


def _object_colour(colour, style):
    if style == "line drawing":
        return colour * 0.35
    if style == "watercolor":  # world._pastel
        return colour * (1 - 0.45) + 255 * 0.45
    return colour


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """The 1-D kernel ``cv2.GaussianBlur(float32, (0, 0), sigma)`` uses: cv2's size rule and its weights."""
    import cv2

    size = int(round(sigma * 4 * 2 + 1)) | 1  # cvRound(sigma * 4 * 2 + 1) | 1 for non-uint8 images
    return cv2.getGaussianKernel(size, sigma, cv2.CV_32F)[:, 0]


def _reflect101(index: np.ndarray, n: int) -> np.ndarray:
    """Map indices outside [0, n) back inside as cv2's BORDER_REFLECT_101 does (any distance)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


@functools.lru_cache(maxsize=32)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix M with M @ v = cv2's 1-D Gaussian blur of v (reflect-101 border folded in)."""
    kernel = _gaussian_kernel(sigma).astype(float)
    pad = len(kernel) // 2
    source = _reflect101(np.arange(n)[:, None] + np.arange(len(kernel))[None, :] - pad, n)
    matrix = np.zeros((n, n))
    np.add.at(matrix, (np.repeat(np.arange(n), len(kernel)), source.ravel()), np.tile(kernel, n))
    return matrix


def _gaussian_blur(images, sigma: float):
    """Gaussian blur of (..., H, W) as cv2.GaussianBlur (separable, reflect-101 border), as two matmuls.

    Runs in float64: in float32, cuBLAS / cuDNN may use TF32 (10-bit mantissa; the training loop turns it
    on), far coarser than cv2's float32 arithmetic. The frames are small, so the cost is minor.
    """
    h, w = images.shape[-2:]
    rows = torch.as_tensor(_blur_matrix(w, sigma), device=images.device)
    cols = torch.as_tensor(_blur_matrix(h, sigma), device=images.device)
    return (cols @ (images.double() @ rows.T)).to(images.dtype)


def _watercolor_finish(image, grain_waves, unit: int):
    """``world._watercolor_finish`` on (b, f, 3, H, W): soft edges, darker rims, paper grain."""
    h, w = image.shape[-2:]
    sigma = 0.025 * unit
    soft = _gaussian_blur(image, sigma)
    rim = _gaussian_blur(image, 2.5 * sigma) - soft
    gx_np, gy_np = _grid(h, w, 1)
    xx = torch.as_tensor(gx_np[:1], dtype=torch.float32, device=image.device).view(1, 1, w)
    yy = torch.as_tensor(gy_np[:, :1], dtype=torch.float32, device=image.device).view(1, h, 1)
    grain = _waves(xx, yy, grain_waves)  # (b, H, W)
    return (soft - 0.25 * rim.abs()) * (1 + 0.035 * grain[:, None, None])


def _pixel_art(params, height: int, width: int, chunk_samples: int):
    """``world._pixel_art``: render at 1/block size, posterise to 4 levels, nearest-neighbour up-sample."""
    block = max(2, min(height, width) // 16)
    small_h, small_w = max(4, height // block), max(4, width // block)
    small = render_parameters(params, small_h, small_w, None, chunk_samples=chunk_samples)
    levels = 4
    lut = np.round(np.arange(256) / 255 * (levels - 1)) * (255 / (levels - 1))
    small = torch.as_tensor(lut.astype(np.uint8), device=small.device)[small.long()]
    rows = _nearest_index(small_h, height, small.device)
    cols = _nearest_index(small_w, width, small.device)
    return small.index_select(2, rows).index_select(3, cols)


def _nearest_index(src: int, dst: int, device) -> torch.Tensor:
    """Source index of each output index in cv2.resize INTER_NEAREST: min(floor(i * src / dst), src - 1)."""
    inverse_scale = 1.0 / (dst / src)
    idx = np.minimum(np.floor(np.arange(dst) * inverse_scale).astype(np.int64), src - 1)
    return torch.as_tensor(idx, device=device)


def render_clips(specs: Sequence[ClipSpec], num_frames: int = 16, height: int = 32, width: int = 32,
                 style: str | None = None, times: np.ndarray | None = None,
                 device: torch.device | str = "cpu", span: float = 1.0) -> torch.Tensor:
    """``render_clip`` for a batch of specs: uint8 (B, F, H, W, 3) on ``device``.

    ``times`` (F,) and ``span`` are shared by all clips; None gives ``num_frames`` evenly spaced times as
    render_clip.
    """
    if len(specs) == 0:
        raise ValueError("need at least one spec")
    times = default_times(num_frames) if times is None else np.asarray(times, float).reshape(-1)
    batch = default_collate([clip_parameters(spec, times, span) for spec in specs])
    return render_parameters({k: v.to(device) for k, v in batch.items()}, height, width, style)
