"""Measure what a video of the procedural world shows: background, object colour, shape, motion.

Why: evaluation asks "does the generated clip show a red triangle moving left?". These estimators
use what we know about the renderer (static backgrounds that vary only smoothly along y plus a
little texture, one saturated palette colour per object, objects of at least ~2% of the frame,
motion laid out over the whole clip) and are tested to recover the true attributes of rendered
clips, so the model's scores measure the model, not the estimator.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from lumiere.data.world import BACKGROUND_COLOURS, PALETTE, SHAPES, ObjectSpec, shape_sdf

DEFAULT_THRESHOLD = 48.0   # RGB distance; palette colours are >= 100 away from every background
MIN_OBJECT_FRACTION = 0.004  # components smaller than this share of the frame are noise (e.g. stars)


def _as_float(video) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim == 3:
        video = video[None]
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a video (T, H, W, 3) or image (H, W, 3), got shape {video.shape}")
    return video.astype(np.float32)


def estimate_background(video, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Static background (H, W, 3) float.

    A row model (median over time and width of each row band) survives objects that never move,
    since an object covers well under half of any row; where the per-pixel temporal median agrees
    with it, that median is used instead so static texture (grass, waves) is not mistaken for objects.
    """
    video = _as_float(video)
    t, h, w, _ = video.shape
    rows = np.empty((h, 3), np.float32)
    for y in range(h):
        band = video[:, max(0, y - 1): y + 2].reshape(-1, 3)
        rows[y] = np.median(band, axis=0)
    row_model = np.broadcast_to(rows[:, None], (h, w, 3))
    temporal = np.median(video, axis=0)
    agrees = np.linalg.norm(temporal - row_model, axis=-1) < threshold
    return np.where(agrees[..., None], temporal, row_model).astype(np.float32)


