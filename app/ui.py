"""The Gradio Blocks UI: six tabs, each a few inputs and one Generate event that is also an API endpoint.

Endpoint functions keep the parameter names of API.md (``prompt``, ``seed``, ``num_frames``, ``steps``,
``guidance_scale``, ``image``, ``video``, ``mask``, ``style``, ``style_weight``, ``strength``) because
gradio_client addresses inputs by those names. Each returns (mp4 file, seed used); the download files
travel in a gr.State (not part of the API) and are shown by a follow-up private event.

No `from __future__ import annotations` here: Gradio finds ``gr.Request`` parameters by annotation.
"""
import logging
import secrets
from pathlib import Path
from typing import Callable

import gradio as gr
import numpy as np

from . import inputs
from .gpu import gpu
from .model_manager import GenerationCancelled, ModelManager, OutOfMemory
from .outputs import save_outputs

log = logging.getLogger("lumiere.app")

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
QUEUE_SIZE = 16
DELETE_CACHE = (3600, 3600)  # every hour, delete generated files older than an hour

ABOUT = """# Lumiere — text-to-video studio
Space-time diffusion: the whole clip is generated at once, then super-resolved.
The bundled model knows a small world: **red, green, blue, yellow, white, purple, orange**
**circles, squares and triangles** that are **moving left/right/up/down, bouncing, rotating, growing,
shrinking or circling** over the **sky, grass, sea, night or a plain (black or gray) background**."""

MASK_BRUSH = gr.Brush(colors=["#ff33cc"], default_color="#ff33cc", color_mode="fixed")


def _example(name: str) -> str:
    return str(EXAMPLES_DIR / name)


def _editor_example(background: str, layer: str) -> dict:
    return {"background": _example(background), "layers": [_example(layer)], "composite": None}


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
        else:  # the UI still builds and explains the problem in the System panel / on Generate
            self.base_frames, self.height, self.width, self.factor, self.styles, defaults = 16, 64, 64, 8, [], {}
            self.has_ssr = True
        self.default_steps = int(defaults.get("num_inference_steps", 25))
        self.default_guidance = float(defaults.get("guidance_scale", 5.0))
        self.default_sampler = defaults.get("sampler") or "dpm++"

    # ------------------------------------------------------------------ shared request handling
    def common(self, seed, num_frames, steps, guidance_scale, super_resolve, sampler, negative_prompt=None) -> dict:
        return {
            "seed": inputs.seed_value(seed),
            "num_frames": inputs.frames_value(num_frames, self.base_frames, self.factor),
            "num_inference_steps": inputs.steps_value(steps, self.default_steps),
            "guidance_scale": inputs.float_value(guidance_scale, "Guidance scale", 0.0, 20.0, self.default_guidance),
            "super_resolve": True if super_resolve is None else bool(super_resolve),
            "sampler": inputs.sampler_value(sampler),
            "negative_prompt": inputs.optional_text(negative_prompt) if negative_prompt else None,
        }

    def generate(self, task: str, prepare: Callable[[], tuple[Callable, dict]], request, progress):
        """Validate (``prepare`` returns the pipeline method caller and common kwargs), run, save files."""
        try:
            pipe = self.manager.pipe
        except Exception as error:
            raise gr.Error(f"The model could not be loaded: {error}", title="Model unavailable") from None
        try:
            call, kwargs = prepare()
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error), title="Check your input") from None
        seed = kwargs.pop("seed")
        if seed is None:
            seed = secrets.randbelow(2**31)

        def report(step: int, total: int) -> None:
            progress((step, total), desc=f"Denoising (step {step} of {total})")

        kwargs.update(seed=seed, callback=self.manager.step_callback(report))
        session = getattr(request, "session_hash", None)
        progress(0, desc="Waiting for the model" if self.manager.busy else "Loading the model")
        try:
            video = run_on_device(self.manager, task, lambda p: call(p, **kwargs), kwargs["super_resolve"], session)
        except GenerationCancelled:
            raise gr.Error("Generation stopped.", title="Stopped") from None
        except OutOfMemory as error:
            raise gr.Error(str(error), title="Out of memory") from None
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error), title="Check your input") from None
        except Exception:
            log.exception("%s failed", task)
            raise gr.Error("Generation failed unexpectedly; the details are in the server log. "
                           "Please try again, perhaps with fewer frames.", title="Error") from None
        progress(1.0, desc="Encoding the video")
        mp4, gif = save_outputs(video, pipe.fps, task, seed)
        return mp4, seed, [f for f in (mp4, gif) if f]


