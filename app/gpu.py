"""ZeroGPU support: on a Hugging Face ZeroGPU Space, generation functions run under ``spaces.GPU``.

Elsewhere (local, ordinary GPU Spaces, tests) the decorator is a no-op, and the ``spaces`` package is
optional.
"""
from __future__ import annotations

import os


def on_spaces() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def on_zero_gpu() -> bool:
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def gpu(duration: int = 120):
    """``spaces.GPU(duration=...)`` on ZeroGPU, identity otherwise."""
    if on_zero_gpu():
        try:
            import spaces
        except ImportError:
            spaces = None
        if spaces is not None:
            return spaces.GPU(duration=duration)
    return lambda fn: fn
