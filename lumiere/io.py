"""Video, image and mask files.

Videos are ``uint8`` arrays ``(T, H, W, 3)`` RGB. Writing goes through the ffmpeg binary bundled
with imageio-ffmpeg so results do not depend on the system: ``.mp4`` is H.264 yuv420p with
``+faststart`` (plays in every browser, unlike OpenCV's ``mp4v``), ``.webm`` is VP9, ``.gif``
loops forever. yuv420p needs even sizes, so odd frames are padded by edge replication.
"""
from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".mov")
WRITABLE_SUFFIXES = (".mp4", ".webm", ".gif")


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _existing_file(path) -> Path:
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"No such file: '{path}'")
    return path


# ----------------------------------------------------------------------------- validation
def validate_video(frames) -> np.ndarray:
    """Return ``frames`` as a contiguous uint8 (T,H,W,3) array or raise an actionable ValueError."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(
            f"video must be uint8 (0..255), got dtype {frames.dtype}; convert floats in [0,1] with "
            "(x * 255).round().clip(0, 255).astype(np.uint8)"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"video must have shape (T, H, W, 3) RGB, got shape {tuple(frames.shape)}")
    if min(frames.shape[:3]) < 1:
        raise ValueError(f"video must have at least one frame of at least 1x1 pixels, got shape {frames.shape}")
    return np.ascontiguousarray(frames)


def _validate_fps(fps) -> float:
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a positive number, got {fps!r}") from None
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return fps


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Pad H and W up to even sizes by repeating the last row/column (yuv420p needs even sizes)."""
    _, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


# ----------------------------------------------------------------------------- writing
_CODEC_ARGS = {
    ".mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "17", "-preset", "medium",
             "-movflags", "+faststart"],
    ".webm": ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", "30", "-b:v", "0",
              "-deadline", "good", "-cpu-used", "4", "-row-mt", "1"],
    # One palette for the whole clip keeps colours stable between frames; -loop 0 = loop forever.
    ".gif": ["-filter_complex", "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=none",
             "-loop", "0"],
}


def write_video(path, frames, fps: float) -> str:
    """Write a uint8 (T,H,W,3) RGB video to ``.mp4`` (H.264), ``.webm`` (VP9) or ``.gif``; returns the path."""
    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    if suffix not in _CODEC_ARGS:
        raise ValueError(f"cannot write '{path}': suffix must be one of {WRITABLE_SUFFIXES}")
    frames = validate_video(frames)
    fps = _validate_fps(fps)
    if suffix != ".gif":
        frames = pad_to_even(frames)
    t, h, w, _ = frames.shape
    if not path.parent.exists():
        raise FileNotFoundError(f"directory does not exist: '{path.parent}'")
    cmd = [_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", f"{fps:.6g}", "-i", "-", "-an", *_CODEC_ARGS[suffix], str(path)]
    proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing '{path}': {proc.stderr.decode(errors='replace').strip()}")
    return str(path)


# ----------------------------------------------------------------------------- reading
def _read_gif(path: Path) -> tuple[np.ndarray, float]:
    """Decode a GIF with Pillow: exact frame count, fps from the mean frame duration."""
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        frames, durations = [], []
        for frame in ImageSequence.Iterator(im):
            frames.append(np.asarray(frame.convert("RGB")))
            durations.append(frame.info.get("duration", 100) or 100)
    fps = 1000.0 / float(np.mean(durations))
    return np.stack(frames), fps


def _read_ffmpeg(path: Path) -> tuple[np.ndarray, float]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]
    if not frames:
        raise ValueError("no frames")
    return np.stack(frames), float(meta.get("fps") or 0.0) or 25.0


def read_video(path) -> tuple[np.ndarray, float]:
    """Read a video file (mp4/webm/gif/mov/...) into ``(uint8 (T,H,W,3) RGB, fps)``."""
    path = _existing_file(path)
    try:
        if path.suffix.lower() == ".gif":
            return _read_gif(path)
        return _read_ffmpeg(path)
    except Exception as err:  # decoders raise many types; the caller needs the file name
        raise ValueError(f"could not decode video '{path}': {err}") from err


def _open_image(path):
    from PIL import Image, UnidentifiedImageError

    path = _existing_file(path)
    try:
        im = Image.open(path)
        im.load()
        return im
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"could not decode image '{path}': {err}") from err


def read_image(path) -> np.ndarray:
    """Read an image file into uint8 (H,W,3) RGB (alpha is dropped)."""
    return np.asarray(_open_image(path).convert("RGB")).copy()


def read_mask(path, threshold: int = 127) -> np.ndarray:
    """Read a mask image into bool (H,W): True where alpha > 0 if the image has a used alpha
    channel (a brushed layer), otherwise where the pixel is bright (grey > threshold)."""
    im = _open_image(path)
    if "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info):
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
        if alpha.min() < 255:
            return alpha > 0
    return np.asarray(im.convert("L")) > threshold


def write_image(path, image) -> str:
    """Write a uint8 (H,W,3) RGB image (any format Pillow knows from the suffix)."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {tuple(image.shape)}")
    Image.fromarray(image).save(os.fspath(path))
    return os.fspath(path)
