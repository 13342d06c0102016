"""The Gradio Blocks UI: six tabs, each its inputs, its own advanced settings and one Generate event that
is also an API endpoint; a session gallery of this visitor's results below.

Each tab is one class below (:class:`TextToVideoTab` ... :class:`VideoToVideoTab`) that holds everything
about it: ``layout()`` builds its inputs, ``prepare()`` validates them into a :class:`Job` (the pipeline
call), and ``endpoint()`` is its Generate handler and public API endpoint ``/<name>``. The handler's
parameters are the API's (gradio_client addresses inputs by name) and fix the order of the event's inputs:
:meth:`Tab.build` lines the components up by those names and refuses to build if one is missing or extra.
:func:`build_demo` builds the tabs and connects each one the same way (:func:`connect`).

Each endpoint returns (mp4 file, seed used as an exact integer); the rest (download files, the seed as text,
the gallery entry) travels in a gr.State and is shown by a follow-up private event.

No `from __future__ import annotations` here: Gradio finds ``gr.Request`` parameters by annotation.
"""
import asyncio
import dataclasses
import functools
import inspect
import logging
import os
import secrets
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import gradio as gr
import numpy as np

from lumiere.errors import LumiereError
from lumiere.request import (Cinemagraph, ImageToVideo, Inpaint, Keyframes, Options, Request, TextToVideo,
                             VideoToVideo)
from lumiere.options import MAX_GUIDANCE_SCALE, ONE_PASS_FRAMES_FACTOR, SAMPLERS, GenerationDefaults, frame_counts

from . import inputs
from .examples import EXAMPLE_SEED, EXAMPLES, output_path, outputs_available
from .gpu import gpu
from .model_manager import LOAD_ERRORS, GenerationCancelled, ModelManager, OutOfMemory
from .outputs import save_outputs
from .serving import SPECIAL_PARAMS, Admission, ClientLimit, Endpoint, LumiereBlocks, client_ip

log = logging.getLogger("lumiere.app")

QUEUE_SIZE = 16  # Generate jobs that may wait for the model at once (the app's line; Gradio's queue too)
WAIT_POLL = 0.2  # seconds between a waiting job's looks at its place in the line
DELETE_CACHE = (3600, 3600)  # every hour, delete generated files older than an hour
HISTORY_SIZE = 24
RANDOM_SEED_BITS = 31  # random seeds stay below 2^31 so every client displays them exactly
PREVIEW_INTERVAL = 0.5  # seconds between a running tab's fetches of its live preview
STOP_WAIT = 30.0  # seconds Stop waits for the current denoising step to finish, to say where it stopped

ABOUT = """# Lumiere — text-to-video studio
Space-time diffusion: the whole clip is generated at once, then super-resolved."""

# Only what the bundled model does well (its model card, assets/lumiere-tiny/README.md, has the measurements).
BUNDLED_ABOUT = """The bundled model is a tiny demonstration trained on a CPU. It knows a small world of **red, green, blue,
yellow, white, purple and orange circles, squares and triangles** (drawn as soft blobs) over the **sky, grass,
sea, night or a plain background**, and moves them best **left, right, up or down**; about 120 words in all."""

MASK_BRUSH = gr.Brush(colors=["#ff33cc"], default_color="#ff33cc", color_mode="fixed")


def configure_cache_dir() -> str:
    """Give the app its own Gradio cache (uploads, results, cached examples) instead of the host-wide
    /tmp/gradio that every Gradio app shares. An explicit GRADIO_TEMP_DIR wins."""
    if not os.environ.get("GRADIO_TEMP_DIR"):
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        os.environ["GRADIO_TEMP_DIR"] = str(Path(tempfile.gettempdir()) / f"lumiere-app-{uid}")
    directory = Path(os.environ["GRADIO_TEMP_DIR"])
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", str(directory / "cached_examples"))
    return str(directory)


def configure_subprocesses() -> None:
    """imageio-ffmpeg (which ``lumiere.io.probe_video`` uses) starts ffmpeg with ``preexec_fn=os.setpgrp``:
    Python code run between fork and exec, which in this many-threaded server can deadlock the child (seen
    here: a probe hung for minutes and with it the Generate queue; imageio-ffmpeg issue #58). Its own switch
    turns that off; only Ctrl-C propagation to ffmpeg changes, which a server does not need."""
    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")


# ----------------------------------------------------------------------------- one request
class Advanced(NamedTuple):
    """The advanced settings every tab shares, as a request sent them (API parameter names, unchecked)."""

    seed: object = ""
    num_frames: object = None
    steps: object = None
    guidance_scale: object = None
    super_resolve: object = True
    sampler: object = None
    fps: object = None


@dataclass(frozen=True)
class Settings:
    """The advanced settings, checked; ``seed`` None = draw a random one."""

    seed: int | None
    num_frames: int | None  # None: the uploaded footage's own length (the video tabs)
    steps: int
    guidance_scale: float
    super_resolve: bool
    sampler: str | None
    fps: float

    def options(self, seed: int) -> dict:
        """The request options these settings decide (fields of ``lumiere.request.Options``)."""
        return dict(seed=seed, num_frames=self.num_frames, num_inference_steps=self.steps,
                    guidance_scale=self.guidance_scale, super_resolve=self.super_resolve, sampler=self.sampler)


@dataclass(frozen=True)
class Job:
    """A tab's inputs as a library request (``lumiere.request``), before the shared advanced settings are
    filled in (:meth:`Studio.generate`); ``task`` names the components the model manager makes resident
    (``pipe.components_for``)."""

    task: str
    request: Request

    @property
    def text(self) -> str:
        """The prompt, for the caption and the unknown-words note."""
        return self.request.prompt

    def with_settings(self, settings: Settings, seed: int) -> Request:
        """The complete request: the tab's own options with the advanced settings over them."""
        options = dataclasses.replace(self.request.options, **settings.options(seed))
        return dataclasses.replace(self.request, options=options)


