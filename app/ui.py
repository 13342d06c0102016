"""The Gradio Blocks UI: six tabs, each its inputs, its own advanced settings and one Generate event that
is also an API endpoint; a session gallery of this visitor's results below.

Endpoint functions keep the parameter names of the API (``prompt``, ``seed``, ``num_frames``, ``steps``,
``guidance_scale``, ``super_resolve``, ``sampler``, ``fps``, ``image``, ``video``, ``mask``, ``style``,
``style_weight``, ``strength``) because gradio_client addresses inputs by those names. Each returns
(mp4 file, seed used as an exact integer); the rest (download files, the seed as text, the gallery entry)
travels in a gr.State and is shown by a follow-up private event.

No `from __future__ import annotations` here: Gradio finds ``gr.Request`` parameters by annotation.
"""
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np

from . import components as c
from . import inputs
from .examples import EXAMPLE_SEED, EXAMPLES, output_path, outputs_available
from .gpu import gpu
from .model_manager import GenerationCancelled, ModelManager, OutOfMemory
from .outputs import save_outputs
from .serving import GENERATE, LumiereBlocks

log = logging.getLogger("lumiere.app")

QUEUE_SIZE = 16
DELETE_CACHE = (3600, 3600)  # every hour, delete generated files older than an hour
HISTORY_SIZE = 24
RANDOM_SEED_BITS = 31  # random seeds stay below 2^31 so every client displays them exactly

ABOUT = """# Lumiere — text-to-video studio
Space-time diffusion: the whole clip is generated at once, then super-resolved.
The bundled model knows a small world: **red, green, blue, yellow, white, purple, orange**
**circles, squares and triangles** that are **moving left/right/up/down, bouncing, rotating, growing,
shrinking or circling** over the **sky, grass, sea, night or a plain (black or gray) background**."""

MASK_BRUSH = gr.Brush(colors=["#ff33cc"], default_color="#ff33cc", color_mode="fixed")

TASK_INPUTS = {
    "text_to_video": ["prompt", "negative_prompt", "reference_guided"],
    "image_to_video": ["image", "prompt"],
    "inpaint": ["video", "prompt", "mask", "outpaint", "outpaint_border"],
    "cinemagraph": ["image", "prompt", "mask"],
    "stylize": ["prompt", "style", "style_weight"],
    "video_to_video": ["video", "prompt", "strength"],
}
ADVANCED = ["seed", "num_frames", "steps", "guidance_scale", "super_resolve", "sampler", "fps"]


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


def _default(defaults, key: str, fallback):
    """A model default, whether the pipeline reports them as a dict or as an options object."""
    if isinstance(defaults, dict):
        return defaults.get(key, fallback)
    return getattr(defaults, key, fallback)


