"""The model bundle: a pipeline's components, styles and config, its VAE codec, and its directory format.

A latent pipeline (one with a ``vae`` component, Stable-Diffusion style) samples VAE latents and decodes
them, a bounded number of frames per call (``vae_frames_per_call``), before anything that works on pixels.
Where the models live and how they are placed is ``components``; the directory format is
``pipeline_format`` (``docs/pipeline-format.md``).

The bundle is a diffusers ``DiffusionPipeline``: its components are registered as diffusers registers
modules (``[library, class]`` entries, ``model_index``), ``components`` / ``parameters`` rebuild it, and a
folder it saved is read by diffusers' own loader as well as by :meth:`ModelBundle.from_pretrained`. Unlike
diffusers' pipelines, ``config`` is Lumiere's inference config (``model_index.json``'s "config"), and
components load lazily, on first use.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from torch import nn

from . import components as _components
from . import pipeline_format
from .components import ComponentStore, default_device, default_dtype
from .errors import CheckpointError, InputError
from .hub import read_json, resolve_pretrained
from .models.stunet import STUNet
from .models.text_encoder import TextEncoder
from .models.vae import DEFAULT_FRAMES_PER_CALL, check_resolution, decode_latents, encode_video
from .models.vae import scale_factor as vae_scale_factor
from .options import GenerationDefaults, PipelineConfig, SSROptions
from .request import ModelFacts
from .sampling import scheduler_sampler


# The components as diffusers registers them, in its loader's order: every one optional to diffusers (Lumiere's
# reader requires "text_encoder" and "base"); the tokenizer is the text encoder's, the scheduler the config's class.
REGISTERED = ("text_encoder", "tokenizer", "scheduler", "base", "conditional", "ssr", "vae")


def scheduler_config_of(scheduler) -> dict:
    """A diffusers scheduler's config as the JSON it was read from: its class, the keys it was given (the ones
    it filled with defaults, ``_use_default_values``, left out, so another solver class keeps its own defaults)
    and the keys it does not read (kept by diffusers, e.g. Lumiere's ``snr_shift``)."""
    config = dict(scheduler.config)
    defaults = set(config.pop("_use_default_values", None) or ())
    kept = {key: value for key, value in config.items()
            if key not in defaults and key not in ("_class_name", "_diffusers_version", "_name_or_path")}
    return {"_class_name": type(scheduler).__name__, **kept}


class ModelBundle(DiffusionPipeline):
    """A model's parts: lazily loaded components, styles, the parsed config, the VAE codec, and the
    directory format (load, save, push). ``LumierePipeline`` adds the applications on top."""

    # diffusers: the registered modules are all optional (keyword arguments); model offload runs them in this order.
    _optional_components = list(REGISTERED)
    model_cpu_offload_seq = "text_encoder->base->conditional->vae->ssr"

    def __init__(self, text_encoder: TextEncoder | None = None, tokenizer=None, scheduler=None,
                 base: STUNet | None = None, conditional: STUNet | None = None, ssr: STUNet | None = None,
                 vae: nn.Module | None = None, *, config: dict | None = None, scheduler_config: dict | None = None,
                 components: dict | None = None, component_dirs: dict | None = None, styles: dict | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 source: str | os.PathLike | None = None, training: dict | None = None):
        """
        Args:
            text_encoder / tokenizer / scheduler / base / conditional / ssr / vae: the modules, as diffusers'
                loader and ``components`` pass them (a ``TextEncoder``, its tokenizer, a diffusers scheduler whose
                config becomes ``scheduler_config``, the STUNets, an ``AutoencoderKL``).
            config: the inference config of ``model_index.json`` (``docs/pipeline-format.md``).
            scheduler_config: a diffusers scheduler config (noise schedule, prediction type); default: ``scheduler``'s.
            components: loaded modules by name (``components.COMPONENTS``); None = load from ``component_dirs``.
                String values (the index's folder listing, which diffusers' loader passes along) are ignored.
            component_dirs: folders of components not loaded yet.
            styles: style name -> spatial weights, or the folder holding them (read on first use; a relative one
                is under ``source``).
            device / dtype: where components are placed (default: best device, its default dtype).
            source: the directory the pipeline was read from (``push_to_hub`` copies its model card).
            training: how the weights were made (``model_index.json``'s "training"), saved along with them.

        Raises:
            InputError: no ``config``, or neither ``scheduler_config`` nor ``scheduler``.
        """
        if config is None:
            raise InputError("a Lumiere pipeline needs its inference config (model_index.json's 'config')")
        if scheduler_config is None:
            if scheduler is None:
                raise InputError("a Lumiere pipeline needs a scheduler or a scheduler_config")
            scheduler_config = scheduler_config_of(scheduler)
        modules = {name: module for name, module in (components or {}).items() if not isinstance(module, str)}
        passed = {"text_encoder": text_encoder, "base": base, "conditional": conditional, "ssr": ssr, "vae": vae}
        modules.update({name: module for name, module in passed.items() if module is not None})
        if tokenizer is not None and modules.get("text_encoder") is not None:
            modules["text_encoder"].tokenizer = tokenizer  # the registered tokenizer is the encoder's
        self.config = config
        self.scheduler_config = dict(scheduler_config)
        device = torch.device(device) if device is not None else default_device()
        self._store = ComponentStore(modules, component_dirs, device, dtype or default_dtype(device))
        if tokenizer is not None and modules.get("text_encoder") is None:
            self._store._tokenizer = tokenizer
        self._styles: dict[str, dict | Path | str] = dict(styles or {})
        self.source = Path(source) if source is not None else None
        self.training = dict(training) if training else None
        self.progress_bar: bool | dict = False  # a tqdm bar per call (the CLI's on); a dict: its tqdm options
        # Latent pipelines: frames per VAE encode / decode call (bounds memory; None = a clip at once).
        self.vae_frames_per_call: int | None = DEFAULT_FRAMES_PER_CALL
        PipelineConfig.from_config(config)  # a mistyped key fails when the pipeline opens, not mid-call
        scheduler_sampler(self.scheduler_config)  # so does a scheduler class no sampler can run
        self._register_index()

    # ------------------------------------------------------------------ diffusers' pipeline contract
    @property
    def config(self) -> dict:
        """Lumiere's inference config (``model_index.json``'s "config"; edits apply to the next call). diffusers'
        pipeline config (the index's ``[library, class]`` entries) is :attr:`model_index`."""
        return self.__dict__["_lumiere_config"]

    @config.setter
    def config(self, value: dict) -> None:
        self.__dict__["_lumiere_config"] = value

    def _entry(self, name: str) -> tuple[str, str] | None:
        """The ``[library, class]`` of a component (``pipeline_format.component_entry``); None when absent."""
        from diffusers.pipelines.pipeline_loading_utils import _fetch_class_library_tuple

        if name == "scheduler":
            return pipeline_format.component_entry(name, scheduler_config=self.scheduler_config)
        if name == "tokenizer":
            tokenizer = self._store.tokenizer() if self.is_loaded("text_encoder") else None
            if tokenizer is not None:
                return _fetch_class_library_tuple(tokenizer)
            folder = self._store._directories.get("tokenizer", self._store._directories.get("text_encoder"))
            return pipeline_format.component_entry(name, folder) if folder is not None else None
        if not self.has_component(name):
            return None
        if self.is_loaded(name):
            return _fetch_class_library_tuple(self._store._modules[name])
        return pipeline_format.component_entry(name, self._store._directories[name])

    def _register_index(self) -> None:
        import diffusers

        entries = {name: entry for name in REGISTERED if (entry := self._entry(name)) is not None}
        stale = {name: (None, None) for name in REGISTERED
                 if name not in entries and name in getattr(self, "_internal_dict", {})}
        self.register_to_config(_class_name=pipeline_format.PIPELINE_CLASS, _diffusers_version=diffusers.__version__,
                                **entries, **stale)

    def register_to_config(self, **kwargs) -> None:
        """diffusers' (the index entries); when its loader records the folder it read (``_name_or_path``), that
        folder becomes ``source`` and each component's folder, so loaded components can be unloaded and reloaded."""
        super().register_to_config(**kwargs)
        folder = kwargs.get("_name_or_path")
        if folder is not None and Path(folder).is_dir():
            self.source = self.source or Path(folder)
            for name in self.component_names:
                if (Path(folder) / name).is_dir():
                    self._store._directories.setdefault(name, Path(folder) / name)

    def register_modules(self, **modules) -> None:
        raise InputError("a Lumiere pipeline's components are fixed when it is built: pass them to the constructor")

    @property
    def model_index(self) -> dict:
        """diffusers' pipeline config: ``_class_name``, ``_diffusers_version`` and one ``(library, class)`` per
        component present (``_name_or_path`` once diffusers' loader read it), as ``model_index.json`` holds them."""
        self._register_index()
        return dict(self._internal_dict)

    @property
    def name_or_path(self) -> str | None:
        return self._internal_dict.get("_name_or_path") or (str(self.source) if self.source is not None else None)

    @property
    def tokenizer(self):
        """The text encoder's tokenizer (read from its folder without loading the encoder); None without one."""
        return self._store.tokenizer()

    @property
    def scheduler(self):
        """A diffusers scheduler of ``scheduler_config``'s class (Lumiere's noise schedule resolved: ``snr_shift``);
        each call makes its own, of the sampler it asks for (``sampling.make_scheduler``)."""
        from .sampling import make_scheduler

        return make_scheduler(self.scheduler_config)

    @property
    def components(self) -> dict[str, Any]:
        """diffusers' dict of the registered modules (every one of ``REGISTERED``; None for one this pipeline
        lacks), loading each: ``type(pipe)(**pipe.components, **pipe.parameters)`` is the same pipeline."""
        result = {}
        for name in REGISTERED:
            if name == "tokenizer":
                result[name] = self.tokenizer if self.has_component("text_encoder") else None
            elif name == "scheduler":
                result[name] = self.scheduler
            else:
                result[name] = self.get_component(name) if self.has_component(name) else None
        return result

    @property
    def parameters(self) -> dict[str, Any]:
        """diffusers' dict of the constructor's non-module arguments: config, scheduler config, styles, training,
        placement and source."""
        styles = {name: (self.source / entry if isinstance(entry, str) and self.source is not None else entry)
                  for name, entry in self._styles.items()}
        return {"config": self.config, "scheduler_config": dict(self.scheduler_config), "styles": styles,
                "training": self.training, "device": self.device, "dtype": self.dtype, "source": self.source}

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None) -> None:
        """diffusers' model offload: every component is kept on the CPU and moved whole to the accelerator when it
        runs (``model_cpu_offload_seq``; accelerate hooks), the previous one going back to the CPU. Loads every
        component first (hooks need the modules; one unloaded and reloaded later is placed without them).

        Raises:
            InputError: no accelerator (a CPU-only machine, or ``device`` "cpu"): there is nothing to offload to;
                the pipeline already runs on the CPU.
        """
        if device is None:
            device = default_device()
            if device.type != "cpu" and gpu_id is not None:
                device = torch.device(device.type, gpu_id)
        if torch.device(device).type == "cpu":
            raise InputError("enable_model_cpu_offload moves each component to an accelerator (CUDA, MPS) when it "
                             "runs, and this pipeline has none: it already runs on the CPU")
        for name in self.component_names:
            self.get_component(name)
        super().enable_model_cpu_offload(gpu_id=gpu_id, device=device)

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

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
           **diffusers_options) -> "ModelBundle":
        """Move every loaded component (and future loads) to ``device`` / ``dtype``; returns self.
        (``diffusers_options``, e.g. diffusers' ``silence_dtype_warnings``, change nothing.)"""
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
        settings = self.settings  # parsed once here, not once per property
        return ModelFacts(defaults=self.defaults, base_frames=settings.base_resolution[0],
                          frame_multiple=settings.temporal_downsampling_factor, styles=tuple(self.styles),
                          ssr=settings.ssr if self.has_component("ssr") else None, fps=settings.fps)

    def add_style(self, name: str, spatial_state) -> None:
        """Register a style: the style fine-tuned T2I weights under their diffusers names, or its difference to
        the base's (``styles.StyleDelta``, e.g. low rank); copied to the CPU."""
        from .styles import StyleDelta

        if isinstance(spatial_state, StyleDelta):
            self._styles[name] = spatial_state.to()
        else:
            self._styles[name] = {k: v.detach().cpu() for k, v in spatial_state.items()}

    def style_state(self, name: str):
        """A style's spatial weights, or its ``styles.StyleDelta`` (as its folder holds it; read on first use).

        Raises:
            InputError: unknown style. CheckpointError: its weights are corrupt.
        """
        if name not in self._styles:
            raise InputError(f"unknown style {name!r}; available styles: {', '.join(self.styles) or 'none'}")
        entry = self._styles[name]
        if isinstance(entry, str):  # the index's folder, relative to the pipeline's (diffusers' loader passes it)
            if self.source is None:
                raise CheckpointError(f"style {name!r}: its folder {entry!r} is relative and the pipeline's is unknown")
            entry = self._styles[name] = self.source / entry
        if isinstance(entry, Path):
            entry = self._styles[name] = pipeline_format.read_style(entry)
        return entry

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, lazy: bool = True, **loader_options) -> "ModelBundle":
        """Open a pipeline directory (``docs/pipeline-format.md``) or Hub repo.

        Args:
            path_or_repo: a directory, a Hub repo id, or None / "bundled" for the model in assets/.
            device / dtype: placement (default: best device and its dtype: bf16/fp16 on GPU, fp32 on CPU);
                diffusers' ``torch_dtype`` is ``dtype``.
            lazy: True reads only JSON now and each component's weights on first use.
            loader_options: diffusers' loader options (``use_safetensors``, ``low_cpu_mem_usage``, ...): with any,
                diffusers' own ``DiffusionPipeline.from_pretrained`` reads the folder (every component at once,
                safetensors only); it needs a folder saved with its ``[library, class]`` entries.

        Returns:
            The pipeline.

        Raises:
            MissingFileError: no such directory, no bundled model, or the repo could not be fetched.
            CheckpointError: the index or a listed file is missing or corrupt.
            InputError: an unknown key or bad value in the index's ``config`` (``options.PipelineConfig``); loader
                options for a folder written before the index had diffusers' entries.
        """
        dtype = dtype or loader_options.pop("torch_dtype", None)
        root = resolve_pretrained(path_or_repo)
        if loader_options:
            return cls._from_diffusers_loader(root, device, dtype, loader_options)
        directory = pipeline_format.read_pipeline_dir(root)
        pipe = cls(config=directory.config, scheduler_config=directory.scheduler_config, components={},
                   component_dirs=directory.component_dirs, styles=directory.style_dirs, device=device, dtype=dtype,
                   source=directory.root, training=directory.training)
        if not lazy:
            for name in pipe.component_names:
                pipe.get_component(name)
        return pipe

    @classmethod
    def _from_diffusers_loader(cls, root: Path, device, dtype, loader_options: dict) -> "ModelBundle":
        index = read_json(root / pipeline_format.MODEL_INDEX)
        if not isinstance(index.get("base"), list):
            raise InputError(f"{root} was written before model_index.json had diffusers' [library, class] entries: "
                             "open it without loader options, or save it again (save_pretrained) to add them")
        loader_options = {"use_safetensors": True, **loader_options}  # never pickled weights
        pipe = DiffusionPipeline.from_pretrained.__func__(cls, str(root), device=device, torch_dtype=dtype,
                                                          **loader_options)
        return pipe.to(dtype=dtype) if dtype is not None else pipe

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None, *,
                        safe_serialization: bool = True) -> None:
        """Write the pipeline directory: ``model_index.json`` (Lumiere's keys and diffusers' ``[library, class]``
        entries) + one folder per component and style.

        Args:
            directory: created if needed; existing files of the same names are overwritten.
            dtype: cast weights on the way out (e.g. torch.float16 halves the size); None keeps them.
            safe_serialization: diffusers' option; always True (only safetensors are written).
        """
        if not safe_serialization:
            raise InputError("a Lumiere pipeline is saved as safetensors only (safe_serialization=True)")
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