class Studio:
    """Request handling bound to one :class:`ModelManager`: the model's facts the tabs need, the shared
    settings' validation, and one generation (validation -> pipeline call on the device -> files)."""

    def __init__(self, manager: ModelManager):
        self.manager = manager
        pipe = manager.try_pipe()
        if pipe is not None:
            self.base_frames, self.height, self.width = pipe.base_resolution
            self.factor = max(1, pipe.temporal_downsampling_factor)
            self.styles = list(pipe.styles)
            defaults = pipe.defaults
            self.has_ssr = pipe.has_component("ssr")
            self.scale = pipe.ssr_scale if self.has_ssr else 1
            self.fps = float(pipe.fps)
            self.ssr_window = int(pipe.ssr_options.window)
        else:  # the UI still builds and explains the problem in the System panel / on Generate
            self.base_frames, self.height, self.width, self.factor, self.styles = 16, 64, 64, 8, []
            self.has_ssr, self.scale, self.fps, self.ssr_window = True, 1, 8.0, 16
            defaults = GenerationDefaults()
        self.default_steps = int(defaults.num_inference_steps)
        self.default_guidance = float(defaults.guidance_scale)
        self.default_sampler = defaults.sampler

    def settings(self, advanced: Advanced, footage: bool = False) -> Settings:
        """Check the shared settings (raises :class:`inputs.InputError` naming the field); with ``footage``
        (a tab on the user's video) frames 0 / blank = the video's own length."""
        return Settings(
            seed=inputs.seed_value(advanced.seed),
            num_frames=inputs.frames_value(advanced.num_frames, self.base_frames, self.factor, footage),
            steps=inputs.steps_value(advanced.steps, self.default_steps),
            guidance_scale=inputs.float_value(advanced.guidance_scale, "guidance_scale", 0.0, MAX_GUIDANCE_SCALE,
                                              self.default_guidance),
            super_resolve=inputs.flag(advanced.super_resolve, "super_resolve", True),
            sampler=inputs.sampler_value(advanced.sampler),
            fps=inputs.float_value(advanced.fps, "fps", inputs.MIN_FPS, inputs.MAX_FPS, self.fps))

    def output_cover(self) -> tuple[int, int]:
        return self.height * self.scale, self.width * self.scale

    def generate(self, name: str, prepare: Callable[[Settings], Job], advanced: Advanced, request=None,
                 progress=None, footage: bool = False):
        """Validate (``prepare`` checks the tab's own inputs), run on the device, save files.
        Returns (mp4, seed, result for the follow-up event)."""
        if progress is None:  # not `progress or ...`: an idle gr.Progress is falsy (it has a length)
            progress = lambda *args, **kwargs: None  # noqa: E731
        session = getattr(request, "session_hash", None)
        with error_boundary(name, lambda: self.manager.end_job(session, "error")):
            return self._generate(prepare, advanced, session, progress, footage)

    def _generate(self, prepare: Callable[[Settings], Job], advanced: Advanced, session, progress, footage: bool):
        try:
            self.manager.pipe  # noqa: B018 - opens the model, so a load failure is reported before validation
        except LOAD_ERRORS as error:
            raise gr.Error(f"The model could not be loaded: {error}", title="Model unavailable",
                           print_exception=False) from None
        settings = self.settings(advanced, footage)
        job = prepare(settings)
        warn_unknown_words(self.manager.pipe, job.text)
        seed = settings.seed if settings.seed is not None else secrets.randbelow(2**RANDOM_SEED_BITS)
        request = job.with_settings(settings, seed)
        callback = self.manager.step_callback(eta_reporter(progress))
        progress(0, desc="Waiting for the model" if self.manager.busy else "Loading the model")
        video = run_on_device(self.manager, job.task, lambda pipe: pipe.generate(request, callback=callback),
                              settings.super_resolve, session)
        progress(1.0, desc="Encoding the video")
        mp4, gif = save_outputs(video, settings.fps, job.task, seed)
        result = {"files": [f for f in (mp4, gif) if f], "seed": str(seed), "mp4": mp4,
                  "caption": f"{job.task.replace('_', ' ')} · seed {seed} · {job.text[:60]}"}
        return mp4, seed, result


INTERNAL_ERROR = ("Something went wrong inside the app (a fault, not your input); the details are in the server "
                  "log. Please try again, perhaps with fewer frames.")


@contextmanager
def error_boundary(name: str, on_error: Callable[[], None] | None = None):
    """The app's one error boundary (every Generate endpoint runs inside it, see :meth:`Studio.generate`).

    A :class:`~lumiere.errors.LumiereError` (``app.inputs.InputError`` included) is something the user can fix:
    its own message, one log line. Stop and out-of-memory have their own messages. Anything else is a bug:
    the full traceback goes to the log and the user sees :data:`INTERNAL_ERROR`, never "check your input".
    A ``gr.Error`` raised inside passes through as it is. ``on_error`` runs first on any error."""
    try:
        yield
    except BaseException as error:
        if on_error is not None:
            on_error()
        if isinstance(error, gr.Error):
            raise
        if isinstance(error, GenerationCancelled):
            raise gr.Error("Generation stopped.", title="Stopped", print_exception=False) from None
        if isinstance(error, OutOfMemory):
            log.warning("%s ran out of memory", name)
            raise gr.Error(str(error), title="Out of memory", print_exception=False) from None
        if isinstance(error, LumiereError):
            log.info("rejected %s request: %s", name, error)
            raise gr.Error(str(error), title="Check your input", print_exception=False) from None
        if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit, a cancelled task: not ours
            raise
        log.exception("%s failed", name)
        raise gr.Error(INTERNAL_ERROR, title="Internal error", print_exception=False) from None


