"""Stylized generation (Lumiere Sec. 4.1): interpolate the spatial (T2I) weights toward a style fine-tune.

W = alpha * W_style + (1 - alpha) * W_orig on the T2I parameters only; the temporal layers stay.
The change is applied for the duration of a ``with`` block and undone afterwards, so the loaded
weights never change permanently; alpha = 0 touches nothing and is exactly the un-styled model.

A style is held either as the fine-tune's full weights W_style, or (``StyleDelta``) as the difference
Delta = W_style - W_orig, which is all the interpolation W_orig + alpha Delta needs: per weight matrix /
conv kernel a rank-r factor pair (B, A) of its truncated SVD, per 1-D parameter (norms, biases) the exact
difference, and dense where a rank-r pair would not be smaller.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .models.stunet import STUNet
from .options import STYLE_WEIGHT_RANGE
from .request import in_range




STYLE_RANK = 16  # the rank a style's weight differences are stored at (``StyleDelta.between``)
UP, DOWN, DENSE = ".lora_up", ".lora_down", ".delta"  # a StyleDelta's tensor names: parameter name + suffix


@dataclass
class StyleDelta:
    """A style as W_style - W_orig per T2I parameter (diffusers names): ``factors[name]`` = (B, A) with
    Delta = (B @ A).reshape(shape), B (out, r), A (r, prod(shape[1:])); or ``dense[name]`` = Delta itself.
    A parameter in neither is unchanged by the style (Delta = 0). ``rank``: the r it was factored at."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    rank: int | None = None

    @classmethod
    def between(cls, style: dict[str, torch.Tensor], original: dict[str, torch.Tensor],
                rank: int = STYLE_RANK) -> "StyleDelta":
        """The difference ``style`` - ``original`` over the names both hold with one shape: a matrix / conv
        kernel factored by its truncated SVD at ``rank`` (B = U_r S_r^1/2, A = S_r^1/2 V_r^T) when the pair
        is smaller than the difference; 1-D parameters and the rest dense (exact); all-zero ones left out."""
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        delta = cls(rank=int(rank))
        for name, weight in style.items():
            base = original.get(name)
            if base is None or base.shape != weight.shape:
                continue
            difference = weight.detach().float() - base.detach().to(weight.device).float()  # on their device
            if not bool(difference.any()):
                continue
            rows, columns = difference.shape[0], math.prod(difference.shape[1:]) if difference.ndim > 1 else 1
            if difference.ndim < 2 or rank * (rows + columns) >= rows * columns:
                delta.dense[name] = difference.cpu()
                continue
            u, s, vh = torch.linalg.svd(difference.reshape(rows, columns), full_matrices=False)
            root = s[:rank].sqrt()
            delta.factors[name] = ((u[:, :rank] * root).cpu().contiguous(), (root[:, None] * vh[:rank]).cpu().contiguous())
        return delta

    def difference(self, name: str, shape: torch.Size) -> torch.Tensor | None:
        """Delta of parameter ``name`` (float32, CPU) if the style changes it and it has ``shape``, else None."""
        if name in self.dense:
            value = self.dense[name]
            return value if value.shape == shape else None
        if name in self.factors:
            up, down = self.factors[name]
            if up.shape[0] != shape[0] or up.shape[0] * down.shape[1] != math.prod(shape):
                return None
            return (up.float() @ down.float()).reshape(shape)
        return None

    def state(self) -> dict[str, torch.Tensor]:
        """Its tensors under flat names (``name`` + ``UP`` / ``DOWN`` / ``DENSE``), as a safetensors file holds them."""
        state = {name + DENSE: value for name, value in self.dense.items()}
        for name, (up, down) in self.factors.items():
            state[name + UP], state[name + DOWN] = up, down
        return state

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], rank: int | None = None) -> "StyleDelta":
        """The inverse of ``state``.

        Raises:
            ValueError: a name without a known suffix, or a factor without its pair.
        """
        delta = cls(rank=rank)
        ups, downs = {}, {}
        for key, value in state.items():
            for suffix, into in ((DENSE, delta.dense), (UP, ups), (DOWN, downs)):
                if key.endswith(suffix):
                    into[key[: -len(suffix)]] = value
                    break
            else:
                raise ValueError(f"style difference tensor {key!r} is none of name{UP}, name{DOWN}, name{DENSE}")
        if ups.keys() != downs.keys():
            raise ValueError(f"style difference factors without their pair: {sorted(ups.keys() ^ downs.keys())}")
        delta.factors = {name: (ups[name], downs[name]) for name in ups}
        return delta

    def to(self, dtype: torch.dtype | None = None) -> "StyleDelta":
        """A copy with every tensor on the CPU, cast to ``dtype`` (None: as they are), contiguous."""
        def cast(value):
            value = value.detach().cpu()
            return (value.to(dtype) if dtype is not None else value).contiguous()

        return StyleDelta({name: (cast(up), cast(down)) for name, (up, down) in self.factors.items()},
                          {name: cast(value) for name, value in self.dense.items()}, self.rank)

    def apply_to(self, original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The full style weights W_orig + Delta over ``original`` (e.g. to write a full copy)."""
        full = {}
        for name, weight in original.items():
            change = self.difference(name, weight.shape)
            full[name] = weight if change is None else (weight.float() + change).to(weight.dtype)
        return full


@contextmanager
def styled(stunet: STUNet, style_state: dict[str, torch.Tensor] | StyleDelta | None, weight: float):
    """Inside the block, ``stunet``'s T2I weights are moved toward the style by ``weight``.

    Args:
        stunet: the model to style (its temporal layers are never touched).
        style_state: the style's full spatial weights under their diffusers names (W lerped toward them),
            or its ``StyleDelta`` (W + weight x Delta, Delta from the low-rank factors); None = no style.
        weight: alpha in [0, 1]; 0 leaves the model bit-identical.

    Raises:
        InputError: ``weight`` outside [0, 1].
    """
    weight = in_range(weight, *STYLE_WEIGHT_RANGE, "style_weight")
    if style_state is None or weight == 0.0 or (isinstance(style_state, dict) and not style_state):
        yield stunet
        return
    originals: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, param in stunet.t2i.named_parameters():
                if isinstance(style_state, StyleDelta):
                    change = style_state.difference(name, param.shape)
                    if change is None:
                        continue  # unchanged by the style, or the conditional model's widened conv_in
                    originals[name] = param.detach().clone()
                    param.add_(change.to(param.device, param.dtype), alpha=weight)
                    continue
                target = style_state.get(name)
                if target is None or target.shape != param.shape:
                    continue  # e.g. the conditional model's widened conv_in: left un-styled
                originals[name] = param.detach().clone()
                param.lerp_(target.to(param.device, param.dtype), weight)
        yield stunet
    finally:
        with torch.no_grad():
            params = dict(stunet.t2i.named_parameters())
            for name, original in originals.items():
                params[name].copy_(original)
