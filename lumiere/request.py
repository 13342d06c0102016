"""Requests: what a caller asks the pipeline for, as values; and the one place they are validated.

Each task has a request dataclass (:class:`TextToVideo`, :class:`ImageToVideo`, :class:`Inpaint`,
:class:`Cinemagraph`, :class:`VideoToVideo`, :class:`TextToImage`, :class:`ConditionalSample`,
:class:`SuperResolve`) sharing one :class:`Options` type. A request holds no generator or callback (the
seed is a field), so it can be stored, logged as one line and replayed: ``pipe.generate(request)``.
``request.resolve(facts)`` checks every value against the loaded model's facts (:class:`ModelFacts`) and
fills its defaults, giving the :class:`GenerationSettings` the task programs (``lumiere.tasks``) read.

The rules every front end shares (prompt length, frame counts: :func:`check_text`,
:func:`check_num_frames`) live here too, and importing this module is cheap (torch loads on first use),
so the app and the CLI check values before a model loads.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import re
import secrets
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .errors import InputError, InputTypeError
from .options import (DEFAULT_SSR_OVERLAP, DEFAULT_STRENGTH, MAX_FRAMES_FACTOR, MAX_GUIDANCE_SCALE, MAX_PROMPT_CHARS,
                      MAX_SEED, SAMPLERS, STRENGTH_RANGE, STYLE_WEIGHT_RANGE, GenerationDefaults, SSROptions, frame_counts,
                      frame_rule)
from .progress import Callback, Progress

if TYPE_CHECKING:
    import torch


def positive_int(value, name: str) -> int:
    """``value`` as an int >= 1 (an integral float is accepted; a bool is not)."""
    integral = isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise InputTypeError(f"{name} must be an integer, got {value!r}")
    if int(value) < 1:
        raise InputError(f"{name} must be at least 1, got {value}")
    return int(value)


def check_text(text: str, name: str = "prompt") -> str:
    """``text`` stripped, refused when longer than ``MAX_PROMPT_CHARS`` (never cut: a cut prompt would
    silently generate something else). ``name`` is the field as the caller's user knows it ("prompt",
    "--negative-prompt", "Negative prompt (negative_prompt)")."""
    text = text.strip()
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"{name} is too long: {len(text)} characters, the limit is {MAX_PROMPT_CHARS}; shorten it.")
    return text


def check_num_frames(frames: int, base_frames: int, factor: int, name: str = "num_frames") -> int:
    """The one frame rule (``options.frame_counts``): a multiple of the model's temporal down-sampling
    factor, from the factor up to ``MAX_FRAMES_FACTOR`` x the model's clip length ``base_frames``.
    ``name`` is the field as the caller's user knows it ("num_frames", "--frames").

    Raises:
        InputError: ``frames`` breaks the rule (the message gives the accepted values).
    """
    counts = frame_counts(base_frames, factor)
    low, high, step = counts.start, counts[-1], counts.step
    rule = f"this model takes {frame_rule(base_frames, factor)}"
    if frames < low or frames > high:
        raise InputError(f"{name} must be between {low} and {high} for this model, got {frames}: {rule}.")
    if frames % step:
        below = frames - frames % step
        hint = f"{below} or {below + step}" if below >= low and below + step <= high else str(max(low, below))
        raise InputError(f"{name} must be a multiple of {step} for this model, got {frames} (try {hint}): {rule}.")
    return frames


def in_range(value, low: float, high: float, name: str) -> float:
    """``value`` as a float in [low, high]."""
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise InputError(f"{name} must be between {low:g} and {high:g}, got {number:g}")
    return number


def guidance_value(value, default: float, name: str = "guidance_scale") -> float:
    """A classifier-free guidance scale in [0, MAX_GUIDANCE_SCALE] (``default`` when ``value`` is None)."""
    return in_range(value if value is not None else default, 0.0, MAX_GUIDANCE_SCALE, name)


def check_seed(seed, name: str = "seed") -> None:
    """A seed is None or an int; negative draws a fresh one; above ``MAX_SEED`` is refused."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputTypeError(f"{name} must be an integer or None, got {type(seed).__name__}")
    if int(seed) > MAX_SEED:
        raise InputError(f"{name} must be at most 2^63-1 = {MAX_SEED}, got {int(seed)} "
                         "(leave it out, or pass a negative seed, for a random one)")