def unknown_words_note(pipe, prompt: str) -> str | None:
    """A sentence naming the prompt's words the model's closed vocabulary lacks and listing those it knows;
    None when every word is known or the model's tokenizer can spell any word (``LumierePipeline.known_words``)."""
    unknown = pipe.unknown_words(prompt)
    if not unknown:
        return None
    known = pipe.known_words() or []
    quoted = ", ".join(f"“{word}”" for word in unknown)
    return (f"This model does not know {quoted} and will ignore {'it' if len(unknown) == 1 else 'them'}. "
            f"The {len(known)} words it knows: {', '.join(known)}.")


def warn_unknown_words(pipe, prompt: str) -> None:
    """A warning (not an error: the generation goes ahead) about words the model will ignore."""
    try:
        note = unknown_words_note(pipe, prompt)
    except (LumiereError, OSError, ValueError, KeyError):  # a tokenizer that cannot be read must not block generating
        log.exception("could not check the prompt's words")
        return
    if note:
        gr.Warning(note, duration=20, title="Unknown words")


def eta_reporter(progress):
    """A step callback that shows 'step k of n · about N s left' (from a moving average of step times,
    so it adapts when the slower super-resolution steps begin)."""
    state = {"last": None, "avg": None}

    def report(step: int, total: int) -> None:
        now = time.monotonic()
        if state["last"] is not None and step > 0:
            dt = now - state["last"]
            state["avg"] = dt if state["avg"] is None else 0.6 * state["avg"] + 0.4 * dt
        state["last"] = now
        desc = f"Denoising (step {step} of {total})"
        if state["avg"] is not None and step < total:
            desc += f" · about {max(1, round(state['avg'] * (total - step)))} s left"
        progress((step, total), desc=desc)

    return report


@gpu(duration=120)
def run_on_device(manager: ModelManager, task: str, fn, super_resolve: bool, session):
    """The only GPU-bound call (wrapped with ``spaces.GPU`` on ZeroGPU Spaces)."""
    return manager.run(task, fn, super_resolve=super_resolve, session=session)


# ----------------------------------------------------------------------------- controls every tab has
@dataclass
class AdvancedControls:
    """A tab's 'Advanced settings': ``inputs`` keyed by the API parameter names of :class:`Advanced`."""

    inputs: dict
    randomize: gr.Checkbox
    summary: gr.Markdown


@dataclass
class ResultControls:
    video: gr.Video
    seed: gr.Number  # the exact seed, the endpoint's second output (hidden)
    seed_text: gr.Textbox
    reuse: gr.Button
    files: gr.File
    status: gr.Markdown  # a line that stays: "Stopped after step k of n."
    preview: gr.Image  # the clip's frames as it denoises (hidden between generations)
    timer: gr.Timer  # ticks while a generation of this tab runs, to fetch the preview


def _summary(studio: Studio, frames, fps, super_resolve) -> str:
    try:
        frames, fps = int(frames), float(fps)
    except (TypeError, ValueError):
        return ""
    scale = studio.scale if super_resolve else 1
    size = f"{studio.width * scale}×{studio.height * scale}"
    longest = frame_counts(studio.base_frames, studio.factor)[-1]
    length = (f"as long as the uploaded video (up to {longest} frames = {longest / studio.fps:g} s)" if frames == 0
              else f"{frames} frames · {frames / fps:.1f} s at {fps:g} fps")
    return (f"Output: **{length} · {size} px**"
            + ("" if super_resolve or not studio.has_ssr else
               f" (×{studio.scale} with super-resolution)"))


def _advanced(studio: Studio, name: str, footage: bool = False) -> AdvancedControls:
    """The tab's own advanced settings (seed, duration, fps, steps, guidance, SSR, sampler); ``footage``:
    the tab works on an uploaded video, whose own length is the default (frames 0)."""
    adv: dict = {}
    with gr.Accordion("Advanced settings", open=False, elem_id=f"{name}-advanced"):
        with gr.Row():
            adv["seed"] = gr.Textbox("", label="Seed", placeholder="random", max_lines=1, interactive=False,
                                    elem_id=f"{name}-seed", scale=2,
                                    info="A whole number 0 … 2^63−1; blank = random")
            randomize = gr.Checkbox(True, label="Randomize seed", elem_id=f"{name}-randomize", scale=1)
        base_seconds = studio.base_frames / studio.fps
        counts = frame_counts(studio.base_frames, studio.factor)
        one_pass = ONE_PASS_FRAMES_FACTOR * studio.base_frames
        rule = (f"Multiples of {counts.step} (the model's temporal down-sampling factor) up to {counts[-1]}; the "
                f"model was trained on {studio.base_frames} frames ({base_seconds:g} s) and motion may drift "
                f"beyond that. Up to {one_pass} frames are generated at once, longer clips (and the "
                f"super-resolution) in overlapping windows joined by temporal MultiDiffusion. Text to video "
                f"beyond {studio.base_frames} frames first lays out its motion in overlapping "
                f"{studio.base_frames}-frame windows that share their noise.")
        adv["num_frames"] = gr.Slider(
            0 if footage else counts.start, counts[-1], value=0 if footage else studio.base_frames,
            step=counts.step, label="Frames (duration)",
            info=("0 = the uploaded video's own length (10 s in, 10 s out); otherwise its first frames. " + rule)
            if footage else rule)
        adv["fps"] = gr.Slider(inputs.MIN_FPS, inputs.MAX_FPS, value=studio.fps, step=1, label="Playback fps",
                              info=f"The model's motion is made for {studio.fps:g} fps; other rates play it "
                                   "slower or faster")
        with gr.Row():
            adv["steps"] = gr.Slider(1, inputs.MAX_STEPS, value=studio.default_steps, step=1, label="Denoising steps")
            adv["guidance_scale"] = gr.Slider(0.0, MAX_GUIDANCE_SCALE, value=studio.default_guidance, step=0.5,
                                             label="Guidance scale")
        with gr.Row():
            adv["super_resolve"] = gr.Checkbox(studio.has_ssr, label=f"Super-resolution (×{studio.scale})",
                                              interactive=studio.has_ssr)
            adv["sampler"] = gr.Dropdown(list(SAMPLERS), value=studio.default_sampler, label="Sampler")
        summary = gr.Markdown(_summary(studio, 0 if footage else studio.base_frames, studio.fps, studio.has_ssr))
    return AdvancedControls(adv, randomize, summary)


