"""A procedural video world: coloured shapes moving over simple backgrounds, with captions.

Why: the bundled model cannot be trained on real video here, so it learns from an unlimited,
exactly-labelled world. Everything is deterministic from a seed and defined in continuous,
normalised coordinates (x, y in [0, 1] per axis, sizes in units of min(H, W), time s in [0, 1]
over the clip), rendered with supersampling + area averaging. Hence the same clip rendered at
32x32 and at 128x128 agree after area down-sampling, which is what the super-resolution stage
is trained on, and a motion looks the same at any frame count.

Some (colour, shape, motion) triples are never produced for training (``HELDOUT_COMBINATIONS``);
evaluation prompts them to measure compositional generalisation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

# ----------------------------------------------------------------------------- vocabulary
PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("moving left", "moving right", "moving up", "moving down",
           "bouncing", "rotating", "growing", "shrinking", "circling")
BACKGROUNDS = ("black", "gray", "sky", "grass", "sea", "night")
STYLES = ("line drawing", "watercolor", "pixel art")

# Extreme colours of each background (gradient ends); used to refuse low-contrast objects.
BACKGROUND_COLOURS = {
    "black": [(0, 0, 0)],
    "gray": [(110, 110, 110)],
    "sky": [(70, 130, 220), (170, 210, 245)],
    "grass": [(50, 125, 40), (85, 160, 60)],
    "sea": [(20, 55, 130), (45, 115, 185)],
    "night": [(8, 8, 30), (20, 18, 55)],
}
MIN_CONTRAST = 100.0  # RGB distance between an object colour and every background colour

HELDOUT_COMBINATIONS = (
    ("red", "triangle", "moving left"),
    ("blue", "circle", "bouncing"),
    ("green", "square", "circling"),
    ("yellow", "circle", "moving up"),
    ("purple", "triangle", "growing"),
    ("orange", "square", "rotating"),
    ("white", "circle", "shrinking"),
    ("red", "square", "moving down"),
)

# Caption phrases: participles ("a red circle moving left") and 3rd person ("a red circle moves left").
MOTION_ING = {
    "moving left": ["moving left", "moving to the left", "going left", "sliding to the left", "drifting left"],
    "moving right": ["moving right", "moving to the right", "going right", "sliding to the right", "drifting right"],
    "moving up": ["moving up", "going up", "rising", "floating upward"],
    "moving down": ["moving down", "going down", "falling", "sinking"],
    "bouncing": ["bouncing", "bouncing up and down", "hopping"],
    "rotating": ["rotating", "spinning", "turning around"],
    "growing": ["growing", "getting bigger", "expanding"],
    "shrinking": ["shrinking", "getting smaller", "contracting"],
    "circling": ["circling", "moving in a circle", "going around in a circle"],
}
MOTION_VERB = {
    "moving left": ["moves left", "moves to the left", "goes left", "slides left"],
    "moving right": ["moves right", "moves to the right", "goes right", "slides right"],
    "moving up": ["moves up", "goes up", "rises"],
    "moving down": ["moves down", "goes down", "falls", "sinks"],
    "bouncing": ["bounces", "bounces up and down", "hops"],
    "rotating": ["rotates", "spins", "turns around"],
    "growing": ["grows", "gets bigger", "expands"],
    "shrinking": ["shrinks", "gets smaller", "contracts"],
    "circling": ["circles around", "moves in a circle", "goes around in a circle"],  # not "circles": a noun
}
MOTION_VERB_PLURAL = {
    "moving left": ["move left", "move to the left"], "moving right": ["move right", "move to the right"],
    "moving up": ["move up", "rise"], "moving down": ["move down", "fall"],
    "bouncing": ["bounce", "bounce up and down"], "rotating": ["rotate", "spin"],
    "growing": ["grow", "get bigger"], "shrinking": ["shrink", "get smaller"],
    "circling": ["circle around", "move in a circle"],
}
BACKGROUND_PHRASES = {
    "black": ["on black", "on a black background", "against a black background"],
    "gray": ["on gray", "on a gray background", "on a grey background"],
    "sky": ["in the sky", "in a clear sky", "against a blue sky"],
    "grass": ["on the grass", "over a grassy field", "on green grass"],
    "sea": ["over the sea", "above the ocean", "over blue water"],
    "night": ["on a night sky", "at night", "against a starry night sky"],
}
SHAPE_WORDS = {"circle": ["circle", "ball", "disc", "disk", "dot"], "square": ["square", "box", "block"],
               "triangle": ["triangle"]}
COLOUR_WORDS = {**{c: [c] for c in COLOURS}, "gray": ["grey"], "purple": ["purple", "violet"]}
COUNT_WORDS = {"two": 2, "2": 2, "a pair of": 2}

# Motions that need a horizontal lane / vertical lane / none; decides how two objects share a frame.
_HORIZONTAL = {"moving left", "moving right"}
_VERTICAL = {"moving up", "moving down", "bouncing"}
_IN_PLACE = {"rotating", "growing", "shrinking"}


# ----------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ObjectSpec:
    """What one object is and does (fields may be None in a spec parsed from a prompt)."""
    colour: str | None
    shape: str | None
    motion: str | None

    @property
    def triple(self):
        return (self.colour, self.shape, self.motion)


@dataclass(frozen=True)
class ClipSpec:
    """A clip: one or two objects, a background, and the seed that fixes all geometry/texture."""
    objects: tuple[ObjectSpec, ...]
    background: str | None
    seed: int = 0


def is_valid_object(colour, shape, motion, background=None) -> bool:
    """A triple is renderable when motion is visible for that shape and colour contrasts the background."""
    if shape == "circle" and motion == "rotating":  # a rotating circle looks static
        return False
    if background is not None:
        return all(np.linalg.norm(np.subtract(PALETTE[colour], c)) >= MIN_CONTRAST
                   for c in BACKGROUND_COLOURS[background])
    return True


def _as_rng(rng_or_seed):
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def _compatible_motions(first_motion: str) -> list[str]:
    if first_motion == "circling":
        return ["circling"]
    if first_motion in _HORIZONTAL:
        return sorted(_HORIZONTAL | _IN_PLACE)
    if first_motion in _VERTICAL:
        return sorted(_VERTICAL | _IN_PLACE)
    return sorted(_HORIZONTAL | _VERTICAL | _IN_PLACE)


def motion_probabilities(weights: dict[str, float] | None) -> np.ndarray | None:
    """MOTIONS' draw probabilities from relative ``weights`` (motion name -> weight; motions not named weigh 1),
    or None for None (the uniform draw).

    Raises:
        ValueError: a name that is not one of MOTIONS, a negative weight, or every weight zero.
    """
    if weights is None:
        return None
    unknown = sorted(set(weights) - set(MOTIONS))
    if unknown:
        raise ValueError(f"unknown motions {unknown}; expected some of {list(MOTIONS)}")
    values = np.array([float(weights.get(m, 1.0)) for m in MOTIONS])
    if (values < 0).any() or not values.sum() > 0:
        raise ValueError(f"motion weights must be >= 0 and not all 0, got {weights}")
    return values / values.sum()


def _sample_object(rng, background, motions, holdout, p=None) -> ObjectSpec:
    while True:
        obj = ObjectSpec(str(rng.choice(COLOURS)), str(rng.choice(SHAPES)), str(rng.choice(motions, p=p)))
        if not is_valid_object(*obj.triple, background):
            continue
        if holdout and obj.triple in HELDOUT_COMBINATIONS:
            continue
        return obj


def sample_clip_spec(rng_or_seed=None, holdout: bool = True, num_objects: int | None = None,
                     p_two: float = 0.3, p_identical: float = 0.5,
                     motion_probs: np.ndarray | None = None) -> ClipSpec:
    """Draw a random clip. ``holdout=True`` (training) never yields a HELDOUT_COMBINATIONS triple.

    Two-object clips are either identical objects ("two yellow triangles circling") or two objects
    whose motions can share the frame (e.g. a horizontal mover above an in-place rotation).
    ``motion_probs`` (``motion_probabilities``' result): the first object's motion is drawn with these
    probabilities over MOTIONS; None draws it uniformly.
    """
    rng = _as_rng(rng_or_seed)
    background = str(rng.choice(BACKGROUNDS))
    if num_objects is None:
        num_objects = 2 if rng.random() < p_two else 1
    first = _sample_object(rng, background, MOTIONS, holdout, motion_probs)
    objects = [first]
    if num_objects == 2:
        if rng.random() < p_identical:
            objects.append(first)
        else:
            objects.append(_sample_object(rng, background, _compatible_motions(first.motion), holdout))
    return ClipSpec(tuple(objects), background, int(rng.integers(2**31 - 1)))


# ----------------------------------------------------------------------------- captions
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(shape: str) -> str:
    return shape + "s"


def _describe_objects(objects) -> tuple[str, bool]:
    """Noun phrase for the objects; returns (phrase, plural?)."""
    a = objects[0]
    if len(objects) == 1:
        return f"{_article(a.colour)} {a.colour} {a.shape}", False
    b = objects[1]
    if a.colour == b.colour and a.shape == b.shape:
        return f"two {a.colour} {_plural(a.shape)}", True
    return f"{_article(a.colour)} {a.colour} {a.shape} and {_article(b.colour)} {b.colour} {b.shape}", True


def caption(spec: ClipSpec, rng=None, include_motion: bool = True, p_background: float = 0.75) -> str:
    """A varied natural caption of ``spec`` (paraphrased motions, word orders, optional background)."""
    rng = _as_rng(rng)
    pick = lambda options: str(options[rng.integers(len(options))])  # noqa: E731
    objects = spec.objects
    bg = ""
    if spec.background is not None and rng.random() < p_background:
        bg = " " + pick(BACKGROUND_PHRASES[spec.background])
    same_motion = len({o.motion for o in objects}) == 1
    if not include_motion:
        phrase, _ = _describe_objects(objects)
        return (phrase + bg).strip()
    if len(objects) == 2 and not same_motion:
        parts = [f"{_article(o.colour)} {o.colour} {o.shape} {pick(MOTION_ING[o.motion])}" for o in objects]
        return f"{parts[0]} and {parts[1]}{bg}"
    phrase, plural = _describe_objects(objects)
    motion = objects[0].motion
    template = int(rng.integers(4))
    if template == 0:  # "a red circle moving to the right over the sea"
        return f"{phrase} {pick(MOTION_ING[motion])}{bg}"
    if template == 1:  # "a red circle moves right"
        verb = pick(MOTION_VERB_PLURAL[motion] if plural else MOTION_VERB[motion])
        return f"{phrase} {verb}{bg}"
    if template == 2:  # "red circle going right over the sea" (no article)
        bare = re.sub(r"^(a|an) ", "", phrase)
        return f"{bare} {pick(MOTION_ING[motion])}{bg}"
    # "over the sea, a red circle is moving left"
    lead = bg.strip()
    body = f"{phrase} {'are' if plural else 'is'} {pick(MOTION_ING[motion])}"
    return f"{lead}, {body}" if lead else body


def canonical_prompt(colour: str, shape: str, motion: str, background: str | None = None) -> str:
    """The plain prompt form used for evaluation: 'a red triangle moving left [on the grass]'."""
    text = f"{_article(colour)} {colour} {shape} {motion}"
    return f"{text} {BACKGROUND_PHRASES[background][0]}" if background else text


def heldout_prompts(background: str | None = None) -> list[str]:
    """Evaluation prompts for every held-out triple."""
    return [canonical_prompt(*triple, background) for triple in HELDOUT_COMBINATIONS]


# ----------------------------------------------------------------------------- prompt parsing
def _phrase_pattern(phrases):
    ordered = sorted(phrases, key=len, reverse=True)  # longest first: "moving to the left" before "moving left"
    return re.compile(r"\b(" + "|".join(re.escape(p) for p in ordered) + r")\b")


_MOTION_LOOKUP = {p: m for table in (MOTION_ING, MOTION_VERB, MOTION_VERB_PLURAL)
                  for m, ps in table.items() for p in ps}
_MOTION_LOOKUP.update({"moving leftward": "moving left", "moving rightward": "moving right",
                       "bounce": "bouncing", "bouncy": "bouncing", "spinning around": "rotating",
                       "going in circles": "circling", "orbiting": "circling"})
_BACKGROUND_LOOKUP = {p: b for b, ps in BACKGROUND_PHRASES.items() for p in ps}
_BACKGROUND_LOOKUP.update({"grass": "grass", "grassy": "grass", "sea": "sea", "ocean": "sea",
                           "water": "sea", "sky": "sky", "night": "night", "starry": "night",
                           "blue sky": "sky", "blue water": "sea", "blue sea": "sea", "green grass": "grass",
                           "night sky": "night", "starry sky": "night", "dark sky": "night",
                           "black background": "black", "gray background": "gray",
                           "grey background": "gray"})
_SHAPE_LOOKUP = {w: s for s, ws in SHAPE_WORDS.items() for w in ws}
_SHAPE_LOOKUP.update({w + ("es" if w.endswith("x") else "s"): s for w, s in list(_SHAPE_LOOKUP.items())})
_COLOUR_LOOKUP = {w: c for c, ws in COLOUR_WORDS.items() for w in ws if c in PALETTE}
_MOTION_RE = _phrase_pattern(_MOTION_LOOKUP)
_BACKGROUND_RE = _phrase_pattern(_BACKGROUND_LOOKUP)
_TOKEN_RE = re.compile(r"<m\d+>|[a-z]+|\d+")


def parse_prompt(prompt: str) -> ClipSpec:
    """Find colours, shapes, motions, counts and a background in free text.

    Returns a ClipSpec whose unknown fields are None (``seed`` is 0). Motions apply to the objects
    named since the previous motion ("a red circle and a blue square moving left" -> both move left);
    "two" duplicates the object. Background phrases are removed first so "blue sky" is not a colour.
    """
    text = " " + re.sub(r"[^a-z0-9 ]", " ", prompt.lower()) + " "
    background = None
    match = _BACKGROUND_RE.search(text)
    if match:
        background = _BACKGROUND_LOOKUP[match.group(1)]
        text = _BACKGROUND_RE.sub(" ", text)
    motions = []

    def mark_motion(m):
        motions.append(_MOTION_LOOKUP[m.group(1)])
        return f" <m{len(motions) - 1}> "

    text = _MOTION_RE.sub(mark_motion, text)
    text = text.replace("a pair of", "two")
    objects, pending, colour, count = [], [], None, 1
    for token in _TOKEN_RE.findall(text):
        if token in _COLOUR_LOOKUP:
            colour = _COLOUR_LOOKUP[token]
        elif token in COUNT_WORDS:
            count = COUNT_WORDS[token]
        elif token in _SHAPE_LOOKUP:
            new = [colour, _SHAPE_LOOKUP[token], None]
            pending += [new] + [list(new) for _ in range(count - 1)]
            colour, count = None, 1
        elif token.startswith("<m"):
            motion = motions[int(token[2:-1])]
            if not pending and colour is not None:  # "something red moving left"
                pending, colour = [[colour, None, None]], None
            targets = pending or objects[-1:]
            for obj in targets:
                obj[2] = motion
            objects += pending
            pending = []
    if colour is not None and not pending and not objects:
        pending = [[colour, None, None]]
    objects += pending
    return ClipSpec(tuple(ObjectSpec(*o) for o in objects), background, 0)


# ----------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class _Placement:
    """Per-object rendering parameters drawn from the clip seed."""
    radius: float          # in units of min(H, W)
    x: float               # lane centre, normalised per axis
    y: float
    phase: float           # angle phase (rotation start / circling start)
    direction: float       # +1 or -1 (rotation / circling sense)


def _placements(spec: ClipSpec, rng) -> list[_Placement]:
    """Give each object a lane so two objects never collide, plus size/phase jitter."""
    objects = spec.objects
    two = len(objects) == 2
    motions = {o.motion for o in objects}
    if not two:
        lanes = [(0.5, 0.5)]
    elif motions & _HORIZONTAL:
        lanes = [(0.5, 0.28), (0.5, 0.72)]  # stacked: horizontal lanes
    else:
        lanes = [(0.28, 0.5), (0.72, 0.5)]  # side by side: vertical lanes
    placements = []
    base_phase = rng.uniform(0, 2 * np.pi)
    direction = float(rng.choice([-1.0, 1.0]))
    for k, (obj, (x, y)) in enumerate(zip(objects, lanes)):
        radius = rng.uniform(0.13, 0.16) if two else rng.uniform(0.15, 0.2)
        jitter = rng.uniform(-0.06, 0.06) if not two else rng.uniform(-0.03, 0.03)
        if obj.motion in _HORIZONTAL:
            y += jitter
        elif obj.motion in _VERTICAL:
            x += jitter
        elif obj.motion in _IN_PLACE and not two:
            x, y = x + jitter, y + rng.uniform(-0.06, 0.06)
        if obj.motion == "circling":  # two circlers sit opposite each other on the circle
            phase = base_phase + np.pi * k
        elif obj.motion == "rotating":
            phase = rng.uniform(0, 2 * np.pi)
        else:  # near upright, so a square reads as a square rather than a diamond
            phase = rng.uniform(-0.25, 0.25)
        placements.append(_Placement(radius, x, y, phase, direction))
    return placements


# Motions that repeat within a clip (``object_state`` is periodic in s with a period dividing 1). In a clip
# longer than the model's they go on at the clip's own pace; the frame bounds the others (moving, growing,
# shrinking), which are spread over the longer clip instead. See ``motion_time``.
REPEATING_MOTIONS = ("bouncing", "rotating", "circling")


def motion_time(motion: str, s, span: float = 1.0):
    """``object_state``'s s for the frame at clip time ``s`` (in [0, 1]) of a clip ``span`` clips long.

    A repeating motion goes on at one clip's pace (s * span: a 3x clip bounces three times as often); a
    bounded one is spread over the clip (s: the same path, ``span`` times slower), so it stays in frame.
    ``span`` 1 is the model's own clip; ``pace_span`` gives it for a frame count.
    """
    if not span > 0:
        raise ValueError(f"span must be > 0, got {span}")
    return s * span if motion in REPEATING_MOTIONS else s


def pace_span(num_frames: int, clip_frames: int) -> float:
    """The ``span`` of a ``num_frames`` clip at the pace of a ``clip_frames`` one (frames evenly spaced over
    [0, 1] in both): (num_frames - 1) / (clip_frames - 1), e.g. 47 / 15 for 48 frames at a 16-frame pace."""
    return (num_frames - 1) / max(1, clip_frames - 1)


def object_state(motion: str, p: _Placement, s: float) -> tuple[float, float, float, float]:
    """(x, y, radius, angle) at clip time s in [0, 1]; every motion is visible within 16 frames."""
    x, y, r, angle = p.x, p.y, p.radius, p.phase
    if motion == "moving left":
        x = p.x + 0.25 - 0.5 * s
    elif motion == "moving right":
        x = p.x - 0.25 + 0.5 * s
    elif motion == "moving up":
        y = p.y + 0.25 - 0.5 * s
    elif motion == "moving down":
        y = p.y - 0.25 + 0.5 * s
    elif motion == "bouncing":  # two full |sin| periods, starting on the floor
        floor = 1.0 - r - 0.05
        y = floor - 0.42 * abs(np.sin(2 * np.pi * s))
    elif motion == "rotating":
        angle = p.phase + p.direction * np.pi * s
    elif motion == "growing":
        r = p.radius * (0.5 + 0.8 * s)
    elif motion == "shrinking":
        r = p.radius * (1.3 - 0.8 * s)
    elif motion == "circling":  # one full turn around the frame centre
        theta = p.phase + p.direction * 2 * np.pi * s
        x, y = 0.5 + 0.25 * np.cos(theta), 0.5 + 0.25 * np.sin(theta)
        angle = 0.0
    return x, y, r, angle


def shape_sdf(shape: str, px, py, r: float, angle: float):
    """Signed distance (negative inside) of a shape of size r centred at the origin, rotated by angle.

    Circle radius r; square of half-side 0.85r; equilateral triangle of circumradius 1.3r (apex up
    at angle 0). The polygon distances are exact inside and a close bound outside, enough for AA.
    """
    if shape == "circle":
        return np.hypot(px, py) - r
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * px + s * py, -s * px + c * py  # rotate points by -angle
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.85 * r
    if shape == "triangle":
        dist = None
        for k in range(3):  # outward edge normals at 90, 210, 330 degrees (y down, apex up)
            a = np.pi / 2 + 2 * np.pi * k / 3
            d = u * np.cos(a) + v * np.sin(a) - 0.65 * r  # inradius = circumradius / 2
            dist = d if dist is None else np.maximum(dist, d)
        return dist
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


# ----------------------------------------------------------------------------- rendering
def _supersample_factor(height: int, width: int) -> int:
    return int(np.clip(np.ceil(128 / min(height, width)), 2, 8))


def _grid(height: int, width: int, ss: int):
    """Sample positions in normalised (x, y), plus the pixel unit min(H, W)."""
    ys = (np.arange(height * ss) + 0.5) / (height * ss)
    xs = (np.arange(width * ss) + 0.5) / (width * ss)
    return np.meshgrid(xs, ys)


def _area_downsample(image, ss: int):
    h, w = image.shape[0] // ss, image.shape[1] // ss
    return image.reshape(h, ss, w, ss, *image.shape[2:]).mean(axis=(1, 3))


def _waves(gx, gy, rng, count: int, max_freq: float):
    """Smooth random texture in [-1, 1]: a sum of random plane waves (resolution independent)."""
    total = np.zeros_like(gx)
    for _ in range(count):
        fx, fy = rng.uniform(-max_freq, max_freq, 2)
        total += np.sin(2 * np.pi * (fx * gx + fy * gy) + rng.uniform(0, 2 * np.pi))
    return total / np.sqrt(count / 2)


def _lerp(a, b, t):
    return np.asarray(a, float) + (np.asarray(b, float) - np.asarray(a, float)) * t[..., None]


def render_background(background: str, gx, gy, aspect: float, rng) -> np.ndarray:
    """Float RGB background on the sample grid (gx, gy normalised; aspect = W / H)."""
    ends = BACKGROUND_COLOURS[background]
    if background in ("black", "gray"):
        return np.broadcast_to(np.asarray(ends[0], float), gx.shape + (3,)).copy()
    if background == "sky":
        return _lerp(ends[0], ends[1], gy)
    if background == "grass":
        t = np.clip(0.5 + 0.25 * _waves(gx, gy, rng, 6, 3.0), 0, 1)
        img = _lerp(ends[0], ends[1], t)
        blades = np.sin(2 * np.pi * (14 * gx * aspect + 1.5 * np.sin(6 * gy)))  # vertical blade stripes
        return img + 10.0 * blades[..., None]
    if background == "sea":
        img = _lerp(ends[1], ends[0], gy)
        swell = np.sin(2 * np.pi * (7 * gy + 0.06 * np.sin(2 * np.pi * 2 * gx * aspect + rng.uniform(0, 6))))
        return img + 14.0 * np.clip(swell - 0.4, 0, None)[..., None] * np.array([1.0, 1.2, 1.0])
    if background == "night":
        img = _lerp(ends[0], ends[1], 1 - gy)
        for _ in range(int(rng.integers(18, 30))):
            sx, sy, size = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.006, 0.012)
            inside = np.hypot((gx - sx) * aspect, gy - sy) < size
            img[inside] = (235, 235, 255)
        return img
    raise ValueError(f"unknown background {background!r}; expected one of {BACKGROUNDS}")


def _pastel(colour, amount=0.45):
    return np.asarray(colour, float) * (1 - amount) + 255 * amount


def default_times(num_frames: int) -> np.ndarray:
    """The clip times ``render_clip`` uses when given none: evenly spaced over [0, 1] (one frame: 0)."""
    if num_frames < 1:
        raise ValueError(f"need num_frames >= 1, got {num_frames}")
    return np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)


def render_clip(spec: ClipSpec, num_frames: int = 16, height: int = 32, width: int = 32,
                style: str | None = None, times: np.ndarray | None = None, span: float = 1.0) -> np.ndarray:
    """Render ``spec`` as a uint8 (T, H, W, 3) video at any size and frame count.

    ``times`` (values in [0, 1], clip start to end) renders just those instants instead of
    ``num_frames`` evenly spaced ones: the image datasets draw one frame without rendering a clip.
    ``span``: how many clips long this clip lasts (``motion_time``; ``pace_span`` for a frame count).
    """
    if num_frames < 1 or height < 4 or width < 4:
        raise ValueError(f"need num_frames >= 1 and height, width >= 4, got {num_frames}, {height}, {width}")
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES} or None")
    if style == "pixel art":
        return _pixel_art(spec, num_frames, height, width, times, span)
    rng = np.random.default_rng(spec.seed)
    placements = _placements(spec, rng)
    ss = _supersample_factor(height, width)
    gx, gy = _grid(height, width, ss)
    unit = min(height, width)
    px_scale_x, px_scale_y = width / unit, height / unit  # normalised -> min(H, W) units
    background = render_background(spec.background, gx, gy, width / height, rng)
    if style == "line drawing":
        background = np.full_like(background, 245.0)
    elif style == "watercolor":
        paper = np.array([242.0, 236.0, 224.0])
        background = 0.55 * background + 0.45 * paper
    if times is None:
        times = default_times(num_frames)
    times = np.asarray(times, float)
    num_frames = len(times)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t, s in enumerate(times):
        img = background.copy()
        for obj, place in zip(spec.objects, placements):
            x, y, r, angle = object_state(obj.motion, place, float(motion_time(obj.motion, s, span)))
            sdf = shape_sdf(obj.shape, (gx - x) * px_scale_x, (gy - y) * px_scale_y, r, angle)
            colour = np.asarray(PALETTE[obj.colour], float)
            if style == "line drawing":
                cover = (np.abs(sdf) < 0.022).astype(float)
                colour = colour * 0.35
            elif style == "watercolor":
                cover = (sdf < 0).astype(float)
                colour = _pastel(colour)
            else:
                cover = (sdf < 0).astype(float)
            img = img * (1 - cover[..., None]) + colour * cover[..., None]
        frame = _area_downsample(img, ss)
        if style == "watercolor":
            frame = _watercolor_finish(frame, spec.seed, unit)
        frames[t] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    return frames


def _watercolor_finish(frame, seed, unit):
    """Soft bleeding edges, darker pigment rims and paper grain, all scaled to the frame size."""
    import cv2

    sigma = 0.025 * unit
    soft = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), sigma)
    rim = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), 2.5 * sigma) - soft
    h, w = frame.shape[:2]
    gx, gy = _grid(h, w, 1)
    grain = _waves(gx, gy, np.random.default_rng(seed + 1), 12, 9.0)
    return (soft - 0.25 * np.abs(rim)) * (1 + 0.035 * grain[..., None])


def _pixel_art(spec, num_frames, height, width, times=None, span=1.0):
    """Blocky, posterised look: render at 1/2 (or coarser) resolution, quantise, nearest up-sample."""
    import cv2

    block = max(2, min(height, width) // 16)
    small = render_clip(spec, num_frames, max(4, height // block), max(4, width // block), times=times,
                        span=span)
    levels = 4
    small = (np.round(small.astype(float) / 255 * (levels - 1)) * (255 / (levels - 1))).astype(np.uint8)
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_NEAREST) for f in small])


def sample_clip(seed, num_frames: int = 16, height: int = 32, width: int = 32, style: str | None = None,
                holdout: bool = True):
    """(video, caption, spec) for a seed: the one-liner used by datasets and demos."""
    rng = np.random.default_rng(seed)
    spec = sample_clip_spec(rng, holdout=holdout)
    text = caption(spec, rng)
    return render_clip(spec, num_frames, height, width, style), text, spec


def spec_from_prompt(prompt: str, seed: int = 0) -> ClipSpec:
    """A renderable ClipSpec from a prompt, filling unknown fields at random (for app examples)."""
    rng = np.random.default_rng(seed)
    parsed = parse_prompt(prompt)
    background = parsed.background or str(rng.choice(BACKGROUNDS))
    objects = list(parsed.objects[:2]) or [ObjectSpec(None, None, None)]
    filled = []
    for obj in objects:
        for _ in range(100):
            cand = ObjectSpec(obj.colour or str(rng.choice(COLOURS)), obj.shape or str(rng.choice(SHAPES)),
                              obj.motion or str(rng.choice(MOTIONS)))
            if is_valid_object(*cand.triple, background):
                break
        filled.append(cand)
    if len(filled) == 2 and filled[1].motion not in _compatible_motions(filled[0].motion):
        filled[1] = replace(filled[1], motion=filled[0].motion)
    return ClipSpec(tuple(filled), background, int(rng.integers(2**31 - 1)))


def vocabulary() -> list[str]:
    """Every word a caption of this world can contain (the bundled text encoder's word-level vocabulary).

    Collected from all phrase tables plus the caption glue words, so the tokenizer never has to
    fall back to [UNK] on an in-domain prompt.
    """
    phrases = [*COLOURS, *BACKGROUNDS, *STYLES, *COUNT_WORDS, "a", "an", "and", "is", "are", "in", "style", "two"]
    for table in (MOTION_ING, MOTION_VERB, MOTION_VERB_PLURAL, BACKGROUND_PHRASES, SHAPE_WORDS, COLOUR_WORDS):
        for options in table.values():
            phrases.extend(options)
    phrases.extend(f"{w}s" for options in SHAPE_WORDS.values() for w in options)  # plurals
    phrases.extend(["boxes", "squares", "circles", "triangles"])
    words = {w for phrase in phrases for w in re.findall(r"[a-z0-9]+", phrase.lower())}
    return sorted(words)
