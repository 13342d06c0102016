"""Training: the paper's stages (t2i -> temporal -> conditional -> ssr -> style) under accelerate."""
from .stages import STAGES, export_pipeline, run_stage

__all__ = ["STAGES", "run_stage", "export_pipeline"]
