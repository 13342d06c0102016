"""The model bundle: a pipeline's components, styles and config, its VAE codec, and its directory format.

A latent pipeline (one with a ``vae`` component, Stable-Diffusion style) samples VAE latents and decodes
them, a bounded number of frames per call (``vae_frames_per_call``), before anything that works on pixels.
Where the models live and how they are placed is ``components``; the directory format is
``pipeline_format`` (``docs/pipeline-format.md``).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from . import components as _components
from . import pipeline_format
from .components import ComponentStore, default_device, default_dtype
from .errors import InputError
from .hub import read_safetensors, resolve_pretrained
from .models.stunet import STUNet
from .models.text_encoder import TextEncoder
from .models.vae import DEFAULT_FRAMES_PER_CALL, check_resolution, decode_latents, encode_video
from .models.vae import scale_factor as vae_scale_factor
from .options import GenerationDefaults, PipelineConfig, SSROptions
from .request import ModelFacts
from .sampling import scheduler_sampler


class ModelBundle:
    """A model's parts: lazily loaded components, styles, the parsed config, the VAE codec, and the
    directory format (load, save, push). ``LumierePipeline`` adds the applications on top."""

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

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "ModelBundle":
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

    @property
    def facts(self) -> ModelFacts:
        """What requests are validated against (``request.ModelFacts``)."""
        return ModelFacts(defaults=self.defaults, base_frames=self.base_resolution[0],
                          frame_multiple=self.temporal_downsampling_factor, styles=tuple(self.styles),
                          ssr=self.ssr_options if self.has_component("ssr") else None, fps=self.fps)

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

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, lazy: bool = True) -> "ModelBundle":
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
