"""Training data: the procedural video world, its analysis (for evaluation) and torch datasets.

World names are imported eagerly (numpy only); analysis (cv2) and datasets (torch) on first use.
"""
from importlib import import_module

from lumiere.data.world import (
    BACKGROUNDS, COLOURS, HELDOUT_COMBINATIONS, MOTIONS, PALETTE, SHAPES, STYLES, ClipSpec, ObjectSpec,
    caption, heldout_prompts, parse_prompt, render_clip, sample_clip, sample_clip_spec, spec_from_prompt,
)

_LAZY = {
    "ProceduralVideoDataset": "lumiere.data.datasets",
    "ProceduralImageDataset": "lumiere.data.datasets",
    "RealVideoDataset": "lumiere.data.datasets",
    "video_to_tensor": "lumiere.data.datasets",
    "tensor_to_video": "lumiere.data.datasets",
    "analyse": "lumiere.data.analysis",
}

__all__ = [
    "BACKGROUNDS", "COLOURS", "HELDOUT_COMBINATIONS", "MOTIONS", "PALETTE", "SHAPES", "STYLES",
    "ClipSpec", "ObjectSpec", "caption", "heldout_prompts", "parse_prompt", "render_clip", "sample_clip",
    "sample_clip_spec", "spec_from_prompt", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lumiere.data' has no attribute {name!r}")
