"""Space-Time U-Net: inflate a pretrained diffusers ``UNet2DConditionModel`` (Lumiere Sec. 3.1).

The T2I U-Net is kept whole under the prefix ``t2i.`` (so a T2I or style checkpoint maps onto it
one-to-one) and frozen. ``STUNet.forward`` walks the U-Net's own blocks, calling the pretrained
resnets / attentions / resamplers per frame and inserting the temporal modules:

- after every resnet: a factorized space-time conv block (all levels but the coarsest) or a stack of
  temporal attention blocks (coarsest level: last down block, mid block, first up block);
- after every spatial down-sampler: temporal down-sampling; after every spatial up-sampler: temporal
  up-sampling (``temporal_resize=False`` leaves these out: the conventional fixed-temporal-resolution
  inflation used as the ablation baseline, and for the SSR model which works on short windows);
- for a conditional model with ``condition_every_level``: (C, M) pooled to each level's size and added
  through zero-initialised convs (see ``ConditionInjection``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import torch
import torch.utils.checkpoint
from accelerate import init_empty_weights
from diffusers import ModelMixin, UNet2DConditionModel
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from safetensors.torch import save_file
from torch import nn

from ..errors import CheckpointError, InputError
from ..hub import read_json, read_safetensors
from ..options import bounded, from_mapping
from .temporal import (TemporalAttentionStack, TemporalConvBlock, TemporalDownsample, TemporalUpsample,
                       TextAttentionPool, clip_time_features, frames_to_video, looping, video_to_frames)

SUPPORTED_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D", "SimpleCrossAttnDownBlock2D", "ResnetDownsampleBlock2D")
SUPPORTED_UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D")
SUPPORTED_MID_BLOCKS = ("UNetMidBlock2DCrossAttn", "UNetMidBlock2DSimpleCrossAttn", "UNetMidBlock2D")

CONFIG_NAME = "config.json"
CLIP_TIME_FEATURES = 16  # Fourier features of a frame's place in the clip (motion_conditioning)
# STUNet weights go under their own name, so diffusers' loaders find no weights of theirs in the folder and
# raise, instead of UNet2DConditionModel.from_pretrained building a random full-size U-Net from it (it would
# ignore config.json's STUNet keys). Folders written before keep the diffusers name, read as they are.
WEIGHTS_NAME = "stunet.safetensors"
LEGACY_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


TEXT_POOLING = ("mean", "attention")


@dataclass(frozen=True)
class TemporalConfig:
    """STUNet's temporal options, with their defaults: the one list of them. ``STUNet`` is built from one
    and saves it as the top-level keys of its ``config.json`` (next to ``t2i``); a model config's
    ``model.temporal`` section is one (without ``extra_input_channels``, which the builder sets per model).
    """

    temporal_resize: bool = True  # temporal down/up-sampling next to the spatial ones (False: fixed frame count)
    temporal_attention_depth: int = bounded(2, min=1)  # attention blocks per coarsest-level temporal stack
    temporal_kernel_size: int = bounded(3, min=1)  # odd: frames seen by each temporal conv / resampler
    temporal_head_dim: int = bounded(64, min=1)  # channels per temporal attention head
    extra_input_channels: int = bounded(0, min=0)  # conv_in inputs beyond the T2I's (conditional model: C, M)
    motion_conditioning: bool = False  # text x clip-time x position conditioning of the temporal layers
    spatial_kernel_size: int = bounded(3, min=0)  # odd, or 0: the conv blocks' per-frame spatial convs left out
    text_pooling: str = "attention"    # how the prompt tokens become the conv blocks' vector: "mean" / "attention"
    condition_every_level: bool = False  # conditional model: (C, M) added at every level (ConditionInjection)

    # What a saved config without a key was built with: configs written before these options existed.
    SAVED_BEFORE: ClassVar[dict] = {"spatial_kernel_size": 0, "text_pooling": "mean"}

    def __post_init__(self):
        if self.text_pooling not in TEXT_POOLING:
            raise InputError(f"text_pooling must be 'mean' or 'attention', got {self.text_pooling!r}")
        if self.temporal_kernel_size % 2 == 0:  # an even kernel's padding would add a frame per conv
            raise InputError(f"temporal_kernel_size must be odd, got {self.temporal_kernel_size}")
        if self.spatial_kernel_size % 2 == 0 and self.spatial_kernel_size:
            raise InputError(f"spatial_kernel_size must be odd or 0 (no spatial convs), got {self.spatial_kernel_size}")

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "the temporal options",
                  exclude: tuple[str, ...] = ()) -> "TemporalConfig":
        """Parse a mapping of these options (``options.from_mapping``: keys, types and ranges checked);
        ``exclude``: fields the mapping may not set.

        Raises:
            InputError: an unknown key or a bad value, naming ``where``.key.
        """
        return from_mapping(cls, values, where, exclude=exclude)

    @classmethod
    def of(cls, config: "TemporalConfig | dict | None" = None, where: str = "the temporal options",
           **options) -> "TemporalConfig":
        """``config`` (a TemporalConfig, a dict of its keys or None: the defaults) with ``options`` over it,
        checked as :meth:`from_dict` does."""
        values = dataclasses.asdict(config) if isinstance(config, cls) else dict(config or {})
        return cls.from_dict({**values, **options}, where)

    @classmethod
    def from_saved(cls, config: dict, where: str = "the STUNet config") -> "TemporalConfig":
        """The options of a saved STUNet ``config.json`` (its other keys: ``t2i``, diffusers' "_" keys);
        a key it lacks is what the model was built with before that option existed (``SAVED_BEFORE``),
        else the default."""
        values = {k: v for k, v in config.items() if k != "t2i"}
        return cls.from_dict({**cls.SAVED_BEFORE, **values}, where)

    def to_dict(self) -> dict:
        """The saved form: ``config.json``'s keys besides ``t2i``."""
        return dataclasses.asdict(self)


def _check_supported(unet: UNet2DConditionModel) -> None:
    if not isinstance(unet, UNet2DConditionModel):
        raise TypeError(f"inflate() expects a diffusers UNet2DConditionModel, got {type(unet).__name__}")
    for kind, blocks, supported in (
        ("down", unet.down_blocks, SUPPORTED_DOWN_BLOCKS),
        ("up", unet.up_blocks, SUPPORTED_UP_BLOCKS),
        ("mid", [unet.mid_block] if unet.mid_block is not None else [], SUPPORTED_MID_BLOCKS),
    ):
        for block in blocks:
            name = type(block).__name__
            if name not in supported:
                raise ValueError(
                    f"cannot inflate {kind} block {name!r}: supported {kind} blocks are {', '.join(supported)}"
                )
    kind = unet.config.addition_embed_type
    if kind == "text_time":
        raise ValueError(
            "cannot inflate an SDXL-style U-Net (addition_embed_type='text_time'): it needs extra inputs per "
            "video (the pooled text embedding and the size / crop time ids, repeated per frame like the text "
            "states) that STUNet, the training stages and the pipeline do not pass. Use a U-Net whose "
            "addition_embed_type is None or 'text': Stable Diffusion 1.x / 2.x or DeepFloyd IF"
        )
    if kind not in (None, "text"):
        raise ValueError(
            f"cannot inflate a U-Net with addition_embed_type={kind!r}: it needs extra per-call inputs "
            "(added_cond_kwargs) that STUNet does not pass; supported: None (Stable Diffusion 1.x / 2.x) and "
            "'text' (DeepFloyd IF)"
        )


def _per_frame(x: torch.Tensor | None, num_frames: int) -> torch.Tensor | None:
    """Repeat a per-video tensor (B, ...) to per-frame (B*T, ...)."""
    return None if x is None else x.repeat_interleave(num_frames, dim=0)


class STUNet(ModelMixin):
    """A T2I U-Net inflated to video with temporal blocks and (optionally) temporal down/up-sampling.

    A diffusers ``ModelMixin`` so diffusers' pipeline loader can read it as a component
    (``["lumiere.models.stunet", "STUNet"]`` in ``model_index.json``: it calls :meth:`from_pretrained` on the
    component folder); its own :meth:`save_pretrained` / :meth:`from_pretrained` / ``config`` define the
    folder. Moving and casting are plain ``torch.nn.Module`` ones (diffusers' ``ModelMixin.to`` adds checks
    for quantized / offloaded models that a STUNet never is).
    """

    circular = False  # inside ``looping()``: the clip is a seamless loop
    to = nn.Module.to
    cuda = nn.Module.cuda
    half = nn.Module.half
    float = nn.Module.float

    def __init__(self, unet: UNet2DConditionModel, config: TemporalConfig | dict | None = None, *,
                 freeze_spatial: bool = True, **options):
        """``config``: the temporal options (:class:`TemporalConfig`, or a dict of its keys; ``options`` over
        it). ``freeze_spatial``: turn the T2I's ``requires_grad`` off (it is not saved: a loaded model is
        frozen)."""
        super().__init__()
        config = TemporalConfig.of(config, "STUNet", **options)
        _check_supported(unet)
        self.t2i = unet
        # extra input channels are added below by expand_input_channels, which counts them here
        self.temporal_config = dataclasses.replace(config, extra_input_channels=0)
        self.condition_injection: ConditionInjection | None = None
        motion_conditioning, text_pooling = config.motion_conditioning, config.text_pooling
        temporal_attention_depth, temporal_head_dim = config.temporal_attention_depth, config.temporal_head_dim
        temporal_kernel_size, spatial_kernel_size = config.temporal_kernel_size, config.spatial_kernel_size
        temporal_resize = config.temporal_resize

        coarsest = len(unet.down_blocks) - 1
        # Per-video conditioning of the temporal conv blocks: the U-Net's timestep embedding plus a
        # projection of the mean-pooled prompt tokens (new, trainable; see TemporalConvBlock).
        cond_channels = unet.time_embedding.linear_2.out_features * (2 if unet.config.class_embeddings_concat else 1)
        text_channels = unet.config.encoder_hid_dim or unet.config.cross_attention_dim
        # text_pooling="attention" (TextAttentionPool) lets that vector single out the motion words.
        if text_pooling == "attention":
            self.temporal_text_pool = TextAttentionPool(text_channels, cond_channels)
        else:
            self.temporal_text_proj = nn.Linear(text_channels, cond_channels)
        # motion_conditioning (off by default = the paper's temporal attention, which sees neither text
        # nor timestep): the conditioning vector becomes per frame (+ a projection of the frame's place
        # in the clip), and the coarsest temporal attention is modulated by it and cross-attends to the
        # prompt tokens; both modulations also see each pixel's place in the frame. "Moving right" is a
        # function of text x time x position; this gives the temporal layers all three.
        self.clip_time_proj = nn.Linear(CLIP_TIME_FEATURES, cond_channels) if motion_conditioning else None
        context_channels = unet.config.cross_attention_dim
        if isinstance(context_channels, (list, tuple)):
            context_channels = context_channels[-1]

        def temporal_block(channels: int, level: int) -> nn.Module:
            if level == coarsest:
                if motion_conditioning:
                    return TemporalAttentionStack(channels, temporal_attention_depth, temporal_head_dim,
                                                  cond_channels, context_channels)
                return TemporalAttentionStack(channels, temporal_attention_depth, temporal_head_dim)
            return TemporalConvBlock(channels, temporal_kernel_size, cond_channels, plane_positions=motion_conditioning,
                                     spatial_kernel_size=spatial_kernel_size)

        def resampler(block, attr: str, cls) -> nn.Module | None:
            modules = getattr(block, attr, None)
            if not temporal_resize or modules is None:
                return None
            return cls(modules[0].out_channels, temporal_kernel_size)

        self.down_temporal = nn.ModuleList(
            nn.ModuleList(temporal_block(r.out_channels, level) for r in block.resnets)
            for level, block in enumerate(unet.down_blocks)
        )
        self.down_resample = nn.ModuleList(
            resampler(block, "downsamplers", TemporalDownsample) or nn.Identity() for block in unet.down_blocks
        )
        self.mid_temporal = nn.ModuleList(
            temporal_block(r.out_channels, coarsest) for r in (unet.mid_block.resnets if unet.mid_block else [])
        )
        self.up_temporal = nn.ModuleList(
            nn.ModuleList(temporal_block(r.out_channels, coarsest - i) for r in block.resnets)
            for i, block in enumerate(unet.up_blocks)
        )
        self.up_resample = nn.ModuleList(
            resampler(block, "upsamplers", TemporalUpsample) or nn.Identity() for block in unet.up_blocks
        )
        self.temporal_downsampling_factor = 2 ** sum(isinstance(m, TemporalDownsample) for m in self.down_resample)

        if config.extra_input_channels:
            self.expand_input_channels(config.extra_input_channels)
        if freeze_spatial:
            self.t2i.requires_grad_(False)
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------ memory
    def enable_gradient_checkpointing(self) -> None:
        """Recompute each layer (pretrained resnet + its temporal block + spatial attention) in the
        backward pass instead of keeping its activations: less memory for ~one more forward.

        Why here and not diffusers' switch: ``forward`` calls the U-Net's resnets and attentions
        itself, so ``self.t2i.enable_gradient_checkpointing()`` would never apply. Gradients are the
        same as without it; sampling (no autograd) is unaffected.
        """
        self.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = False

    def looping(self):
        """Context manager: within it the model generates a seamless loop (``temporal.looping``: circular
        temporal convs and resampling, no frame positions), exactly time-shift equivariant by
        ``temporal_downsampling_factor`` frames; restored on exit."""
        return looping(self)

    # ------------------------------------------------------------------ parameters
    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters added by inflation (the ones trained in the temporal stage)."""
        for name, param in self.named_parameters():
            if not name.startswith("t2i."):
                yield param

    def spatial_parameters(self) -> Iterator[nn.Parameter]:
        """The pretrained T2I parameters (frozen after inflation)."""
        return self.t2i.parameters()

    @property
    def in_channels(self) -> int:
        return self.t2i.conv_in.in_channels

    @property
    def out_channels(self) -> int:
        return self.t2i.config.out_channels

    @property
    def dtype(self) -> torch.dtype:
        return self.t2i.dtype

    @property
    def device(self) -> torch.device:
        return self.t2i.device

    def expand_input_channels(self, extra: int, condition_every_level: bool | None = None) -> None:
        """Widen ``conv_in`` by ``extra`` input channels, zero-initialised (Sec. 4.2 conditional model).

        The zero weights make the widened model equal the unconditional one at initialisation; the
        widened conv is trainable (it must learn to read the conditioning video and mask).
        ``condition_every_level`` (default: the model's setting) also builds a ``ConditionInjection``.
        """
        if extra <= 0:
            return
        if condition_every_level is not None:
            self.temporal_config = dataclasses.replace(self.temporal_config, condition_every_level=condition_every_level)
        old = self.t2i.conv_in
        new = nn.Conv2d(old.in_channels + extra, old.out_channels, old.kernel_size, old.stride, old.padding)
        new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.zero_()
            new.weight[:, : old.in_channels].copy_(old.weight)
            new.bias.copy_(old.bias)
        self.t2i.conv_in = new
        self.temporal_config = dataclasses.replace(self.temporal_config,
                                                   extra_input_channels=self.extra_input_channels + extra)
        if self.condition_every_level:
            self.condition_injection = ConditionInjection(self.t2i, self.extra_input_channels).to(
                device=old.weight.device, dtype=old.weight.dtype)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, C, T, H, W) noisy video -> (B, C_out, T, H, W) model prediction.

        ``timestep`` and ``class_labels`` are per video (scalar or shape (B,)); ``encoder_hidden_states``
        is (B, L, D). They are repeated to the current number of frames at each temporal level.
        """
        if sample.ndim != 5:
            raise ValueError(f"STUNet expects a video tensor (B, C, T, H, W), got shape {tuple(sample.shape)}")
        sample = sample.contiguous()  # a permuted input (seen with VAE latents) segfaulted torch 2.13's CPU backward
        batch, channels, num_frames, height, width = sample.shape
        n = self.temporal_downsampling_factor
        if num_frames % n:
            raise ValueError(
                f"num_frames must be a multiple of the temporal down-sampling factor N={n}, got {num_frames}"
            )
        if channels != self.in_channels:
            raise ValueError(f"STUNet expects {self.in_channels} input channels, got {channels}")
        unet = self.t2i
        if unet.config.center_input_sample:
            sample = 2 * sample - 1.0
        if torch.is_tensor(timestep) and timestep.ndim == 1 and timestep.shape[0] not in (1, batch):
            raise ValueError(f"timestep must be a scalar or have one entry per video ({batch}), got {timestep.shape[0]}")

        # Per-video embeddings, computed once, exactly as UNet2DConditionModel.forward does.
        emb = unet.time_embedding(unet.get_time_embed(sample=sample[:, :, 0], timestep=timestep))
        class_emb = unet.get_class_embed(sample=sample[:, :, 0], class_labels=class_labels)
        if class_emb is not None:
            emb = torch.cat([emb, class_emb], dim=-1) if unet.config.class_embeddings_concat else emb + class_emb
        aug_emb = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs={})
        if aug_emb is not None:
            emb = emb + aug_emb
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        if self.text_pooling == "attention":
            temporal_cond = emb + self.temporal_text_pool(encoder_hidden_states)
        else:
            temporal_cond = emb + self.temporal_text_proj(encoder_hidden_states.mean(dim=1))
        context = unet.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states, added_cond_kwargs={})

        cache: dict[int, tuple] = {}

        def conditioning(frames: int):
            # Repeat per-video conditioning to the current temporal length once per level; with
            # motion_conditioning the temporal blocks' vector is per frame: (B, T, D).
            if frames not in cache:
                frame_cond = temporal_cond
                if self.clip_time_proj is not None:
                    times = clip_time_features(frames, CLIP_TIME_FEATURES, sample.device, temporal_cond.dtype,
                                               circular=self.circular)
                    frame_cond = temporal_cond[:, None] + self.clip_time_proj(times)[None]
                cache[frames] = (_per_frame(emb, frames), _per_frame(context, frames), frame_cond)
            return cache[frames]

        recompute = self.gradient_checkpointing and torch.is_grad_enabled()

        def layer(fn, *args):
            # One layer's activations are recomputed in backward (enable_gradient_checkpointing).
            if recompute:
                return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
            return fn(*args)

        injection = self.condition_injection
        condition = sample[:, channels - self.extra_input_channels:] if injection is not None else None
        frames = num_frames
        x = video_to_frames(sample)
        x = unet.conv_in(x)
        skips = [x]

        for level, (block, temporal, temporal_down) in enumerate(zip(unet.down_blocks, self.down_temporal,
                                                                     self.down_resample)):
            if injection is not None and level > 0:  # level 0 reads (C, M) through conv_in
                x = injection.add("down", level, x, condition, frames)
            temb, ctx, tcond = conditioning(frames)
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for resnet, attention, temporal_block in zip(block.resnets, attentions, temporal):
                x = layer(_resnet_temporal_attention, resnet, temporal_block, attention, x, temb, frames, tcond,
                          context, ctx)
                skips.append(x)
            if block.downsamplers is not None:
                for downsampler in block.downsamplers:
                    x = _resample(downsampler, x, temb)
                if isinstance(temporal_down, TemporalDownsample):
                    x = temporal_down(x, frames)
                    frames //= 2
                skips.append(x)

        if unet.mid_block is not None:
            temb, ctx, tcond = conditioning(frames)
            mid = unet.mid_block
            x = layer(_resnet_temporal_attention, mid.resnets[0], self.mid_temporal[0], None, x, temb, frames, tcond,
                      context, ctx)
            for attention, resnet, temporal_block in zip(mid.attentions, mid.resnets[1:], self.mid_temporal[1:]):
                x = layer(_attention_resnet_temporal, attention, resnet, temporal_block, x, temb, frames, tcond,
                          context, ctx)

        last = len(unet.up_blocks) - 1
        for level, (block, temporal, temporal_up) in enumerate(zip(unet.up_blocks, self.up_temporal,
                                                                   self.up_resample)):
            temb, ctx, tcond = conditioning(frames)
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for resnet, attention, temporal_block in zip(block.resnets, attentions, temporal):
                x = torch.cat([x, skips.pop()], dim=1)
                x = layer(_resnet_temporal_attention, resnet, temporal_block, attention, x, temb, frames, tcond,
                          context, ctx)
            if injection is not None and level < last:  # the last level's goes in after the output norm
                x = injection.add("up", level, x, condition, frames)
            if block.upsamplers is not None:
                size = skips[-1].shape[-2:] if skips else None
                for upsampler in block.upsamplers:
                    x = _resample(upsampler, x, temb, size)
                if isinstance(temporal_up, TemporalUpsample):
                    x = temporal_up(x, frames)
                    frames *= 2

        if unet.conv_norm_out is not None:
            x = unet.conv_act(unet.conv_norm_out(x))
        if injection is not None:
            x = injection.add("up", last, x, condition, frames)
        x = unet.conv_out(x)
        return frames_to_video(x, num_frames)

    # ------------------------------------------------------------------ checkpoints
    @property
    def config(self) -> dict:
        """What ``config.json`` holds: the T2I U-Net's diffusers config and the :class:`TemporalConfig`."""
        t2i_config = {k: v for k, v in dict(self.t2i.config).items() if not k.startswith("_")}
        return {"_class_name": "STUNet", "t2i": t2i_config, **self.temporal_config.to_dict()}

    @staticmethod
    def downsampling_factor_of(config: dict) -> int:
        """N for a saved STUNet config without building the model: every down block but the last
        down-samples in space, and (with temporal_resize) in time too."""
        if not TemporalConfig.from_saved(config).temporal_resize:
            return 1
        return 2 ** (len(config["t2i"]["down_block_types"]) - 1)

    @classmethod
    def from_config(cls, config: dict) -> "STUNet":
        """A STUNet (random weights) from a saved ``config.json`` (:meth:`TemporalConfig.from_saved`)."""
        return cls(UNet2DConditionModel.from_config(config["t2i"]), TemporalConfig.from_saved(config))

    @staticmethod
    def weights_file(directory: str | os.PathLike) -> Path:
        """The weights file of a saved STUNet folder: ``stunet.safetensors``, or in a folder written before it
        existed (no such file, a ``diffusion_pytorch_model.safetensors``) that one."""
        directory = Path(directory)
        legacy = directory / LEGACY_WEIGHTS_NAME
        if not (directory / WEIGHTS_NAME).is_file() and legacy.is_file():
            return legacy
        return directory / WEIGHTS_NAME

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write ``config.json`` + ``stunet.safetensors`` (optionally cast, e.g. fp16). A
        ``diffusion_pytorch_model.safetensors`` left in the folder by an older save is removed (it would be
        stale, and diffusers would load it as a U-Net)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True))
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        (directory / LEGACY_WEIGHTS_NAME).unlink(missing_ok=True)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, dtype: torch.dtype | None = torch.float32,
                        **loader_options) -> "STUNet":
        """Load what ``save_pretrained`` wrote (or an older save's ``diffusion_pytorch_model.safetensors``:
        ``weights_file``), floating weights cast to ``dtype``, in eval mode.

        ``loader_options``: what diffusers' pipeline loader passes to a ``ModelMixin`` component
        (``_loader_dtype``): ``torch_dtype`` is ``dtype``; the others must be left at what a plain load means.

        Memory: the model is built without weights (parameters on the meta device, accelerate's
        ``init_empty_weights``) and the file's tensors become its parameters (``assign=True``; memory-mapped,
        cast one at a time), so a load needs about the model's size once, not a random model plus a copy.
        Buffers are built normally: the non-persistent ones are not in the file.

        Raises:
            CheckpointError: a missing or corrupt file, or weights that do not match the config (names the
                first missing / unexpected keys).
        """
        dtype = _loader_dtype(dtype, loader_options, "STUNet")
        directory = Path(directory)
        config = read_json(directory / CONFIG_NAME)
        weights = cls.weights_file(directory)
        state = read_safetensors(weights, dtype=dtype)
        with init_empty_weights(include_buffers=False):
            model = cls.from_config(config)
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {weights} does not match its config: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        empty = [name for name, tensor in (*model.named_parameters(), *model.named_buffers()) if tensor.is_meta]
        if empty:  # a tensor neither in the file nor built with the model (cannot happen without missing keys)
            raise CheckpointError(f"checkpoint {weights}: no weights for {empty[:5]}")
        return model.to(dtype).eval()