class Studio:
    """Request handlers bound to one :class:`ModelManager` (validation -> pipeline call -> files)."""

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
            ssr_options = getattr(pipe, "ssr_options", None)
            window = getattr(ssr_options, "window", None) or pipe.config.get("ssr", {}).get("window")
            self.ssr_window = int(window or self.base_frames)
        else:  # the UI still builds and explains the problem in the System panel / on Generate
            self.base_frames, self.height, self.width, self.factor, self.styles, defaults = 16, 64, 64, 8, [], {}
            self.has_ssr, self.scale, self.fps, self.ssr_window = True, 1, 8.0, 16
        self.default_steps = int(_default(defaults, "num_inference_steps", 25))
        self.default_guidance = float(_default(defaults, "guidance_scale", 5.0))
        self.default_sampler = _default(defaults, "sampler", None) or "dpm++"

    # ------------------------------------------------------------------ validation
    def common(self, v: dict) -> dict:
        return {
            "seed": inputs.seed_value(v.get("seed")),
            "num_frames": inputs.frames_value(v.get("num_frames"), self.base_frames, self.factor),
            "num_inference_steps": inputs.steps_value(v.get("steps"), self.default_steps),
            "guidance_scale": inputs.float_value(v.get("guidance_scale"), "guidance_scale", 0.0, 20.0,
                                                 self.default_guidance),
            "super_resolve": inputs.flag(v.get("super_resolve"), "super_resolve", True),
            "sampler": inputs.sampler_value(v.get("sampler")),
        }

    def output_cover(self) -> tuple[int, int]:
        return self.height * self.scale, self.width * self.scale

    def prepare(self, task: str, v: dict):
        """Validate one request: returns (pipeline caller, pipeline kwargs, playback fps, caption)."""
        kwargs = self.common(v)
        fps = inputs.float_value(v.get("fps"), "fps", 1.0, 60.0, self.fps)
        if task == "text_to_video":
            text = inputs.prompt_text(v.get("prompt"))
            negative = inputs.optional_text(v.get("negative_prompt"))
            kwargs["negative_prompt"] = negative or None
            if inputs.flag(v.get("reference_guided"), "reference_guided", False):
                kwargs["reference_image"] = "t2i"
            call = lambda pipe, **kw: pipe.text_to_video(text, **kw)  # noqa: E731
        elif task == "image_to_video":
            text = inputs.prompt_text(v.get("prompt"), "how the image should move")
            picture = inputs.image_array(v.get("image"), "an image to animate")
            call = lambda pipe, **kw: pipe.image_to_video(picture, text, **kw)  # noqa: E731
        elif task == "inpaint":
            text = inputs.prompt_text(v.get("prompt"), "what should appear in the region")
            outpaint = inputs.flag(v.get("outpaint"), "outpaint", False)
            border = inputs.float_value(v.get("outpaint_border"), "outpaint_border", 0.05, 0.45, 0.2)
            frames = inputs.load_video(v.get("video"), kwargs["num_frames"], self.fps, self.output_cover())
            height, width = frames.shape[1:3]
            if outpaint:
                from lumiere.conditioning import outpaint_mask

                region = outpaint_mask(height, width, border).numpy()
            else:
                region = inputs.mask_from_editor(v.get("mask"), (height, width))
                if region is None:
                    raise inputs.InputError("The mask is empty: brush over the region of the first frame that "
                                            "should be regenerated, or tick 'Outpaint'.")
            call = lambda pipe, **kw: pipe.inpaint(frames, region, text, **kw)  # noqa: E731
        elif task == "cinemagraph":
            text = inputs.prompt_text(v.get("prompt"), "the motion of the brushed region")
            image, mask = v.get("image"), v.get("mask")
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
            call = lambda pipe, **kw: pipe.cinemagraph(picture, region, text, **kw)  # noqa: E731
        elif task == "stylize":
            text = inputs.prompt_text(v.get("prompt"))
            if not self.styles:
                raise inputs.InputError("This model has no styles; use the Text to video tab.")
            kwargs["style"] = inputs.choice(v.get("style"), "style", self.styles)
            kwargs["style_weight"] = inputs.float_value(v.get("style_weight"), "style_weight", 0.0, 1.0, 0.75)
            call = lambda pipe, **kw: pipe.text_to_video(text, **kw)  # noqa: E731
        elif task == "video_to_video":
            text = inputs.prompt_text(v.get("prompt"), "the new video")
            kwargs["strength"] = inputs.float_value(v.get("strength"), "strength", 0.0, 1.0, 0.6)
            frames = inputs.load_video(v.get("video"), kwargs["num_frames"], self.fps, self.output_cover())
            call = lambda pipe, **kw: pipe.video_to_video(frames, text, **kw)  # noqa: E731
        else:
            raise ValueError(f"unknown task {task!r}")
        return call, kwargs, fps, text

    # ------------------------------------------------------------------ one generation
    def generate(self, task: str, v: dict, request=None, progress=None):
        """Validate, run on the device, save files. Returns (mp4, seed, result for the follow-up event)."""
        if progress is None:  # not `progress or ...`: an idle gr.Progress is falsy (it has a length)
            progress = lambda *args, **kwargs: None  # noqa: E731
        try:
            self.manager.pipe  # noqa: B018 - opens the model, so a load failure is reported before validation
        except Exception as error:
            raise gr.Error(f"The model could not be loaded: {error}", title="Model unavailable") from None
        try:
            call, kwargs, fps, text = self.prepare(task, v)
        except (ValueError, TypeError) as error:
            log.info("rejected %s request: %s", task, error)
            raise gr.Error(str(error), title="Check your input", print_exception=False) from None
        seed = kwargs.pop("seed")
        if seed is None:
            seed = secrets.randbelow(2**RANDOM_SEED_BITS)
        if kwargs.pop("reference_image", None):
            task, kwargs["reference_image"] = "reference_guided", "t2i"
        kwargs.update(seed=seed, callback=self.manager.step_callback(eta_reporter(progress)))
        session = getattr(request, "session_hash", None)
        progress(0, desc="Waiting for the model" if self.manager.busy else "Loading the model")
        try:
            video = run_on_device(self.manager, task, lambda p: call(p, **kwargs), kwargs["super_resolve"], session)
        except GenerationCancelled:
            raise gr.Error("Generation stopped.", title="Stopped", print_exception=False) from None
        except OutOfMemory as error:
            log.warning("%s ran out of memory", task)
            raise gr.Error(str(error), title="Out of memory", print_exception=False) from None
        except (ValueError, TypeError) as error:
            log.info("rejected %s request: %s", task, error)
            raise gr.Error(str(error), title="Check your input", print_exception=False) from None
        except Exception:
            log.exception("%s failed", task)
            raise gr.Error("Generation failed unexpectedly; the details are in the server log. "
                           "Please try again, perhaps with fewer frames.", title="Error",
                           print_exception=False) from None
        progress(1.0, desc="Encoding the video")
        mp4, gif = save_outputs(video, fps, task, seed)
        result = {"files": [f for f in (mp4, gif) if f], "seed": str(seed), "mp4": mp4,
                  "caption": f"{task.replace('_', ' ')} · seed {seed} · {text[:60]}"}
        return mp4, seed, result


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


