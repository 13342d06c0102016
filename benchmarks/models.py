"""Model builders shared by the benchmarks: STUNet, our fixed-resolution inflation, and diffusers peers.

All models use the same spatial design so that only the temporal design differs:
widths 64-128-256-256, 2 resnets per block, GroupNorm(32), 8 attention heads, spatial
(cross-)attention at the two middle levels (none at the finest pixel level, where per-frame
self-attention over H*W tokens would dominate everything), a cross-attention mid block,
pixel space with 3 channels in and out.
"""
from __future__ import annotations

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNet3DConditionModel, UNetMotionModel

from lumiere import inflate

WIDTHS = (64, 128, 256, 256)
LAYERS = 2
HEADS = 8  # diffusers' (misnamed) attention_head_dim = number of heads
TEXT_DIM = 256
TEXT_TOKENS = 16

MODEL_NAMES = ("stunet", "fixed", "unet3d", "animatediff")
MODEL_LABELS = {
    "stunet": "STUNet (ours)",
    "fixed": "fixed-T inflation (ours)",
    "unet3d": "UNet3DConditionModel",
    "animatediff": "UNetMotionModel (AnimateDiff)",
}


def unet2d(in_channels: int = 3, out_channels: int = 3, widths=WIDTHS, layers: int = LAYERS,
           text_dim: int = TEXT_DIM) -> UNet2DConditionModel:
    attn = ["CrossAttnDownBlock2D"] * len(widths)
    attn[0] = attn[-1] = "DownBlock2D"
    up = ["CrossAttnUpBlock2D"] * len(widths)
    up[0] = up[-1] = "UpBlock2D"
    return UNet2DConditionModel(
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=tuple(widths),
        layers_per_block=layers,
        down_block_types=tuple(attn),
        up_block_types=tuple(up),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=text_dim,
        attention_head_dim=HEADS,
        norm_num_groups=32,
    )


def unet3d(in_channels: int = 3, out_channels: int = 3, widths=WIDTHS, layers: int = LAYERS,
           text_dim: int = TEXT_DIM) -> UNet3DConditionModel:
    down = ["CrossAttnDownBlock3D"] * len(widths)
    down[0] = down[-1] = "DownBlock3D"
    up = ["CrossAttnUpBlock3D"] * len(widths)
    up[0] = up[-1] = "UpBlock3D"
    return UNet3DConditionModel(
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=tuple(widths),
        layers_per_block=layers,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        cross_attention_dim=text_dim,
        attention_head_dim=HEADS,
        norm_num_groups=32,
    )


def animatediff(in_channels: int = 3, out_channels: int = 3, widths=WIDTHS, layers: int = LAYERS,
                text_dim: int = TEXT_DIM, max_frames: int = 128) -> UNetMotionModel:
    adapter = MotionAdapter(
        block_out_channels=tuple(widths),
        motion_layers_per_block=layers,
        motion_mid_block_layers_per_block=1,
        motion_num_attention_heads=HEADS,
        motion_norm_num_groups=32,
        motion_max_seq_length=max_frames,  # default 32 would reject 80-frame clips
        use_motion_mid_block=True,
    )
    model = UNetMotionModel.from_unet2d(unet2d(in_channels, out_channels, widths, layers, text_dim), adapter)
    model.freeze_unet2d_params()  # AnimateDiff trains the motion modules only
    return model


def build(name: str, **kwargs) -> torch.nn.Module:
    if name == "stunet":
        model = inflate(unet2d(**kwargs))
    elif name == "fixed":
        model = inflate(unet2d(**kwargs), temporal_resize=False)
    elif name == "unet3d":
        model = unet3d(**kwargs)
    elif name == "animatediff":
        model = animatediff(**kwargs)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return model.eval()


def temporal_parameter_count(name: str, model: torch.nn.Module) -> int:
    """Parameters that model the time axis (the ones a video stage adds/trains on top of a T2I U-Net)."""
    if name in ("stunet", "fixed"):
        return sum(p.numel() for p in model.temporal_parameters())
    if name == "animatediff":
        return sum(p.numel() for n, p in model.named_parameters() if "motion_modules" in n)
    if name == "unet3d":  # temporal convs, temporal transformers and the input temporal transformer
        keys = ("temp_convs", "temp_attentions", "transformer_in")
        return sum(p.numel() for n, p in model.named_parameters() if any(k in n for k in keys))
    raise ValueError(name)


def trainable_parameter_count(name: str, model: torch.nn.Module) -> int:
    """Parameters trained in the video stage: ours/AnimateDiff freeze the T2I; ModelScope trains all."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_fn(name: str, model: torch.nn.Module, sample: torch.Tensor, timestep: torch.Tensor,
               text: torch.Tensor):
    """A zero-argument callable running one forward pass (sample is (B, C, T, H, W) for every model)."""
    if name in ("stunet", "fixed"):
        return lambda: model(sample, timestep, text)
    if name == "animatediff":
        # UNetMotionModel expects per-frame text states (its pipeline repeats them before the call).
        text = text.repeat_interleave(sample.shape[2], dim=0)
    return lambda: model(sample, timestep, text, return_dict=False)[0]
