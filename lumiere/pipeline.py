"""LumierePipeline: text encoder -> base STUNet (whole clip) -> SSR with temporal MultiDiffusion -> uint8 video.

Components load lazily (the first call that needs one loads it) and each runs on the device its
parameters are on, so a model manager can move or evict components between calls.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import conditioning as cond
from .hub import CheckpointError, read_json, read_safetensors, resolve_pretrained
from .models.stunet import STUNet
from .models.text_encoder import TextEncoder
from .multidiffusion import temporal_windows, windowed_prediction
from .preprocessing import image_tensor, mask_tensor, to_numpy_video, to_uint8_video, video_tensor
from .sampling import Progress, constrain_x0, denoise, guided, initial_noise, make_scheduler, sdedit_timesteps
from .styles import styled

COMPONENTS = ("text_encoder", "base", "conditional", "ssr")
TASK_COMPONENTS = {
    "text_to_video": ("text_encoder", "base"),
    "stylize": ("text_encoder", "base"),
    "video_to_video": ("text_encoder", "base"),
    "image_to_video": ("text_encoder", "conditional"),
    "inpaint": ("text_encoder", "conditional"),
    "cinemagraph": ("text_encoder", "conditional"),
    "reference_guided": ("text_encoder", "base", "conditional"),
}
# SSR defaults, overridable per model in config["ssr"]; measured on the bundled model (README, "SSR"):
# projecting x0 onto the low-res input every step with the model's detail at 0.15 beats both plain SSR
# and bicubic on PSNR, keeps the input's structure (down-sampled back: ~65 dB) and brings the grain
# (|Laplacian|) to the ground truth's level; replacing the known region of x0 with the user's pixels
# every step lowers the seam at the mask edge and keeps the still region stiller than pasting only.
LOW_RES_CONSISTENCY = "every_step"
DETAIL_GAIN = 0.15
KNOWN_PIXELS_IN_LOOP = True
MODEL_INDEX = "model_index.json"
STYLE_WEIGHTS = "diffusion_pytorch_model.safetensors"


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "style"


def module_device(module: nn.Module) -> torch.device:
    """Where a component runs: the device of its parameters (CPU for a module without any)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))