def _results(name: str) -> ResultControls:
    video = gr.Video(label="Result", autoplay=True, loop=True, interactive=False, height=300,
                     elem_id=f"{name}-result")
    status = gr.Markdown("", elem_id=f"{name}-status")
    preview = gr.Image(label="Preview: the clip's frames as they denoise (low resolution)", type="numpy",
                       interactive=False, visible=False, buttons=[], elem_id=f"{name}-preview")
    timer = gr.Timer(PREVIEW_INTERVAL, active=False)
    with gr.Row():
        seed_text = gr.Textbox("", label="Seed used", interactive=False, elem_id=f"{name}-seed-used",
                              placeholder="(after a run)", scale=3)
        reuse = gr.Button("♻ Reuse this seed", size="sm", scale=1, elem_id=f"{name}-reuse")
    seed = gr.Number(None, label="Seed used (exact)", precision=0, visible=False)
    files = gr.File(label="Download (mp4, GIF)", file_count="multiple", interactive=False, height=120,
                    elem_id=f"{name}-files")
    return ResultControls(video, seed, seed_text, reuse, files, status, preview, timer)


def _buttons():
    with gr.Row():
        go = gr.Button("Generate", variant="primary", scale=3)
        stop = gr.Button("Stop", variant="stop", scale=1)
    return go, stop


def input_order(handler: Callable, components: dict) -> list:
    """The event's input components in the order of the handler's parameters (its API); a parameter without
    a component, or a component no parameter takes, is a programming error caught when the UI is built."""
    names = [p for p in inspect.signature(handler).parameters if p not in SPECIAL_PARAMS]
    missing, unused = [n for n in names if n not in components], [n for n in components if n not in names]
    if missing or unused:
        raise TypeError(f"{getattr(handler, '__qualname__', handler)}: parameters without a component: {missing}; "
                        f"components without a parameter: {unused}")
    return [components[n] for n in names]


# ----------------------------------------------------------------------------- the tabs
@dataclass
class TabUI:
    """What a built tab hands to :func:`connect`: its handler and the inputs in the handler's order."""

    name: str
    handler: Callable
    inputs: list
    components: dict  # API parameter name -> component (the tab's own inputs and the advanced settings)
    advanced: AdvancedControls
    result: ResultControls
    go: gr.Button
    stop: gr.Button


class Tab:
    """One tab. A subclass sets ``name`` (the tab id and the API endpoint ``/<name>``) and ``label``, and
    defines ``layout()`` (its own inputs, keyed by the endpoint's parameter names), ``prepare()`` (those
    inputs, checked, as a :class:`Job`) and ``endpoint()`` (the Generate handler: the tab's inputs, then the
    :class:`Advanced` settings, then ``request``/``progress``)."""

    name: str
    label: str
    footage = False  # the tab edits the user's video: its result keeps the video's length by default

    def __init__(self, studio: Studio):
        self.studio = studio

    def layout(self) -> dict:
        raise NotImplementedError

    def prepare(self, settings: Settings, **values) -> Job:
        raise NotImplementedError

    endpoint: Callable

    def generate(self, prepare: Callable[[Settings], Job], advanced: Advanced, request, progress):
        return self.studio.generate(self.name, prepare, advanced, request, progress, self.footage)

    def example_rows(self) -> list[dict]:
        """This tab's examples as {API parameter: value} (``app.examples``)."""
        return EXAMPLES[self.name]

    def build(self, bundled: bool = False) -> TabUI:
        with gr.Tab(self.label, id=self.name):
            with gr.Row():
                with gr.Column():
                    own = self.layout()
                    advanced = _advanced(self.studio, self.name, self.footage)
                    go, stop = _buttons()
                with gr.Column():
                    examples = gr.Column()  # filled below, once the results exist: on top, so in view
                    result = _results(self.name)
            components = {**own, **advanced.inputs}
            ui = TabUI(self.name, self.endpoint, input_order(self.endpoint, components), components, advanced,
                       result, go, stop)
            with examples:
                self._examples(ui, bundled)
        return ui

    def _examples(self, ui: TabUI, bundled: bool) -> None:
        """The tab's examples; with the bundled model, clicking one shows its pre-rendered result at once
        (``app.examples``), so a visitor sees what the tab does before waiting for a generation."""
        rows = self.example_rows()
        names = [p for p in inspect.signature(self.endpoint).parameters if any(p in row for row in rows)]
        # An advanced setting one row gives (say a longer duration) is reset to its default by the others.
        unset = {k: ui.advanced.inputs[k].value if k in ui.advanced.inputs else None for k in names}
        samples = [[row.get(k, unset[k]) for k in names] for row in rows]
        components = [ui.components[k] for k in names]
        if not (bundled and outputs_available(self.name)):
            gr.Examples(samples, inputs=components, label="Examples", elem_id=f"{self.name}-examples")
            return
        by_prompt = {row["prompt"]: i for i, row in enumerate(rows)}
        tab = self.name

        def cached(*values):
            path = str(output_path(tab, by_prompt[values[names.index("prompt")]]))
            return path, str(EXAMPLE_SEED), [path], ""

        # Pre-rendered, so no disk cache of Gradio's own (cache_examples=True): files it cached in an earlier
        # process are refused (403) by its file-access rules when a later process reuses them.
        out = ui.result
        gr.Examples(samples, inputs=components, outputs=[out.video, out.seed_text, out.files, out.status], fn=cached,
                    run_on_click=True, cache_examples=False, preprocess=False, elem_id=f"{self.name}-examples",
                    label="Examples (click one to see its result)")


