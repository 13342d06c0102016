"""Build a pipeline's components from a model config (random init, or from a pretrained T2I).

The same config drives the tiny bundled model (everything trained here from scratch) and a full-size
model (``t2i.pretrained`` names a diffusers U-Net directory or Hub repo and the text encoder a
transformers model). A ``vae`` section makes it a latent model (Stable-Diffusion style): the STUNets
run on VAE latents, ``base_resolution`` stays in pixels. Configs live in ``configs/`` as JSON.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import UNet2DConditionModel

from .errors import InputError, MissingFileError
from .models.stunet import TemporalConfig, inflate
from .models.text_encoder import TextEncoder
from .models.vae import build_vae, check_resolution, config_scale_factor, scale_factor
from .options import (SSR_BUILD_KEYS, GenerationDefaults, NoisePrior, SSROptions, bounded, check_keys, check_types,
                      from_mapping)
from .sampling import is_flow, make_scheduler, scheduler_keys

logger = logging.getLogger(__name__)

# diffusers' v-prediction, cosine-schedule DDPM config: pixel-space models train well with it.
DEFAULT_SCHEDULER = {
    "_class_name": "DPMSolverMultistepScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "clip_sample": False,
    "timestep_spacing": "trailing",
}


def check_scheduler_config(values: dict | None, where: str = "model.scheduler") -> dict:
    """A scheduler section checked and returned whole (a copy, "_" keys kept: ``_class_name`` picks the
    default sampler): every key one ``scheduler_keys``, ``snr_shift`` a number > 0, ``_class_name`` a class a
    sampler runs, and the section one diffusers builds. Why here: a typo would otherwise be kept silently
    (diffusers ignores unknown keys) and a bad value found only when sampling starts.

    Raises:
        InputError: naming ``where`` and the key.
    """
    check_keys(values, scheduler_keys(), where)
    values = dict(values or {})
    try:  # _class_name (scheduler_sampler), snr_shift (noise_schedule_config), then diffusers' own checks
        make_scheduler({**DEFAULT_SCHEDULER, **values})
    except InputError as error:
        raise InputError(f"{where}: {error}") from None
    except (TypeError, ValueError, KeyError, NotImplementedError) as error:  # diffusers refusing a value
        raise InputError(f"{where}: diffusers cannot build a scheduler from it: {error}") from None
    return values


@dataclass(frozen=True)
class T2IConfig:
    """``model.t2i``: the text-to-image U-Net the STUNets inflate."""

    unet: dict | None = None        # UNet2DConditionModel constructor config, handed whole to diffusers
    pretrained: str | None = None   # or a diffusers U-Net directory / Hub repo (wins over ``unet``)
    subfolder: str | None = None    # of ``pretrained``, e.g. "unet"

    def __post_init__(self):
        if self.unet is None and not self.pretrained:
            raise InputError("model.t2i needs 'unet' (UNet2DConditionModel constructor arguments) or 'pretrained' "
                             "(a diffusers U-Net directory or Hub repo)")


@dataclass(frozen=True)
class TextEncoderConfig:
    """``model.text_encoder``: a pretrained transformers encoder, or one built from the procedural world's
    words (``TextEncoder.from_vocabulary``; an unset size is its default)."""

    hidden_size: int | None = bounded(None, min=1)
    num_layers: int | None = bounded(None, min=1)
    num_heads: int | None = bounded(None, min=1)
    max_length: int | None = bounded(None, min=1)  # prompt tokens (also sets a pretrained encoder's)
    architecture: str | None = None  # "bert" or "clip"
    pretrained: str | None = None
    tokenizer: str | None = None
    subfolder: str = ""
    tokenizer_subfolder: str = ""

    VOCABULARY_KEYS: ClassVar[tuple[str, ...]] = ("hidden_size", "num_layers", "num_heads", "max_length",
                                                  "architecture")


@dataclass(frozen=True)
class VAEConfig:
    """``model.vae``: a latent model's AutoencoderKL (``models.vae.build_vae``)."""

    pretrained: str | None = None
    subfolder: str | None = None
    autoencoder: dict | None = None  # AutoencoderKL constructor config, handed whole to diffusers
    seed: int = 0                    # the generator of ``autoencoder``'s initial weights

    def __post_init__(self):
        if self.autoencoder is None and not self.pretrained:
            raise InputError("model.vae needs 'pretrained' (a diffusers AutoencoderKL directory or Hub id) "
                             "or 'autoencoder' (AutoencoderKL constructor arguments)")

    def to_dict(self) -> dict:
        """The section as ``models.vae`` reads it (unset keys left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


SSR_FIXED_TEMPORAL = ("extra_input_channels", "temporal_resize")  # the SSR's own: 3 inputs, every frame kept


@dataclass(frozen=True)
class SSRConfig:
    """``model.ssr``: the super-resolution stage's inference options and how training builds its U-Net."""

    options: SSROptions = SSROptions()
    unet: dict | None = None        # the image SR U-Net's UNet2DConditionModel config (diffusers checks it)
    pretrained: str | None = None   # or a diffusers U-Net directory / Hub repo
    subfolder: str | None = None
    # The SSR's temporal options over ``model.temporal`` (the base's): the SSR only adds detail to a motion
    # the base already decided, so it can leave out what the base needs for motion (e.g. motion_conditioning,
    # spatial_kernel_size 0), which at the SSR's resolution is most of its cost.
    temporal: dict | None = None
    option_keys: tuple[str, ...] = ()  # the options the section sets: the pipeline config records those

    def __post_init__(self):
        if self.unet is None and not self.pretrained:
            raise InputError("model.ssr needs 'unet' (UNet2DConditionModel constructor arguments) or 'pretrained' "
                             "(a diffusers U-Net directory or Hub repo)")

    @classmethod
    def from_dict(cls, values: dict, where: str = "model.ssr") -> "SSRConfig":
        values = check_keys(values, {f.name for f in dataclasses.fields(SSROptions)} | set(SSR_BUILD_KEYS), where)
        build = check_types(cls, {k: v for k, v in values.items() if k in SSR_BUILD_KEYS}, where)
        if build.get("temporal") is not None:  # keys, types and ranges checked here; the merge in ModelConfig
            TemporalConfig.from_dict(build["temporal"], f"{where}.temporal", exclude=SSR_FIXED_TEMPORAL)
        settings = {k: v for k, v in values.items() if k not in SSR_BUILD_KEYS}
        return cls(options=SSROptions.from_config(settings, where), option_keys=tuple(settings), **build)

    def pipeline_options(self) -> dict:
        """The options as the pipeline config stores them (``options.PipelineConfig.ssr``)."""
        return {key: getattr(self.options, key) for key in self.option_keys}


