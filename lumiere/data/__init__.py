"""Training data: the procedural video world, its analysis (for evaluation) and torch datasets."""
from lumiere.data.world import (
    BACKGROUNDS, COLOURS, HELDOUT_COMBINATIONS, MOTIONS, PALETTE, SHAPES, STYLES, ClipSpec, ObjectSpec,
    caption, heldout_prompts, parse_prompt, render_clip, sample_clip, sample_clip_spec, spec_from_prompt,
)

__all__ = [
    "BACKGROUNDS", "COLOURS", "HELDOUT_COMBINATIONS", "MOTIONS", "PALETTE", "SHAPES", "STYLES",
    "ClipSpec", "ObjectSpec", "caption", "heldout_prompts", "parse_prompt", "render_clip", "sample_clip",
    "sample_clip_spec", "spec_from_prompt",
]