def _remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def object_mask(video, background=None, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Bool (T, H, W): pixels far from the background, without specks smaller than an object can be."""
    video = _as_float(video)
    if background is None:
        background = estimate_background(video, threshold)
    far = np.linalg.norm(video - background, axis=-1) > threshold
    h, w = far.shape[1:]
    min_area = max(3, int(MIN_OBJECT_FRACTION * h * w))
    return np.stack([_remove_small_components(f, min_area) for f in far])


def component_areas(frame_mask) -> np.ndarray:
    """Pixel counts of the 8-connected components of one frame's mask (empty for an empty mask)."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(np.asarray(frame_mask, np.uint8), connectivity=8)
    return stats[1:, cv2.CC_STAT_AREA]


def object_count(frame_mask, min_share: float = 0.1) -> int:
    """Objects in one frame's ``object_mask``: 8-connected components holding at least ``min_share`` of the
    frame's object pixels (a star the model drew a little brighter is not an object; a blob split off is)."""
    areas = component_areas(frame_mask)
    return int((areas >= min_share * areas.sum()).sum())


def nearest_colour(rgb) -> str:
    """Palette name nearest to an RGB triple."""
    names = list(PALETTE)
    dists = [np.linalg.norm(np.subtract(rgb, PALETTE[n], dtype=float)) for n in names]
    return names[int(np.argmin(dists))]


def dominant_colour(video, mask=None, background=None) -> str | None:
    """Palette colour of the object: median of its most background-distinct pixels (edge pixels are
    blended with the background, so only the upper half by distance is used). None if no object."""
    video = _as_float(video)
    if background is None:
        background = estimate_background(video)
    if mask is None:
        mask = object_mask(video, background)
    if not mask.any():
        return None
    pixels = video[mask]
    distance = np.linalg.norm(pixels - background[np.nonzero(mask)[1:]], axis=-1)
    core = pixels[distance >= np.median(distance)]
    return nearest_colour(np.median(core, axis=0))


# ----------------------------------------------------------------------------- shape
# Area of each world shape in units of its size r (see world.shape_sdf) and its rotational symmetry.
_SHAPE_AREA = {"circle": np.pi, "square": 1.7 ** 2, "triangle": 3 * np.sqrt(3) / 4 * 1.3 ** 2}
_SHAPE_SYMMETRY = {"circle": 2 * np.pi, "square": np.pi / 2, "triangle": 2 * np.pi / 3}
_ANGLE_STEP = np.deg2rad(5)


def template_iou(component: np.ndarray, shape: str) -> float:
    """Best IoU between a component and the renderer's ``shape`` with the same area and centroid,
    over rotations. Comparing against the renderer itself is robust at 32x32, where pixel
    staircases make generic shape descriptors (fill ratios, corners) unreliable."""
    ys, xs = np.nonzero(component)
    area = float(len(xs))
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    r = np.sqrt(area / _SHAPE_AREA[shape])
    reach = int(np.ceil(1.6 * r)) + 2
    x0, y0 = max(0, int(cx) - reach), max(0, int(cy) - reach)
    window = component[y0: int(cy) + reach, x0: int(cx) + reach]
    gy, gx = np.mgrid[0: window.shape[0], 0: window.shape[1]]
    px, py = gx + x0 + 0.5 - cx, gy + y0 + 0.5 - cy
    best = 0.0
    for angle in np.arange(0.0, _SHAPE_SYMMETRY[shape], _ANGLE_STEP):
        template = shape_sdf(shape, px, py, r, angle) < 0
        union = np.logical_or(template, window).sum()
        best = max(best, np.logical_and(template, window).sum() / max(union, 1))
        if shape == "circle":
            break
    return float(best)


def _classify_frame(frame_mask: np.ndarray, min_area: int) -> str | None:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(frame_mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = stats[k]
    touches_border = x == 0 or y == 0 or x + w == frame_mask.shape[1] or y + h == frame_mask.shape[0]
    if area < min_area or touches_border:
        return None
    component = labels == k
    return max(SHAPES, key=lambda s: template_iou(component, s))


def classify_shape(mask) -> str | None:
    """"circle" | "square" | "triangle" by majority over frames of the largest object component
    (frames where it is tiny or cut by the border abstain). Accepts (H, W) or (T, H, W)."""
    mask = np.asarray(mask, bool)
    if mask.ndim == 2:
        mask = mask[None]
    min_area = max(12, int(0.01 * mask.shape[1] * mask.shape[2]))
    votes = [v for v in (_classify_frame(m, min_area) for m in mask) if v is not None]
    if not votes:
        return None
    names, counts = np.unique(votes, return_counts=True)
    return str(names[np.argmax(counts)])


# ----------------------------------------------------------------------------- motion
def object_track(mask) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame centroid (x, y) normalised to [0, 1] and area fraction; frames without an object
    get their nearest neighbours' values so the track has no holes."""
    mask = np.asarray(mask, bool)
    t, h, w = mask.shape
    area = mask.reshape(t, -1).mean(1)
    present = area > 0
    if not present.any():
        return np.full((t, 2), 0.5), area
    centroids = np.zeros((t, 2))
    for i in np.nonzero(present)[0]:
        ys, xs = np.nonzero(mask[i])
        centroids[i] = ((xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h)
    idx = np.arange(t)
    for d in range(2):
        centroids[:, d] = np.interp(idx, idx[present], centroids[present, d])
    return centroids, np.interp(idx, idx[present], area[present])


def _winding(centroids: np.ndarray) -> float:
    """Total signed angle (radians) swept by the track around its mean point."""
    rel = centroids - centroids.mean(0)
    angles = np.unwrap(np.arctan2(rel[:, 1], rel[:, 0]))
    return float(angles[-1] - angles[0])


def classify_motion(centroids: np.ndarray, area: np.ndarray) -> str:
    """Motion name from an object track (see MOTIONS in world.py)."""
    t = len(centroids)
    k = max(1, t // 8)  # average a few frames at each end against noise
    start, end = centroids[:k].mean(0), centroids[-k:].mean(0)
    net = end - start
    span = centroids.max(0) - centroids.min(0)
    growth = np.log(max(area[-k:].mean(), 1e-6) / max(area[:k].mean(), 1e-6))
    if span.min() > 0.15 and abs(_winding(centroids)) > 1.2 * np.pi:
        return "circling"
    if span.max() > 0.15:
        axis = int(np.argmax(np.abs(net)))
        if abs(net[axis]) > 0.6 * span[axis] and abs(net[axis]) > 0.15:
            if axis == 0:
                return "moving right" if net[0] > 0 else "moving left"
            return "moving down" if net[1] > 0 else "moving up"
        if span[1] >= span[0]:
            return "bouncing"
    if growth > 0.6:
        return "growing"
    if growth < -0.6:
        return "shrinking"
    return "rotating"


def motion_direction(video, mask=None, background=None) -> str | None:
    """Which of the world's motions the (main) object performs; None if no object is found."""
    if mask is None:
        mask = object_mask(video, background)
    if not mask.any():
        return None
    return classify_motion(*object_track(mask))


# ----------------------------------------------------------------------------- temporal coherence
COHERENCE_JUMP_MARGIN = 0.03   # normalised centroid units (~1 px at 32x32) on top of the world's own p90 jump
COHERENCE_AREA_MARGIN = 0.15   # log area ratio between consecutive frames, on top of the world's own
ONE_COMPONENT_SHARE = 0.85     # the largest component must hold this share of the object pixels


def coherence_measures(video, background=None) -> dict:
    """Per-video temporal-coherence measures of the (single) object.

    present_every_frame: an object is found in every frame; one_component: in every frame its largest
    connected component holds most of the object pixels (no splitting into blobs); p90_jump: 90th
    percentile of the centroid's frame-to-frame jump (normalised units); max_area_change: largest
    |log(area ratio)| between consecutive frames (popping in/out, flicker).
    """
    video = _as_float(video)
    mask = object_mask(video, background)
    areas = mask.reshape(len(mask), -1).sum(1)
    present = bool((areas > 0).all())
    shares = []
    for frame_mask, area in zip(mask, areas):
        if area == 0:
            shares.append(0.0)
            continue
        shares.append(float(component_areas(frame_mask).max() / area))
    centroids, area_fraction = object_track(mask)
    jumps = np.linalg.norm(np.diff(centroids, axis=0), axis=1) if len(mask) > 1 else np.zeros(1)
    area_change = np.abs(np.diff(np.log(np.maximum(area_fraction, 1e-6)))) if len(mask) > 1 else np.zeros(1)
    return {"present_every_frame": present, "one_component": bool(min(shares) >= ONE_COMPONENT_SHARE),
            "p90_jump": float(np.percentile(jumps, 90)), "max_area_change": float(area_change.max())}


@functools.lru_cache(maxsize=8)
def world_coherence_bounds(num_frames: int = 16, height: int = 32, width: int = 32, clips: int = 12) -> dict:
    """Per motion, the largest p90 jump and area change the world's own renders show (the calibration).

    Renders ``clips`` single-object clips per motion over random colours, shapes and backgrounds.
    """
    from lumiere.data.world import MOTIONS, ClipSpec, ObjectSpec, render_clip, sample_clip_spec

    bounds = {}
    for m, motion in enumerate(MOTIONS):
        jumps, changes = [], []
        for k in range(clips):
            rng = np.random.default_rng([7, m, k])
            spec = sample_clip_spec(rng, holdout=False, num_objects=1)
            shape = "square" if motion == "rotating" and spec.objects[0].shape == "circle" else spec.objects[0].shape
            spec = ClipSpec((ObjectSpec(spec.objects[0].colour, shape, motion),), spec.background, spec.seed)
            measures = coherence_measures(render_clip(spec, num_frames, height, width))
            jumps.append(measures["p90_jump"])
            changes.append(measures["max_area_change"])
        bounds[motion] = {"p90_jump": float(max(jumps)), "max_area_change": float(max(changes))}
    return bounds


COHERENCE_CRITERIA = ("absent_in_a_frame", "split_into_blobs", "jumps", "area_pops")


def coherence_failures(measures: dict, motion: str, bounds: dict) -> list[str]:
    """The coherence criteria (``COHERENCE_CRITERIA``) a video fails: the object is missing from some
    frame, splits into blobs, or its centroid jumps / its area changes more abruptly than the world's
    renders of ``motion`` (plus a small margin). Reported per criterion so a miss says what went wrong."""
    bound = bounds[motion]
    failed = (not measures["present_every_frame"], not measures["one_component"],
              measures["p90_jump"] > bound["p90_jump"] + COHERENCE_JUMP_MARGIN,
              measures["max_area_change"] > bound["max_area_change"] + COHERENCE_AREA_MARGIN)
    return [name for name, fails in zip(COHERENCE_CRITERIA, failed) if fails]


def is_coherent(measures: dict, motion: str, bounds: dict) -> bool:
    """Coherent = one object present in every frame, moving and changing size no more abruptly than the
    world's renders of ``motion`` do (plus a small margin)."""
    return not coherence_failures(measures, motion, bounds)


def classify_background(background) -> str:
    """Nearest world background name from the estimated background's top and bottom colours."""
    background = np.asarray(background, np.float32)
    h = background.shape[0]
    band = max(1, h // 8)
    observed = np.concatenate([background[:band].mean((0, 1)), background[-band:].mean((0, 1))])

    def ideal(name):
        ends = BACKGROUND_COLOURS[name]
        if name in ("sky",):
            return np.concatenate([ends[0], ends[-1]])
        if name in ("sea", "night"):
            return np.concatenate([ends[-1], ends[0]])
        mean = np.mean(ends, axis=0)
        return np.concatenate([mean, mean])

    return min(BACKGROUND_COLOURS, key=lambda n: np.linalg.norm(observed - ideal(n)))


def analyse(video) -> tuple[ObjectSpec, str]:
    """(ObjectSpec(colour, shape, motion), background name) measured from a video."""
    video = _as_float(video)
    background = estimate_background(video)
    mask = object_mask(video, background)
    spec = ObjectSpec(dominant_colour(video, mask, background), classify_shape(mask),
                      motion_direction(video, mask, background))
    return spec, classify_background(background)