# ----------------------------------------------------------------------------- layout helpers
def _summary(studio: Studio, frames, fps, super_resolve) -> str:
    try:
        frames, fps = int(frames), float(fps)
    except (TypeError, ValueError):
        return ""
    scale = studio.scale if super_resolve else 1
    size = f"{studio.width * scale}×{studio.height * scale}"
    return (f"Output: **{frames} frames · {frames / fps:.1f} s at {fps:g} fps · {size} px**"
            + ("" if super_resolve or not studio.has_ssr else
               f" (×{studio.scale} with super-resolution)"))


def _advanced(studio: Studio, name: str) -> dict:
    """The tab's own advanced settings (seed, duration, fps, steps, guidance, SSR, sampler)."""
    adv: dict = {}
    with gr.Accordion("Advanced settings", open=False, elem_id=f"{name}-advanced"):
        with gr.Row():
            adv["seed"] = c.Textbox("", label="Seed", placeholder="random", max_lines=1, interactive=False,
                                    elem_id=f"{name}-seed", scale=2,
                                    info="A whole number 0 … 2^63−1; blank = random")
            adv["randomize"] = gr.Checkbox(True, label="Randomize seed", elem_id=f"{name}-randomize", scale=1)
        base_seconds = studio.base_frames / studio.fps
        adv["num_frames"] = c.Slider(
            studio.base_frames, inputs.MAX_FRAMES_FACTOR * studio.base_frames, value=studio.base_frames,
            step=studio.base_frames, label="Frames (duration)",
            info=(f"Multiples of the model's {studio.base_frames}-frame clip ({base_seconds:g} s). All frames are "
                  "generated at once; beyond the trained length motion may drift. Super-resolution covers long "
                  f"clips in overlapping {studio.ssr_window}-frame windows (temporal MultiDiffusion)."))
        adv["fps"] = c.Slider(1, 30, value=studio.fps, step=1, label="Playback fps",
                              info=f"The model's motion is made for {studio.fps:g} fps; other rates play it "
                                   "slower or faster")
        with gr.Row():
            adv["steps"] = c.Slider(1, inputs.MAX_STEPS, value=studio.default_steps, step=1, label="Denoising steps")
            adv["guidance_scale"] = c.Slider(0.0, 20.0, value=studio.default_guidance, step=0.5,
                                             label="Guidance scale")
        with gr.Row():
            adv["super_resolve"] = c.Checkbox(studio.has_ssr, label=f"Super-resolution (×{studio.scale})",
                                              interactive=studio.has_ssr)
            adv["sampler"] = c.Dropdown(list(inputs.SAMPLERS), value=studio.default_sampler, label="Sampler")
        adv["summary"] = gr.Markdown(_summary(studio, studio.base_frames, studio.fps, studio.has_ssr))
    return adv


def _outputs(name: str) -> dict:
    out = {"video": gr.Video(label="Result", autoplay=True, loop=True, interactive=False, height=320,
                             elem_id=f"{name}-result")}
    with gr.Row():
        out["seed_text"] = c.Textbox("", label="Seed used", interactive=False, elem_id=f"{name}-seed-used",
                                     placeholder="(after a run)", scale=3)
        out["reuse"] = gr.Button("♻ Reuse this seed", size="sm", scale=1, elem_id=f"{name}-reuse")
    out["seed"] = c.Number(None, label="Seed used (exact)", precision=0, visible=False)
    out["files"] = gr.File(label="Download (mp4, GIF)", file_count="multiple", interactive=False)
    return out


