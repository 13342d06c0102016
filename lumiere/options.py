"""Generation options shared by every entry point (library, CLI, app): one definition each.

Importing this module is cheap (no torch / diffusers), so front ends can build their menus and
validation from it before any model loads.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import InputError

# Solver names a request may pick (``lumiere.sampling.make_scheduler`` maps them to diffusers classes).
SAMPLERS = ("dpm++", "ddim", "ddpm", "euler", "unipc")
# Classifier-free guidance above ~20 only saturates colours on pixel-space models: the library's cap.
MAX_GUIDANCE_SCALE = 20.0
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
DEFAULT_STYLE_WEIGHT = 1.0
DEFAULT_STRENGTH = 0.6  # SDEdit: keeps the input's layout, lets the prompt change its content
DEFAULT_SSR_OVERLAP = 2  # frames shared by neighbouring SSR windows (the paper's App. C)
MAX_PROMPT_CHARS = 500  # prompt and negative prompt, in characters (longer ones are refused, not cut)
# num_frames <= 10 x the model's clip length (the bundled model: 160 frames = 20 s, the longest video the
# front ends accept). Up to ONE_PASS_FRAMES_FACTOR x the clip every frame is generated in one pass; longer
# clips in overlapping windows of that length joined by temporal MultiDiffusion, so memory stays bounded.
MAX_FRAMES_FACTOR = 10
ONE_PASS_FRAMES_FACTOR = 4


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


def base_windows(num_frames: int, base_frames: int, circular: bool = False) -> list[tuple[int, int]]:
    """The [start, end) frame windows the base model samples ``num_frames`` in: one window up to
    ``ONE_PASS_FRAMES_FACTOR`` x its clip length ``base_frames``, beyond that windows of that length
    overlapping by one clip length (temporal MultiDiffusion, as the SSR's windows); ``circular`` (a loop):
    the windows go around the clip (``multidiffusion.temporal_windows``)."""
    from .multidiffusion import temporal_windows

    window = ONE_PASS_FRAMES_FACTOR * int(base_frames)
    return temporal_windows(int(num_frames), window, min(int(base_frames), window - 1), circular)


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


def from_mapping(cls, values: dict | None, where: str, ignored: tuple[str, ...] = ()):
    """Build dataclass ``cls`` from ``values`` (see :func:`check_keys`); ``ignored`` keys are allowed but unused."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = check_keys(values, fields | set(ignored), where)
    return cls(**{k: v for k, v in values.items() if k in fields})


@dataclass(frozen=True)
class GenerationDefaults:
    """What a request uses for an option it leaves out; a model overrides them in ``config["defaults"]``."""

    num_inference_steps: int = 25
    guidance_scale: float = 5.0
    sampler: str = "dpm++"
    negative_prompt: str = ""

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise InputError(f"defaults.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")

    @classmethod
    def from_config(cls, values: dict | None) -> "GenerationDefaults":
        return from_mapping(cls, values, "defaults")


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
    def from_config(cls, values: dict | None) -> "NoisePrior":
        return from_mapping(cls, values, "noise_prior")


LOW_RES_CONSISTENCY_MODES = ("every_step", "final", "off")
# Keys of a model config's "ssr" section that say how training builds the SSR U-Net, not how it runs.
SSR_BUILD_KEYS = ("unet", "pretrained", "subfolder")


@dataclass(frozen=True)
class SSROptions:
    """The super-resolution stage's settings, from a model's ``config["ssr"]``.

    Defaults measured on the bundled model (README, "SSR"): projecting x0 onto the low-res input
    every step with the model's detail at 0.15 beats both plain SSR and bicubic on PSNR, keeps the
    input's structure and brings the grain to the ground truth's level; replacing the known region
    of x0 with the user's pixels every step lowers the seam at the mask edge.

    ``strength`` < 1 starts the SSR from the bicubic up-sampling noised to that point of the schedule
    (SDEdit) and runs only the last ``strength`` of the steps. Why: with the projection, the low
    frequencies are fixed by the input from the first step, so the early, noisiest steps only cost
    time (on the bundled model the last 2 of 8 steps give the same fidelity as all 8).
    """

    scale: int = 1                    # output side / base side
    window: int = 8                   # frames per MultiDiffusion window
    noise_level: int = 100            # noise augmentation of the up-sampled input (a training timestep)
    max_noise_level: int = 250        # training draws augmentation levels below this
    num_inference_steps: int = 20
    strength: float = 1.0             # start from the up-sampled input noised this far (1 = pure noise)
    guidance_scale: float = 1.0
    sampler: str | None = None        # None: the model's default sampler
    low_res_consistency: str = "every_step"  # project x0 onto the low-res input: every step, at the end, or off
    detail_gain: float = 0.15         # how much of the model's own detail the projection keeps
    known_pixels_in_loop: bool = True  # also replace the known region of x0 by the user's pixels every step
    feather: int | None = None        # output pixels of the soft edge around pasted user pixels (None: scale)

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
    def from_config(cls, values: dict | None) -> "SSROptions":
        return from_mapping(cls, values, "ssr", ignored=SSR_BUILD_KEYS)



@dataclass(frozen=True)
class PipelineConfig:
    """The inference config of a pipeline directory (``model_index.json``'s "config"), typed.

    ``build.pipeline_config`` writes it; ``LumierePipeline`` reads every model fact through it.
    """

    base_resolution: tuple[int, int, int]  # (frames, height, width) of the base model's clip
    fps: float = 8.0
    temporal_downsampling_factor: int = 1   # N: num_frames must be a multiple of it
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
        frames, height, width = (int(v) for v in values["base_resolution"])
        return cls(base_resolution=(frames, height, width), fps=float(values.get("fps", 8)),
                   temporal_downsampling_factor=int(values.get("temporal_downsampling_factor", 1)),
                   ssr=SSROptions.from_config(values.get("ssr")),
                   defaults=GenerationDefaults.from_config(values.get("defaults")),
                   noise_prior=NoisePrior.from_config(values.get("noise_prior")))
