"""One generation's settings as a typed, validated value, and its step plan for progress reporting.

Every application method of ``LumierePipeline`` turns its keyword arguments into a
:class:`GenerationRequest` once (defaults filled from the model, every value checked); the sampling
code then reads fields instead of re-checking options. The rules every front end shares (prompt length,
frame counts: :func:`check_text`, :func:`check_num_frames`) live here too, and importing this module is
cheap (torch and diffusers load on first use), so the app and the CLI check values before a model loads.
"""
from __future__ import annotations

import inspect
import math
import re
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from .errors import InputError, InputTypeError
from .options import (MAX_FRAMES_FACTOR, MAX_GUIDANCE_SCALE, MAX_PROMPT_CHARS, MAX_SEED, SAMPLERS, GenerationDefaults,
                      frame_counts, frame_rule)

if TYPE_CHECKING:
    import torch

    from .sampling import Progress

Callback = Callable[[int, int], None]


def positive_int(value, name: str) -> int:
    """``value`` as an int >= 1 (an integral float is accepted; a bool is not)."""
    integral = isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise InputTypeError(f"{name} must be an integer, got {value!r}")
    if int(value) < 1:
        raise InputError(f"{name} must be >= 1, got {value}")
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


def guidance_value(value, default: float) -> float:
    """A classifier-free guidance scale in [0, MAX_GUIDANCE_SCALE] (``default`` when ``value`` is None)."""
    guidance = float(value if value is not None else default)
    if not (math.isfinite(guidance) and 0.0 <= guidance <= MAX_GUIDANCE_SCALE):
        raise InputError(f"guidance_scale must be between 0 and {MAX_GUIDANCE_SCALE:g}, got {guidance}")
    return guidance


def make_generator(seed: int | None = None, generator: torch.Generator | None = None) -> tuple[torch.Generator, int | None]:
    """The request's random source and the seed it came from (None when the caller passed a generator).

    ``seed`` None or negative draws a fresh seed; above ``MAX_SEED`` is an InputError. A ``generator``
    must live on the CPU: every random draw happens there, so a seed gives the same video on any device.
    """
    import torch

    from .sampling import random_seed

    if generator is not None:
        if seed is not None:
            raise InputError("pass either seed or generator, not both")
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise InputTypeError("generator must be a CPU torch.Generator")
        return generator, None
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and int(seed) < 0):
        seed = random_seed()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputTypeError(f"seed must be an integer or None, got {type(seed).__name__}")
    if int(seed) > MAX_SEED:
        raise InputError(f"seed must be at most 2**63 - 1 = {MAX_SEED}, got {int(seed)}")
    return torch.Generator(device="cpu").manual_seed(int(seed)), int(seed)


@dataclass(frozen=True)
class GenerationRequest:
    """A generation's settings, complete and checked (build it with :meth:`create`).

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
            ``callback(step, total, x0)`` with the step's clean-sample estimate (``sampling.Progress``).
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
               loop: bool = False) -> "GenerationRequest":
        """Fill the model's ``defaults`` and check every value.

        ``ssr_steps`` None means the model has no SSR, so ``super_resolve`` is ignored.

        Raises:
            InputTypeError: a value of the wrong type (prompt, seed, generator, frames, steps).
            InputError: a value out of range, a prompt over ``MAX_PROMPT_CHARS``, an unknown sampler or
                style, or frames outside the frame rule (:func:`check_num_frames`, ``frame_multiple`` is
                the model's temporal down-sampling factor).
        """
        if not isinstance(prompt, str):
            raise InputTypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise InputTypeError("negative_prompt must be a string")
        check_text(prompt, "prompt")
        if negative_prompt is not None:
            check_text(negative_prompt, "negative_prompt")
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
        if not 0.0 <= weight <= 1.0:
            raise InputError(f"style_weight must be in [0, 1], got {style_weight}")
        if callback is not None and not callable(callback):
            raise InputTypeError("callback must be callable as callback(step, total) or callback(step, total, x0)")
        if not isinstance(loop, (bool, np.bool_)):
            raise InputTypeError(f"loop must be True or False, got {loop!r}")
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
        from .sampling import Progress

        return Progress(sum(plan.values()), self.callback, bar)


# The keyword arguments every generation method shares (``GenerationRequest`` documents each field).
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
callback: ``callback(step, total)`` after every denoising step of every stage; an exception
    it raises cancels the call."""

_RETURNS_DOC = "uint8 (T, H, W, 3) RGB: ``output_resolution`` with SSR, ``base_resolution`` without."

_RAISES_DOC = """\
InputError: an invalid option or input (a ValueError; InputTypeError, also a TypeError, for
    wrong types), or a component this pipeline lacks.
CheckpointError: a component's files are missing or corrupt when it is first loaded."""


def documented(method):
    """Fill the shared ``{options}`` / ``{returns}`` / ``{raises}`` sections into a generation method's
    docstring (``{options}`` keeps only the entries for parameters the method has).

    Why: the application methods take the same options; their text lives here once, next to the
    request that validates them, so the docstrings cannot drift apart.
    """
    def section(text: str) -> str:
        return textwrap.indent(text, " " * 12).lstrip()

    parameters = inspect.signature(method).parameters
    entries = re.split(r"\n(?=\S)", _OPTIONS_DOC)
    options = "\n".join(entry for entry in entries if entry.split(":", 1)[0] in parameters)
    method.__doc__ = method.__doc__.format(options=section(options), returns=section(_RETURNS_DOC),
                                           raises=section(_RAISES_DOC))
    return method
