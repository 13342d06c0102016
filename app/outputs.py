"""Result files: a browser-playable H.264 mp4 and a looping GIF per generation.

Written straight into Gradio's temp/cache directory under unique names (task, seed and a uuid), so no two
requests ever share a file, Gradio serves them without copying, and ``Blocks(delete_cache=...)`` cleans
them up.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import numpy as np


def gradio_temp_dir() -> Path:
    """Where Gradio keeps uploads and the files it serves: ``GRADIO_TEMP_DIR`` (Gradio's documented setting,
    which ``app.ui.configure_cache_dir`` sets), else Gradio's documented default."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def output_dir() -> Path:
    """``lumiere-outputs`` in :func:`gradio_temp_dir`."""
    directory = gradio_temp_dir() / "lumiere-outputs"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def save_outputs(video: np.ndarray, fps: float, task: str, seed: int, gif: bool = True) -> tuple[str, str | None]:
    """Write ``video`` as mp4 (+ gif); returns their paths."""
    from lumiere.io import write_video

    stem = f"lumiere-{task.replace('_', '-')}-seed{seed}-{uuid.uuid4().hex[:12]}"
    directory = output_dir()
    mp4 = write_video(directory / f"{stem}.mp4", video, fps)
    gif_path = write_video(directory / f"{stem}.gif", video, fps) if gif else None
    return mp4, gif_path
