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
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from .errors import InputError, MissingFileError
from .models.stunet import inflate
from .models.text_encoder import TextEncoder
from .models.vae import VAE_KEYS, build_vae, check_resolution, config_scale_factor, scale_factor
from .options import SSR_BUILD_KEYS, GenerationDefaults, NoisePrior, SSROptions, check_keys
from .sampling import noise_schedule_config, scheduler_sampler

# diffusers' v-prediction, cosine-schedule DDPM config: pixel-space models train well with it.
DEFAULT_SCHEDULER = {
    "_class_name": "DPMSolverMultistepScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "clip_sample": False,
    "timestep_spacing": "trailing",
}
# Keys of the "text_encoder" and "t2i" sections (build_text_encoder / build_t2i_unet read them).
TEXT_ENCODER_KEYS = ("hidden_size", "num_layers", "num_heads", "max_length", "pretrained", "tokenizer", "subfolder",
                     "tokenizer_subfolder", "architecture")
T2I_KEYS = ("unet", "pretrained", "subfolder")


@dataclass(frozen=True)
class ModelConfig:
    """A model config (a training config's "model" section), checked: what ``build_pipeline`` and the
    training stages build. Sub-sections handed whole to a constructor stay dicts."""

    base_resolution: tuple[int, int, int]  # (frames, height, width) in pixels, also for a latent model
    t2i: dict
    fps: float = 8
    text_encoder: dict = field(default_factory=dict)
    temporal: dict = field(default_factory=dict)
    ssr: dict | None = None       # SSROptions keys + how to build its U-Net (SSR_BUILD_KEYS)
    scheduler: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    noise_prior: dict | None = None  # options.NoisePrior keys: the base video's noise across frames
    vae: dict | None = None       # models.vae.VAE_KEYS: a latent model's AutoencoderKL (None: pixel model)

    @property
    def ssr_options(self) -> SSROptions:
        return SSROptions.from_config(self.ssr)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        known = check_keys(values, {f.name for f in dataclasses.fields(cls)}, "model")
        for name in ("base_resolution", "t2i"):
            if name not in known:
                raise InputError(f"model.{name} is required")
        check_keys(known["t2i"], T2I_KEYS, "model.t2i")
        check_keys(known.get("text_encoder"), TEXT_ENCODER_KEYS, "model.text_encoder")
        if known.get("ssr") is not None:
            SSROptions.from_config(known["ssr"])
        GenerationDefaults.from_config(known.get("defaults"))
        NoisePrior.from_config(known.get("noise_prior"))
        noise_schedule_config(known.get("scheduler") or {})  # a bad snr_shift fails when the run starts,
        scheduler_sampler(known.get("scheduler") or {})  # so does a scheduler class no sampler runs
        frames, height, width = (int(v) for v in known["base_resolution"])
        if known.get("vae") is not None:
            check_keys(known["vae"], VAE_KEYS, "model.vae")
            factor = config_scale_factor(known["vae"])
            if factor is not None:  # a pretrained VAE's factor is checked when it is loaded (build_latent_vae)
                check_resolution(height, width, factor)
            autoencoder, unet = known["vae"].get("autoencoder"), known["t2i"].get("unet")
            if autoencoder is not None and unet is not None and not known["t2i"].get("pretrained"):
                latent, inputs = autoencoder.get("latent_channels", 4), unet.get("in_channels", 4)
                if latent != inputs:
                    raise InputError(f"model.t2i.unet.in_channels ({inputs}) must equal model.vae.autoencoder."
                                     f"latent_channels ({latent}): the U-Net denoises the VAE's latents")
        return cls(**{**known, "base_resolution": (frames, height, width)})

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


def build_latent_vae(model: ModelConfig):
    """The model's VAE (None for a pixel model), checked against ``base_resolution``.

    Raises:
        InputError: base_resolution (pixels) is not divisible by the VAE's down-sampling factor.
    """
    if model.vae is None:
        return None
    vae = build_vae(model.vae)
    _, height, width = model.base_resolution
    check_resolution(height, width, scale_factor(vae))
    return vae