# What diffusers' pipeline loader (``load_sub_model``) passes to a ModelMixin component's ``from_pretrained``, and
# the values meaning a plain load of every weight onto the CPU (what Lumiere's components are).
_PLAIN_LOAD = {"device_map": None, "max_memory": None, "offload_folder": None, "offload_state_dict": (None, False),
               "variant": None, "use_safetensors": (None, True), "use_flashpack": False,
               "low_cpu_mem_usage": (None, True, False), "disable_mmap": (None, False, True),
               "quantization_config": None}


def _loader_dtype(dtype: torch.dtype | None, options: dict, what: str) -> torch.dtype:
    """The dtype of a component load given diffusers' loader options (``torch_dtype``/``dtype`` over ``dtype``;
    None: float32). Options other than the plain load's values are refused, naming them.

    Raises:
        InputError: an unknown option, or one (device_map, variant, quantization...) this component cannot honour.
    """
    options = dict(options)
    for key in ("torch_dtype", "dtype"):
        if options.get(key) is not None:
            dtype = options[key]
        options.pop(key, None)
    for key, value in options.items():
        if key not in _PLAIN_LOAD:
            raise InputError(f"{what}.from_pretrained got an unknown option {key!r}")
        plain = _PLAIN_LOAD[key]
        if value not in (plain if isinstance(plain, tuple) else (plain,)):
            raise InputError(f"{what}.from_pretrained cannot honour {key}={value!r}: a {what} folder is one "
                             "safetensors file loaded whole (place the pipeline with device= / .to())")
    return dtype if dtype is not None else torch.float32