@dataclass(frozen=True)
class ModelConfig:
    """A model config (a training config's "model" section), parsed once and checked: what
    ``build_pipeline`` and the training stages build. Sections handed whole to diffusers (``t2i.unet``,
    ``vae.autoencoder``, ``ssr.unet``, ``scheduler``) stay dicts; the scheduler's keys are checked
    (``check_scheduler_config``)."""

    base_resolution: tuple[int, int, int]  # (frames, height, width) in pixels, also for a latent model
    t2i: T2IConfig
    fps: float = bounded(8, above=0)
    text_encoder: TextEncoderConfig = TextEncoderConfig()
    temporal: TemporalConfig = TemporalConfig()  # the STUNets' options (extra_input_channels: set per model)
    ssr: SSRConfig | None = None   # None: no super-resolution model
    scheduler: dict = field(default_factory=dict)  # diffusers scheduler keys + snr_shift, over DEFAULT_SCHEDULER
    defaults: GenerationDefaults = GenerationDefaults()
    noise_prior: NoisePrior = NoisePrior()  # the base video's noise across frames
    vae: VAEConfig | None = None   # a latent model's AutoencoderKL (None: pixel model)

    @property
    def ssr_options(self) -> SSROptions:
        return self.ssr.options if self.ssr is not None else SSROptions()

    @property
    def ssr_temporal(self) -> TemporalConfig:
        """The SSR STUNet's temporal options: ``model.temporal`` with ``model.ssr.temporal`` over it, and no
        temporal resizing (the SSR keeps every frame)."""
        over = (self.ssr.temporal if self.ssr is not None else None) or {}
        return TemporalConfig.of(self.temporal, "model.ssr.temporal", **{**over, "temporal_resize": False})

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """Parse a "model" section: every key, type and range checked, each section named in the message.

        Raises:
            InputError: an unknown key, a missing required one, a bad value.
        """
        known = check_keys(values, {f.name for f in dataclasses.fields(cls)}, "model")
        for name in ("base_resolution", "t2i"):
            if name not in known:
                raise InputError(f"model.{name} is required")
        top = check_types(cls, {k: known[k] for k in ("base_resolution", "fps") if k in known}, "model")
        frames, height, width = top["base_resolution"]
        if min(frames, height, width) < 1:
            raise InputError(f"model.base_resolution must be positive (frames, height, width), got {list(top['base_resolution'])}")
        t2i = from_mapping(T2IConfig, known["t2i"], "model.t2i")
        vae = from_mapping(VAEConfig, known["vae"], "model.vae") if known.get("vae") is not None else None
        if vae is not None:
            factor = config_scale_factor(vae.to_dict())
            if factor is not None:  # a pretrained VAE's factor is checked when it is loaded (build_latent_vae)
                check_resolution(height, width, factor)
            if vae.autoencoder is not None and t2i.unet is not None and not t2i.pretrained:
                latent, inputs = vae.autoencoder.get("latent_channels", 4), t2i.unet.get("in_channels", 4)
                if latent != inputs:
                    raise InputError(f"model.t2i.unet.in_channels ({inputs}) must equal model.vae.autoencoder."
                                     f"latent_channels ({latent}): the U-Net denoises the VAE's latents")
        return cls(
            base_resolution=(frames, height, width), t2i=t2i, fps=top.get("fps", 8),
            text_encoder=from_mapping(TextEncoderConfig, known.get("text_encoder"), "model.text_encoder"),
            temporal=TemporalConfig.from_dict(known.get("temporal"), "model.temporal", exclude=("extra_input_channels",)),
            ssr=SSRConfig.from_dict(known["ssr"]) if known.get("ssr") is not None else None,
            scheduler=check_scheduler_config(known.get("scheduler")),
            defaults=GenerationDefaults.from_config(known.get("defaults"), "model.defaults"),
            noise_prior=NoisePrior.from_config(known.get("noise_prior"), "model.noise_prior"),
            vae=vae)

    @classmethod
    def of(cls, config: "ModelConfig | dict") -> "ModelConfig":
        """``config`` itself, or parsed from a dict."""
        return config if isinstance(config, cls) else cls.from_dict(config)


