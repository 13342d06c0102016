"""Temporal modules inserted into a pretrained text-to-image U-Net (Lumiere Sec. 3.1, App. B).

All modules take and return features in the U-Net's native per-frame layout ``(B*T, C, H, W)``
plus ``num_frames``, so the pretrained spatial layers never see a reshape.

Initialisation follows App. B so that a freshly inflated network reproduces the T2I model on
every N-th frame:
- residual blocks (temporal conv, temporal attention) end in a zero-initialised projection;
- temporal down-sampling = 1D conv initialised to identity, then stride 2 (keeps frames 0, 2, 4, ...);
- temporal up-sampling = frame duplication, then 1D conv initialised to identity.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides ``channels``."""
    groups = math.gcd(channels, max_groups)
    return nn.GroupNorm(groups, channels, eps=1e-6)


def frames_to_video(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*T, C, H, W) -> (B, C, T, H, W) (a view permutation; no copy until someone needs one)."""
    bt, c, h, w = x.shape
    return x.view(bt // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


def video_to_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W)."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


class TemporalConv(nn.Conv3d):
    """A 1D convolution along time: a (k, 1, 1) Conv3d over (B, C, T, H, W).

    Same parameters (names, shapes) as ``nn.Conv3d``; the forward runs it as the equivalent (k, 1)
    Conv2d over the (B, C, T, H*W) view, which takes the oneDNN/cuDNN 2D path instead of PyTorch's
    slow im2col Conv3d on CPU (1.2-2.8x faster per conv, see benchmarks/RESULTS.md).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        out = F.conv2d(x.reshape(b, c, t, h * w), self.weight.squeeze(-1), self.bias,
                       stride=(self.stride[0], 1), padding=(self.padding[0], 0))
        return out.view(b, out.shape[1], out.shape[2], h, w)


def temporal_conv(channels: int, kernel_size: int, stride: int = 1) -> nn.Conv3d:
    """A 1D convolution along time expressed as a (k, 1, 1) Conv3d over (B, C, T, H, W)."""
    return TemporalConv(channels, channels, (kernel_size, 1, 1), stride=(stride, 1, 1), padding=(kernel_size // 2, 0, 0))


def init_identity_(conv: nn.Conv3d) -> nn.Conv3d:
    """Make a temporal conv the identity map: centre tap = I, other taps and bias = 0."""
    with torch.no_grad():
        conv.weight.zero_()
        centre = conv.kernel_size[0] // 2
        conv.weight[:, :, centre, 0, 0].copy_(torch.eye(conv.out_channels, conv.in_channels))
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


def init_zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TemporalConvBlock(nn.Module):
    """The temporal half of a factorized space-time convolution (Fig. 4b).

    The pretrained spatial layer before it does the 2D part; this adds two 1D temporal convs
    (norm -> SiLU -> conv) as a residual branch whose last conv is zero-initialised. Like the
    U-Net's own resnets, the branch is modulated (scale/shift) by a per-video conditioning vector
    (timestep + pooled text), so motion can depend on the prompt even though the spatial layers,
    which hold the cross-attention, are frozen.
    """

    def __init__(self, channels: int, kernel_size: int = 3, cond_channels: int | None = None):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = temporal_conv(channels, kernel_size)
        self.norm2 = group_norm(channels)
        self.cond_proj = nn.Linear(cond_channels, 2 * channels) if cond_channels else None
        self.conv2 = init_zero_(temporal_conv(channels, kernel_size))

    def forward(self, x: torch.Tensor, num_frames: int, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = frames_to_video(x, num_frames)
        h = self.conv1(F.silu(self.norm1(h)))
        h = self.norm2(h)
        if self.cond_proj is not None and cond is not None:
            scale, shift = self.cond_proj(F.silu(cond))[:, :, None, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return x + video_to_frames(h)


def sinusoidal_positions(num_frames: int, dim: int, device, dtype) -> torch.Tensor:
    """(T, dim) sinusoidal frame positions; gives temporal attention a sense of order."""
    position = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    angles = position * freqs[None]
    table = torch.zeros(num_frames, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table.to(dtype)


class TemporalAttentionBlock(nn.Module):
    """Self-attention along time at every spatial location (Fig. 4c), residual, zero-init output.

    Frame positions are added to the attention input (inside the residual branch, so the block is
    still the identity at initialisation); without them attention could not tell "left" from "right".
    """

    def __init__(self, channels: int, head_dim: int = 64):
        super().__init__()
        self.num_heads = max(1, channels // head_dim)
        self.norm = nn.LayerNorm(channels)
        self.to_qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.to_out = init_zero_(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, num_frames: int, cond: torch.Tensor | None = None) -> torch.Tensor:
        bt, c, h, w = x.shape
        b = bt // num_frames
        # (B*T, C, H, W) -> (B*H*W, T, C): one sequence of T tokens per spatial location.
        tokens = x.view(b, num_frames, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, num_frames, c)
        hidden = self.norm(tokens) + sinusoidal_positions(num_frames, c, x.device, x.dtype)
        q, k, v = self.to_qkv(hidden).view(b * h * w, num_frames, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(1, 2).reshape(b * h * w, num_frames, c)
        out = self.to_out(attended)
        out = out.view(b, h * w, num_frames, c).permute(0, 2, 3, 1).reshape(bt, c, h, w)
        return x + out


class TemporalAttentionStack(nn.Module):
    """Several temporal attention blocks stacked (cheap at the space-time-compressed coarsest level)."""

    def __init__(self, channels: int, depth: int = 2, head_dim: int = 64):
        super().__init__()
        self.blocks = nn.ModuleList(TemporalAttentionBlock(channels, head_dim) for _ in range(depth))

    def forward(self, x: torch.Tensor, num_frames: int, cond: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, num_frames)
        return x


class TemporalDownsample(nn.Module):
    """Identity-initialised 1D temporal conv followed by stride 2 (App. B): halves T."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = init_identity_(temporal_conv(channels, kernel_size, stride=2))

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        return video_to_frames(self.conv(frames_to_video(x, num_frames)))


class TemporalUpsample(nn.Module):
    """Frame duplication followed by an identity-initialised 1D temporal conv (App. B): doubles T."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = init_identity_(temporal_conv(channels, kernel_size))

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        video = frames_to_video(x, num_frames).repeat_interleave(2, dim=2)
        return video_to_frames(self.conv(video))
