"""Stylized generation (Lumiere Sec. 4.1): interpolate the spatial (T2I) weights toward a style fine-tune.

W = alpha * W_style + (1 - alpha) * W_orig on the T2I parameters only; the temporal layers stay.
The change is applied for the duration of a ``with`` block and undone afterwards, so the loaded
weights never change permanently; alpha = 0 touches nothing and is exactly the un-styled model.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .errors import InputError
from .models.stunet import STUNet


def check_style_weight(weight: float) -> float:
    """``weight`` as a float in [0, 1] (the interpolation alpha)."""
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"style_weight must be in [0, 1], got {weight}")
    return weight


@contextmanager
def styled(stunet: STUNet, style_state: dict[str, torch.Tensor] | None, weight: float):
    """Inside the block, ``stunet``'s T2I weights are lerped toward ``style_state`` by ``weight``.

    Args:
        stunet: the model to style (its temporal layers are never touched).
        style_state: spatial weights under their diffusers names; None = no style.
        weight: alpha in [0, 1]; 0 leaves the model bit-identical.

    Raises:
        InputError: ``weight`` outside [0, 1].
    """
    weight = check_style_weight(weight)
    if not style_state or weight == 0.0:
        yield stunet
        return
    originals: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, param in stunet.t2i.named_parameters():
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