def check_values(prompt, options: "Options", *, strength: float | None = None,
                 names: dict[str, str] | None = None) -> None:
    """Every check of a request that needs no model (types, ranges, text length, sampler names), so a front
    end can refuse a mistake before the model loads. ``names`` maps a field to the name its user knows
    (``{"num_inference_steps": "--steps"}``); the model-dependent rules (frame counts, style names) are
    checked when the request is resolved (``Request.resolve``).

    Raises:
        InputTypeError: a value of the wrong type. InputError: a value out of range.
    """
    names = names or {}

    def name(field_name: str) -> str:
        return names.get(field_name, field_name)

    if not isinstance(prompt, str):
        raise InputTypeError(f"{name('prompt')} must be a string, got {type(prompt).__name__}")
    check_text(prompt, name("prompt"))
    if options.negative_prompt is not None:
        if not isinstance(options.negative_prompt, str):
            raise InputTypeError(f"{name('negative_prompt')} must be a string")
        check_text(options.negative_prompt, name("negative_prompt"))
    for field_name in ("num_frames", "num_inference_steps"):
        if getattr(options, field_name) is not None:
            positive_int(getattr(options, field_name), name(field_name))
    if options.guidance_scale is not None:
        guidance_value(options.guidance_scale, 0.0, name("guidance_scale"))
    if options.sampler is not None and options.sampler not in SAMPLERS:
        raise InputError(f"unknown {name('sampler')} {options.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    check_seed(options.seed, name("seed"))
    positive_int(options.num_videos_per_prompt, name("num_videos_per_prompt"))
    in_range(options.style_weight, *STYLE_WEIGHT_RANGE, name("style_weight"))
    if not isinstance(options.loop, (bool, np.bool_)):
        raise InputTypeError(f"{name('loop')} must be True or False, got {options.loop!r}")
    if strength is not None:
        in_range(strength, *STRENGTH_RANGE, name("strength"))


def random_seed() -> int:
    """A fresh seed for a request that gave none (from the OS, so the global RNGs are never touched)."""
    return secrets.randbelow(2**31)


def make_generator(seed: int | None = None, generator: torch.Generator | None = None) -> tuple[torch.Generator, int | None]:
    """The request's random source and the seed it came from (None when the caller passed a generator).

    ``seed`` None or negative draws a fresh seed; above ``MAX_SEED`` is an InputError. A ``generator``
    must live on the CPU: every random draw happens there, so a seed gives the same video on any device.
    """
    import torch

    if generator is not None:
        if seed is not None:
            raise InputError("pass either seed or generator, not both")
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise InputTypeError("generator must be a CPU torch.Generator")
        return generator, None
    check_seed(seed)
    if seed is None or int(seed) < 0:
        seed = random_seed()
    return torch.Generator(device="cpu").manual_seed(int(seed)), int(seed)


@dataclass(frozen=True)
class GenerationSettings:
    """A generation's settings, complete and checked: a request resolved against a model (:meth:`create`).

    Attributes:
        prompt / negative_prompt: text; the negative prompt is the unconditional branch of CFG.
        num_frames: frames of the base clip (a multiple of the model's temporal factor).
        num_inference_steps: base-model denoising steps.
        guidance_scale: classifier-free guidance in [0, MAX_GUIDANCE_SCALE]; 1 = no guidance.
        sampler: one of ``options.SAMPLERS``.
        seed: the seed the generator was seeded with; None when the caller passed a generator.
        generator: CPU generator every random draw of this request comes from.
        style / style_weight: style name (None = none) and its interpolation alpha in [0, 1].
        super_resolve: whether SSR runs after the base model (False when the model has none).
        loop: generate a seamless loop (the last frame flows into the first; see ``STUNet.looping``).
        ssr_steps: SSR denoising steps (0 when ``super_resolve`` is False).
        callback: ``callback(step, total)`` after every denoising step of every stage, or
            ``callback(step, total, x0)`` with the step's clean-sample estimate (``progress.Progress``).
    """

    prompt: str
    negative_prompt: str
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    sampler: str
    seed: int | None
    generator: torch.Generator = field(repr=False, compare=False)
    style: str | None = None
    style_weight: float = 1.0
    super_resolve: bool = False
    ssr_steps: int = 0
    loop: bool = False
    callback: Callback | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(cls, prompt: str, *, defaults: GenerationDefaults, base_frames: int, frame_multiple: int,
               styles: list[str], ssr_steps: int | None, num_frames: int | None = None,
               num_inference_steps: int | None = None, guidance_scale: float | None = None,
               negative_prompt: str | None = None, sampler: str | None = None, seed: int | None = None,
               generator: torch.Generator | None = None, style: str | None = None, style_weight: float = 1.0,
               super_resolve: bool = True, callback: Callback | None = None,
               loop: bool = False) -> "GenerationSettings":
        """Fill the model's ``defaults`` and check every value.

        ``ssr_steps`` None means the model has no SSR, so ``super_resolve`` is ignored.

        Raises:
            InputTypeError: a value of the wrong type (prompt, seed, generator, frames, steps).
            InputError: a value out of range, a prompt over ``MAX_PROMPT_CHARS``, an unknown sampler or
                style, or frames outside the frame rule (:func:`check_num_frames`, ``frame_multiple`` is
                the model's temporal down-sampling factor).
        """
        check_values(prompt, Options(num_frames=num_frames, num_inference_steps=num_inference_steps,
                                     guidance_scale=guidance_scale, negative_prompt=negative_prompt, sampler=sampler,
                                     style_weight=style_weight, loop=loop))
        frames = positive_int(num_frames if num_frames is not None else base_frames, "num_frames")
        check_num_frames(frames, base_frames, frame_multiple)
        steps = positive_int(num_inference_steps if num_inference_steps is not None else defaults.num_inference_steps,
                             "num_inference_steps")
        guidance = guidance_value(guidance_scale, defaults.guidance_scale)
        sampler = sampler or defaults.sampler
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if style is not None and style not in styles:
            raise InputError(f"unknown style {style!r}; available styles: {', '.join(styles) or 'none'}")
        weight = float(style_weight)
        if callback is not None and not callable(callback):
            raise InputTypeError("callback must be callable as callback(step, total) or callback(step, total, x0)")
        rng, used_seed = make_generator(seed, generator)
        super_resolve = bool(super_resolve) and ssr_steps is not None
        return cls(prompt=prompt, negative_prompt=negative_prompt if negative_prompt is not None else defaults.negative_prompt,
                   num_frames=frames, num_inference_steps=steps, guidance_scale=guidance, sampler=sampler,
                   seed=used_seed, generator=rng, style=style, style_weight=weight, super_resolve=super_resolve,
                   ssr_steps=ssr_steps if super_resolve else 0, callback=callback, loop=bool(loop))

    def step_plan(self, base_steps: int | None = None, reference_steps: int = 0) -> dict[str, int]:
        """Denoising steps per stage of this call, in order; their sum is the progress total.

        ``base_steps`` overrides the base stage's count (SDEdit runs only part of the schedule);
        ``reference_steps`` is the T2I reference image drawn first by reference guidance.
        """
        plan = {"reference image": reference_steps,
                "video": self.num_inference_steps if base_steps is None else base_steps,
                "super-resolution": self.ssr_steps}
        return {stage: steps for stage, steps in plan.items() if steps}

    def progress(self, plan: dict[str, int], bar: bool = False) -> Progress:
        """The call's single progress counter over ``plan`` (see :meth:`step_plan`)."""
        return Progress(sum(plan.values()), self.callback, bar)

    def describe(self, task: str, **inputs) -> str:
        """One log line: the task, every setting that decides the output (seed included), and ``inputs``
        (e.g. the shapes of the given image or video)."""
        values = {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "num_frames": self.num_frames,
                  "steps": self.num_inference_steps, "guidance": self.guidance_scale, "sampler": self.sampler,
                  "seed": self.seed, "style": self.style, "style_weight": self.style_weight,
                  "super_resolve": self.super_resolve, "loop": self.loop, **inputs}
        shown = {key: value for key, value in values.items() if value is not None and value != ""}
        return f"{task}: " + " ".join(f"{key}={value!r}" for key, value in shown.items())




@dataclass(frozen=True)
class ModelFacts:
    """What a loaded model accepts, as requests are validated against it (``LumierePipeline.facts``).

    Attributes:
        defaults: the model's defaults for options a request leaves out.
        base_frames / frame_multiple: the base clip's length and the temporal down-sampling factor.
        styles: the style names it has.
        ssr: its SSR settings, None without an SSR model.
        fps: its frame rate (to say how long a clip is).
    """

    defaults: GenerationDefaults
    base_frames: int
    frame_multiple: int
    styles: tuple[str, ...] = ()
    ssr: SSROptions | None = None
    fps: float = 8.0

    def footage_frames(self, video, num_frames: int | None) -> int | None:
        """``num_frames`` for a call on the user's footage: as given, else the footage's own length rounded
        down to the frame rule's multiple, so a clip comes back as long as it went in (not squashed into
        the model's clip length).

        Raises:
            InputError: the footage is longer than the model takes (said before any work: trim it, or
                pass ``num_frames`` to resample it).
        """
        if num_frames is not None:
            return num_frames
        length = len(video) if isinstance(video, (list, tuple)) else int(np.shape(video)[0])
        counts = frame_counts(self.base_frames, self.frame_multiple)
        if length > counts[-1]:
            raise InputError(f"the video has {length} frames ({length / self.fps:.1f} s at the model's {self.fps:g} fps); "
                             f"this model takes at most {counts[-1]} ({counts[-1] / self.fps:.1f} s): trim it, or pass "
                             f"num_frames to resample it evenly")
        return max(counts.start, length - length % counts.step)


@dataclass(frozen=True)
class Options:
    """The options every generation task shares; None (and the defaults below) mean "the model's default".
    Each field is documented once, in ``_OPTIONS_DOC`` below (the methods' docstrings show it)."""

    num_frames: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    sampler: str | None = None
    seed: int | None = None
    style: str | None = None
    style_weight: float = 1.0
    super_resolve: bool = True
    loop: bool = False
    num_videos_per_prompt: int = 1

    @classmethod
    def of(cls, values: dict[str, Any], task: str, unsupported: tuple[str, ...] = ()) -> "Options":
        """Options from keyword arguments; a name that is not an option of ``task`` is an InputTypeError."""
        names = [f.name for f in dataclasses.fields(cls) if f.name not in unsupported]
        unknown = [name for name in values if name not in names]
        if unknown:
            raise InputTypeError(f"{task}() got unexpected option(s) {', '.join(map(repr, unknown))}; "
                                 f"its options: {', '.join(names)}")
        return cls(**values)


@dataclass(frozen=True)
class Request:
    """The fields and resolution every task's request shares (subclasses add the task's inputs).

    ``task`` names the task (``lumiere.tasks.<task>`` is its program); ``unsupported`` lists the options it
    has no use for, refused when set to anything but their defaults.
    """

    task: ClassVar[str] = ""
    unsupported: ClassVar[tuple[str, ...]] = ()

    def resolve(self, facts: ModelFacts, generator: torch.Generator | None = None,
                callback: Callback | None = None) -> GenerationSettings:
        """The request's settings against ``facts``: defaults filled, every value checked.

        Raises:
            InputTypeError / InputError: as ``GenerationSettings.create``, or an unsupported option set.
        """
        options = self.options
        if not isinstance(options, Options):
            raise InputTypeError(f"options must be a lumiere.request.Options, got {type(options).__name__}")
        defaults = Options()
        for name in self.unsupported:
            if getattr(options, name) != getattr(defaults, name):
                raise InputTypeError(f"{self.task} takes no option {name!r}")
        values = dataclasses.asdict(options)
        # How many times the program runs (``LumierePipeline.generate``), not a setting of one run.
        positive_int(values.pop("num_videos_per_prompt"), "num_videos_per_prompt")
        values.update(self._overrides(facts))
        return GenerationSettings.create(
            self.prompt, defaults=facts.defaults, base_frames=facts.base_frames, frame_multiple=facts.frame_multiple,
            styles=list(facts.styles), ssr_steps=facts.ssr.steps_run() if facts.ssr is not None else None,
            generator=generator, callback=callback, **values)

    def _overrides(self, facts: ModelFacts) -> dict[str, Any]:
        """Option values the task decides itself (e.g. the footage's length); none by default."""
        return {}


@dataclass(frozen=True)
class TextToVideo(Request):
    """A clip from text.

    Args:
        prompt: what the video shows.
        reference_image: VideoGen-style reference guidance. "t2i": draw the first frame with the
            frozen T2I U-Net alone (``num_inference_steps`` more steps), then animate it with the
            conditional model; an image (as for ``image_to_video``) is used as the first frame; None
            generates the whole clip.
    """

    prompt: str
    options: Options = Options()
    reference_image: Any = None
    task: ClassVar[str] = "text_to_video"


@dataclass(frozen=True)
class TextToImage(Request):
    """One image from the base's T2I U-Net alone.

    Args:
        prompt: what the image shows.

    Returns:
        uint8 (H, W, 3) RGB at ``base_resolution``.
    """

    prompt: str
    options: Options = Options()
    task: ClassVar[str] = "text_to_image"
    unsupported: ClassVar[tuple[str, ...]] = ("num_frames", "style", "style_weight", "super_resolve", "loop")

    def _overrides(self, facts: ModelFacts) -> dict[str, Any]:
        return {"super_resolve": False}


@dataclass(frozen=True)
class ImageToVideo(Request):
    """Animate ``image``: it becomes the first frame.

    Args:
        image: uint8 (H, W, 3) RGB array or PIL image, any size (resized and centre-cropped to the
            model's aspect); at output resolution it is the result's exact first frame.
        prompt: how the image should move.
    """

    image: Any
    prompt: str
    options: Options = Options()
    task: ClassVar[str] = "image_to_video"
    unsupported: ClassVar[tuple[str, ...]] = ("loop",)


def _is_image(value) -> bool:
    return hasattr(value, "convert") or isinstance(value, np.ndarray)


def keyframe_images(first=None, last=None, indices: dict | None = None) -> dict[int, Any]:
    """The ``images`` of a :class:`Keyframes` request from ``keyframes_to_video``'s arguments: ``first`` at
    frame 0 and ``last`` at the clip's last frame (-1), each when given, plus ``indices``, a mapping
    {frame index: image} of any other frames (negative indices count from the end).

    Raises:
        InputTypeError: ``indices`` is not a mapping. InputError: no image at all, or a frame given twice
        by ``first`` / ``last`` and ``indices`` (checked against the clip length when the request resolves).
    """
    if indices is not None and not isinstance(indices, dict):
        raise InputTypeError(f"indices must be a dict {{frame index: image}}, got {type(indices).__name__}")
    images = dict(indices or {})
    for index, image in ((0, first), (-1, last)):
        if image is None:
            continue
        if index in images:
            raise InputError(f"frame {index} is given twice: as {'first' if index == 0 else 'last'} and in indices")
        images[index] = image
    if not images:
        raise InputError("keyframes: give at least one image (first, last or indices)")
    return images


@dataclass(frozen=True)
class Keyframes(Request):
    """A clip through given frames.

    Args:
        images: a (first, last) pair (frames 0 and T-1) or a mapping {frame index: image} (negative
            indices count from the end; -1 is the last frame); each image a uint8 (H, W, 3) array or a
            PIL image, resized and centre-cropped to the model's aspect like I2V's; at output
            resolution each is the result's exact frame.
        first / last: (``keyframes_to_video``) the images of frames 0 and T-1, as in ``images``; either
            may be None when ``indices`` gives frames.
        indices: (``keyframes_to_video``) {frame index: image} for any other (or any set of) frames.
        prompt: what happens between them.
    """

    images: Any
    prompt: str
    options: Options = Options()
    task: ClassVar[str] = "keyframes"
    unsupported: ClassVar[tuple[str, ...]] = ("loop",)

    def frame_images(self, num_frames: int) -> dict[int, Any]:
        """{frame in [0, num_frames): image}, every index and image checked.

        Raises:
            InputTypeError: ``images`` neither a pair nor a mapping; an index that is not an int; an image
                that is not an array or PIL image.
            InputError: no image, an index out of range, one frame given twice (e.g. -1 and T-1).
        """
        images = self.images
        if isinstance(images, (tuple, list)):
            if len(images) != 2:
                raise InputError(f"keyframes: a sequence of images must be the pair (first, last), got {len(images)}")
            images = {0: images[0], -1: images[1]}
        if not isinstance(images, dict):
            raise InputTypeError("keyframes: images must be a (first, last) pair or a dict {frame index: image}, "
                                 f"got {type(images).__name__}")
        if not images:
            raise InputError("keyframes: give at least one image")
        frames: dict[int, Any] = {}
        for index, image in images.items():
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise InputTypeError(f"keyframes: frame indices must be integers, got {index!r}")
            position = int(index) + num_frames if index < 0 else int(index)
            if not 0 <= position < num_frames:
                raise InputError(f"keyframes: frame index {int(index)} is out of range for a clip of {num_frames} "
                                 f"frames (0..{num_frames - 1}, or -{num_frames}..-1 from the end)")
            if position in frames:
                raise InputError(f"keyframes: frame {position} is given twice")
            if not _is_image(image):
                raise InputTypeError(f"keyframes: the image for frame {int(index)} must be a numpy array or PIL "
                                     f"image, got {type(image).__name__}")
            frames[position] = image
        return dict(sorted(frames.items()))

    def resolve(self, facts: ModelFacts, generator=None, callback=None) -> GenerationSettings:
        from .preprocessing import to_numpy_image  # lazy: this module stays free of torch

        settings = super().resolve(facts, generator=generator, callback=callback)
        for image in self.frame_images(settings.num_frames).values():
            to_numpy_image(image)  # shape and dtype refused here, before any model work
        return settings


class _OnFootage:
    """A request on the user's video: its frame count is the footage's own (``ModelFacts.footage_frames``)."""

    def _overrides(self, facts: ModelFacts) -> dict[str, Any]:
        return {"num_frames": facts.footage_frames(self.video, self.options.num_frames)}


@dataclass(frozen=True)
class Inpaint(_OnFootage, Request):
    """Fill the masked region of a video; outpainting is a mask over the border.

    Args:
        video: uint8 (T, H, W, 3) array or list of frames at the model's fps, each resized +
            centre-cropped; the result keeps its length (``ModelFacts.footage_frames``) unless
            ``num_frames`` is given, to which its frames are then resampled evenly.
        mask: True / white = generate, False = keep: bool or uint8 (H, W) for every frame or
            (T, H, W) per frame, or a PIL image; same crop as the video, nearest-neighbour.
            Outside the mask the result is the user's pixels (exactly, beyond ``ssr.feather``
            output pixels of soft edge when SSR runs). An empty mask is an InputError.
        prompt: what should appear in the region.
    """

    video: Any
    mask: Any
    prompt: str
    options: Options = Options()
    task: ClassVar[str] = "inpaint"
    unsupported: ClassVar[tuple[str, ...]] = ("loop",)


@dataclass(frozen=True)
class Cinemagraph(Request):
    """Animate only the masked region of an image; everything else stays still.

    Args:
        image: uint8 (H, W, 3) RGB array or PIL image; frame 0 of the result is this image.
        mask: True / white = moves, bool or uint8 (H, W) or a PIL image (same crop as the image);
            an empty mask is an InputError.
        prompt: the motion of the region.
    """

    image: Any
    mask: Any
    prompt: str
    options: Options = Options()
    task: ClassVar[str] = "cinemagraph"


@dataclass(frozen=True)
class VideoToVideo(_OnFootage, Request):
    """SDEdit: noise every frame of the input to the timestep set by ``strength``, then denoise.

    Args:
        video: uint8 (T, H, W, 3) array or list of frames (length, resampling and resizing as for
            ``Inpaint``); the result keeps its length.
        prompt: the new video.
        strength: in [0, 1]; 0 returns the input (resized), 1 ignores it; runs
            round(strength x num_inference_steps) steps.
    """

    video: Any
    prompt: str
    strength: float = DEFAULT_STRENGTH
    options: Options = Options()
    task: ClassVar[str] = "video_to_video"
    unsupported: ClassVar[tuple[str, ...]] = ("loop",)

    def _overrides(self, facts: ModelFacts) -> dict[str, Any]:
        in_range(self.strength, *STRENGTH_RANGE, "strength")
        return super()._overrides(facts)


@dataclass(frozen=True)
class ConditionalSample(Request):
    """The conditional model on a (C, M) pair built by the caller (``lumiere.conditioning``).

    Args:
        condition: C, float (3, T, H, W) in [-1, 1] at ``base_resolution``; T is the number of
            frames generated (so this task takes no ``num_frames``).
        keep: M, (1, T, H, W), 1 = known content to keep (the paper's convention), 0 = generate.
            Shapes that do not match ``base_resolution`` are an InputError.
        prompt: the text.
        paste_known: hold C where M = 1 in the sampler's clean estimate at every denoising step
            and paste it back at the end (the applications' behaviour); False returns the raw
            model output (and SSR, if run, is not given the known pixels either).
    """

    condition: Any
    keep: Any
    prompt: str
    paste_known: bool = True
    options: Options = Options()
    task: ClassVar[str] = "sample_conditional"
    unsupported: ClassVar[tuple[str, ...]] = ("num_frames", "loop")

    def _overrides(self, facts: ModelFacts) -> dict[str, Any]:
        return {"num_frames": int(self.condition.shape[1])}


@dataclass(frozen=True)
class SuperResolve(Request):
    """Spatial super-resolution of a base-resolution ``video`` (any length) with temporal MultiDiffusion.
    Steps and guidance default to the model's SSR settings, the negative prompt to ""."""

    video: Any
    prompt: str
    window: int | None = None
    overlap: int = DEFAULT_SSR_OVERLAP
    multidiffusion: bool = True
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    task: ClassVar[str] = "super_resolve"

    def resolve(self, facts: ModelFacts, generator: torch.Generator | None = None,
                callback: Callback | None = None) -> GenerationSettings:
        if facts.ssr is None:
            raise InputError("this pipeline has no super-resolution model")
        if not isinstance(self.prompt, str):
            raise InputTypeError(f"prompt must be a string, got {type(self.prompt).__name__}")
        ssr = facts.ssr
        if self.window is not None:
            positive_int(self.window, "window")
        steps = positive_int(self.num_inference_steps if self.num_inference_steps is not None
                             else ssr.num_inference_steps, "num_inference_steps")
        check_text(self.prompt)
        check_text(self.negative_prompt or "", "negative_prompt")
        rng, seed = make_generator(self.seed, generator)
        return GenerationSettings(
            prompt=self.prompt, negative_prompt=self.negative_prompt or "",
            num_frames=int(np.shape(self.video)[0]) if not isinstance(self.video, (list, tuple)) else len(self.video),
            num_inference_steps=steps, guidance_scale=guidance_value(self.guidance_scale, ssr.guidance_scale),
            sampler=ssr.sampler or facts.defaults.sampler, seed=seed, generator=rng, super_resolve=True,
            ssr_steps=ssr.steps_run(steps), callback=callback)


# The keyword arguments every generation method shares (``GenerationSettings`` documents each field).
_OPTIONS_DOC = f"""\
num_frames: frames to generate (default: the model's clip length); a multiple of
    ``temporal_downsampling_factor`` up to {MAX_FRAMES_FACTOR} x the clip length (``options.frame_counts``).
num_inference_steps: base-model denoising steps (default: ``defaults.num_inference_steps``).
guidance_scale: classifier-free guidance in [0, {MAX_GUIDANCE_SCALE:g}] (default: ``defaults.guidance_scale``);
    1 turns guidance off and skips the unconditional pass.
negative_prompt: text for the unconditional branch (default: ``defaults.negative_prompt``); it and
    the prompt are refused above {MAX_PROMPT_CHARS} characters.
sampler: one of ``lumiere.options.SAMPLERS`` (default: ``defaults.sampler``).
seed: an int gives the same video on any device; None or negative draws a fresh one.
generator: a CPU ``torch.Generator`` to draw from instead of ``seed`` (not both); lets the
    caller know and replay the randomness.
style: a name from ``styles`` (None: no style).
style_weight: the style's interpolation alpha in [0, 1]; 0 is exactly the un-styled model.
super_resolve: run SSR to ``output_resolution`` (ignored when the model has no SSR).
loop: a seamless loop: the last frame flows into the first (played on repeat, the clip has no
    seam). The models treat the clip as circular in time (``STUNet.looping``: wrap-around temporal
    convs and resampling, no frame positions; the SSR's windows wrap too); False is bit-identical
    to a call without the option.
num_videos_per_prompt: how many videos to generate (default 1); above 1 the result is stacked,
    (N, ...), video 0 being exactly the one-video result of the same seed. They are generated one
    after the other from one random stream (memory stays that of one video).
callback: ``callback(step, total)`` after every denoising step of every stage; an exception
    it raises cancels the call."""

_RETURNS_DOC = "uint8 (T, H, W, 3) RGB: ``output_resolution`` with SSR, ``base_resolution`` without."

_RAISES_DOC = """\
InputError: an invalid option or input (a ValueError; InputTypeError, also a TypeError, for
    wrong types), or a component this pipeline lacks.
CheckpointError: a component's files are missing or corrupt when it is first loaded."""


def _doc_sections(doc: str | None) -> tuple[str, dict[str, str], str | None]:
    """A Google-style docstring as (its text before ``Args:``, {argument: entry}, its ``Returns:`` text).
    An entry may name several arguments ("first / last: ...")."""
    text = textwrap.dedent(doc or "").strip("\n")
    first, _, rest = text.partition("\n")
    text = first.strip() + "\n" + textwrap.dedent(rest)  # the first line carries no indentation
    head, _, tail = text.partition("\nArgs:\n")
    sections = re.split(r"\n(?=(?:Returns|Raises):\n)", "\nArgs:\n" + tail if tail else "")
    entries: dict[str, str] = {}
    returns = None
    for section in sections:
        title, _, body = section.strip("\n").partition(":\n")
        body = textwrap.dedent(body).strip()
        if title == "Args":
            for entry in re.split(r"\n(?=\S)", body):
                for name in entry.split(":", 1)[0].split("/"):
                    entries[name.strip()] = entry
        elif title == "Returns":
            returns = body
    return head.strip(), entries, returns


def documented(request: type[Request]):
    """Write the docstring of the convenience method for ``request``: the method's own summary, then
    ``Args:`` for each of its parameters (from the request's docstring, then the shared options it
    supports, with ``generator`` and ``callback``), ``Returns:`` and ``Raises:``.

    Why: the methods take the same options and the requests' inputs; their text lives once, next to the
    request that validates them, so the docstrings cannot drift apart. A parameter documented nowhere is
    a TypeError when the module is imported.
    """
    supported = {f.name for f in dataclasses.fields(Options)} - set(request.unsupported) | {"generator", "callback"}
    option_entries = [entry for entry in re.split(r"\n(?=\S)", _OPTIONS_DOC)
                      if entry.split(":", 1)[0] in supported]
    _, inputs, returns = _doc_sections(request.__doc__)

    def decorate(method):
        summary, own, _ = _doc_sections(method.__doc__)
        entries: list[str] = []
        for name, parameter in list(inspect.signature(method).parameters.items())[1:]:
            if parameter.kind is parameter.VAR_KEYWORD or name in ("generator", "callback"):
                continue
            entry = own.get(name) or inputs.get(name)
            if entry is None:
                raise TypeError(f"{method.__name__}: parameter {name!r} is documented neither by the method "
                                f"nor by {request.__name__}")
            if entry not in entries:
                entries.append(entry)
        body = "\n".join(entries + option_entries)
        method.__doc__ = "\n\n".join([summary, "Args:\n" + textwrap.indent(body, "    "),
                                       "Returns:\n" + textwrap.indent(returns or _RETURNS_DOC, "    "),
                                       "Raises:\n" + textwrap.indent(_RAISES_DOC, "    ")])
        return method

    return decorate
