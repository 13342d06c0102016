"""Lumiere: a space-time diffusion model for video generation (Bar-Tal et al., 2024).

The library has no UI imports. Heavy submodules are imported lazily so that
``import lumiere`` stays cheap (the CLI and the app start faster).
"""
from importlib import import_module

from . import threads as _threads

_threads.env_defaults()  # before torch is imported: its OpenMP reads the environment once, on load

__version__ = "0.1.0"

_LAZY = {
    "inflate": "lumiere.models.stunet",
    "STUNet": "lumiere.models.stunet",
    "LumierePipeline": "lumiere.pipeline",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lumiere' has no attribute {name!r}")
