"""The optional VAE of a latent (Stable-Diffusion-style) pipeline: diffusers' ``AutoencoderKL``.

A pipeline with a ``vae`` component runs its STUNets on latents: training encodes frames with the
frozen VAE, sampling decodes the sampled latents to pixels. ``base_resolution`` stays in pixels
everywhere (what the data, the user and the SSR see); the STUNet works at base_resolution divided by
the VAE's down-sampling factor.

Frames are encoded and decoded a bounded number at a time (``frames_per_call``): a video of T
frames is T images to the VAE, and a one-shot decode of a whole clip at SD resolution holds T
frames' full-resolution decoder activations at once.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from ..errors import InputError
from .temporal import frames_to_video, video_to_frames

# Keys of a model config's "vae" section: a pretrained AutoencoderKL (directory or Hub id, + subfolder)
# or "autoencoder", AutoencoderKL constructor arguments (a tiny random VAE), built reproducibly from "seed".
VAE_KEYS = ("pretrained", "subfolder", "autoencoder", "seed")
# Frames per VAE encode / decode call: bounds the decoder's activation memory while still batching the
# work. Why: the decoder's peak memory grows with every frame decoded at once, so a whole clip at SD
# resolution in one call would need tens of GiB (measured in docs/research/full-config-planning.md).
DEFAULT_FRAMES_PER_CALL = 8


def build_vae(config: dict) -> AutoencoderKL:
    """The config's VAE: ``from_pretrained`` (safetensors only, no remote code), or a constructor
    config whose conv/linear weights come from a generator seeded by ``seed`` (every stage of a run that
    builds it gets the same weights; the global RNG is never seeded)."""
    if config.get("pretrained"):
        return AutoencoderKL.from_pretrained(str(config["pretrained"]), subfolder=config.get("subfolder"),
                                             use_safetensors=True)
    if "autoencoder" not in config:
        raise InputError("model.vae needs 'pretrained' (a diffusers AutoencoderKL directory or Hub id) "
                         "or 'autoencoder' (AutoencoderKL constructor arguments)")
    vae = AutoencoderKL(**copy.deepcopy(config["autoencoder"]))
    generator = torch.Generator().manual_seed(int(config.get("seed", 0)))
    with torch.no_grad():  # torch's default conv/linear init, drawn from the config's own generator
        for module in vae.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    bound = 1 / math.sqrt(module.weight[0].numel())
                    torch.nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return vae


def load_vae(directory, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """A saved VAE component (config.json + diffusion_pytorch_model.safetensors)."""
    return AutoencoderKL.from_pretrained(str(directory), use_safetensors=True, torch_dtype=dtype)


def save_vae(vae: AutoencoderKL, directory, dtype: torch.dtype | None = None) -> None:
    """Save as safetensors + config.json, cast to ``dtype`` on the way out (the module is not changed)."""
    if dtype is not None and vae.dtype != dtype:
        vae = torch.nn.Module.to(copy.deepcopy(vae), dtype=dtype)  # ModelMixin.to warns on every dtype cast
    vae.save_pretrained(str(directory), safe_serialization=True)


def scale_factor(vae: AutoencoderKL) -> int:
    """Pixels per latent along each side: 2 per down-sampling encoder block (SD: 8)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def config_scale_factor(config: dict) -> int | None:
    """The down-sampling factor a "vae" config section gives, when it is known without loading (a
    constructor config); None for a pretrained VAE (checked when it is loaded)."""
    if config.get("pretrained") or "autoencoder" not in config:
        return None
    return 2 ** (len(config["autoencoder"].get("block_out_channels", (64,))) - 1)


def check_resolution(height: int, width: int, factor: int) -> None:
    """``base_resolution`` is in pixels: each side must be a whole number of latents."""
    if height % factor or width % factor:
        raise InputError(f"base_resolution {height}x{width} (pixels) must be divisible by the VAE's down-sampling "
                         f"factor {factor}: the STUNet runs on {height / factor:g}x{width / factor:g} latents")


def _chunks(frames: torch.Tensor, frames_per_call: int | None):
    size = frames.shape[0] if not frames_per_call else max(1, int(frames_per_call))
    return frames.split(size)


def encode_video(vae: AutoencoderKL, video: torch.Tensor, frames_per_call: int | None = DEFAULT_FRAMES_PER_CALL
                 ) -> torch.Tensor:
    """Pixels (B, 3, T, H, W) in [-1, 1] -> scaled latents (B, C, T, H/f, W/f) on ``video``'s device.

    The posterior *mean*, not a sample: deterministic (a seed alone fixes a generation, and a user
    image always gives the same conditioning latents) and free of per-frame independent noise,
    which in video training targets would be temporal flicker for the model to learn.
    """
    device, dtype = video.device, video.dtype
    vae_device = next(vae.parameters()).device
    frames = video_to_frames(video).to(vae_device, vae.dtype)
    shift = vae.config.shift_factor or 0.0
    latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in _chunks(frames, frames_per_call)])
    latents = (latents - shift) * vae.config.scaling_factor
    return frames_to_video(latents, video.shape[2]).to(device, dtype).contiguous()


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, frames_per_call: int | None = DEFAULT_FRAMES_PER_CALL
                   ) -> torch.Tensor:
    """Scaled latents (B, C, T, h, w) -> pixels (B, 3, T, h*f, w*f) in [-1, 1] (clamped), decoded
    ``frames_per_call`` frames at a time (None: all at once)."""
    device, dtype = latents.device, latents.dtype
    vae_device = next(vae.parameters()).device
    frames = video_to_frames(latents).to(vae_device, vae.dtype)
    frames = frames / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
    pixels = torch.cat([vae.decode(chunk).sample for chunk in _chunks(frames, frames_per_call)])
    return frames_to_video(pixels.clamp(-1, 1), latents.shape[2]).to(device, dtype).contiguous()


def latent_keep(keep: torch.Tensor, factor: int) -> torch.Tensor:
    """A keep mask M (1 = known) (..., T, H, W) at latent resolution: a latent is known only if all of
    its f x f pixels are (a min-pool). Why: a latent that mixes known and generated pixels must be
    generated, or the hole's edge would be filled with the blanked pixels' encoding."""
    if factor == 1:
        return keep
    lead, (height, width) = keep.shape[:-2], keep.shape[-2:]
    pooled = -F.max_pool2d(-keep.reshape(-1, 1, height, width).float(), factor)
    return pooled.reshape(*lead, height // factor, width // factor).to(keep.dtype)


def latent_condition(vae: AutoencoderKL, condition: torch.Tensor, keep: torch.Tensor,
                     frames_per_call: int | None = DEFAULT_FRAMES_PER_CALL) -> tuple[torch.Tensor, torch.Tensor]:
    """The conditional model's (C, M) in latent space, from the pixel (C, M) of ``lumiere.conditioning``
    (batched (B, 3, T, H, W), (B, 1, T, H, W)): C encoded and zeroed where M is 0 (unknown content is 0,
    as in pixel space), M min-pooled to latent resolution. Training and sampling both use this."""
    keep_latent = latent_keep(keep, scale_factor(vae))
    return encode_video(vae, condition, frames_per_call) * keep_latent, keep_latent