class ConditionInjection(nn.Module):
    """(C, M) read at every U-Net level, not only by ``conv_in`` (conditional model, an extension).

    Why: read through ``conv_in`` alone, C shares the finest level's few channels with the noisy input
    and passes every GroupNorm on the way out, so a model can learn to barely read it (measured in
    docs/research/). Here (C, M), average-pooled to each level's frames and size, is added through a
    zero-initialised 3x3 conv at the input of every down level below the first and at the output of
    every up level, the last one after the output norm, right before ``conv_out`` (a norm-free path to
    the prediction). Zero init keeps the model equal to the plain widened one until trained. Off by
    default (``condition_every_level``).
    """

    def __init__(self, unet: UNet2DConditionModel, condition_channels: int):
        super().__init__()
        channels = list(unet.config.block_out_channels)

        def conv(out_channels: int) -> nn.Conv2d:
            layer = nn.Conv2d(condition_channels, out_channels, 3, padding=1)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
            return layer

        self.down = nn.ModuleList(conv(c) for c in channels[:-1])  # down level l starts with level l-1's channels
        # up level i ends at the resolution of down level L-1-i with its channel count
        self.up = nn.ModuleList(conv(c) for c in reversed(channels))

    def add(self, kind: str, level: int, x: torch.Tensor, condition: torch.Tensor, frames: int) -> torch.Tensor:
        """x (B*frames, channels, h, w) + conv(condition pooled to (frames, h, w))."""
        conv = self.down[level - 1] if kind == "down" else self.up[level]
        pooled = nn.functional.adaptive_avg_pool3d(condition, (frames, *x.shape[-2:]))
        return x + conv(video_to_frames(pooled).to(x.dtype))