@gpu(duration=120)
def run_on_device(manager: ModelManager, task: str, fn, super_resolve: bool, session):
    """The only GPU-bound call (wrapped with ``spaces.GPU`` on ZeroGPU Spaces)."""
    return manager.run(task, fn, super_resolve=super_resolve, session=session)


def _outputs(name: str):
    video = gr.Video(label="Result", autoplay=True, loop=True, interactive=False, height=320,
                     elem_id=f"{name}-result")
    seed_used = gr.Number(None, label="Seed used", precision=0, interactive=False)
    files = gr.File(label="Download (mp4, GIF)", file_count="multiple", interactive=False)
    return video, seed_used, files


def _buttons():
    with gr.Row():
        go = gr.Button("Generate", variant="primary", scale=3)
        stop = gr.Button("Stop", variant="stop", scale=1)
    return go, stop


def build_demo(manager: ModelManager) -> gr.Blocks:
    """The app. Nothing heavy happens here: weights load on the first generation."""
    studio = Studio(manager)
    adv: dict = {}

    with gr.Blocks(title="Lumiere", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(ABOUT)
        tabs: dict[str, dict] = {}
        with gr.Tabs():
            with gr.Tab("Text to video", id="text_to_video"):
                with gr.Row():
                    with gr.Column():
                        t = {"prompt": gr.Textbox(label="Prompt", lines=2, elem_id="t2v-prompt",
                                                  placeholder="a red circle bouncing on the grass")}
                        t["negative_prompt"] = gr.Textbox("", label="Negative prompt", placeholder="(optional)")
                        t["reference_guided"] = gr.Checkbox(
                            False,
                            label="Reference-guided: draw the first frame with the image model, then animate it")
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("text_to_video")
                gr.Examples([["a red circle bouncing on the grass"], ["a blue square moving right in the sky"],
                             ["a yellow triangle rotating at night"], ["a white circle circling over the sea"],
                             ["a purple square growing on a gray background"]],
                            inputs=[t["prompt"]], label="Examples")
                tabs["text_to_video"] = t

            with gr.Tab("Image to video", id="image_to_video"):
                with gr.Row():
                    with gr.Column():
                        t = {"image": gr.Image(label="First frame", type="numpy", image_mode="RGB", height=260)}
                        t["prompt"] = gr.Textbox(label="Prompt", lines=2, placeholder="a red circle moving right")
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("image_to_video")
                gr.Examples([[_example("red_circle_grass.png"), "a red circle moving right on the grass"],
                             [_example("blue_square_sky.png"), "a blue square rotating in the sky"]],
                            inputs=[t["image"], t["prompt"]], label="Examples")
                tabs["image_to_video"] = t

            with gr.Tab("Inpainting", id="inpaint"):
                with gr.Row():
                    with gr.Column():
                        t = {"video": gr.Video(label="Video", sources=["upload"], height=220)}
                        t["mask"] = gr.ImageEditor(
                            label="Brush the region to regenerate (on the first frame; applies to every frame)",
                            type="numpy", image_mode="RGBA", sources=["upload"], brush=MASK_BRUSH,
                            transforms=(), layers=False, height=300)
                        t["prompt"] = gr.Textbox(label="Prompt", lines=2, placeholder="a green square moving left")
                        with gr.Row():
                            t["outpaint"] = gr.Checkbox(False, label="Outpaint: generate a border around the video instead")
                            t["outpaint_border"] = gr.Slider(0.05, 0.45, value=0.2, step=0.05,
                                                             label="Border (fraction of each side)")
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("inpaint")
                gr.Examples([[_example("green_square_sea.mp4"),
                              _editor_example("green_square_sea_frame0.png", "inpaint_mask_layer.png"),
                              "a green square moving left over the sea", False],
                             [_example("green_square_sea.mp4"), None, "a green square moving left over the sea", True]],
                            inputs=[t["video"], t["mask"], t["prompt"], t["outpaint"]], label="Examples")
                tabs["inpaint"] = t

            with gr.Tab("Cinemagraph", id="cinemagraph"):
                with gr.Row():
                    with gr.Column():
                        t = {"image": gr.ImageEditor(
                            label="Upload an image, then brush the region that should move",
                            type="numpy", image_mode="RGBA", sources=["upload"], brush=MASK_BRUSH,
                            transforms=(), layers=False, height=320, elem_id="cinemagraph-editor")}
                        t["prompt"] = gr.Textbox(label="Prompt", lines=2, placeholder="a yellow circle bouncing")
                        with gr.Accordion("Or upload a mask (white = moves)", open=False):
                            t["mask"] = gr.Image(label="Mask", type="numpy", image_mode="RGBA", height=160)
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("cinemagraph")
                gr.Examples([[_editor_example("yellow_circle_night.png", "cinemagraph_mask_layer.png"),
                              "a yellow circle bouncing at night"]],
                            inputs=[t["image"], t["prompt"]], label="Examples")
                tabs["cinemagraph"] = t

            with gr.Tab("Stylized", id="stylize"):
                with gr.Row():
                    with gr.Column():
                        t = {"prompt": gr.Textbox(label="Prompt", lines=2, placeholder="an orange circle bouncing")}
                        t["style"] = gr.Dropdown(studio.styles, value=studio.styles[0] if studio.styles else None,
                                                 label="Style", info=None if studio.styles else
                                                 "This model has no styles.")
                        t["style_weight"] = gr.Slider(0.0, 1.0, value=0.75, step=0.05,
                                                      label="Style weight α (useful range 0.5–1)",
                                                      info="0 = the plain model, 1 = the full style")
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("stylize")
                gr.Examples([["an orange circle bouncing on the grass", 0.75],
                             ["a green triangle moving up in the sky", 1.0]],
                            inputs=[t["prompt"], t["style_weight"]], label="Examples")
                tabs["stylize"] = t

            with gr.Tab("Video to video", id="video_to_video"):
                with gr.Row():
                    with gr.Column():
                        t = {"video": gr.Video(label="Video", sources=["upload"], height=220)}
                        t["prompt"] = gr.Textbox(label="Prompt", lines=2, placeholder="a purple square moving right")
                        t["strength"] = gr.Slider(0.0, 1.0, value=0.6, step=0.05,
                                                  label="Strength (0 = keep the input, 1 = ignore it)")
                        t["go"], t["stop"] = _buttons()
                    with gr.Column():
                        t["out"] = _outputs("video_to_video")
                gr.Examples([[_example("green_square_sea.mp4"), "a purple square moving left over the sea", 0.6],
                             [_example("red_triangle_sky.mp4"), "a white triangle moving down at night", 0.8]],
                            inputs=[t["video"], t["prompt"], t["strength"]], label="Examples")
                tabs["video_to_video"] = t

        with gr.Accordion("Advanced (all tabs)", open=False):
            with gr.Row():
                adv["seed"] = gr.Number(-1, label="Seed (-1 = random)", precision=0, minimum=-1)
                adv["num_frames"] = gr.Slider(studio.factor, 4 * studio.base_frames, value=studio.base_frames,
                                              step=studio.factor, label=f"Frames (multiple of {studio.factor})")
                adv["steps"] = gr.Slider(1, inputs.MAX_STEPS, value=studio.default_steps, step=1,
                                         label="Denoising steps")
            with gr.Row():
                adv["guidance_scale"] = gr.Slider(0.0, 20.0, value=studio.default_guidance, step=0.5,
                                                  label="Guidance scale")
                adv["super_resolve"] = gr.Checkbox(studio.has_ssr, label="Super-resolution (SSR)",
                                                   interactive=studio.has_ssr)
                adv["sampler"] = gr.Dropdown(list(inputs.SAMPLERS), value=studio.default_sampler, label="Sampler")

        with gr.Accordion("System", open=False):
            status = gr.Markdown(manager.status_markdown())
            with gr.Row():
                refresh = gr.Button("Refresh", size="sm")
                free = gr.Button("Free model memory", size="sm")

        _wire(studio, tabs, adv)
        refresh.click(manager.status_markdown, None, status, queue=False, api_visibility="private")
        def free_memory():
            if not manager.free_if_idle():
                gr.Warning("A generation is running; free memory when it has finished.")
            return manager.status_markdown()

        free.click(free_memory, None, status, queue=False, api_visibility="private")
        demo.load(manager.status_markdown, None, status, queue=False, api_visibility="private")
    return demo


def _wire(studio: Studio, tabs: dict, adv: dict) -> None:
    """Connect each tab's Generate (a public endpoint) and Stop (private) buttons."""
    advanced = [adv[k] for k in ("seed", "num_frames", "steps", "guidance_scale", "super_resolve", "sampler")]

    def text_to_video(prompt, negative_prompt, reference_guided, seed, num_frames, steps, guidance_scale,
                      super_resolve, sampler, request: gr.Request, progress=gr.Progress()):
        def prepare():
            text = inputs.prompt_text(prompt)
            kwargs = studio.common(seed, num_frames, steps, guidance_scale, super_resolve, sampler, negative_prompt)
            if reference_guided:
                kwargs["reference_image"] = "t2i"
            return (lambda pipe, **kw: pipe.text_to_video(text, **kw)), kwargs

        task = "reference_guided" if reference_guided else "text_to_video"
        return studio.generate(task, prepare, request, progress)

    def image_to_video(image, prompt, seed, num_frames, steps, guidance_scale, super_resolve, sampler,
                       request: gr.Request, progress=gr.Progress()):
        def prepare():
            picture = inputs.image_array(image, "an image to animate")
            text = inputs.prompt_text(prompt, "how the image should move")
            kwargs = studio.common(seed, num_frames, steps, guidance_scale, super_resolve, sampler)
            return (lambda pipe, **kw: pipe.image_to_video(picture, text, **kw)), kwargs

        return studio.generate("image_to_video", prepare, request, progress)

    def inpaint(video, prompt, mask=None, outpaint=False, outpaint_border=0.2, seed=-1, num_frames=None, steps=None,
                guidance_scale=None, super_resolve=True, sampler=None, request: gr.Request = None,
                progress=gr.Progress()):
        def prepare():
            frames = inputs.load_video(video)
            text = inputs.prompt_text(prompt, "what should appear in the region")
            height, width = frames.shape[1:3]
            if outpaint:
                from lumiere.conditioning import outpaint_mask

                border = inputs.float_value(outpaint_border, "Outpaint border", 0.05, 0.45, 0.2)
                region = outpaint_mask(height, width, border).numpy()
            else:
                region = inputs.mask_from_editor(mask, (height, width))
                if region is None:
                    raise inputs.InputError("The mask is empty: brush over the region of the first frame that "
                                            "should be regenerated, or tick 'Outpaint'.")
            kwargs = studio.common(seed, num_frames, steps, guidance_scale, super_resolve, sampler)
            return (lambda pipe, **kw: pipe.inpaint(frames, region, text, **kw)), kwargs

        return studio.generate("inpaint", prepare, request, progress)

    def cinemagraph(image, prompt, mask=None, seed=-1, num_frames=None, steps=None, guidance_scale=None,
                    super_resolve=True, sampler=None, request: gr.Request = None, progress=gr.Progress()):
        def prepare():
            picture = inputs.image_array(image, "an image")
            text = inputs.prompt_text(prompt, "the motion of the brushed region")
            shape = picture.shape[:2]
            if mask is not None:
                region = inputs.mask_from_editor(inputs.mask_from_image(mask), shape)
            else:
                strokes = {"layers": image.get("layers")} if isinstance(image, dict) else None
                region = inputs.mask_from_editor(strokes, shape)
            if region is None:
                raise inputs.InputError("The mask is empty: brush over the part of the image that should move "
                                        "(or upload a mask where white = moves).")
            kwargs = studio.common(seed, num_frames, steps, guidance_scale, super_resolve, sampler)
            return (lambda pipe, **kw: pipe.cinemagraph(picture, region, text, **kw)), kwargs

        return studio.generate("cinemagraph", prepare, request, progress)

    def stylize(prompt, style, style_weight, seed, num_frames, steps, guidance_scale, super_resolve, sampler,
                request: gr.Request, progress=gr.Progress()):
        def prepare():
            text = inputs.prompt_text(prompt)
            if not studio.styles:
                raise inputs.InputError("This model has no styles; use the Text to video tab.")
            if style not in studio.styles:
                raise inputs.InputError(f"Unknown style {style!r}: choose one of {', '.join(studio.styles)}.")
            weight = inputs.float_value(style_weight, "Style weight", 0.0, 1.0, 0.75)
            kwargs = studio.common(seed, num_frames, steps, guidance_scale, super_resolve, sampler)
            kwargs.update(style=style, style_weight=weight)
            return (lambda pipe, **kw: pipe.text_to_video(text, **kw)), kwargs

        return studio.generate("stylize", prepare, request, progress)

    def video_to_video(video, prompt, strength, seed, num_frames, steps, guidance_scale, super_resolve, sampler,
                       request: gr.Request, progress=gr.Progress()):
        def prepare():
            frames = inputs.load_video(video)
            text = inputs.prompt_text(prompt, "the new video")
            amount = inputs.float_value(strength, "Strength", 0.0, 1.0, 0.6)
            kwargs = studio.common(seed, num_frames, steps, guidance_scale, super_resolve, sampler)
            kwargs["strength"] = amount
            return (lambda pipe, **kw: pipe.video_to_video(frames, text, **kw)), kwargs

        return studio.generate("video_to_video", prepare, request, progress)

    endpoints = {
        "text_to_video": (text_to_video, ["prompt", "negative_prompt", "reference_guided"]),
        "image_to_video": (image_to_video, ["image", "prompt"]),
        "inpaint": (inpaint, ["video", "prompt", "mask", "outpaint", "outpaint_border"]),
        "cinemagraph": (cinemagraph, ["image", "prompt", "mask"]),
        "stylize": (stylize, ["prompt", "style", "style_weight"]),
        "video_to_video": (video_to_video, ["video", "prompt", "strength"]),
    }
    manager = studio.manager

    def stop(request: gr.Request):
        stopped = manager.cancel(getattr(request, "session_hash", None))
        if stopped:
            gr.Info("Stopping after the current denoising step…")

    for name, (fn, names) in endpoints.items():
        tab = tabs[name]
        video, seed_used, files = tab["out"]
        downloads = gr.State()
        event = tab["go"].click(fn, [tab[n] for n in names] + advanced, [video, seed_used, downloads],
                                api_name=name, concurrency_limit=1, concurrency_id="generate")
        event.success(lambda paths: paths, downloads, files, queue=False, api_visibility="private")
        tab["stop"].click(stop, None, None, cancels=[event], queue=False, api_visibility="private")

    inpaint_tab = tabs["inpaint"]
    inpaint_tab["video"].upload(_first_frame, inpaint_tab["video"], inpaint_tab["mask"], api_visibility="private")


def _first_frame(video):
    """Show the uploaded video's first frame in the mask editor (brush on it)."""
    if video is None:
        return None
    try:
        frames = inputs.load_video(video)
    except inputs.InputError as error:
        gr.Warning(str(error))
        return None
    return {"background": np.ascontiguousarray(frames[0]), "layers": [], "composite": None}