def _loop_checkbox(tab: str):
    """The "Loop" option of the tabs that generate a whole clip (API parameter ``loop``)."""
    return gr.Checkbox(False, label="Loop", info="the last frame flows into the first (seamless when played on repeat)",
                      elem_id=f"{tab}-loop")


class TextToVideoTab(Tab):
    name, label = "text_to_video", "Text to video"

    def layout(self) -> dict:
        return {
            "prompt": gr.Textbox(label="Prompt", lines=2, elem_id="t2v-prompt",
                                placeholder="a red circle bouncing on the grass"),
            "negative_prompt": gr.Textbox("", label="Negative prompt", placeholder="(optional)"),
            "reference_guided": gr.Checkbox(
                False, label="Reference-guided: draw the first frame with the image model, then animate it"),
            "loop": _loop_checkbox(self.name),
        }

    def prepare(self, settings, prompt=None, negative_prompt="", reference_guided=False, loop=False) -> Job:
        text = inputs.prompt_text(prompt)
        negative = inputs.optional_text(negative_prompt) or None
        looped = inputs.flag(loop, "loop", False)
        options = Options(negative_prompt=negative, loop=looped)
        if inputs.flag(reference_guided, "reference_guided", False):
            return Job("reference_guided", TextToVideo(text, options, reference_image="t2i"))
        return Job(self.name, TextToVideo(text, options))

    def endpoint(self, prompt, negative_prompt="", reference_guided=False, loop=False, seed="", num_frames=None,
                 steps=None, guidance_scale=None, super_resolve=True, sampler=None, fps=None,
                 request: gr.Request = None, progress=gr.Progress()):
        return self.generate(lambda s: self.prepare(s, prompt, negative_prompt, reference_guided, loop),
                             Advanced(seed, num_frames, steps, guidance_scale, super_resolve, sampler, fps),
                             request, progress)


class ImageToVideoTab(Tab):
    name, label = "image_to_video", "Image to video"

    def layout(self) -> dict:
        return {
            "image": gr.Image(label="First frame", type="filepath", image_mode=None, height=260, elem_id="i2v-image"),
            "prompt": gr.Textbox(label="Prompt", lines=2, placeholder="a red circle moving right"),
            "last_image": gr.Image(label="Last frame (optional: the clip ends on it)", type="filepath",
                                   image_mode=None, height=160, elem_id="i2v-last-image"),
        }

    def prepare(self, settings, image=None, prompt=None, last_image=None) -> Job:
        text = inputs.prompt_text(prompt, "how the image should move")
        picture = inputs.image_array(image, "an image to animate")
        if last_image is not None and last_image != "":
            ending = inputs.image_array(last_image, "a last frame")
            return Job("keyframes", Keyframes((picture, ending), text))
        return Job(self.name, ImageToVideo(picture, text))

    def endpoint(self, image, prompt, last_image=None, seed="", num_frames=None, steps=None, guidance_scale=None,
                 super_resolve=True, sampler=None, fps=None, request: gr.Request = None, progress=gr.Progress()):
        return self.generate(lambda s: self.prepare(s, image, prompt, last_image),
                             Advanced(seed, num_frames, steps, guidance_scale, super_resolve, sampler, fps),
                             request, progress)


class InpaintTab(Tab):
    name, label = "inpaint", "Inpainting"
    footage = True

    def layout(self) -> dict:
        video = gr.Video(label="Video", sources=["upload"], height=220)
        mask = gr.ImageEditor(
            type="filepath", label="Brush the region to regenerate (on the first frame; applies to every frame)",
            image_mode="RGBA", sources=["upload"], brush=MASK_BRUSH, transforms=(), layers=False,
            height=300, elem_id="inpaint-editor")
        prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a green square moving left")
        with gr.Row():
            outpaint = gr.Checkbox(False, label="Outpaint: generate a border around the video instead")
            border = gr.Slider(*inputs.OUTPAINT_BORDER_RANGE, value=inputs.DEFAULT_OUTPAINT_BORDER, step=0.05,
                               label="Border (fraction of each side)")
        video.upload(_first_frame, video, mask, api_visibility="private")  # brush on the upload's first frame
        return {"video": video, "prompt": prompt, "mask": mask, "outpaint": outpaint, "outpaint_border": border}

    def prepare(self, settings, video=None, prompt=None, mask=None, outpaint=False,
                outpaint_border=inputs.DEFAULT_OUTPAINT_BORDER) -> Job:
        text = inputs.prompt_text(prompt, "what should appear in the region")
        outpaint = inputs.flag(outpaint, "outpaint", False)
        border = inputs.float_value(outpaint_border, "outpaint_border", *inputs.OUTPAINT_BORDER_RANGE,
                                    inputs.DEFAULT_OUTPAINT_BORDER)
        frames = inputs.load_video(video, settings.num_frames, self.studio.fps, self.studio.output_cover())
        height, width = frames.shape[1:3]
        if outpaint:
            from lumiere.conditioning import outpaint_mask

            region = outpaint_mask(height, width, border).numpy()
        else:
            region = inputs.mask_from_editor(mask, (height, width))
            if region is None:
                raise inputs.InputError("The mask is empty: brush over the region of the first frame that "
                                        "should be regenerated, or tick 'Outpaint'.")
        return Job(self.name, Inpaint(frames, region, text))

    def endpoint(self, video, prompt, mask=None, outpaint=False, outpaint_border=inputs.DEFAULT_OUTPAINT_BORDER,
                 seed="", num_frames=None,
                 steps=None, guidance_scale=None, super_resolve=True, sampler=None, fps=None,
                 request: gr.Request = None, progress=gr.Progress()):
        return self.generate(lambda s: self.prepare(s, video, prompt, mask, outpaint, outpaint_border),
                             Advanced(seed, num_frames, steps, guidance_scale, super_resolve, sampler, fps),
                             request, progress)