def load_config(path: str | os.PathLike) -> dict:
    """A JSON training/model config (``configs/``). Raises MissingFileError when absent."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"config file not found: {path}")
    return json.loads(path.read_text())


def load_t2i_unet(source: str | os.PathLike, subfolder: str | None = None) -> UNet2DConditionModel:
    """A pretrained diffusers T2I U-Net from a local directory or Hub repo (safetensors only)."""
    return UNet2DConditionModel.from_pretrained(str(source), subfolder=subfolder, use_safetensors=True)


PRETRAINED_SCHEDULER = Path("scheduler") / "scheduler_config.json"


def pretrained_scheduler_config(config: T2IConfig | dict) -> dict | None:
    """The scheduler config published with a pretrained T2I (``model.t2i``), or None: the
    ``scheduler/scheduler_config.json`` of the folder or Hub repo ``pretrained`` names (a local U-Net folder
    named directly, with no ``subfolder``, may sit in a pipeline folder: then its parent's). DeepFloyd IF's
    holds its DDPM noise schedule, ``variance_type`` "learned_range" and dynamic ``thresholding``
    (``dynamic_thresholding_ratio``, ``sample_max_value``), all of which sampling needs.

    Only keys ``sampling.scheduler_keys`` accepts are kept ("_" ones included); any other is dropped and
    named in a warning (no sampler reads it, and a saved pipeline refuses it: ``pipeline_format``).
    """
    if not isinstance(config, T2IConfig):
        config = from_mapping(T2IConfig, config, "model.t2i")
    if not config.pretrained:
        return None
    root = Path(config.pretrained)
    if root.is_dir():
        candidates = [root / PRETRAINED_SCHEDULER]
        if not config.subfolder and (root / "config.json").is_file():
            candidates.append(root.parent / PRETRAINED_SCHEDULER)
        found = next((path for path in candidates if path.is_file()), None)
    else:
        found = _hub_scheduler_config(config.pretrained)
    if found is None:
        return None
    values = json.loads(Path(found).read_text())
    accepted = scheduler_keys()
    refused = sorted(key for key in values if key not in accepted and not key.startswith("_"))
    if refused:
        logger.warning("%s: dropped scheduler keys no supported diffusers scheduler reads: %s", found, ", ".join(refused))
    return {key: value for key, value in values.items() if key in accepted or key.startswith("_")}


def _hub_scheduler_config(repo: str) -> str | None:
    """The local path of a Hub repo's scheduler config (downloaded or cached), None when it has none."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError

    try:
        return hf_hub_download(repo, PRETRAINED_SCHEDULER.name, subfolder=PRETRAINED_SCHEDULER.parent.name)
    except (EntryNotFoundError, HFValidationError):
        return None
    except LocalEntryNotFoundError:  # offline and not cached: the U-Net alone may still load from the cache
        logger.warning("%s: its scheduler config is not reachable (offline, not cached); using Lumiere's default "
                       "scheduler under model.scheduler", repo)
        return None


def model_scheduler_config(config: ModelConfig | dict) -> dict:
    """The scheduler config a model config builds with, decided here only (``build_pipeline`` and the training
    ``Workspace`` both ask): a pretrained T2I's own (``pretrained_scheduler_config``) when it publishes one,
    else ``DEFAULT_SCHEDULER``; ``model.scheduler``'s keys over it.

    Raises:
        InputError: the merged config is not one a sampler builds (``check_scheduler_config``).
    """
    model = ModelConfig.of(config)
    published = pretrained_scheduler_config(model.t2i)
    if published is None:
        return {**DEFAULT_SCHEDULER, **model.scheduler}
    merged = {**published, **model.scheduler}
    try:
        make_scheduler(merged)
    except InputError as error:
        raise InputError(f"the scheduler config of {model.t2i.pretrained} under model.scheduler: {error}") from None
    except (TypeError, ValueError, KeyError, NotImplementedError) as error:
        raise InputError(f"the scheduler config of {model.t2i.pretrained} under model.scheduler: diffusers cannot "
                         f"build a scheduler from it: {error}") from None
    return merged


def build_latent_vae(model: ModelConfig):
    """The model's VAE (None for a pixel model), checked against ``base_resolution``.

    Raises:
        InputError: base_resolution (pixels) is not divisible by the VAE's down-sampling factor.
    """
    if model.vae is None:
        return None
    vae = build_vae(model.vae.to_dict())
    _, height, width = model.base_resolution
    check_resolution(height, width, scale_factor(vae))
    return vae


def build_text_encoder(config: TextEncoderConfig | dict, words: list[str] | None = None) -> TextEncoder:
    """The config's text encoder (``config``: a ``model.text_encoder`` section, parsed or as a dict)."""
    if not isinstance(config, TextEncoderConfig):
        config = from_mapping(TextEncoderConfig, config, "model.text_encoder")
    if config.pretrained:
        return TextEncoder.from_pretrained(config.pretrained, config.tokenizer, subfolder=config.subfolder,
                                           tokenizer_subfolder=config.tokenizer_subfolder)
    if words is None:
        from .data.world import vocabulary

        words = vocabulary()
    options = {k: getattr(config, k) for k in config.VOCABULARY_KEYS if getattr(config, k) is not None}
    return TextEncoder.from_vocabulary(words, **options)


def build_t2i_unet(config: T2IConfig | dict, cross_attention_dim: int) -> UNet2DConditionModel:
    """The config's T2I U-Net (``config``: a ``model.t2i`` section, parsed or as a dict)."""
    if not isinstance(config, T2IConfig):
        config = from_mapping(T2IConfig, config, "model.t2i")
    if config.pretrained:
        return load_t2i_unet(config.pretrained, config.subfolder)
    kwargs = copy.deepcopy(config.unet)
    kwargs.setdefault("cross_attention_dim", cross_attention_dim)
    return UNet2DConditionModel(**kwargs)


def build_ssr_unet(config: SSRConfig | dict, cross_attention_dim: int) -> UNet2DConditionModel:
    """Image SR U-Net: input = noisy high-res (3) + up-sampled low-res (3); the noise-augmentation
    level enters as a timestep-style class embedding (as in DeepFloyd-IF stage II / Imagen SR).
    ``config``: a ``model.ssr`` section, parsed or as a dict."""
    if not isinstance(config, SSRConfig):
        config = SSRConfig.from_dict(config)
    if config.pretrained:
        return load_t2i_unet(config.pretrained, config.subfolder)
    kwargs = copy.deepcopy(config.unet)
    kwargs.update(in_channels=6, out_channels=3, class_embed_type="timestep")
    kwargs.setdefault("cross_attention_dim", cross_attention_dim)
    return UNet2DConditionModel(**kwargs)


def _flow_sampler(model: ModelConfig) -> dict:
    """A flow model's default sampler: its only solver, the flow Euler one (``sampling.make_scheduler``
    refuses every other name for it)."""
    return {"sampler": "euler"} if is_flow(model.scheduler) else {}


def pipeline_config(config: ModelConfig | dict, temporal_downsampling_factor: int) -> dict:
    """The part of a model config the pipeline needs at inference time (stored in model_index.json,
    read back as ``options.PipelineConfig``).

    ``defaults`` are written out in full (``options.GenerationDefaults`` filled by the config's), so a
    pipeline directory states the settings it runs with; ``ssr`` holds the options the config sets.
    """
    model = ModelConfig.of(config)
    return {
        "base_resolution": list(model.base_resolution),
        "fps": model.fps,
        "temporal_downsampling_factor": temporal_downsampling_factor,
        "ssr": model.ssr.pipeline_options() if model.ssr is not None else {},
        "defaults": dataclasses.asdict(model.defaults) | _flow_sampler(model),
        "noise_prior": dataclasses.asdict(model.noise_prior),
    }


def build_pipeline(config: ModelConfig | dict, *, words: list[str] | None = None, t2i_unet: UNet2DConditionModel | None = None,
                   text_encoder: TextEncoder | None = None, with_ssr: bool = True, with_conditional: bool = True,
                   device="cpu", dtype=torch.float32):
    """A pipeline with freshly initialised temporal layers around ``t2i_unet`` (or one built from config)."""
    from .pipeline import LumierePipeline

    model = ModelConfig.of(config)
    text_encoder = text_encoder or build_text_encoder(model.text_encoder, words)
    unet = t2i_unet or build_t2i_unet(model.t2i, text_encoder.hidden_size)
    base = inflate(unet, model.temporal)
    components = {"text_encoder": text_encoder, "base": base}
    vae = build_latent_vae(model)
    if vae is not None:
        components["vae"] = vae
    if with_conditional:
        components["conditional"] = inflate(unet, model.temporal, copy=True,
                                            extra_input_channels=unet.config.in_channels + 1)
    if with_ssr and model.ssr is not None:
        ssr_unet = build_ssr_unet(model.ssr, text_encoder.hidden_size)
        components["ssr"] = inflate(ssr_unet, model.ssr_temporal)
    return LumierePipeline(config=pipeline_config(model, base.temporal_downsampling_factor),
                           scheduler_config=model_scheduler_config(model),
                           components=components, device=device, dtype=dtype)