def _buttons():
    with gr.Row():
        go = gr.Button("Generate", variant="primary", scale=3)
        stop = gr.Button("Stop", variant="stop", scale=1)
    return go, stop


def _examples(studio: Studio, name: str, t: dict, bundled: bool, label: str = "Examples") -> None:
    """The tab's examples; with the bundled model, clicking one shows its pre-rendered result at once
    (``app.examples``), so a visitor sees what the tab does before waiting for a generation."""
    use_cached = bundled and outputs_available(name)
    rows = EXAMPLES[name]
    keys = [k for k in TASK_INPUTS[name] if any(k in row for row in rows)]
    if name == "stylize" and studio.styles:
        keys = ["prompt", "style", "style_weight"]
        rows = [{**row, "style": studio.styles[0]} for row in rows]
    samples = [[row.get(k) for k in keys] for row in rows]
    components = [t[k] for k in keys]
    if not use_cached:
        gr.Examples(samples, inputs=components, label=label)
        return
    by_prompt = {row["prompt"]: i for i, row in enumerate(rows)}

    def cached(*values):
        prompt = values[keys.index("prompt")]
        return str(output_path(name, by_prompt[prompt])), str(EXAMPLE_SEED)

    # Pre-rendered, so no disk cache of Gradio's own (cache_examples=True): files it cached in an earlier
    # process are refused (403) by its file-access rules when a later process reuses them.
    gr.Examples(samples, inputs=components, outputs=[t["out"]["video"], t["out"]["seed_text"]], fn=cached,
                run_on_click=True, cache_examples=False, preprocess=False,
                label=label + " (click one to see its result)")