class CinemagraphTab(Tab):
    name, label = "cinemagraph", "Cinemagraph"

    def layout(self) -> dict:
        image = gr.ImageEditor(
            type="filepath", label="Upload an image, then brush the region that should move", image_mode="RGBA",
            sources=["upload"], brush=MASK_BRUSH, transforms=(), layers=False, height=320,
            elem_id="cinemagraph-editor")
        prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a yellow circle bouncing")
        with gr.Accordion("Or upload a mask (white = moves)", open=False):
            mask = gr.Image(label="Mask", type="filepath", image_mode=None, height=160)
        return {"image": image, "prompt": prompt, "mask": mask, "loop": _loop_checkbox(self.name)}

    def prepare(self, settings, image=None, prompt=None, mask=None, loop=False) -> Job:
        text = inputs.prompt_text(prompt, "the motion of the brushed region")
        picture = inputs.image_array(image, "an image")
        shape = picture.shape[:2]
        if mask is not None:
            region = inputs.mask_from_editor(inputs.mask_from_image(mask), shape)
        else:
            strokes = {"layers": image.get("layers")} if isinstance(image, dict) else None
            region = inputs.mask_from_editor(strokes, shape)
        if region is None:
            raise inputs.InputError("The mask is empty: brush over the part of the image that should move "
                                    "(or upload a mask where white = moves).")
        looped = inputs.flag(loop, "loop", False)
        return Job(self.name, Cinemagraph(picture, region, text, Options(loop=looped)))

    def endpoint(self, image, prompt, mask=None, loop=False, seed="", num_frames=None, steps=None,
                 guidance_scale=None, super_resolve=True, sampler=None, fps=None, request: gr.Request = None,
                 progress=gr.Progress()):
        return self.generate(lambda s: self.prepare(s, image, prompt, mask, loop),
                             Advanced(seed, num_frames, steps, guidance_scale, super_resolve, sampler, fps),
                             request, progress)


class StylizeTab(Tab):
    name, label = "stylize", "Stylized"

    def layout(self) -> dict:
        styles = self.studio.styles
        return {
            "prompt": gr.Textbox(label="Prompt", lines=2, placeholder="an orange circle bouncing"),
            "style": gr.Dropdown(styles, value=styles[0] if styles else None, label="Style",
                                info=None if styles else "This model has no styles."),
            "style_weight": gr.Slider(*inputs.STYLE_WEIGHT_RANGE, value=inputs.DEFAULT_STYLE_WEIGHT, step=0.05, label="Style weight α (useful range 0.5–1)",
                                     info="0 = the plain model, 1 = the full style"),
            "loop": _loop_checkbox(self.name),
        }

    def prepare(self, settings, prompt=None, style=None, style_weight=inputs.DEFAULT_STYLE_WEIGHT,
                loop=False) -> Job:
        text = inputs.prompt_text(prompt)
        if not self.studio.styles:
            raise inputs.InputError("This model has no styles; use the Text to video tab.")
        name = inputs.choice(style, "style", self.studio.styles)
        weight = inputs.float_value(style_weight, "style_weight", *inputs.STYLE_WEIGHT_RANGE, inputs.DEFAULT_STYLE_WEIGHT)
        looped = inputs.flag(loop, "loop", False)
        return Job(self.name, TextToVideo(text, Options(style=name, style_weight=weight, loop=looped)))

    def example_rows(self) -> list[dict]:
        styles = self.studio.styles
        return [{**row, "style": styles[0]} for row in EXAMPLES[self.name]] if styles else EXAMPLES[self.name]

    def endpoint(self, prompt, style=None, style_weight=inputs.DEFAULT_STYLE_WEIGHT, loop=False, seed="", num_frames=None, steps=None,
                 guidance_scale=None, super_resolve=True, sampler=None, fps=None, request: gr.Request = None,
                 progress=gr.Progress()):
        return self.generate(lambda s: self.prepare(s, prompt, style, style_weight, loop),
                             Advanced(seed, num_frames, steps, guidance_scale, super_resolve, sampler, fps),
                             request, progress)


class VideoToVideoTab(Tab):
    name, label = "video_to_video", "Video to video"
    footage = True

    def layout(self) -> dict:
        return {
            "video": gr.Video(label="Video", sources=["upload"], height=220),
            "prompt": gr.Textbox(label="Prompt", lines=2, placeholder="a purple square moving right"),
            "strength": gr.Slider(*inputs.STRENGTH_RANGE, value=inputs.DEFAULT_STRENGTH, step=0.05,
                                 label="Strength (0 = keep the input, 1 = ignore it)"),
        }

    def prepare(self, settings, video=None, prompt=None, strength=inputs.DEFAULT_STRENGTH) -> Job:
        text = inputs.prompt_text(prompt, "the new video")
        amount = inputs.float_value(strength, "strength", *inputs.STRENGTH_RANGE, inputs.DEFAULT_STRENGTH)
        frames = inputs.load_video(video, settings.num_frames, self.studio.fps, self.studio.output_cover())
        return Job(self.name, VideoToVideo(frames, text, amount))

    def endpoint(self, video, prompt, strength=inputs.DEFAULT_STRENGTH, seed="", num_frames=None, steps=None, guidance_scale=None,
                 super_resolve=True, sampler=None, fps=None, request: gr.Request = None, progress=gr.Progress()):
        return self.generate(lambda s: self.prepare(s, video, prompt, strength),
                             Advanced(seed, num_frames, steps, guidance_scale, super_resolve, sampler, fps),
                             request, progress)