def _resnet_temporal_attention(resnet, temporal_block, attention, x, temb, frames, tcond, context, ctx):
    """One down / up layer (and the mid block's first): pretrained resnet, temporal block, spatial attention."""
    x = temporal_block(resnet(x, temb), frames, tcond, context)
    return _spatial_attention(attention, x, ctx, temb)


def _attention_resnet_temporal(attention, resnet, temporal_block, x, temb, frames, tcond, context, ctx):
    """One later layer of the mid block: spatial attention, then resnet and its temporal block."""
    x = _spatial_attention(attention, x, ctx, temb)
    return temporal_block(resnet(x, temb), frames, tcond, context)


def _spatial_attention(attention: nn.Module | None, x: torch.Tensor, context: torch.Tensor, temb: torch.Tensor):
    """Call a pretrained spatial attention module the way its diffusers block would."""
    if attention is None:
        return x
    if isinstance(attention, Transformer2DModel):
        return attention(x, encoder_hidden_states=context, return_dict=False)[0]
    if getattr(attention, "is_cross_attention", False) or getattr(attention, "added_kv_proj_dim", None):
        return attention(x, encoder_hidden_states=context)
    return attention(x, temb=temb)  # UNetMidBlock2D self-attention


def _resample(module: nn.Module, x: torch.Tensor, temb: torch.Tensor, size=None) -> torch.Tensor:
    """Call a spatial down/up-sampler: ResnetBlock2D resamplers take temb, Up/Downsample2D do not."""
    from diffusers.models.resnet import ResnetBlock2D

    if isinstance(module, ResnetBlock2D):
        return module(x, temb)
    if size is not None and hasattr(module, "use_conv_transpose"):  # Upsample2D
        return module(x, output_size=size)
    return module(x)


