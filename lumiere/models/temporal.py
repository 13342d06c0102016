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
from contextlib import contextmanager
from typing import Iterator

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
    slow im2col Conv3d on CPU (faster per conv: measured in benchmarks/RESULTS.md).
    """

    circular = False  # wrap around in time (a seamless loop; set by ``looping``) instead of zero padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        x, pad = x.reshape(b, c, t, h * w), self.padding[0]
        if self.circular and pad:
            x, pad = F.pad(x, (0, 0, pad, pad), mode="circular"), 0  # frame -1 is the last frame
        out = F.conv2d(x, self.weight.squeeze(-1), self.bias, stride=(self.stride[0], 1), padding=(pad, 0))
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
    """A factorized space-time convolution block (Fig. 4b), residual, zero-initialised output.

    Each of its two layers is norm -> SiLU -> 3x3 spatial conv -> 1D temporal conv, the (2+1)D
    factorisation of Tran et al. (2018) the paper cites; the last temporal conv is zero-initialised.
    The spatial convs are new and trainable: with only the frozen T2I mixing space, features could
    change along time at each pixel but not travel across pixels, and motion is exactly that.
    ``spatial_kernel_size=0`` leaves them out (temporal convs only; how checkpoints before this
    option were built, and what their configs load as). Like the
    U-Net's own resnets, the branch is modulated (scale/shift) by a conditioning vector (timestep +
    pooled text), so motion can depend on the prompt even though the spatial layers, which hold the
    cross-attention, are frozen. ``cond`` is per video (B, D) or per frame (B, T, D); the per-frame
    form (see ``STUNet(motion_conditioning=True)``) lets the modulation differ along the clip.
    """

    def __init__(self, channels: int, kernel_size: int = 3, cond_channels: int | None = None,
                 plane_positions: bool = False, spatial_kernel_size: int = 3):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.spatial1 = spatial_conv(channels, spatial_kernel_size)
        self.conv1 = temporal_conv(channels, kernel_size)
        self.norm2 = group_norm(channels)
        self.cond_proj = nn.Linear(cond_channels, 2 * channels) if cond_channels else None
        self.position_proj = nn.Linear(PLANE_FEATURES, cond_channels) if cond_channels and plane_positions else None
        self.spatial2 = spatial_conv(channels, spatial_kernel_size)
        self.conv2 = init_zero_(temporal_conv(channels, kernel_size))

    def forward(self, x: torch.Tensor, num_frames: int, cond: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        h = frames_to_video(x, num_frames)
        h = self.conv1(_per_frame_conv(self.spatial1, F.silu(self.norm1(h))))
        h = self.norm2(h)
        if self.cond_proj is not None and cond is not None:
            if self.position_proj is not None:  # per pixel: (B, T, H*W, 2C) -> (B, 2C, T, H, W)
                cond = _with_plane_positions(cond, self.position_proj, *h.shape[-2:])
                modulation = self.cond_proj(F.silu(cond)).permute(0, 3, 1, 2).unflatten(-1, h.shape[-2:])
            else:
                modulation = self.cond_proj(F.silu(cond))  # (B, 2C) or (B, T, 2C)
                modulation = modulation[:, :, None] if modulation.ndim == 2 else modulation.transpose(1, 2)
                modulation = modulation[..., None, None]  # (B, 2C, 1|T, 1, 1)
            scale, shift = modulation.chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(_per_frame_conv(self.spatial2, F.silu(h)))
        return x + video_to_frames(h)


def spatial_conv(channels: int, kernel_size: int) -> nn.Conv2d | None:
    """A per-frame 2D conv (the spatial half of a (2+1)D conv); None for kernel_size 0."""
    return nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2) if kernel_size else None


def _per_frame_conv(conv: nn.Conv2d | None, video: torch.Tensor) -> torch.Tensor:
    """Apply a 2D conv to every frame of (B, C, T, H, W); identity when ``conv`` is None."""
    if conv is None:
        return video
    return frames_to_video(conv(video_to_frames(video)), video.shape[2])


class TextAttentionPool(nn.Module):
    """Prompt tokens (B, L, D) -> one conditioning vector per video (B, out), by attention pooling.

    Why: a mean over the tokens dilutes the one word that carries the motion ("right" vs "left"
    changes one of 16 token states: the mean moves 1/16 as far, less than a colour change does), and
    the temporal layers, whose job is motion, only see the text through this vector. Each head
    learns its own weighting of the tokens (as Imagen's attention pooling of the text embedding);
    the scoring layer starts at zero, so at initialisation every head is the plain mean.
    """

    def __init__(self, text_channels: int, out_channels: int, heads: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(text_channels)
        self.to_scores = init_zero_(nn.Linear(text_channels, heads))
        self.proj = nn.Linear(heads * text_channels, out_channels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(tokens)
        weights = self.to_scores(tokens).softmax(dim=1)  # (B, L, heads): a distribution over tokens per head
        pooled = torch.einsum("blh,bld->bhd", weights, tokens)
        return self.proj(pooled.flatten(1))


PLANE_FEATURES = 16  # Fourier features of a pixel's place in the frame (x, y in [0, 1])


def plane_position_features(height: int, width: int, dim: int, device, dtype) -> torch.Tensor:
    """(H*W, dim) Fourier features of each pixel's normalised (x, y) position.

    Why: convolutions are (nearly) translation-equivariant, so a frozen T2I barely knows where in the
    frame a feature is; "moving left" starts on the right of the frame, "circling" goes around its centre.
    """
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    freqs = math.pi * torch.arange(1, dim // 4 + 1, device=device, dtype=torch.float32)
    angles = torch.cat([grid_x.reshape(-1, 1) * freqs, grid_y.reshape(-1, 1) * freqs], dim=-1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).to(dtype)


def _with_plane_positions(cond: torch.Tensor, position_proj: nn.Linear, height: int, width: int) -> torch.Tensor:
    """(B, D) or (B, T, D) conditioning + projected pixel positions -> (B, T|1, H*W, D)."""
    if cond.ndim == 2:
        cond = cond[:, None]
    positions = plane_position_features(height, width, PLANE_FEATURES, cond.device, cond.dtype)
    return cond[:, :, None] + position_proj(positions)[None, None]


def clip_time_features(num_frames: int, dim: int, device, dtype, circular: bool = False) -> torch.Tensor:
    """(T, dim) Fourier features of each frame's place in the clip, s = t / (T - 1) in [0, 1].

    Relative (not frame-index) time: the same motion spans the clip at every level of the
    temporal pyramid (16, 8, 4 frames) and at any clip length. ``circular`` (a seamless loop, where
    no frame is first or last): every frame gets the features' mean over the clip.
    """
    s = torch.linspace(0.0, 1.0, num_frames, device=device, dtype=torch.float32) if num_frames > 1 else \
        torch.zeros(1, device=device)
    freqs = math.pi * torch.arange(1, dim // 2 + 1, device=device, dtype=torch.float32)
    angles = s[:, None] * freqs[None]
    features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if circular:
        features = features.mean(dim=0, keepdim=True).expand(num_frames, -1)
    return features.to(dtype)


@contextmanager
def looping(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model``'s temporal layers treat the clip as a loop (frame T-1 precedes frame 0).

    Temporal convolutions (incl. the temporal down/up-sampling convs) pad circularly instead of with
    zeros, and temporal attention, already global, sees no frame positions; with that the model commutes
    with a roll of the clip by its temporal down-sampling factor, so no frame is an edge and the last
    frame flows into the first. Sets a ``circular`` attribute on ``model`` too (``STUNet`` drops its
    clip-time features with it). The previous modes are restored on exit, also after an exception;
    outside the block the model is exactly as before.
    """
    layers = [m for m in model.modules() if isinstance(m, (TemporalConv, TemporalAttentionBlock))]
    saved = [(m, m.__dict__.get("circular")) for m in (model, *layers)]
    try:
        for module, _ in saved:
            module.circular = True
        yield model
    finally:
        for module, previous in saved:
            if previous is None:
                module.__dict__.pop("circular", None)  # back to the class default
            else:
                module.circular = previous


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

    With ``cond_channels``/``context_channels`` (``STUNet(motion_conditioning=True)``) it is a full
    conditioned transformer block: scale/shift of the normalised tokens from the (per-frame)
    timestep + text vector, cross-attention of every space-time token to the prompt tokens, and a
    feed-forward layer; each sub-layer is residual with a zero-initialised output, so the identity
    at initialisation still holds. Why: the paper's temporal attention sees neither the text nor
    the timestep, and a frozen T2I gives motion words no other way into the temporal layers.
    """

    circular = False  # seamless-loop mode (``looping``): frame positions are dropped (made constant)

    def __init__(self, channels: int, head_dim: int = 64, cond_channels: int | None = None,
                 context_channels: int | None = None):
        super().__init__()
        self.num_heads = max(1, channels // head_dim)
        self.norm = nn.LayerNorm(channels)
        self.to_qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.to_out = init_zero_(nn.Linear(channels, channels))
        self.modulation = init_zero_(nn.Linear(cond_channels, 2 * channels)) if cond_channels else None
        self.position_proj = nn.Linear(PLANE_FEATURES, cond_channels) if cond_channels else None
        if context_channels:
            self.norm_cross = nn.LayerNorm(channels)
            self.to_q_cross = nn.Linear(channels, channels, bias=False)
            self.to_kv_cross = nn.Linear(context_channels, 2 * channels, bias=False)
            self.to_out_cross = init_zero_(nn.Linear(channels, channels))
            self.norm_ff = nn.LayerNorm(channels)
            self.feed_forward = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(),
                                              init_zero_(nn.Linear(4 * channels, channels)))
        else:
            self.to_q_cross = None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, C) -> (N, heads, L, C / heads)."""
        n, length, c = x.shape
        return x.view(n, length, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, num_frames: int, cond: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        bt, c, h, w = x.shape
        b, hw = bt // num_frames, h * w
        # (B*T, C, H, W) -> (B*H*W, T, C): one sequence of T tokens per spatial location.
        tokens = x.view(b, num_frames, c, hw).permute(0, 3, 1, 2).reshape(b * hw, num_frames, c)
        hidden = self.norm(tokens)
        if self.modulation is not None and cond is not None:
            # per video, frame and pixel: (B, T|1, H*W, D) -> (B*H*W, T|1, 2C)
            cond = _with_plane_positions(cond, self.position_proj, h, w)
            modulation = self.modulation(F.silu(cond)).transpose(1, 2).reshape(b * hw, cond.shape[1], 2 * c)
            scale, shift = modulation.chunk(2, dim=-1)
            hidden = hidden * (1 + scale) + shift
        positions = sinusoidal_positions(num_frames, c, x.device, x.dtype)
        if self.circular:  # a loop has no first frame: every frame gets the same (mean) position
            positions = positions.mean(dim=0, keepdim=True)
        hidden = hidden + positions
        q, k, v = self.to_qkv(hidden).view(b * hw, num_frames, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)
        tokens = tokens + self.to_out(attended.transpose(1, 2).reshape(b * hw, num_frames, c))
        if self.to_q_cross is not None and context is not None:
            # Every space-time token of a video attends to that video's prompt tokens (one SDPA per video).
            queries = self._heads(self.to_q_cross(self.norm_cross(tokens)).view(b, hw * num_frames, c))
            keys, values = self.to_kv_cross(context.to(x.dtype)).chunk(2, dim=-1)
            attended = F.scaled_dot_product_attention(queries, self._heads(keys), self._heads(values))
            tokens = tokens + self.to_out_cross(attended.transpose(1, 2).reshape(b * hw, num_frames, c))
            tokens = tokens + self.feed_forward(self.norm_ff(tokens))
        return tokens.view(b, hw, num_frames, c).permute(0, 2, 3, 1).reshape(bt, c, h, w)


class TemporalAttentionStack(nn.Module):
    """Several temporal attention blocks stacked (cheap at the space-time-compressed coarsest level)."""

    def __init__(self, channels: int, depth: int = 2, head_dim: int = 64, cond_channels: int | None = None,
                 context_channels: int | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(TemporalAttentionBlock(channels, head_dim, cond_channels, context_channels)
                                    for _ in range(depth))

    def forward(self, x: torch.Tensor, num_frames: int, cond: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, num_frames, cond, context)
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