TABS: tuple[type[Tab], ...] = (TextToVideoTab, ImageToVideoTab, InpaintTab, CinemagraphTab, StylizeTab,
                               VideoToVideoTab)


# ----------------------------------------------------------------------------- the page
def build_demo(manager: ModelManager) -> gr.Blocks:
    """The app. Nothing heavy happens here: weights load on the first generation."""
    uploads = configure_cache_dir()
    configure_subprocesses()
    studio = Studio(manager)
    bundled = manager.model is None and manager.try_pipe() is not None \
        and os.environ.get("LUMIERE_CACHED_EXAMPLES", "1") != "0"
    admission = Admission(manager, ClientLimit(line_size=QUEUE_SIZE))

    with LumiereBlocks(title="Lumiere", delete_cache=DELETE_CACHE, admission=admission,
                       upload_folder=uploads) as demo:
        gr.Markdown(ABOUT + ("\n\n" + BUNDLED_ABOUT if manager.model is None else ""))
        with gr.Tabs():
            tabs = [tab(studio).build(bundled) for tab in TABS]

        with gr.Accordion("Your results (this session)", open=True):
            # Thumbnails, however few: fit_columns=False keeps one result from being stretched to the full
            # width (a blurry enlargement of a 128 px clip); a click still enlarges one.
            history = gr.Gallery(label="Results", show_label=False, columns=6, height=200, object_fit="contain",
                                 elem_id="history", allow_preview=True, preview=False, fit_columns=False)
            history_state = gr.State([])

        with gr.Accordion("System", open=False):
            status = gr.Markdown(manager.status_markdown())
            with gr.Row():
                refresh = gr.Button("Refresh", size="sm")
                free = gr.Button("Free model memory", size="sm")

        for ui in tabs:
            generate = connect(studio, ui, history, history_state, admission)
            # The per-client limit and the values check (app.serving.RequestGuard) apply to these.
            demo.generate_endpoints[generate["id"]] = endpoint_of(ui)
        refresh.click(manager.status_markdown, None, status, queue=False, api_visibility="private")

        def free_memory():
            if not manager.free_if_idle():
                gr.Warning("A generation is running; free memory when it has finished.")
            return manager.status_markdown()

        free.click(free_memory, None, status, queue=False, api_visibility="private")
        demo.load(manager.status_markdown, None, status, queue=False, api_visibility="private")

        def session_closed(request: gr.Request):
            """The page (or API client) went away: its waiting jobs end without running the model and its
            running one stops after the current step; nobody is left to see them."""
            session = getattr(request, "session_hash", None)
            if session is not None:
                manager.cancel(session)

        demo.unload(session_closed)
    return demo


def endpoint_of(ui: TabUI) -> Endpoint:
    """A tab's Generate endpoint as the request check sees it: its parameters in order, and which take an
    uploaded file or an image-editor value (by the component that holds each)."""
    params = tuple(p for p in inspect.signature(ui.handler).parameters if p not in SPECIAL_PARAMS)
    files = frozenset(n for n, c in ui.components.items() if isinstance(c, (gr.Image, gr.Video, gr.File)))
    editors = frozenset(n for n, c in ui.components.items() if isinstance(c, gr.ImageEditor))
    return Endpoint(ui.name, params, files, editors)


async def wait_for_turn(manager: ModelManager, ticket, progress) -> None:
    """Wait (interruptibly: a cancelled task stops here) until nothing is ahead of ``ticket`` in the model's
    line, showing the place through ``progress``; a ticket Stop cancelled ends as "Generation stopped."."""
    shown = None
    while True:
        if ticket.cancelled:
            manager.end_job(ticket.session, "cancelled")
            raise gr.Error("Generation stopped.", title="Stopped", print_exception=False)
        ahead = manager.ahead(ticket)
        if ahead == 0:
            return
        if ahead != shown and progress is not None:
            progress(0, desc=f"Waiting for the model: {ahead} generation{'s' if ahead != 1 else ''} ahead")
            shown = ahead
        await asyncio.sleep(WAIT_POLL)


def in_line(handler: Callable, manager: ModelManager, admission: Admission | None) -> Callable:
    """``handler`` (a tab's Generate endpoint, same parameters: the API) as an async handler that first takes
    its place in the model's line, waits for its turn there and then runs ``handler`` in a worker thread.

    Gradio starts every Generate call at once; the line (not Gradio's queue) is where jobs wait, so the app
    counts exactly who is waiting (``app.serving.Admission``). Whatever ends the job (done, an error, Stop,
    a cancelled task when the client cancels or the Stop button's ``cancels``), it leaves the line. A task
    cancelled while its generation runs stops that generation and keeps its turn until the worker thread
    has returned, so two generations never overlap."""
    signature = inspect.signature(handler)

    @functools.wraps(handler)
    async def endpoint(*args, **kwargs):
        arguments = signature.bind_partial(*args, **kwargs).arguments
        request, progress = arguments.get("request"), arguments.get("progress")
        session = getattr(request, "session_hash", None)
        ticket = admission.join(session, client_ip(request)) if admission else manager.join(session)
        try:
            await wait_for_turn(manager, ticket, progress)
            work = asyncio.ensure_future(asyncio.to_thread(handler, *args, **kwargs))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                manager.cancel_ticket(ticket)
                while not work.done():
                    try:
                        await asyncio.wait({work})
                    except asyncio.CancelledError:  # cancelled again: the thread still has to return first
                        continue
                if not work.cancelled():
                    work.exception()  # retrieved: its error belongs to a job nobody waits for any more
                raise
        finally:
            manager.leave(ticket)

    return endpoint


