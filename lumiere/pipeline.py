"""LumierePipeline: text encoder -> base STUNet (whole clip) -> SSR with temporal MultiDiffusion -> uint8 video.

A latent pipeline (one with a ``vae`` component, Stable-Diffusion style) samples VAE latents and
decodes them, a bounded number of frames per call (``vae_frames_per_call``), before anything that
works on pixels: the known-pixel paste at base resolution, SSR and the output. Conditioning inputs
are encoded, their masks min-pooled to latent resolution (``models.vae.latent_condition``).

This module holds the applications (text-to-video, image-to-video, inpainting, cinemagraphs, SDEdit,
reference guidance, super-resolution) and the base-model sampling they share. Where the models live
and how they are placed is ``components``, the SSR stage ``super_resolution``, the directory format
``pipeline_format``, a call's settings ``request``, the option defaults ``options``. The public
contract is ``docs/api.md``.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import conditioning as cond
from . import pipeline_format
from . import components as _components
from .components import ComponentStore, default_device, default_dtype, module_device
from .errors import InputError
from .hub import read_safetensors, resolve_pretrained
from .models.stunet import STUNet
from .models.text_encoder import TextEncoder
from .models.vae import DEFAULT_FRAMES_PER_CALL, check_resolution, decode_latents, encode_video, latent_condition
from .models.vae import scale_factor as vae_scale_factor
from .multidiffusion import take_window, windowed_prediction
from .options import (DEFAULT_SSR_OVERLAP, DEFAULT_STRENGTH, GenerationDefaults, PipelineConfig, SSROptions,
                      base_windows, frame_counts)
from .preprocessing import image_tensor, mask_tensor, tensor_to_uint8, to_numpy_video, video_tensor
from .request import Callback, GenerationRequest, documented, guidance_value, make_generator, positive_int
from .sampling import (Progress, constrain_x0, denoise, guided, initial_noise, make_scheduler, scheduler_sampler,
                       sdedit_start, sdedit_steps)
from .styles import styled
from .super_resolution import low_res_projection, sample_ssr

__all__ = ["LumierePipeline", "low_res_projection", "default_device", "default_dtype", "module_device"]


class LumierePipeline:
    """The Lumiere system: applications over lazily loaded components (contract: ``docs/api.md``).

    Build one with :meth:`from_pretrained` (a pipeline directory, Hub repo id, or the bundled model)
    or ``lumiere.build.build_pipeline`` (fresh weights). Calls hold no per-call state on the
    pipeline, so one object may serve many requests (one at a time: components are shared modules).
    """

    def __init__(self, *, config: dict, scheduler_config: dict, components: dict[str, nn.Module | None],
                 component_dirs: dict[str, Path] | None = None, styles: dict[str, dict | Path] | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 source: str | os.PathLike | None = None, training: dict | None = None):
        """
        Args:
            config: the inference config of ``model_index.json`` (``docs/pipeline-format.md``).
            scheduler_config: a diffusers scheduler config (noise schedule, prediction type).
            components: loaded modules by name (``components.COMPONENTS``); None = load from ``component_dirs``.
            component_dirs: folders of components not loaded yet.
            styles: style name -> spatial weights, or the folder holding them (read on first use).
            device / dtype: where components are placed (default: best device, its default dtype).
            source: the directory the pipeline was read from (``push_to_hub`` copies its model card).
            training: how the weights were made (``model_index.json``'s "training"), saved along with them.
        """
        self.config = config
        self.scheduler_config = dict(scheduler_config)
        device = torch.device(device) if device is not None else default_device()
        self._store = ComponentStore(components, component_dirs, device, dtype or default_dtype(device))
        self._styles: dict[str, dict | Path] = dict(styles or {})
        self.source = Path(source) if source is not None else None
        self.training = dict(training) if training else None
        self.progress_bar: bool | dict = False  # a tqdm bar per call (the CLI's on); a dict: its tqdm options
        # Latent pipelines: frames per VAE encode / decode call (bounds memory; None = a clip at once).
        self.vae_frames_per_call: int | None = DEFAULT_FRAMES_PER_CALL
        PipelineConfig.from_config(config)  # a mistyped key fails when the pipeline opens, not mid-call
        scheduler_sampler(self.scheduler_config)  # so does a scheduler class no sampler can run

    # ------------------------------------------------------------------ components
    @property
    def device(self) -> torch.device:
        return self._store.device

    @property
    def dtype(self) -> torch.dtype:
        return self._store.dtype

    @property
    def component_names(self) -> tuple[str, ...]:
        """Components this pipeline has (loaded or on disk)."""
        return self._store.names

    def components_for(self, task: str, super_resolve: bool = True) -> list[str]:
        """Which components ``task`` (a key of ``components.TASK_COMPONENTS``) needs, "ssr" included
        when it will super-resolve; lets a model manager load or evict ahead of a call.

        Raises:
            InputError: unknown task.
        """
        return self._store.for_task(task, super_resolve)

    def has_component(self, name: str) -> bool:
        return self._store.has(name)

    def is_loaded(self, name: str) -> bool:
        return self._store.is_loaded(name)

    def get_component(self, name: str) -> nn.Module:
        """The component, loaded from disk onto ``device``/``dtype`` (eval mode, no grad) on first use.

        Raises:
            InputError: unknown name, or a component this pipeline does not have.
            CheckpointError: its files are missing or corrupt.
        """
        return self._store.get(name)

    def unload_component(self, name: str) -> None:
        """Drop a loaded component (it reloads from disk when next needed; in-memory-only ones stay)."""
        self._store.unload(name)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "LumierePipeline":
        """Move every loaded component (and future loads) to ``device`` / ``dtype``; returns self."""
        self._store.to(torch.device(device) if device is not None else self.device, dtype or self.dtype)
        return self

    def set_progress_bar_config(self, **kwargs) -> None:
        """Show a tqdm bar per call with these tqdm options (as diffusers pipelines take them: ``desc``,
        ``file``, ``leave``, ...); ``disable=True`` shows none. A pipeline shows none until this is called
        (``progress_bar``; the CLI turns it on)."""
        self.progress_bar = dict(kwargs)

    @property
    def text_encoder(self) -> TextEncoder:
        return self.get_component("text_encoder")

    def known_words(self) -> list[str] | None:
        """The words the text encoder's tokenizer knows when its vocabulary is closed and word-level (the
        bundled model's), sorted; None when it can spell any word (BPE, SentencePiece, sub-word WordPiece) or
        the pipeline has no text encoder. Reads only the tokenizer (``components.known_words``)."""
        return _components.known_words(self._store.tokenizer())

    def unknown_words(self, prompt: str) -> list[str]:
        """The words of ``prompt`` the model's closed vocabulary does not know (it reads them as [UNK], i.e.
        ignores them), as typed and in order; always [] when ``known_words()`` is None."""
        return _components.unknown_words(self._store.tokenizer(), prompt)

    @property
    def base(self) -> STUNet:
        return self.get_component("base")

    @property
    def conditional(self) -> STUNet:
        return self.get_component("conditional")

    @property
    def ssr(self) -> STUNet:
        return self.get_component("ssr")

    @property
    def vae(self):
        """The latent pipeline's ``diffusers.AutoencoderKL`` (InputError for a pixel pipeline)."""
        return self.get_component("vae")

    @property
    def is_latent(self) -> bool:
        """Whether the STUNets run on VAE latents (the pipeline has a ``vae``) rather than pixels."""
        return self.has_component("vae")

    @property
    def model_sample_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of what the base STUNet denoises: pixels (3, H, W) at
        ``base_resolution``, or latents (C, H/f, W/f) for a latent pipeline (f: the VAE's factor).

        Raises:
            InputError: ``base_resolution`` is not divisible by the VAE's down-sampling factor.
        """
        _, height, width = self.base_resolution
        if not self.is_latent:
            return 3, height, width
        vae = self.vae
        factor = vae_scale_factor(vae)
        check_resolution(height, width, factor)
        return int(vae.config.latent_channels), height // factor, width // factor

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, T, H, W) in [-1, 1] -> what the STUNets work on (latents, or the pixels themselves)."""
        if not self.is_latent:
            return video
        with torch.inference_mode():
            return encode_video(self.vae, video, self.vae_frames_per_call)

    def decode_frames(self, sample: torch.Tensor) -> torch.Tensor:
        """The STUNets' output (B, C, T, h, w) -> pixels (B, 3, T, H, W) in [-1, 1] (a latent pipeline decodes
        ``vae_frames_per_call`` frames per VAE call)."""
        if not self.is_latent:
            return sample
        with torch.inference_mode():
            return decode_latents(self.vae, sample, self.vae_frames_per_call)

    # ------------------------------------------------------------------ model properties
    @property
    def styles(self) -> list[str]:
        """Style names, sorted."""
        return sorted(self._styles)

    @property
    def settings(self) -> PipelineConfig:
        """``config`` parsed (``options.PipelineConfig``); read on every use, so edits to ``config`` apply.

        Raises:
            InputError: ``config`` has an unknown key or a bad value.
        """
        return PipelineConfig.from_config(self.config)

    @property
    def base_resolution(self) -> tuple[int, int, int]:
        """(frames, height, width) of the base model's clip."""
        return self.settings.base_resolution

    @property
    def ssr_options(self) -> SSROptions:
        """The SSR stage's settings (``config["ssr"]`` over ``SSROptions`` defaults)."""
        return self.settings.ssr

    @property
    def ssr_scale(self) -> int:
        """Spatial up-sampling factor of SSR (1 without an SSR model)."""
        return int(self.ssr_options.scale) if self.has_component("ssr") else 1

    @property
    def output_resolution(self) -> tuple[int, int, int]:
        """(frames, height, width) after SSR."""
        t, h, w = self.base_resolution
        return (t, h * self.ssr_scale, w * self.ssr_scale)

    @property
    def fps(self) -> float:
        return self.settings.fps

    @property
    def temporal_downsampling_factor(self) -> int:
        """N: the base model halves time this many times over; ``num_frames`` must be a multiple of it."""
        return self.settings.temporal_downsampling_factor

    @property
    def defaults(self) -> GenerationDefaults:
        """What a call uses for options it leaves out (``config["defaults"]`` over the library's). A config
        whose "defaults" name no sampler samples with the class ``scheduler_config`` names in ``_class_name``."""
        defaults = self.settings.defaults
        if "sampler" not in (self.config.get("defaults") or {}):
            sampler = scheduler_sampler(self.scheduler_config)
            if sampler is not None:
                defaults = dataclasses.replace(defaults, sampler=sampler)
        return defaults

    def add_style(self, name: str, spatial_state: dict[str, torch.Tensor]) -> None:
        """Register a style: the style fine-tuned T2I weights under their diffusers names (copied to CPU)."""
        self._styles[name] = {k: v.detach().cpu() for k, v in spatial_state.items()}

    def style_state(self, name: str) -> dict[str, torch.Tensor]:
        """A style's spatial weights (read from disk on first use).

        Raises:
            InputError: unknown style. CheckpointError: its weights are corrupt.
        """
        if name not in self._styles:
            raise InputError(f"unknown style {name!r}; available styles: {', '.join(self.styles) or 'none'}")
        entry = self._styles[name]
        if isinstance(entry, Path):
            entry = self._styles[name] = read_safetensors(entry / pipeline_format.STYLE_WEIGHTS)
        return entry

    # ------------------------------------------------------------------ applications
    @documented
    def text_to_video(self, prompt: str, *, num_frames: int | None = None, num_inference_steps: int | None = None,
                      guidance_scale: float | None = None, negative_prompt: str | None = None,
                      sampler: str | None = None, seed: int | None = None, generator: torch.Generator | None = None,
                      style: str | None = None, style_weight: float = 1.0, super_resolve: bool = True,
                      callback: Callback | None = None, reference_image=None, loop: bool = False) -> np.ndarray:
        """Generate a whole clip from text with the base STUNet, then (optionally) super-resolve it.

        Args:
            prompt: what the video shows.
            reference_image: VideoGen-style reference guidance. "t2i": draw the first frame with the
                frozen T2I U-Net alone (``num_inference_steps`` more steps), then animate it with the
                conditional model; an image (as for ``image_to_video``) is used as the first frame.
            {options}

        Returns:
            {returns}

        Raises:
            {raises}
        """
        request = self._request(prompt, num_frames=num_frames, num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, negative_prompt=negative_prompt, sampler=sampler,
                                seed=seed, generator=generator, style=style, style_weight=style_weight,
                                super_resolve=super_resolve, callback=callback, loop=loop)
        if reference_image is not None:
            return self._reference_guided(request, reference_image)
        self._require("base")
        with request.progress(request.step_plan(), self.progress_bar) as progress:
            with self._styled(self.base, request):
                video = self._sample_video(self.base, request, progress)
            return self._finish(self.decode_frames(video), request, progress)

    @documented
    def text_to_image(self, prompt: str, *, num_inference_steps: int | None = None,
                      guidance_scale: float | None = None, negative_prompt: str | None = None,
                      sampler: str | None = None, seed: int | None = None, generator: torch.Generator | None = None,
                      callback: Callback | None = None) -> np.ndarray:
        """One image from the base's T2I U-Net alone (no temporal layers): the spatial model every video
        stage inflates, and what reference guidance draws frame 0 with. What it draws for a prompt
        bounds what the video model can draw (the evaluation's ``t2i_shape_accuracy``).

        Args:
            prompt: what the image shows.
            {options}

        Returns:
            uint8 (H, W, 3) RGB at ``base_resolution``.

        Raises:
            {raises}
        """
        request = self._request(prompt, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                negative_prompt=negative_prompt, sampler=sampler, seed=seed, generator=generator,
                                super_resolve=False, callback=callback)
        self._require("base")
        with request.progress({"image": request.num_inference_steps}, self.progress_bar) as progress:
            return tensor_to_uint8(self._sample_image(request, progress))

    @documented
    def image_to_video(self, image, prompt: str, *, num_frames: int | None = None,
                       num_inference_steps: int | None = None, guidance_scale: float | None = None,
                       negative_prompt: str | None = None, sampler: str | None = None, seed: int | None = None,
                       generator: torch.Generator | None = None, style: str | None = None, style_weight: float = 1.0,
                       super_resolve: bool = True, callback: Callback | None = None) -> np.ndarray:
        """Animate an image: it becomes the first frame (C = image then blanks, M = 1 on frame 0).

        Args:
            image: uint8 (H, W, 3) RGB array or PIL image, any size (resized and centre-cropped to the
                model's aspect); at output resolution it is the result's exact first frame.
            prompt: how the image should move.
            {options}

        Returns:
            {returns}

        Raises:
            {raises}
        """
        request = self._request(prompt, num_frames=num_frames, num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, negative_prompt=negative_prompt, sampler=sampler,
                                seed=seed, generator=generator, style=style, style_weight=style_weight,
                                super_resolve=super_resolve, callback=callback)
        frames = request.num_frames
        return self._conditional(request, lambda h, w: cond.image_to_video_condition(image_tensor(image, h, w), frames))

    @documented
    def inpaint(self, video, mask, prompt: str, *, num_frames: int | None = None,
                num_inference_steps: int | None = None, guidance_scale: float | None = None,
                negative_prompt: str | None = None, sampler: str | None = None, seed: int | None = None,
                generator: torch.Generator | None = None, style: str | None = None, style_weight: float = 1.0,
                super_resolve: bool = True, callback: Callback | None = None) -> np.ndarray:
        """Fill the masked region of a video; outpainting is a mask over the border.

        Args:
            video: uint8 (T, H, W, 3) array or list of frames at the model's fps, each resized +
                centre-cropped; the result keeps its length (``_footage_frames``) unless ``num_frames``
                is given, to which its frames are then resampled evenly.
            mask: True / white = generate, False = keep: bool or uint8 (H, W) for every frame or
                (T, H, W) per frame, or a PIL image; same crop as the video, nearest-neighbour.
                Outside the mask the result is the user's pixels (exactly, beyond ``ssr.feather``
                output pixels of soft edge when SSR runs). An empty mask is an InputError.
            prompt: what should appear in the region.
            {options}

        Returns:
            {returns}

        Raises:
            {raises}
        """
        request = self._request(prompt, num_frames=self._footage_frames(video, num_frames),
                                num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, negative_prompt=negative_prompt, sampler=sampler,
                                seed=seed, generator=generator, style=style, style_weight=style_weight,
                                super_resolve=super_resolve, callback=callback)
        frames = request.num_frames
        return self._conditional(request, lambda h, w: cond.inpaint_condition(video_tensor(video, frames, h, w),
                                                                              mask_tensor(mask, frames, h, w)))

    @documented
    def cinemagraph(self, image, mask, prompt: str, *, num_frames: int | None = None,
                    num_inference_steps: int | None = None, guidance_scale: float | None = None,
                    negative_prompt: str | None = None, sampler: str | None = None, seed: int | None = None,
                    generator: torch.Generator | None = None, style: str | None = None, style_weight: float = 1.0,
                    super_resolve: bool = True, callback: Callback | None = None, loop: bool = False) -> np.ndarray:
        """Animate only the masked region of an image; everything else stays still.

        Args:
            image: uint8 (H, W, 3) RGB array or PIL image; frame 0 of the result is this image.
            mask: True / white = moves, bool or uint8 (H, W) or a PIL image (same crop as the image);
                an empty mask is an InputError.
            prompt: the motion of the region.
            {options}

        Returns:
            {returns}

        Raises:
            {raises}
        """
        request = self._request(prompt, num_frames=num_frames, num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, negative_prompt=negative_prompt, sampler=sampler,
                                seed=seed, generator=generator, style=style, style_weight=style_weight,
                                super_resolve=super_resolve, callback=callback, loop=loop)
        frames = request.num_frames
        return self._conditional(request, lambda h, w: cond.cinemagraph_condition(
            image_tensor(image, h, w), mask_tensor(mask, 1, h, w)[0], frames, feather=cond.CINEMAGRAPH_FEATHER,
            fade_frames=cond.CINEMAGRAPH_FADE_FRAMES, loop=loop))

    @documented
    def video_to_video(self, video, prompt: str, *, strength: float = DEFAULT_STRENGTH, num_frames: int | None = None,
                       num_inference_steps: int | None = None, guidance_scale: float | None = None,
                       negative_prompt: str | None = None, sampler: str | None = None, seed: int | None = None,
                       generator: torch.Generator | None = None, style: str | None = None, style_weight: float = 1.0,
                       super_resolve: bool = True, callback: Callback | None = None) -> np.ndarray:
        """SDEdit: noise every frame of the input to the timestep set by ``strength``, then denoise.

        Args:
            video: uint8 (T, H, W, 3) array or list of frames (length, resampling and resizing as for ``inpaint``).
            prompt: the new video.
            strength: in [0, 1]; 0 returns the input (resized), 1 ignores it; runs
                round(strength x num_inference_steps) steps.
            {options}

        Returns:
            {returns}

        Raises:
            {raises}
        """
        request = self._request(prompt, num_frames=self._footage_frames(video, num_frames),
                                num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, negative_prompt=negative_prompt, sampler=sampler,
                                seed=seed, generator=generator, style=style, style_weight=style_weight,
                                super_resolve=super_resolve, callback=callback)
        self._require("base")
        _, height, width = self.base_resolution
        source = video_tensor(video, request.num_frames, height, width)
        steps = sdedit_steps(request.num_inference_steps, strength)
        plan = request.step_plan(base_steps=steps)
        with request.progress(plan, self.progress_bar) as progress:
            if steps == 0 and self.is_latent:  # strength 0: the input itself, not its VAE round trip
                video = source[None]
            else:
                init = self.encode_frames(source[None])[0]
                with self._styled(self.base, request):
                    video = self.decode_frames(self._sample_video(self.base, request, progress, init_video=init,
                                                                  strength=strength))
            return self._finish(video, request, progress)

    @documented
    def sample_conditional(self, condition: torch.Tensor, keep: torch.Tensor, prompt: str, *,
                           paste_known: bool = True, num_inference_steps: int | None = None,
                           guidance_scale: float | None = None, negative_prompt: str | None = None,
                           sampler: str | None = None, seed: int | None = None,
                           generator: torch.Generator | None = None, style: str | None = None,
                           style_weight: float = 1.0, super_resolve: bool = True,
                           callback: Callback | None = None) -> np.ndarray:
        """Sample the conditional model on a (C, M) pair built by the caller (``lumiere.conditioning``).

        The applications above are this with their own (C, M); evaluation calls it with
        ``paste_known=False`` to measure what the model itself produced.

        Args:
            condition: C, float (3, T, H, W) in [-1, 1] at ``base_resolution``; T is the number of
                frames generated (so this method takes no ``num_frames``).
            keep: M, (1, T, H, W), 1 = known content to keep (the paper's convention), 0 = generate.
                Shapes that do not match ``base_resolution`` are an InputError.
            prompt: the text.
            paste_known: hold C where M = 1 in the sampler's clean estimate at every denoising step
                and paste it back at the end (the applications' behaviour); False returns the raw
                model output (and SSR, if run, is not given the known pixels either).
            {options}

        Returns:
            {returns}

        Raises:
            {raises}
        """
        _, height, width = self.base_resolution
        if condition.ndim != 4 or condition.shape[0] != 3 or tuple(condition.shape[2:]) != (height, width):
            raise InputError(f"condition must be (3, T, {height}, {width}), got {tuple(condition.shape)}")
        if tuple(keep.shape) != (1, *condition.shape[1:]):
            raise InputError(f"keep must be (1, {', '.join(map(str, condition.shape[1:]))}), got {tuple(keep.shape)}")
        request = self._request(prompt, num_frames=condition.shape[1], num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, negative_prompt=negative_prompt, sampler=sampler,
                                seed=seed, generator=generator, style=style, style_weight=style_weight,
                                super_resolve=super_resolve, callback=callback)
        return self._conditional(request, lambda h, w: (condition, keep), paste_known=paste_known,
                                 keep_full_resolution=False)

    def super_resolve(self, video, prompt: str, *, window: int | None = None, overlap: int = DEFAULT_SSR_OVERLAP,
                      multidiffusion: bool = True, num_inference_steps: int | None = None,
                      guidance_scale: float | None = None, negative_prompt: str | None = None,
                      seed: int | None = None, generator: torch.Generator | None = None,
                      callback: Callback | None = None) -> np.ndarray:
        """Spatial super-resolution of a base-resolution video with temporal MultiDiffusion (App. C).

        Args:
            video: uint8 (T, H, W, 3), any T; frames are resized + centre-cropped to the base size.
            prompt: the text the SSR model is conditioned on.
            window: frames per window (default ``ssr.window``); overlap: frames shared by neighbours,
                capped at window - 1.
            multidiffusion: False runs the same windows without overlap (the paper's ablation).
            num_inference_steps / guidance_scale: default ``ssr.num_inference_steps`` / ``ssr.guidance_scale``;
                the last ``ssr.strength`` of the steps run (the callback counts those).
            negative_prompt: default "".
            seed / generator / callback: as for ``text_to_video``.

        Returns:
            uint8 (T, H x ssr_scale, W x ssr_scale, 3).

        Raises:
            InputError: the pipeline has no SSR model, or an invalid argument.
        """
        if not self.has_component("ssr"):
            raise InputError("this pipeline has no super-resolution model")
        options = self.ssr_options
        array = to_numpy_video(video)
        _, height, width = self.base_resolution
        low = video_tensor(array, len(array), height, width)[None]
        rng, _ = make_generator(seed, generator)
        steps = positive_int(num_inference_steps if num_inference_steps is not None else options.num_inference_steps,
                             "num_inference_steps")
        guidance = guidance_value(guidance_scale, options.guidance_scale)
        with Progress(options.steps_run(steps), callback, self.progress_bar, "super-resolution") as progress:
            high = self._super_resolve_tensor(low, prompt, negative_prompt or "", rng, progress, window=window,
                                              overlap=overlap, multidiffusion=multidiffusion, steps=steps,
                                              guidance=guidance)
        return tensor_to_uint8(high[0])

    # ------------------------------------------------------------------ request handling
    def _request(self, prompt: str, **options) -> GenerationRequest:
        """The call's validated settings (``GenerationRequest.create`` with this model's facts)."""
        return GenerationRequest.create(
            prompt, defaults=self.defaults, base_frames=self.base_resolution[0],
            frame_multiple=self.temporal_downsampling_factor, styles=self.styles,
            ssr_steps=self.ssr_options.steps_run() if self.has_component("ssr") else None, **options)

    def _footage_frames(self, video, num_frames: int | None) -> int | None:
        """``num_frames`` for a call on the user's footage: as given, else the footage's own length rounded
        down to the frame rule's multiple, so a clip comes back as long as it went in (not squashed into the
        model's clip length).

        Raises:
            InputError: the footage is longer than the model takes (said before any work: trim it, or pass
                ``num_frames`` to resample it).
        """
        if num_frames is not None:
            return num_frames
        length = len(video) if isinstance(video, (list, tuple)) else int(np.shape(video)[0])
        counts = frame_counts(self.base_resolution[0], self.temporal_downsampling_factor)
        if length > counts[-1]:
            raise InputError(f"the video has {length} frames ({length / self.fps:.1f} s at the model's {self.fps:g} fps); "
                             f"this model takes at most {counts[-1]} ({counts[-1] / self.fps:.1f} s): trim it, or pass "
                             f"num_frames to resample it evenly")
        return max(counts.start, length - length % counts.step)

    def _require(self, name: str) -> None:
        if not self.has_component(name):
            raise InputError(f"this pipeline has no {name!r} model")

    def _styled(self, model: STUNet, request: GenerationRequest):
        return styled(model, self.style_state(request.style) if request.style else None, request.style_weight)

    def _text_states(self, prompt: str, negative_prompt: str, guidance: float,
                     like: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prompt (and, with guidance, negative prompt) states on ``like``'s device and dtype."""
        encoder = self.text_encoder
        device, dtype = module_device(like), like.dtype
        if guidance == 1.0:
            return encoder.encode([prompt]).to(device, dtype), None
        states = encoder.encode([prompt, negative_prompt]).to(device, dtype)
        return states[:1], states[1:]

    # ------------------------------------------------------------------ sampling
    def _sample_video(self, model: STUNet, request: GenerationRequest, progress: Progress,
                      condition: tuple[torch.Tensor, torch.Tensor] | None = None,
                      init_video: torch.Tensor | None = None, strength: float | None = None,
                      guide_known: bool = False) -> torch.Tensor:
        """Sample a base-resolution clip: pixels (1, 3, T, H, W) in [-1, 1], or latents (1, C, T, h, w) for a
        latent pipeline (``condition`` and ``init_video`` are in the same space). The whole clip in one pass,
        or, beyond ``ONE_PASS_FRAMES_FACTOR`` x the model's clip, its windows (``options.base_windows``)
        averaged every step."""
        device, dtype = module_device(model), model.dtype
        channels, height, width = self.model_sample_shape
        text, uncond = self._text_states(request.prompt, request.negative_prompt, request.guidance_scale, model)
        scheduler = make_scheduler(self.scheduler_config, request.sampler)
        shape = (1, channels, request.num_frames, height, width)
        noise = initial_noise(shape, request.generator, device, dtype, self.settings.noise_prior,  # as trained
                              circular=request.loop)
        if init_video is None:
            scheduler.set_timesteps(request.num_inference_steps, device=device)
            timesteps = scheduler.timesteps
            x = noise * scheduler.init_noise_sigma
        else:
            source = init_video[None].to(device, dtype)
            x, timesteps = sdedit_start(scheduler, request.num_inference_steps, strength, source, noise)
            if x is None:  # strength 0: nothing to denoise (the step plan counted no steps)
                return source
        extra = None
        if condition is not None:
            condition_video, keep = condition
            extra = torch.cat([condition_video, keep], dim=0)[None].to(device, dtype)

        windows = base_windows(request.num_frames, self.base_resolution[0], circular=request.loop)

        def predict_window(x_in: torch.Tensor, t: torch.Tensor, states: torch.Tensor, start: int, end: int):
            if extra is not None:
                x_in = torch.cat([x_in, take_window(extra, start, end).expand(x_in.shape[0], -1, -1, -1, -1)], dim=1)
            return model(x_in, t, states)

        def predict(x_in: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
            if len(windows) == 1:
                return predict_window(x_in, t, states, 0, x_in.shape[2])
            return windowed_prediction(lambda part, start, end: predict_window(part, t, states, start, end),
                                       x_in, windows)

        prediction = guided(predict, text, uncond, request.guidance_scale)
        if guide_known and condition is not None:
            prediction = constrain_x0(prediction, scheduler, _known_content(*condition))
        # A loop in one pass: the model wraps around in time; in windows, the windows wrap (each is a stretch).
        with torch.inference_mode(), model.looping() if request.loop and len(windows) == 1 else nullcontext():
            return denoise(prediction, x, scheduler, timesteps, request.generator, progress)

    def _sample_image(self, request: GenerationRequest, progress: Progress) -> torch.Tensor:
        """One image (3, H, W) in pixels from the frozen T2I U-Net alone (reference guidance's first frame)."""
        unet = self.base.t2i
        device, dtype = module_device(unet), unet.dtype
        channels, height, width = self.model_sample_shape
        text, uncond = self._text_states(request.prompt, request.negative_prompt, request.guidance_scale, unet)
        scheduler = make_scheduler(self.scheduler_config, request.sampler)
        scheduler.set_timesteps(request.num_inference_steps, device=device)
        x = initial_noise((1, channels, height, width), request.generator, device, dtype) * scheduler.init_noise_sigma

        def predict(x_in, t, states):
            return unet(x_in, t, states).sample

        with torch.inference_mode():
            image = denoise(guided(predict, text, uncond, request.guidance_scale), x, scheduler, scheduler.timesteps,
                            request.generator, progress)
        image = self.decode_frames(image[:, :, None])[:, :, 0]
        return image[0].float().clamp(-1, 1)

    def _conditional(self, request: GenerationRequest, build: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
                     *, paste_known: bool = True, keep_full_resolution: bool = True, reference_steps: int = 0,
                     progress: Progress | None = None) -> np.ndarray:
        """Sample the conditional model with (C, M) = ``build(height, width)`` at base resolution.

        Known pixels (M = 1) are the user's: with ``paste_known`` they are held in the x0 estimate at
        every denoising step (``constrain_x0``: the generated content is denoised next to them, which
        the model's weak reading of C alone does not achieve: I2V "continues the object" 31 -> 42 %
        over 48 held-out clips on the bundled model), then pasted back exactly at base resolution, so
        SSR starts from them, and (``keep_full_resolution``) ``build`` is called again at output
        resolution so SSR keeps the user's original pixels rather than repainting them from
        1/scale of the information. A latent pipeline samples on the encoded (C, M), pastes the known
        latents, decodes, and pastes the known pixels at base resolution.
        """
        self._require("conditional")
        _, height, width = self.base_resolution
        condition, keep = build(height, width)
        known = None
        if paste_known and keep_full_resolution and request.super_resolve:
            _, out_height, out_width = self.output_resolution
            known = build(out_height, out_width)
        if progress is None:
            progress = request.progress(request.step_plan(reference_steps=reference_steps), self.progress_bar)
        with progress:
            model_condition = self._model_condition(condition, keep)
            with self._styled(self.conditional, request):
                video = self._sample_video(self.conditional, request, progress, condition=model_condition,
                                           guide_known=paste_known)
            if paste_known:
                video = _paste(video, *model_condition)
            if self.is_latent:
                video = self.decode_frames(video)
                if paste_known:
                    video = _paste(video, condition, keep)
            return self._finish(video, request, progress, known=known)

    def _model_condition(self, condition: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The conditional model's (C, M) from the pixel (C, M) at base resolution: as they are for a
        pixel pipeline, encoded and min-pooled to latent resolution for a latent one."""
        if not self.is_latent:
            return condition, keep
        with torch.inference_mode():
            latents, keep_latent = latent_condition(self.vae, condition[None].float(), keep[None].float(),
                                                    self.vae_frames_per_call)
        return latents[0], keep_latent[0]

    def _reference_guided(self, request: GenerationRequest, reference_image) -> np.ndarray:
        """First frame from the T2I U-Net ("t2i") or the given image, then image-to-video."""
        self._require("conditional")
        frames = request.num_frames
        if isinstance(reference_image, str):
            if reference_image != "t2i":
                raise InputError(f"reference_image must be 't2i' or an image, got {reference_image!r}")
            self._require("base")
            progress = request.progress(request.step_plan(reference_steps=request.num_inference_steps),
                                        self.progress_bar)
            with progress:
                image = self._sample_image(request, progress).cpu()
                return self._conditional(request, lambda h, w: cond.image_to_video_condition(image, frames),
                                         keep_full_resolution=False, progress=progress)
        return self._conditional(request, lambda h, w: cond.image_to_video_condition(
            image_tensor(reference_image, h, w), frames))

    def _finish(self, video: torch.Tensor, request: GenerationRequest, progress: Progress,
                known: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
        if request.super_resolve:
            video = self._super_resolve_tensor(video.clamp(-1, 1), request.prompt, request.negative_prompt,
                                               request.generator, progress, known=known, loop=request.loop)
        return tensor_to_uint8(video[0])

    def _super_resolve_tensor(self, low: torch.Tensor, prompt: str, negative_prompt: str, generator, progress,
                              window: int | None = None, overlap: int = DEFAULT_SSR_OVERLAP, multidiffusion: bool = True,
                              steps: int | None = None, guidance: float | None = None,
                              known: tuple[torch.Tensor, torch.Tensor] | None = None, loop: bool = False) -> torch.Tensor:
        """SSR of ``low`` (1, 3, T, H, W) in [-1, 1] with this model's settings (``super_resolution.sample_ssr``);
        ``known`` = (C, M) at output resolution: user pixels; ``loop``: ``low`` is a seamless loop."""
        ssr, options = self.ssr, self.ssr_options
        guidance = float(guidance if guidance is not None else options.guidance_scale)
        text, uncond = self._text_states(prompt, negative_prompt, guidance, ssr)
        return sample_ssr(ssr, low, text, uncond, options=options, scheduler_config=self.scheduler_config,
                          sampler=options.sampler or self.defaults.sampler, guidance=guidance, generator=generator,
                          progress=progress, window=window, overlap=overlap, multidiffusion=multidiffusion,
                          steps=steps, known=known, loop=loop)

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, lazy: bool = True) -> "LumierePipeline":
        """Open a pipeline directory (``docs/pipeline-format.md``) or Hub repo.

        Args:
            path_or_repo: a directory, a Hub repo id, or None / "bundled" for the model in assets/.
            device / dtype: placement (default: best device and its dtype: bf16/fp16 on GPU, fp32 on CPU).
            lazy: True reads only JSON now and each component's weights on first use.

        Returns:
            The pipeline.

        Raises:
            MissingFileError: no such directory, no bundled model, or the repo could not be fetched.
            CheckpointError: the index or a listed file is missing or corrupt.
            InputError: an unknown key or bad value in the index's ``config`` (``options.PipelineConfig``).
        """
        directory = pipeline_format.read_pipeline_dir(resolve_pretrained(path_or_repo))
        pipe = cls(config=directory.config, scheduler_config=directory.scheduler_config, components={},
                   component_dirs=directory.component_dirs, styles=directory.style_dirs, device=device, dtype=dtype,
                   source=directory.root, training=directory.training)
        if not lazy:
            for name in pipe.component_names:
                pipe.get_component(name)
        return pipe

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write the pipeline directory: ``model_index.json`` + one folder per component and style.

        Args:
            directory: created if needed; existing files of the same names are overwritten.
            dtype: cast weights on the way out (e.g. torch.float16 halves the size); None keeps them.
        """
        root = Path(directory)
        components = []
        for name in self.component_names:
            components += pipeline_format.write_component(root, name, self.get_component(name), dtype)
        styles = {name: pipeline_format.write_style(root, name, self.style_state(name), dtype) for name in self.styles}
        pipeline_format.write_index(root, self.config, self.scheduler_config, components, styles, self.training)

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None,
                    commit_message: str = "Upload Lumiere pipeline") -> str:
        """Save to a temporary folder and upload it as a Hub model repo (with ``source``'s README.md).

        Returns:
            The repo URL.
        """
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            if self.source is not None and (self.source / "README.md").is_file():
                shutil.copy(self.source / "README.md", Path(tmp) / "README.md")
            api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
        return str(url)


def _known_content(condition: torch.Tensor, keep: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """video (B, C, T, H, W) -> video with the known content of (C, M) (unbatched) where M = 1: the
    per-step x0 constraint of the applications and, applied once to the sample, ``_paste``."""
    def with_known(video: torch.Tensor) -> torch.Tensor:
        known = keep[None].to(video.device, video.dtype)
        return known * condition[None].to(video.device, video.dtype) + (1 - known) * video
    return with_known


def _paste(video: torch.Tensor, condition: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``video`` (1, C, T, H, W) with the known content of (C, M) (unbatched) where M = 1."""
    return _known_content(condition, keep)(video)