def build_demo(manager: ModelManager) -> gr.Blocks:
    """The app. Nothing heavy happens here: weights load on the first generation."""
    configure_cache_dir()
    studio = Studio(manager)
    bundled = manager.model is None and manager.try_pipe() is not None \
        and os.environ.get("LUMIERE_CACHED_EXAMPLES", "1") != "0"

    with LumiereBlocks(title="Lumiere", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(ABOUT)
        tabs: dict[str, dict] = {}
        with gr.Tabs():
            with gr.Tab("Text to video", id="text_to_video"):
                with gr.Row():
                    with gr.Column():
                        t = {"prompt": c.Textbox(label="Prompt", lines=2, elem_id="t2v-prompt",
                                                 placeholder="a red circle bouncing on the grass")}
                        t["negative_prompt"] = c.Textbox("", label="Negative prompt", placeholder="(optional)")
                        t["reference_guided"] = c.Checkbox(
                            False,
                            label="Reference-guided: draw the first frame with the image model, then animate it")
                        t["adv"] = _advanced(studio, "text_to_video")
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("text_to_video")
                _examples(studio, "text_to_video", t, bundled)
                tabs["text_to_video"] = t

            with gr.Tab("Image to video", id="image_to_video"):
                with gr.Row():
                    with gr.Column():
                        t = {"image": c.Image(label="First frame", type="filepath", image_mode=None, height=260,
                                           elem_id="i2v-image")}
                        t["prompt"] = c.Textbox(label="Prompt", lines=2, placeholder="a red circle moving right")
                        t["adv"] = _advanced(studio, "image_to_video")
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("image_to_video")
                _examples(studio, "image_to_video", t, bundled)
                tabs["image_to_video"] = t

            with gr.Tab("Inpainting", id="inpaint"):
                with gr.Row():
                    with gr.Column():
                        t = {"video": gr.Video(label="Video", sources=["upload"], height=220)}
                        t["mask"] = c.ImageEditor(
                            type="filepath", label="Brush the region to regenerate (on the first frame; applies to every frame)",
                            image_mode="RGBA", sources=["upload"], brush=MASK_BRUSH, transforms=(), layers=False,
                            height=300, elem_id="inpaint-editor")
                        t["prompt"] = c.Textbox(label="Prompt", lines=2, placeholder="a green square moving left")
                        with gr.Row():
                            t["outpaint"] = c.Checkbox(False, label="Outpaint: generate a border around the video instead")
                            t["outpaint_border"] = c.Slider(0.05, 0.45, value=0.2, step=0.05,
                                                            label="Border (fraction of each side)")
                        t["adv"] = _advanced(studio, "inpaint")
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("inpaint")
                _examples(studio, "inpaint", t, bundled)
                tabs["inpaint"] = t

            with gr.Tab("Cinemagraph", id="cinemagraph"):
                with gr.Row():
                    with gr.Column():
                        t = {"image": c.ImageEditor(
                            type="filepath", label="Upload an image, then brush the region that should move",
                            image_mode="RGBA", sources=["upload"], brush=MASK_BRUSH,
                            transforms=(), layers=False, height=320, elem_id="cinemagraph-editor")}
                        t["prompt"] = c.Textbox(label="Prompt", lines=2, placeholder="a yellow circle bouncing")
                        with gr.Accordion("Or upload a mask (white = moves)", open=False):
                            t["mask"] = c.Image(label="Mask", type="filepath", image_mode=None, height=160)
                        t["adv"] = _advanced(studio, "cinemagraph")
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("cinemagraph")
                _examples(studio, "cinemagraph", t, bundled)
                tabs["cinemagraph"] = t

            with gr.Tab("Stylized", id="stylize"):
                with gr.Row():
                    with gr.Column():
                        t = {"prompt": c.Textbox(label="Prompt", lines=2, placeholder="an orange circle bouncing")}
                        t["style"] = c.Dropdown(studio.styles, value=studio.styles[0] if studio.styles else None,
                                                label="Style", info=None if studio.styles else
                                                "This model has no styles.")
                        t["style_weight"] = c.Slider(0.0, 1.0, value=0.75, step=0.05,
                                                     label="Style weight α (useful range 0.5–1)",
                                                     info="0 = the plain model, 1 = the full style")
                        t["adv"] = _advanced(studio, "stylize")
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("stylize")
                _examples(studio, "stylize", t, bundled)
                tabs["stylize"] = t

            with gr.Tab("Video to video", id="video_to_video"):
                with gr.Row():
                    with gr.Column():
                        t = {"video": gr.Video(label="Video", sources=["upload"], height=220)}
                        t["prompt"] = c.Textbox(label="Prompt", lines=2, placeholder="a purple square moving right")
                        t["strength"] = c.Slider(0.0, 1.0, value=0.6, step=0.05,
                                                 label="Strength (0 = keep the input, 1 = ignore it)")
                        t["adv"] = _advanced(studio, "video_to_video")
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("video_to_video")
                _examples(studio, "video_to_video", t, bundled)
                tabs["video_to_video"] = t

        with gr.Accordion("Your results (this session)", open=True):
            history = gr.Gallery(label="Results", show_label=False, columns=6, height=200, object_fit="contain",
                                 elem_id="history", allow_preview=True)
            history_state = gr.State([])

        with gr.Accordion("System", open=False):
            status = gr.Markdown(manager.status_markdown())
            with gr.Row():
                refresh = gr.Button("Refresh", size="sm")
                free = gr.Button("Free model memory", size="sm")

        _wire(studio, tabs, history, history_state)
        refresh.click(manager.status_markdown, None, status, queue=False, api_visibility="private")

        def free_memory():
            if not manager.free_if_idle():
                gr.Warning("A generation is running; free memory when it has finished.")
            return manager.status_markdown()

        free.click(free_memory, None, status, queue=False, api_visibility="private")
        demo.load(manager.status_markdown, None, status, queue=False, api_visibility="private")
    return demo


def _endpoints(studio: Studio) -> dict:
    """One public function per tab, with the API's parameter names (gradio_client addresses them by name)."""

    def text_to_video(prompt, negative_prompt="", reference_guided=False, seed="", num_frames=None, steps=None,
                      guidance_scale=None, super_resolve=True, sampler=None, fps=None, request: gr.Request = None,
                      progress=gr.Progress()):
        return studio.generate("text_to_video", dict(
            prompt=prompt, negative_prompt=negative_prompt, reference_guided=reference_guided, seed=seed,
            num_frames=num_frames, steps=steps, guidance_scale=guidance_scale, super_resolve=super_resolve,
            sampler=sampler, fps=fps), request, progress)

    def image_to_video(image, prompt, seed="", num_frames=None, steps=None, guidance_scale=None, super_resolve=True,
                       sampler=None, fps=None, request: gr.Request = None, progress=gr.Progress()):
        return studio.generate("image_to_video", dict(
            image=image, prompt=prompt, seed=seed, num_frames=num_frames, steps=steps, guidance_scale=guidance_scale,
            super_resolve=super_resolve, sampler=sampler, fps=fps), request, progress)

    def inpaint(video, prompt, mask=None, outpaint=False, outpaint_border=0.2, seed="", num_frames=None, steps=None,
                guidance_scale=None, super_resolve=True, sampler=None, fps=None, request: gr.Request = None,
                progress=gr.Progress()):
        return studio.generate("inpaint", dict(
            video=video, prompt=prompt, mask=mask, outpaint=outpaint, outpaint_border=outpaint_border, seed=seed,
            num_frames=num_frames, steps=steps, guidance_scale=guidance_scale, super_resolve=super_resolve,
            sampler=sampler, fps=fps), request, progress)

    def cinemagraph(image, prompt, mask=None, seed="", num_frames=None, steps=None, guidance_scale=None,
                    super_resolve=True, sampler=None, fps=None, request: gr.Request = None, progress=gr.Progress()):
        return studio.generate("cinemagraph", dict(
            image=image, prompt=prompt, mask=mask, seed=seed, num_frames=num_frames, steps=steps,
            guidance_scale=guidance_scale, super_resolve=super_resolve, sampler=sampler, fps=fps), request, progress)

    def stylize(prompt, style=None, style_weight=0.75, seed="", num_frames=None, steps=None, guidance_scale=None,
                super_resolve=True, sampler=None, fps=None, request: gr.Request = None, progress=gr.Progress()):
        return studio.generate("stylize", dict(
            prompt=prompt, style=style, style_weight=style_weight, seed=seed, num_frames=num_frames, steps=steps,
            guidance_scale=guidance_scale, super_resolve=super_resolve, sampler=sampler, fps=fps), request, progress)

    def video_to_video(video, prompt, strength=0.6, seed="", num_frames=None, steps=None, guidance_scale=None,
                       super_resolve=True, sampler=None, fps=None, request: gr.Request = None, progress=gr.Progress()):
        return studio.generate("video_to_video", dict(
            video=video, prompt=prompt, strength=strength, seed=seed, num_frames=num_frames, steps=steps,
            guidance_scale=guidance_scale, super_resolve=super_resolve, sampler=sampler, fps=fps), request, progress)

    return {fn.__name__: fn for fn in (text_to_video, image_to_video, inpaint, cinemagraph, stylize, video_to_video)}


def _show_result(result, history):
    """After a run: the seed as exact text, the download files, and the session gallery."""
    if not result:
        return gr.skip(), gr.skip(), gr.skip(), history
    history = ([(result["mp4"], result["caption"])] + list(history or []))[:HISTORY_SIZE]
    return result["seed"], result["files"], history, history


def _wire(studio: Studio, tabs: dict, history, history_state) -> None:
    """Connect each tab's Generate (a public endpoint), Stop, seed controls and summary (private)."""
    manager = studio.manager
    endpoints = _endpoints(studio)

    def stop(request: gr.Request):
        stopped = manager.cancel(getattr(request, "session_hash", None))
        if stopped:
            gr.Info("Stopping after the current denoising step…")

    def randomize_changed(randomize):
        return gr.update(interactive=not randomize, value="" if randomize else gr.skip())

    def reuse_seed(seed_text):
        if not seed_text:
            gr.Warning("Generate a video first; its seed can then be reused.")
            return gr.skip(), gr.skip()
        return gr.update(value=seed_text, interactive=True), False

    for name, names in TASK_INPUTS.items():
        tab = tabs[name]
        adv, out = tab["adv"], tab["out"]
        result = gr.State()
        event = tab["go"].click(endpoints[name], [tab[n] for n in names] + [adv[k] for k in ADVANCED],
                                [out["video"], out["seed"], result], api_name=name, concurrency_limit=1,
                                concurrency_id=GENERATE)
        event.success(_show_result, [result, history_state], [out["seed_text"], out["files"], history, history_state],
                      queue=False, api_visibility="private")
        tab["stop"].click(stop, None, None, cancels=[event], queue=False, api_visibility="private")
        adv["randomize"].change(randomize_changed, adv["randomize"], adv["seed"], queue=False,
                                api_visibility="private")
        out["reuse"].click(reuse_seed, out["seed_text"], [adv["seed"], adv["randomize"]], queue=False,
                           api_visibility="private")
        summary_inputs = [adv["num_frames"], adv["fps"], adv["super_resolve"]]
        for component in summary_inputs:
            component.change(lambda f, r, s: _summary(studio, f, r, s), summary_inputs, adv["summary"], queue=False,
                             api_visibility="private")

    inpaint_tab = tabs["inpaint"]
    inpaint_tab["video"].upload(_first_frame, inpaint_tab["video"], inpaint_tab["mask"], api_visibility="private")


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