def inflate(unet: UNet2DConditionModel, config: TemporalConfig | dict | None = None, *, copy: bool = False,
            freeze_spatial: bool = True, **options) -> STUNet:
    """Inflate a pretrained T2I U-Net into a Space-Time U-Net.

    The STUNet uses ``unet``'s modules themselves, not copies (no second copy of gigabytes of weights),
    so ``unet`` changes with it: it is frozen (``requires_grad`` off, unless ``freeze_spatial=False``),
    ``extra_input_channels`` replaces its ``conv_in`` with a wider one, and training the STUNet's spatial
    weights trains it. Two STUNets inflated from one U-Net share its weights, and widening one's
    ``conv_in`` breaks the other. ``copy=True`` inflates a deep copy instead and leaves ``unet`` as it was.

    ``config``: the temporal options, a :class:`TemporalConfig` (or a dict of its keys; default: its
    defaults), with keyword ``options`` over it, e.g. ``temporal_resize=False`` (the conventional
    fixed-temporal-resolution inflation with the same temporal blocks) or ``extra_input_channels`` (the
    conditional model's wider first conv).

    Raises:
        InputError: an unknown option or a bad value (named in the message).
        TypeError: ``unet`` is not a diffusers UNet2DConditionModel.
        ValueError: a block type or addition embedding STUNet cannot inflate (named in the message).
    """
    config = TemporalConfig.of(config, "inflate()", **options)
    _check_supported(unet)  # before a copy of a model that would be refused anyway
    return STUNet(deepcopy(unet) if copy else unet, config, freeze_spatial=freeze_spatial)


def _temporal_option(name: str) -> property:
    return property(lambda self: getattr(self.temporal_config, name),
                    doc=f"``temporal_config.{name}`` (read-only: :class:`TemporalConfig`).")


# STUNet's options read as attributes (``stunet.extra_input_channels``), from the one list of them.
for _field in dataclasses.fields(TemporalConfig):
    setattr(STUNet, _field.name, _temporal_option(_field.name))
del _field