def stopped_message(job) -> str:
    return f"**Stopped after step {job.step} of {job.total}.** Generate again to start over." if job.total else \
        "**Stopped before the first denoising step.**"


def _show_result(result, history):
    """After a run: the seed as exact text, the download files, and the session gallery."""
    if not result:
        return gr.skip(), gr.skip(), gr.skip(), history
    history = ([(result["mp4"], result["caption"])] + list(history or []))[:HISTORY_SIZE]
    return result["seed"], result["files"], history, history


def connect(studio: Studio, ui: TabUI, history, history_state, admission: Admission | None = None):
    """A tab's events: Generate (its public endpoint ``/<name>``, waiting in the model's line: :func:`in_line`),
    then the result's follow-up; Stop; the seed controls; the output summary (all private). Returns the
    Generate event."""
    manager = studio.manager
    adv, out = ui.advanced, ui.result

    def stop(request: gr.Request):
        """Stop this session's generation after the current denoising step, then say where it stopped."""
        session = getattr(request, "session_hash", None)
        if not manager.cancel(session):  # neither running nor waiting: not yet in the line, or done
            job = manager.live(session)
            if job is None or job.ended:
                return gr.skip(), gr.skip(), gr.skip()
            manager.end_job(session, "cancelled")
            return stopped_message(job), gr.update(visible=False, value=None), gr.Timer(active=False)
        job = manager.wait_ended(session, STOP_WAIT)
        if job is None or not job.ended:
            return "Stopping after the current denoising step…", gr.skip(), gr.skip()
        return stopped_message(job), gr.update(visible=False, value=None), gr.Timer(active=False)

    def start_live(request: gr.Request):
        manager.expect(getattr(request, "session_hash", None))
        return "", gr.update(visible=False, value=None), gr.Timer(active=True)

    def tick(request: gr.Request):
        """While the generation runs: its latest preview; once it has ended: stop ticking."""
        job = manager.live(getattr(request, "session_hash", None))
        if job is None or job.ended:
            message = stopped_message(job) if job is not None and job.outcome == "cancelled" else gr.skip()
            return message, gr.update(visible=False, value=None), gr.Timer(active=False)
        if job.preview is None:
            return gr.skip(), gr.skip(), gr.skip()
        label = f"Preview at step {job.preview_step} of {job.total}: the clip's frames, low resolution"
        return gr.skip(), gr.update(value=job.preview, visible=True, label=label), gr.skip()

    def randomize_changed(randomize):
        # Ticked: blank and locked (= random). Unticked: editable, value kept. (A gr.skip() nested in gr.update
        # is not a skip: it reached the box as the text "{'__type__': 'update'}" after "Reuse this seed".)
        return gr.update(interactive=False, value="") if randomize else gr.update(interactive=True)

    def reuse_seed(seed_text):
        if not seed_text:
            gr.Warning("Generate a video first; its seed can then be reused.")
            return gr.skip(), gr.skip()
        return gr.update(value=seed_text, interactive=True), False

    result = gr.State()
    live = [out.status, out.preview, out.timer]
    ui.go.click(start_live, None, live, queue=False, api_visibility="private")
    # preprocess=False: the handler gets each value as the request sent it (files as Gradio's FileData, already
    # in its upload cache), so app.inputs checks and converts it with messages that name the field: the
    # components' own preprocessing coerces (a list into its str(), 3.7 into 4) or decodes whole uploads
    # (a 20000x20000 PNG) before any check could run.
    # concurrency_limit=None: Gradio starts every Generate call at once and the job waits in the app's own
    # line for the model (in_line), where the app can count and cancel it.
    event = ui.go.click(in_line(ui.handler, manager, admission), ui.inputs, [out.video, out.seed, result],
                        api_name=ui.name, concurrency_limit=None, preprocess=False)
    event.success(_show_result, [result, history_state], [out.seed_text, out.files, history, history_state],
                  queue=False, api_visibility="private")
    event.then(lambda: (gr.skip(), gr.update(visible=False, value=None), gr.Timer(active=False)), None, live,
               queue=False, api_visibility="private")  # also when the queue refused the request
    out.timer.tick(tick, None, live, queue=False, api_visibility="private", show_progress="hidden")
    ui.stop.click(stop, None, live, cancels=[event], queue=False, api_visibility="private")
    adv.randomize.change(randomize_changed, adv.randomize, adv.inputs["seed"], queue=False, api_visibility="private")
    out.reuse.click(reuse_seed, out.seed_text, [adv.inputs["seed"], adv.randomize], queue=False,
                    api_visibility="private")
    summary_inputs = [adv.inputs["num_frames"], adv.inputs["fps"], adv.inputs["super_resolve"]]
    for component in summary_inputs:
        component.change(lambda f, r, s: _summary(studio, f, r, s), summary_inputs, adv.summary, queue=False,
                         api_visibility="private")
    return event


def _first_frame(video):
    """Show the uploaded video's first frame in the mask editor (brush on it); decodes that frame only."""
    if video is None:
        return None
    try:
        frames = inputs.load_video(video, num_frames=1, cover=(512, 512))
    except inputs.InputError as error:
        gr.Warning(str(error))
        return None
    frame = np.ascontiguousarray(frames[0])
    return {"background": frame, "layers": [], "composite": frame}