class LumierePipeline:
    """The Lumiere system: see API.md for the public methods' contract."""

    def __init__(self, *, config: dict, scheduler_config: dict, components: dict[str, nn.Module | None],
                 component_dirs: dict[str, Path] | None = None, styles: dict[str, dict | Path] | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        self.config = config
        self.scheduler_config = dict(scheduler_config)
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or default_dtype(self.device)
        self._components: dict[str, nn.Module | None] = {name: components.get(name) for name in COMPONENTS}
        self._component_dirs = dict(component_dirs or {})
        self._styles: dict[str, dict | Path] = dict(styles or {})
        self.last_seed: int | None = None
        self.progress_bar = False
        for name, module in self._components.items():
            if module is not None:
                self._components[name] = self._place(module)

    # ------------------------------------------------------------------ components
    @property
    def component_names(self) -> tuple[str, ...]:
        """Components this pipeline has (loaded or on disk)."""
        return tuple(n for n in COMPONENTS if self._components.get(n) is not None or n in self._component_dirs)

    def components_for(self, task: str, super_resolve: bool = True) -> list[str]:
        """Which components a task needs (lets a model manager load/evict ahead of a call)."""
        if task not in TASK_COMPONENTS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASK_COMPONENTS)}")
        names = list(TASK_COMPONENTS[task]) + (["ssr"] if super_resolve and self.has_component("ssr") else [])
        return names

    def has_component(self, name: str) -> bool:
        return name in self.component_names

    def is_loaded(self, name: str) -> bool:
        return self._components.get(name) is not None

    def get_component(self, name: str) -> nn.Module:
        """The component, loaded from disk on first use."""
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; components are {', '.join(COMPONENTS)}")
        module = self._components.get(name)
        if module is None:
            if name not in self._component_dirs:
                raise ValueError(f"this pipeline has no {name!r} model")
            module = self._place(self._load_component(name))
            self._components[name] = module
        return module

    def unload_component(self, name: str) -> None:
        """Drop a loaded component (it reloads from disk when next needed)."""
        if name in self._component_dirs:
            self._components[name] = None

    def _place(self, module: nn.Module) -> nn.Module:
        return module.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)

    def _load_component(self, name: str) -> nn.Module:
        directory = self._component_dirs[name]
        if name == "text_encoder":
            return TextEncoder.from_pretrained(directory, self._component_dirs.get("tokenizer", directory))
        return STUNet.from_pretrained(directory)

    @property
    def text_encoder(self) -> TextEncoder:
        return self.get_component("text_encoder")

    @property
    def base(self) -> STUNet:
        return self.get_component("base")

    @property
    def conditional(self) -> STUNet:
        return self.get_component("conditional")

    @property
    def ssr(self) -> STUNet:
        return self.get_component("ssr")

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "LumierePipeline":
        self.device = torch.device(device) if device is not None else self.device
        self.dtype = dtype or self.dtype
        for name, module in self._components.items():
            if module is not None:
                self._components[name] = self._place(module)
        return self

    # ------------------------------------------------------------------ properties
    @property
    def styles(self) -> list[str]:
        return sorted(self._styles)

    @property
    def base_resolution(self) -> tuple[int, int, int]:
        return tuple(self.config["base_resolution"])

    @property
    def ssr_scale(self) -> int:
        return int(self.config.get("ssr", {}).get("scale", 1)) if self.has_component("ssr") else 1

    @property
    def output_resolution(self) -> tuple[int, int, int]:
        t, h, w = self.base_resolution
        return (t, h * self.ssr_scale, w * self.ssr_scale)

    @property
    def fps(self) -> float:
        return float(self.config.get("fps", 8))

    @property
    def temporal_downsampling_factor(self) -> int:
        return int(self.config.get("temporal_downsampling_factor", 1))

    @property
    def defaults(self) -> dict:
        return self.config.get("defaults", {})

    def add_style(self, name: str, spatial_state: dict[str, torch.Tensor]) -> None:
        """Register a style: the style fine-tuned T2I weights under their diffusers names."""
        self._styles[name] = {k: v.detach().cpu() for k, v in spatial_state.items()}

    def style_state(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self._styles:
            available = ", ".join(self.styles) or "none"
            raise ValueError(f"unknown style {name!r}; available styles: {available}")
        entry = self._styles[name]
        if isinstance(entry, Path):
            entry = read_safetensors(entry / STYLE_WEIGHTS)
            self._styles[name] = entry
        return entry

    # ------------------------------------------------------------------ public generation API
    def text_to_video(self, prompt: str, *, num_frames: int | None = None, num_inference_steps: int | None = None,
                      guidance_scale: float | None = None, negative_prompt: str | None = None, seed: int | None = None,
                      super_resolve: bool = True, style: str | None = None, style_weight: float = 1.0,
                      callback: Callable[[int, int], None] | None = None, sampler: str | None = None,
                      reference_image=None) -> np.ndarray:
        """Generate a whole clip from text with the base STUNet, then (optionally) super-resolve it.

        ``reference_image="t2i"``: VideoGen-style reference guidance — draw the first frame with the frozen
        T2I U-Net alone, then animate it with the conditional model. An image there is used as is.
        """
        if reference_image is not None:
            return self._reference_guided(prompt, reference_image, num_frames=num_frames,
                                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                          negative_prompt=negative_prompt, seed=seed, super_resolve=super_resolve,
                                          style=style, style_weight=style_weight, callback=callback, sampler=sampler)
        request = self._request(prompt, num_frames, num_inference_steps, guidance_scale, negative_prompt, seed,
                                super_resolve, callback, sampler, model="base")
        with styled(self.base, self.style_state(style) if style else None, style_weight):
            video = self._sample_video(self.base, request)
        return self._finish(video, request)

    def image_to_video(self, image, prompt: str, **common) -> np.ndarray:
        """Animate an image: it is the first frame (C = image then blanks, M = 1 on frame 0)."""
        request = self._request_from(prompt, common, model="conditional")
        _, height, width = self.base_resolution
        condition, keep = cond.image_to_video_condition(image_tensor(image, height, width), request["num_frames"])
        known = self._known_pixels(request, lambda h, w: cond.image_to_video_condition(image_tensor(image, h, w),
                                                                                        request["num_frames"]))
        return self._conditional(request, condition, keep, common, known=known)

    def inpaint(self, video, mask, prompt: str, **common) -> np.ndarray:
        """Fill the masked region (True = generate) of a video; outpainting = a mask over the border."""
        request = self._request_from(prompt, common, model="conditional")
        frames = request["num_frames"]
        _, height, width = self.base_resolution
        source = video_tensor(video, frames, height, width)
        generate = mask_tensor(mask, frames, height, width)
        condition, keep = cond.inpaint_condition(source, generate)
        known = self._known_pixels(request, lambda h, w: cond.inpaint_condition(video_tensor(video, frames, h, w),
                                                                                 mask_tensor(mask, frames, h, w)))
        return self._conditional(request, condition, keep, common, known=known)

    def cinemagraph(self, image, mask, prompt: str, **common) -> np.ndarray:
        """Animate only the masked region of an image; everything else stays still."""
        request = self._request_from(prompt, common, model="conditional")
        frames = request["num_frames"]
        _, height, width = self.base_resolution
        region = mask_tensor(mask, 1, height, width)[0]
        condition, keep = cond.cinemagraph_condition(image_tensor(image, height, width), region, frames)
        known = self._known_pixels(request, lambda h, w: cond.cinemagraph_condition(
            image_tensor(image, h, w), mask_tensor(mask, 1, h, w)[0], frames))
        return self._conditional(request, condition, keep, common, known=known)

    def video_to_video(self, video, prompt: str, *, strength: float = 0.6, **common) -> np.ndarray:
        """SDEdit: noise every frame of the input to the timestep set by ``strength``, then denoise."""
        request = self._request_from(prompt, common, model="base")
        _, height, width = self.base_resolution
        source = video_tensor(video, request["num_frames"], height, width)
        style, style_weight = common.get("style"), common.get("style_weight", 1.0)
        with styled(self.base, self.style_state(style) if style else None, style_weight):
            video = self._sample_video(self.base, request, init_video=source, strength=strength)
        return self._finish(video, request)

    def super_resolve(self, video, prompt: str, *, window: int | None = None, overlap: int = 2,
                      multidiffusion: bool = True, seed: int | None = None, num_inference_steps: int | None = None,
                      guidance_scale: float | None = None, negative_prompt: str | None = None,
                      callback: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Spatial super-resolution of a base-resolution video with temporal MultiDiffusion (App. C).

        ``multidiffusion=False`` runs the same windows without overlap (the paper's ablation).
        """
        if not self.has_component("ssr"):
            raise ValueError("this pipeline has no super-resolution model")
        array = to_numpy_video(video)
        _, height, width = self.base_resolution
        low = video_tensor(array, len(array), height, width)[None]
        generator, seed = self._generator(seed)
        ssr_cfg = self.config.get("ssr", {})
        steps = _positive_int(num_inference_steps or ssr_cfg.get("num_inference_steps", 20), "num_inference_steps")
        progress = Progress(steps, callback, self.progress_bar, "super-resolution")
        try:
            high = self._super_resolve_tensor(low, prompt, negative_prompt or "", generator, progress, window=window,
                                              overlap=overlap, multidiffusion=multidiffusion, steps=steps,
                                              guidance=guidance_scale)
        finally:
            progress.close()
        return to_uint8_video(high[0])

    # ------------------------------------------------------------------ request handling
    def _request(self, prompt, num_frames, num_inference_steps, guidance_scale, negative_prompt, seed, super_resolve,
                 callback, sampler, model: str, extra_steps: int = 0) -> dict:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        defaults = self.defaults
        base_frames = self.base_resolution[0]
        num_frames = _positive_int(num_frames if num_frames is not None else base_frames, "num_frames")
        factor = self.temporal_downsampling_factor
        if num_frames % factor:
            raise ValueError(f"num_frames must be a multiple of {factor} for this model, got {num_frames}")
        steps = _positive_int(num_inference_steps or defaults.get("num_inference_steps", 25), "num_inference_steps")
        guidance = float(guidance_scale if guidance_scale is not None else defaults.get("guidance_scale", 5.0))
        if not 0.0 <= guidance <= 50.0:
            raise ValueError(f"guidance_scale must be between 0 and 50, got {guidance}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise TypeError("negative_prompt must be a string")
        super_resolve = bool(super_resolve) and self.has_component("ssr")
        ssr_steps = int(self.config.get("ssr", {}).get("num_inference_steps", 20)) if super_resolve else 0
        if not self.has_component(model):
            raise ValueError(f"this pipeline has no {model!r} model")
        generator, seed = self._generator(seed)
        return {
            "prompt": prompt, "negative_prompt": negative_prompt if negative_prompt is not None else defaults.get("negative_prompt", ""),
            "num_frames": num_frames, "steps": steps, "guidance": guidance, "super_resolve": super_resolve,
            "sampler": sampler or defaults.get("sampler"), "generator": generator, "seed": seed,
            "progress": Progress(steps + ssr_steps + extra_steps, callback, self.progress_bar),
            "ssr_steps": ssr_steps,
        }

    def _request_from(self, prompt, common: dict, model: str, extra_steps: int = 0) -> dict:
        allowed = {"num_frames", "num_inference_steps", "guidance_scale", "negative_prompt", "seed", "super_resolve",
                   "callback", "sampler", "style", "style_weight"}
        unknown = set(common) - allowed
        if unknown:
            raise TypeError(f"unexpected argument(s): {', '.join(sorted(unknown))}")
        return self._request(prompt, common.get("num_frames"), common.get("num_inference_steps"),
                             common.get("guidance_scale"), common.get("negative_prompt"), common.get("seed"),
                             common.get("super_resolve", True), common.get("callback"), common.get("sampler"),
                             model=model, extra_steps=extra_steps)

    def _generator(self, seed: int | None) -> tuple[torch.Generator, int]:
        if seed is None or (isinstance(seed, (int, np.integer)) and int(seed) < 0):
            seed = secrets.randbelow(2**31)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
        self.last_seed = int(seed)
        return torch.Generator(device="cpu").manual_seed(int(seed)), int(seed)

    def _text_states(self, request: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        encoder = self.text_encoder
        if request["guidance"] == 1.0:
            return encoder.encode([request["prompt"]]), None
        states = encoder.encode([request["prompt"], request["negative_prompt"]])
        return states[:1], states[1:]

    # ------------------------------------------------------------------ sampling
    def _sample_video(self, model: STUNet, request: dict, condition: tuple[torch.Tensor, torch.Tensor] | None = None,
                      init_video: torch.Tensor | None = None, strength: float | None = None) -> torch.Tensor:
        """Sample a base-resolution clip (1, 3, T, H, W) in [-1, 1] with the whole clip in one pass."""
        device, dtype = module_device(model), model.dtype
        _, height, width = self.base_resolution
        text, uncond = (s.to(device, dtype) if s is not None else None for s in self._text_states(request))
        scheduler = make_scheduler(self.scheduler_config, request["sampler"])
        shape = (1, 3, request["num_frames"], height, width)
        noise = initial_noise(shape, request["generator"], device, dtype)
        if init_video is None:
            scheduler.set_timesteps(request["steps"], device=device)
            timesteps = scheduler.timesteps
            x = noise * scheduler.init_noise_sigma
        else:
            timesteps, start = sdedit_timesteps(scheduler, request["steps"], strength)
            source = init_video[None].to(device, dtype)
            if start is None:  # strength 0: nothing to denoise
                request["progress"].done += request["steps"]
                return source
            x = scheduler.add_noise(source, noise, start.reshape(1))
            request["progress"].total -= request["steps"] - len(timesteps)
        extra = None
        if condition is not None:
            condition_video, keep = condition
            extra = torch.cat([condition_video, keep], dim=0)[None].to(device, dtype)

        def predict(x_in: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
            if extra is not None:
                x_in = torch.cat([x_in, extra.expand(x_in.shape[0], -1, -1, -1, -1)], dim=1)
            return model(x_in, t, states)

        with torch.inference_mode():
            return denoise(guided(predict, text, uncond, request["guidance"]), x, scheduler, timesteps,
                           request["generator"], request["progress"])

    def _sample_image(self, request: dict) -> torch.Tensor:
        """One image (3, H, W) from the frozen T2I U-Net alone (reference guidance's first frame)."""
        unet = self.base.t2i
        device, dtype = module_device(unet), unet.dtype
        _, height, width = self.base_resolution
        text, uncond = (s.to(device, dtype) if s is not None else None for s in self._text_states(request))
        scheduler = make_scheduler(self.scheduler_config, request["sampler"])
        scheduler.set_timesteps(request["steps"], device=device)
        x = initial_noise((1, 3, height, width), request["generator"], device, dtype) * scheduler.init_noise_sigma

        def predict(x_in, t, states):
            return unet(x_in, t, states).sample

        with torch.inference_mode():
            image = denoise(guided(predict, text, uncond, request["guidance"]), x, scheduler, scheduler.timesteps,
                            request["generator"], request["progress"])
        return image[0].float().clamp(-1, 1)

    def _known_pixels(self, request: dict, build: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]):
        """The user's (C, M) rebuilt at output resolution from the original input, when SSR will run.

        Why: the base-resolution C is the user's input down-sampled; SSR would repaint it from 1/scale
        of the information. The full-resolution pixels are pasted over the SSR output instead.
        """
        if not request["super_resolve"]:
            return None
        _, height, width = self.output_resolution
        return build(height, width)

    def _conditional(self, request: dict, condition: torch.Tensor, keep: torch.Tensor, common: dict,
                     composite: bool = True, known: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
        """Sample with (C, M); ``composite=False`` returns the raw model output (evaluation measures it).

        Known pixels (M = 1) are the user's: pasted back exactly at base resolution, so SSR starts
        from them, and, given ``known`` (C, M at output resolution), again after SSR with a soft edge.
        """
        style, style_weight = common.get("style"), common.get("style_weight", 1.0)
        with styled(self.conditional, self.style_state(style) if style else None, style_weight):
            video = self._sample_video(self.conditional, request, condition=(condition, keep))
        if composite:
            keep = keep[None].to(video.device, video.dtype)
            video = keep * condition[None].to(video.device, video.dtype) + (1 - keep) * video
        return self._finish(video, request, known=known if composite else None)

    def _reference_guided(self, prompt, reference_image, **common) -> np.ndarray:
        if isinstance(reference_image, str):
            if reference_image != "t2i":
                raise ValueError(f"reference_image must be 't2i' or an image, got {reference_image!r}")
            request = self._request_from(prompt, common, model="conditional", extra_steps=0)
            request["progress"].total += request["steps"]
            image = self._sample_image(request)
        else:
            request = self._request_from(prompt, common, model="conditional")
            _, height, width = self.base_resolution
            image = image_tensor(reference_image, height, width)
        condition, keep = cond.image_to_video_condition(image.cpu(), request["num_frames"])
        known = None
        if not isinstance(reference_image, str):
            known = self._known_pixels(request, lambda h, w: cond.image_to_video_condition(
                image_tensor(reference_image, h, w), request["num_frames"]))
        return self._conditional(request, condition, keep, common, known=known)

    def _finish(self, video: torch.Tensor, request: dict,
                known: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
        try:
            if request["super_resolve"]:
                video = self._super_resolve_tensor(video.clamp(-1, 1), request["prompt"], request["negative_prompt"],
                                                   request["generator"], request["progress"],
                                                   steps=request["ssr_steps"], known=known)
            return to_uint8_video(video[0])
        finally:
            request["progress"].close()

    def _super_resolve_tensor(self, low: torch.Tensor, prompt: str, negative_prompt: str, generator, progress,
                              window: int | None = None, overlap: int = 2, multidiffusion: bool = True,
                              steps: int | None = None, guidance: float | None = None,
                              known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """SSR of ``low`` (1, 3, T, H, W) in [-1, 1]; ``known`` = (C, M) at output resolution: user pixels.

        Config ``ssr`` (defaults above the class): ``low_res_consistency`` — project the x0 estimate onto
        ``low`` at "every_step", only the "final" output, or "off"; ``detail_gain`` — how much of the
        model's own detail the projection keeps; ``known_pixels_in_loop`` — also replace the known region
        of x0 by the user's pixels every step; ``feather`` — output pixels of the soft edge where the
        user's pixels are pasted over the result (default: one base pixel).
        """
        ssr = self.ssr
        cfg = self.config.get("ssr", {})
        device, dtype = module_device(ssr), ssr.dtype
        scale = self.ssr_scale
        window = _positive_int(window or cfg.get("window", 8), "window")
        overlap = min(int(overlap), window - 1)  # the paper's 2-frame overlap, capped for very short windows
        _, _, frames, height, width = low.shape
        windows = temporal_windows(frames, window, overlap if multidiffusion else 0)
        guidance = float(guidance if guidance is not None else cfg.get("guidance_scale", 1.0))
        consistency = str(cfg.get("low_res_consistency", LOW_RES_CONSISTENCY))
        if consistency not in ("every_step", "final", "off"):
            raise ValueError(f"ssr.low_res_consistency must be 'every_step', 'final' or 'off', got {consistency!r}")
        detail_gain = float(cfg.get("detail_gain", DETAIL_GAIN))
        request = {"prompt": prompt, "negative_prompt": negative_prompt, "guidance": guidance}
        text, uncond = (s.to(device, dtype) if s is not None else None for s in self._text_states(request))

        # Condition on the bilinearly up-sampled low-res video, noise-augmented (Imagen / IF stage II).
        low = low.to(device, torch.float32)
        upsampled = F.interpolate(low[0].permute(1, 0, 2, 3), scale_factor=scale, mode="bilinear", align_corners=False)
        upsampled = upsampled.permute(1, 0, 2, 3)[None].clamp(-1, 1)
        noise_level = torch.tensor([int(cfg.get("noise_level", 100))], device=device)
        augment = make_scheduler(self.scheduler_config, "ddpm")
        aug_noise = initial_noise(upsampled.shape, generator, device, torch.float32)
        upsampled = augment.add_noise(upsampled, aug_noise, noise_level.cpu()).to(dtype)

        scheduler = make_scheduler(self.scheduler_config, cfg.get("sampler") or self.defaults.get("sampler"))
        scheduler.set_timesteps(steps or int(cfg.get("num_inference_steps", 20)), device=device)
        shape = (1, 3, frames, height * scale, width * scale)
        x = initial_noise(shape, generator, device, dtype) * scheduler.init_noise_sigma

        def predict(x_in: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
            batch = x_in.shape[0]

            def window_prediction(x_window, start, end):
                conditioning = upsampled[:, :, start:end].expand(batch, -1, -1, -1, -1)
                return ssr(torch.cat([x_window, conditioning], dim=1), t, states,
                           class_labels=noise_level.expand(batch))

            return windowed_prediction(window_prediction, x_in, windows)

        alpha = target = None
        if known is not None:
            target = known[0][None].to(device, torch.float32)
            alpha = cond.feathered_keep(known[1][None].to(device), int(cfg.get("feather", scale)))
        in_loop = known is not None and bool(cfg.get("known_pixels_in_loop", KNOWN_PIXELS_IN_LOOP))

        def constrain(x0: torch.Tensor) -> torch.Tensor:
            if consistency == "every_step":
                x0 = low_res_projection(x0, low, scale, detail_gain)
            if in_loop:
                x0 = alpha * target + (1 - alpha) * x0
            return x0

        prediction = guided(predict, text, uncond, guidance)
        if consistency == "every_step" or in_loop:
            prediction = constrain_x0(prediction, scheduler, constrain)
        with torch.inference_mode():
            high = denoise(prediction, x, scheduler, scheduler.timesteps, generator, progress)
            if consistency == "final":
                high = low_res_projection(high.float(), low, scale, detail_gain).to(dtype)
            if known is not None:
                # The user's own pixels at output resolution, with a soft edge into the generated region.
                high = (alpha * target + (1 - alpha) * high.float()).to(dtype)
        return high

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, lazy: bool = True) -> "LumierePipeline":
        """Load a pipeline directory or Hub repo (None / "bundled" = the model shipped in assets/)."""
        root = resolve_pretrained(path_or_repo)
        index = read_json(root / MODEL_INDEX)
        if index.get("_class_name") != "LumierePipeline":
            raise CheckpointError(f"{root / MODEL_INDEX} is not a Lumiere pipeline index")
        component_dirs = {}
        for name, sub in index.get("components", {}).items():
            directory = root / sub
            expected = directory / ("tokenizer_config.json" if name == "tokenizer" else "config.json")
            if not expected.is_file():
                raise CheckpointError(f"missing checkpoint file: {expected}")
            component_dirs[name] = directory
        if "text_encoder" not in component_dirs or "base" not in component_dirs:
            raise CheckpointError(f"{root / MODEL_INDEX} must list at least 'text_encoder' and 'base'")
        scheduler_config = read_json(root / "scheduler" / "scheduler_config.json")
        styles = {}
        for name, sub in index.get("styles", {}).items():
            weights = root / sub / STYLE_WEIGHTS
            if not weights.is_file():
                raise CheckpointError(f"missing checkpoint file: {weights}")
            styles[name] = root / sub
        pipe = cls(config=index["config"], scheduler_config=scheduler_config, components={},
                   component_dirs=component_dirs, styles=styles, device=device, dtype=dtype)
        pipe.source = root
        if not lazy:
            for name in pipe.component_names:
                pipe.get_component(name)
        return pipe

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write model_index.json + one folder per component (safetensors + json only)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        components = {}
        for name in self.component_names:
            module = self.get_component(name)
            if name == "text_encoder":
                module.save_pretrained(directory / "text_encoder", directory / "tokenizer", dtype=dtype)
                components["tokenizer"] = "tokenizer"
            else:
                module.save_pretrained(directory / name, dtype=dtype)
            components[name] = name
        (directory / "scheduler").mkdir(exist_ok=True)
        (directory / "scheduler" / "scheduler_config.json").write_text(json.dumps(self.scheduler_config, indent=2))
        styles = {}
        for name in self.styles:
            sub = f"styles/{slugify(name)}"
            (directory / sub).mkdir(parents=True, exist_ok=True)
            state = {k: (v.to(dtype) if dtype is not None else v).contiguous() for k, v in self.style_state(name).items()}
            from safetensors.torch import save_file

            save_file(state, str(directory / sub / STYLE_WEIGHTS), metadata={"format": "pt"})
            (directory / sub / "style.json").write_text(json.dumps({"name": name}, indent=2))
            styles[name] = sub
        index = {"_class_name": "LumierePipeline", "components": components, "styles": styles, "config": self.config}
        (directory / MODEL_INDEX).write_text(json.dumps(index, indent=2))

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None,
                    commit_message: str = "Upload Lumiere pipeline") -> str:
        """Save to a temporary folder and upload it as a Hub model repo; returns the repo URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            source = getattr(self, "source", None)
            if source is not None and (Path(source) / "README.md").is_file():
                shutil.copy(Path(source) / "README.md", Path(tmp) / "README.md")
            api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
        return str(url)


def low_res_projection(high: torch.Tensor, low: torch.Tensor, scale: int, detail_gain: float = 1.0) -> torch.Tensor:
    """Make ``high`` (B, C, T, H*s, W*s) area-down-sample exactly to ``low`` (1, C, T, H, W).

    A range/null-space split as in DDNM (Wang et al., 2023): the low frequencies come from ``low``
    (bicubic up-sampled: smooth, unlike the blocky nearest pseudo-inverse), the detail
    high - bicubic(down(high)) from the model, scaled by ``detail_gain``; a last nearest-up-sampled
    residual makes every s x s block mean equal ``low`` exactly (it is tiny: bicubic nearly keeps means).
    """
    batch, channels, frames, height, width = high.shape
    flat = high.transpose(1, 2).reshape(batch * frames, channels, height, width)
    target = low.to(high).expand(batch, -1, -1, -1, -1).transpose(1, 2).reshape(flat.shape[0], channels,
                                                                               height // scale, width // scale)

    def up(x):
        return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)

    flat = up(target) + detail_gain * (flat - up(F.avg_pool2d(flat, scale)))
    residual = target - F.avg_pool2d(flat, scale)
    flat = flat + residual.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return flat.reshape(batch, frames, channels, height, width).transpose(1, 2)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (isinstance(value, float) and value.is_integer()):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)
