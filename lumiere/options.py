"""Generation options shared by every entry point (library, CLI, app): one definition each.

Importing this module is cheap (no torch / diffusers), so front ends can build their menus and
validation from it before any model loads.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass

from .errors import InputError

# Solver names a request may pick (``lumiere.sampling.make_scheduler`` maps them to diffusers classes).
SAMPLERS = ("dpm++", "ddim", "ddpm", "euler", "unipc")
# Classifier-free guidance above ~20 only saturates colours on pixel-space models: the library's cap.
MAX_GUIDANCE_SCALE = 20.0
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
DEFAULT_STYLE_WEIGHT = 1.0
STYLE_WEIGHT_RANGE = (0.0, 1.0)  # the style's interpolation alpha: 0 = the un-styled model, 1 = the style alone
STRENGTH_RANGE = (0.0, 1.0)  # SDEdit: 0 returns the input, 1 ignores it
DEFAULT_OUTPAINT_BORDER = 0.25  # outpainting: the border generated on every side, as a fraction of the side
MIN_FPS, MAX_FPS = 1.0, 60.0  # playback rate of a written video
DEFAULT_STRENGTH = 0.6  # SDEdit: keeps the input's layout, lets the prompt change its content
DEFAULT_SSR_OVERLAP = 2  # frames shared by neighbouring SSR windows (the paper's App. C)
MAX_PROMPT_CHARS = 500  # prompt and negative prompt, in characters (longer ones are refused, not cut)
# num_frames <= 10 x the model's clip length (the bundled model: 160 frames = 20 s, the longest video the
# front ends accept). Up to ONE_PASS_FRAMES_FACTOR x the clip every frame is generated in one pass; longer
# clips in overlapping windows of that length, BASE_WINDOW_STRIDE_CLIPS x the clip apart, joined by temporal
# MultiDiffusion, so memory stays bounded (``tasks.common.base_windows``). With LONG_CLIP_SHARED_NOISE a text-to-video
# clip longer than the model's clip starts from FreeNoise-style shared noise (``sampling.shared_window_noise``),
# and its noisiest LONG_CLIP_LAYOUT_SHARE of the solver's steps run in windows of the model's clip, one noise block
# apart, each holding the first window's noise: the object and its path are decided where every window agrees
# with the model's own clip, and the remaining steps refine the whole clip as above. The choice is measured in
# docs/research/long-clips.md (benchmarks/bench_long_clips.py).
MAX_FRAMES_FACTOR = 10
ONE_PASS_FRAMES_FACTOR = 4
BASE_WINDOW_STRIDE_CLIPS = 3.0
LONG_CLIP_SHARED_NOISE = True
SHARED_NOISE_STRIDE_CLIPS = 0.25  # the shared noise's shuffled blocks, in clips (FreeNoise: 4 of 16 frames)
LONG_CLIP_LAYOUT_SHARE = 0.5  # 0: shared noise only, every step over base_windows


def frame_counts(base_frames: int, factor: int) -> range:
    """Every ``num_frames`` a model accepts: the multiples of its temporal down-sampling factor
    (``PipelineConfig.temporal_downsampling_factor``), from the factor up to ``MAX_FRAMES_FACTOR`` x its
    clip length ``base_frames``.

    Why: the STUNet halves the frame count at each of its log2(factor) temporal down-sampling levels
    and doubles it back, so a clip of any multiple of the factor comes back whole (the bundled model:
    factor 4, so 4, 8, 12, ... 64 frames); the clip length itself is not a constraint.
    ``request.check_num_frames`` applies this rule for every front end.
    """
    factor = max(1, int(factor))
    return range(factor, max(factor, MAX_FRAMES_FACTOR * int(base_frames)) + 1, factor)


def frame_rule(base_frames: int, factor: int) -> str:
    """:func:`frame_counts` in words, for messages and UI hints: "multiples of 4 from 4 to 64 (...)"."""
    counts = frame_counts(base_frames, factor)
    return (f"multiples of {counts.step} from {counts.start} to {counts[-1]} (the model's temporal down-sampling "
            f"factor is {counts.step}; at most {MAX_FRAMES_FACTOR} x its {base_frames}-frame clip)")


def base_window_stride(base_frames: int) -> int:
    """Frames between the starts of neighbouring base windows (``BASE_WINDOW_STRIDE_CLIPS`` x the clip, at
    least 1 and at most the window less one frame, so neighbours always share a frame)."""
    window = ONE_PASS_FRAMES_FACTOR * int(base_frames)
    return max(1, min(window - 1, round(BASE_WINDOW_STRIDE_CLIPS * int(base_frames))))


def shared_noise_stride(base_frames: int) -> int:
    """Frames per shuffled block of a long clip's shared noise (``SHARED_NOISE_STRIDE_CLIPS`` x the clip,
    in [1, clip]; ``sampling.shared_window_noise``)."""
    return max(1, min(int(base_frames), round(SHARED_NOISE_STRIDE_CLIPS * int(base_frames))))


@dataclass(frozen=True)
class InputLimits:
    """What an input file may hold; ``lumiere.io`` refuses a file over a limit from its header, before
    decoding any of it, so a small file cannot expand into gigabytes.

    The defaults are every front end's (CLI, app, ``lumiere.io.read_*``); a library caller who knows
    its inputs can pass larger ones.
    """

    max_video_seconds: float = 20.0
    max_video_side: int = 1920                # longest side of a video, pixels
    max_decode_pixels: int = 1_300_000_000    # width x height x frames of the whole file (20 s of 1080p30: 1.24e9)
    max_image_side: int = 4096                # phone photos (4032 x 3024) pass
    max_image_pixels: int = 4096 * 4096


DEFAULT_INPUT_LIMITS = InputLimits()


def check_keys(values: dict | None, allowed, where: str) -> dict:
    """``values`` without its comment keys (those starting with "_"), after checking that every other
    key is in ``allowed``.

    Why: a config key nobody reads is almost always a typo; silently dropping it would run with the
    default instead of the value the author meant.

    Raises:
        InputError: ``values`` is not a mapping, or it has a key not in ``allowed`` (the message names
            it, ``where`` it is and the allowed keys).
    """
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InputError(f"{where} must be a JSON object, got {type(values).__name__}")
    values = {k: v for k, v in values.items() if not str(k).startswith("_")}
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise InputError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in {where}; "
                         f"allowed: {', '.join(sorted(allowed))} (keys starting with '_' are comments)")
    return values


def bounded(default, *, min=None, above=None):  # noqa: A002 (``min`` reads as the config's rule)
    """A dataclass field with ``default`` whose value :func:`check_types` requires to be >= ``min`` or
    > ``above`` (None passes: the field's "unset")."""
    return dataclasses.field(default=default, metadata={"min": min, "above": above})


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _expected(value, hint) -> str | None:
    """None when ``value`` fits type ``hint``, else what the hint asks for, in words. Only JSON's types are
    checked (bool, int, float, str, null, lists, objects); other hints (sub-sections parsed on their own,
    ``Any``) pass."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        wants = [_expected(value, arm) for arm in args]
        return None if None in wants else " or ".join(wants)
    if hint is type(None):
        return None if value is None else "null"
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:  # JSON 2.0 and true are not counts
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            return "a JSON object"
        item = args[1] if len(args) == 2 else typing.Any
        bad = next((_expected(v, item) for v in value.values() if _expected(v, item)), None)
        return None if bad is None else f"a JSON object whose values are each {bad}"
    if hint is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            return "a list"
        if len(args) == 2 and args[1] is Ellipsis:
            items = [args[0]] * len(value)
            shape = "a list"
        elif args:
            if len(value) != len(args):
                return f"a list of {len(args)} values"
            items, shape = list(args), f"a list of {len(args)} values"
        else:
            return None
        bad = next((want for v, item in zip(value, items) if (want := _expected(v, item))), None)
        return None if bad is None else f"{shape}, each {bad}"
    return None


def check_types(cls, values: dict, where: str) -> dict:
    """``values`` (keys of dataclass ``cls``) checked against the fields' type annotations and the bounds
    of :func:`bounded` fields; lists given for tuple fields come back as tuples, every other value as it is
    (an int given for a float field stays an int, so what a config says is what runs).

    Why at parse time: a string where a number belongs ("lr": "1e-3"), a negative step count or a window of
    0 frames would otherwise pass and fail (or silently misbehave) hours later, far from the config line.

    Raises:
        InputError: naming ``where``.key, what it must be and the value given.
    """
    hints, fields = _hints(cls), {f.name: f for f in dataclasses.fields(cls)}
    checked = {}
    for key, value in values.items():
        want = _expected(value, hints.get(key, typing.Any))
        if want is not None:
            raise InputError(f"{where}.{key} must be {want}, got {value!r}")
        meta = fields[key].metadata if key in fields else {}
        if value is not None and meta.get("min") is not None and not value >= meta["min"]:
            raise InputError(f"{where}.{key} must be >= {meta['min']}, got {value!r}")
        if value is not None and meta.get("above") is not None and not value > meta["above"]:
            raise InputError(f"{where}.{key} must be > {meta['above']}, got {value!r}")
        checked[key] = tuple(value) if isinstance(value, list) and _is_tuple(hints.get(key)) else value
    return checked


def _is_tuple(hint) -> bool:
    if hint is tuple or typing.get_origin(hint) is tuple:
        return True
    return any(_is_tuple(arm) for arm in typing.get_args(hint)) if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else False


def from_mapping(cls, values: dict | None, where: str, ignored: tuple[str, ...] = (), exclude: tuple[str, ...] = ()):
    """Build dataclass ``cls`` from the config section ``values``: keys checked (:func:`check_keys`; ``ignored``
    keys are allowed but unused, ``exclude``d fields are not the section's to set), the class's own
    ``__post_init__`` rules (their messages are the more specific), then every value's type and bounds
    (:func:`check_types`; also when a wrong type made ``__post_init__`` fail on something else).

    Raises:
        InputError: an unknown key, a value of the wrong type or out of range (naming ``where``.key), or
            what ``cls`` itself refuses.
    """
    fields = {f.name for f in dataclasses.fields(cls)} - set(exclude)
    values = check_keys(values, fields | set(ignored), where)
    values = {k: tuple(v) if isinstance(v, list) and _is_tuple(_hints(cls).get(k)) else v
              for k, v in values.items() if k in fields}
    try:
        made = cls(**values)
    except InputError:
        raise
    except (TypeError, ValueError, ArithmeticError):  # a rule tripped over a value of the wrong type
        check_types(cls, values, where)
        raise
    check_types(cls, values, where)
    return made


@dataclass(frozen=True)
class GenerationDefaults:
    """What a request uses for an option it leaves out; a model overrides them in ``config["defaults"]``."""

    num_inference_steps: int = bounded(25, min=1)
    guidance_scale: float = bounded(5.0, min=0)
    sampler: str = "dpm++"
    negative_prompt: str = ""

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise InputError(f"defaults.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")

    @classmethod
    def from_config(cls, values: dict | None, where: str = "defaults") -> "GenerationDefaults":
        return from_mapping(cls, values, where)


NOISE_PRIOR_KINDS = ("independent", "mixed", "progressive")


@dataclass(frozen=True)
class NoisePrior:
    """How a base video's diffusion noise is correlated across frames (PYoCo, Ge et al., 2023).

    "independent": i.i.d. per frame (the Lumiere paper). "mixed": every frame's noise is a shared draw
    plus its own, eps_f = (alpha * shared + own_f) / sqrt(1 + alpha^2). "progressive": each frame's noise
    continues the previous one's, eps_f = (alpha * eps_{f-1} + own_f) / sqrt(1 + alpha^2). Every frame
    stays N(0, I), so a T2I's per-frame input statistics do not change; any two frames correlate by
    alpha^2 / (1 + alpha^2) (mixed), frames d apart by (alpha / sqrt(1 + alpha^2))^d (progressive).
    Why: a T2I inflated into video is then fine-tuned on noise whose frames are alike, as real frames
    are, which PYoCo reports makes video fine-tuning much cheaper (its effect on the bundled recipe:
    docs/research/). A model must be trained and sampled with the same prior, so it is part of the
    model (``config["noise_prior"]``).
    """

    kind: str = "independent"
    alpha: float = 1.0

    def __post_init__(self):
        if self.kind not in NOISE_PRIOR_KINDS:
            raise InputError(f"noise_prior.kind must be one of {', '.join(NOISE_PRIOR_KINDS)}, got {self.kind!r}")
        if not self.alpha >= 0:
            raise InputError(f"noise_prior.alpha must be >= 0, got {self.alpha}")

    @classmethod
    def from_config(cls, values: dict | None, where: str = "noise_prior") -> "NoisePrior":
        return from_mapping(cls, values, where)


LOW_RES_CONSISTENCY_MODES = ("every_step", "final", "off")
# Keys of a model config's "ssr" section that say how training builds the SSR U-Net, not how it runs.
SSR_BUILD_KEYS = ("unet", "pretrained", "subfolder", "temporal")


@dataclass(frozen=True)
class SSROptions:
    """The super-resolution stage's settings, from a model's ``config["ssr"]``.

    Projecting x0 onto the low-res input every step (keeping ``detail_gain`` of the model's own detail)
    makes the output agree with the input it up-samples while the model adds the detail; replacing the
    known region of x0 with the user's pixels every step lowers the seam at the mask edge. The defaults
    are measured in README ("SSR").

    ``strength`` < 1 starts the SSR from the bicubic up-sampling noised to that point of the schedule
    (SDEdit) and runs only the last ``strength`` of the steps. Why: with the projection, the low
    frequencies are fixed by the input from the first step, so the early, noisiest steps only cost
    time (measured in docs/research/).
    """

    scale: int = bounded(1, min=1)    # output side / base side
    window: int = bounded(8, min=1)   # frames per MultiDiffusion window
    noise_level: int = bounded(100, min=0)  # noise augmentation of the up-sampled input (a training timestep)
    max_noise_level: int = bounded(250, min=1)  # training draws augmentation levels below this
    num_inference_steps: int = bounded(20, min=1)
    strength: float = 1.0             # start from the up-sampled input noised this far (1 = pure noise)
    guidance_scale: float = bounded(1.0, min=0)
    sampler: str | None = None        # None: the model's default sampler
    low_res_consistency: str = "every_step"  # project x0 onto the low-res input: every step, at the end, or off
    detail_gain: float = bounded(0.15, min=0)  # how much of the model's own detail the projection keeps
    known_pixels_in_loop: bool = True  # also replace the known region of x0 by the user's pixels every step
    feather: int | None = bounded(None, min=0)  # output pixels of the soft edge around pasted user pixels (None: scale)

    def __post_init__(self):
        if self.low_res_consistency not in LOW_RES_CONSISTENCY_MODES:
            raise InputError(f"ssr.low_res_consistency must be 'every_step', 'final' or 'off', "
                             f"got {self.low_res_consistency!r}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise InputError(f"ssr.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if not 0.0 < self.strength <= 1.0:
            raise InputError(f"ssr.strength must be in (0, 1], got {self.strength}")

    def steps_run(self, num_inference_steps: int | None = None) -> int:
        """Denoising steps one SSR pass runs: the last ``strength`` of ``num_inference_steps`` (>= 1)."""
        total = self.num_inference_steps if num_inference_steps is None else num_inference_steps
        return max(1, min(total, round(total * self.strength)))

    @property
    def feather_pixels(self) -> int:
        return self.scale if self.feather is None else int(self.feather)

    @classmethod
    def from_config(cls, values: dict | None, where: str = "ssr") -> "SSROptions":
        return from_mapping(cls, values, where, ignored=SSR_BUILD_KEYS)



@dataclass(frozen=True)
class PipelineConfig:
    """The inference config of a pipeline directory (``model_index.json``'s "config"), typed.

    ``build.pipeline_config`` writes it; ``LumierePipeline`` reads every model fact through it.
    """

    base_resolution: tuple[int, int, int]  # (frames, height, width) of the base model's clip
    fps: float = bounded(8.0, above=0)
    temporal_downsampling_factor: int = bounded(1, min=1)   # N: num_frames must be a multiple of it
    ssr: SSROptions = SSROptions()
    defaults: GenerationDefaults = GenerationDefaults()
    noise_prior: NoisePrior = NoisePrior()  # the base and conditional models' noise across frames

    @classmethod
    def from_config(cls, values: dict) -> "PipelineConfig":
        """Parse ``values``; an unknown key in it or in its "ssr" / "defaults" / "noise_prior" sections is an
        InputError."""
        values = check_keys(values, {f.name for f in dataclasses.fields(cls)}, "the pipeline config")
        if "base_resolution" not in values:
            raise InputError("the pipeline config has no 'base_resolution'")
        check_types(cls, {k: values[k] for k in ("base_resolution", "fps", "temporal_downsampling_factor")
                          if k in values}, "the pipeline config")
        frames, height, width = (int(v) for v in values["base_resolution"])
        return cls(base_resolution=(frames, height, width), fps=float(values.get("fps", 8)),
                   temporal_downsampling_factor=int(values.get("temporal_downsampling_factor", 1)),
                   ssr=SSROptions.from_config(values.get("ssr")),
                   defaults=GenerationDefaults.from_config(values.get("defaults")),
                   noise_prior=NoisePrior.from_config(values.get("noise_prior")))