def build_text_encoder(config: dict, words: list[str] | None = None) -> TextEncoder:
    if config.get("pretrained"):
        return TextEncoder.from_pretrained(config["pretrained"], config.get("tokenizer"),
                                           subfolder=config.get("subfolder", ""),
                                           tokenizer_subfolder=config.get("tokenizer_subfolder", ""))
    if words is None:
        from .data.world import vocabulary

        words = vocabulary()
    options = {k: config[k] for k in ("hidden_size", "num_layers", "num_heads", "max_length", "architecture")
               if k in config}
    return TextEncoder.from_vocabulary(words, **options)


def build_t2i_unet(config: dict, cross_attention_dim: int) -> UNet2DConditionModel:
    if config.get("pretrained"):
        return load_t2i_unet(config["pretrained"], config.get("subfolder"))
    kwargs = copy.deepcopy(config["unet"])
    kwargs.setdefault("cross_attention_dim", cross_attention_dim)
    return UNet2DConditionModel(**kwargs)


def build_ssr_unet(config: dict, cross_attention_dim: int) -> UNet2DConditionModel:
    """Image SR U-Net: input = noisy high-res (3) + up-sampled low-res (3); the noise-augmentation
    level enters as a timestep-style class embedding (as in DeepFloyd-IF stage II / Imagen SR)."""
    if config.get("pretrained"):
        return load_t2i_unet(config["pretrained"], config.get("subfolder"))
    kwargs = copy.deepcopy(config["unet"])
    kwargs.update(in_channels=6, out_channels=3, class_embed_type="timestep")
    kwargs.setdefault("cross_attention_dim", cross_attention_dim)
    return UNet2DConditionModel(**kwargs)


def pipeline_config(config: ModelConfig | dict, temporal_downsampling_factor: int) -> dict:
    """The part of a model config the pipeline needs at inference time (stored in model_index.json,
    read back as ``options.PipelineConfig``).

    ``defaults`` are written out in full (``options.GenerationDefaults`` filled by the config's), so a
    pipeline directory states the settings it runs with.
    """
    model = ModelConfig.of(config)
    return {
        "base_resolution": list(model.base_resolution),
        "fps": model.fps,
        "temporal_downsampling_factor": temporal_downsampling_factor,
        "ssr": {k: v for k, v in (model.ssr or {}).items() if k not in SSR_BUILD_KEYS},
        "defaults": dataclasses.asdict(GenerationDefaults.from_config(model.defaults)),
        "noise_prior": dataclasses.asdict(NoisePrior.from_config(model.noise_prior)),
    }


def build_pipeline(config: ModelConfig | dict, *, words: list[str] | None = None, t2i_unet: UNet2DConditionModel | None = None,
                   text_encoder: TextEncoder | None = None, with_ssr: bool = True, with_conditional: bool = True,
                   device="cpu", dtype=torch.float32):
    """A pipeline with freshly initialised temporal layers around ``t2i_unet`` (or one built from config)."""
    from .pipeline import LumierePipeline

    model = ModelConfig.of(config)
    text_encoder = text_encoder or build_text_encoder(model.text_encoder, words)
    temporal = model.temporal
    unet = t2i_unet or build_t2i_unet(model.t2i, text_encoder.hidden_size)
    base = inflate(unet, **temporal)
    components = {"text_encoder": text_encoder, "base": base}
    vae = build_latent_vae(model)
    if vae is not None:
        components["vae"] = vae
    if with_conditional:
        components["conditional"] = inflate(unet, copy=True, extra_input_channels=unet.config.in_channels + 1, **temporal)
    if with_ssr and model.ssr is not None:
        ssr_unet = build_ssr_unet(model.ssr, text_encoder.hidden_size)
        components["ssr"] = inflate(ssr_unet, temporal_resize=False, **temporal)
    return LumierePipeline(config=pipeline_config(model, base.temporal_downsampling_factor),
                           scheduler_config={**DEFAULT_SCHEDULER, **model.scheduler},
                           components=components, device=device, dtype=dtype)
