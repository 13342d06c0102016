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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, MissingFileError

WRITABLE_SUFFIXES = (".mp4", ".webm", ".gif")


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _existing_file(path) -> Path:
    path = Path(os.fspath(path))
    if not path.is_file():
        raise MissingFileError(f"No such file: '{path}'")
    return path


# ----------------------------------------------------------------------------- validation
def validate_video(frames) -> np.ndarray:
    """Return ``frames`` as a contiguous uint8 (T,H,W,3) array or raise an actionable InputError."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise InputError(
            f"video must be uint8 (0..255), got dtype {frames.dtype}; convert floats in [0,1] with "
            "(x * 255).round().clip(0, 255).astype(np.uint8)"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"video must have shape (T, H, W, 3) RGB, got shape {tuple(frames.shape)}")
    if min(frames.shape[:3]) < 1:
        raise InputError(f"video must have at least one frame of at least 1x1 pixels, got shape {frames.shape}")
    return np.ascontiguousarray(frames)


def _validate_fps(fps) -> float:
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"fps must be a positive number, got {fps!r}") from None
    if not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps must be a positive number, got {fps!r}")
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
        raise InputError(f"cannot write '{path}': suffix must be one of {WRITABLE_SUFFIXES}")
    frames = validate_video(frames)
    fps = _validate_fps(fps)
    if suffix != ".gif":
        frames = pad_to_even(frames)
    t, h, w, _ = frames.shape
    if not path.parent.exists():
        raise MissingFileError(f"directory does not exist: '{path.parent}'")
    cmd = [_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", f"{fps:.6g}", "-i", "-", "-an", *_CODEC_ARGS[suffix], str(path)]
    proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing '{path}': {proc.stderr.decode(errors='replace').strip()}")
    return str(path)


# ----------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class VideoInfo:
    """What a video file claims to hold, read from its header without decoding frames."""

    width: int
    height: int
    fps: float
    seconds: float

    @property
    def frames(self) -> int:
        """Frame count estimated from duration x fps (exact for constant-rate files)."""
        return max(1, round(self.seconds * self.fps))


def probe_video(path) -> VideoInfo:
    """Size, frame rate and duration of a video file, from its header (cheap, decodes nothing)."""
    path = _existing_file(path)
    try:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            with Image.open(path) as im:
                frames = getattr(im, "n_frames", 1)
                duration_ms = im.info.get("duration", 100) or 100
                return VideoInfo(im.width, im.height, 1000.0 / duration_ms, frames * duration_ms / 1000.0)
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(path))
        try:
            meta = next(reader)
        finally:
            reader.close()
        width, height = meta["size"]
        fps = float(meta.get("fps") or 0.0) or 25.0
        return VideoInfo(int(width), int(height), fps, float(meta.get("duration") or 0.0))
    except Exception as err:  # decoders raise many types; the caller needs the file name
        raise InputError(f"could not read video '{path}': {err}") from err


def cover_size(width: int, height: int, cover: tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) scaled down, keeping the aspect, to the smallest size that still covers
    ``cover`` = (height, width); never scaled up. The model resizes and centre-crops to its own
    resolution afterwards, so nothing it would see is lost."""
    if cover is None:
        return width, height
    scale = max(cover[0] / height, cover[1] / width)
    if scale >= 1.0:
        return width, height
    return max(cover[1], math.ceil(width * scale)), max(cover[0], math.ceil(height * scale))


def _read_gif(path: Path, fps: float | None, max_frames: int | None,
              cover: tuple[int, int] | None) -> tuple[np.ndarray, float]:
    """Decode a GIF with Pillow frame by frame: resampled to ``fps`` by timestamps, each frame scaled
    down as it is read, stopping after ``max_frames``."""
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        durations = []
        frames = []
        clock, next_time = 0.0, 0.0
        size = cover_size(im.width, im.height, cover)
        for frame in ImageSequence.Iterator(im):
            duration = (frame.info.get("duration", 100) or 100) / 1000.0
            durations.append(duration)
            keep = fps is None or clock + 1e-9 >= next_time
            clock += duration
            if not keep:
                continue
            rgb = frame.convert("RGB")
            if rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.BOX)
            frames.append(np.asarray(rgb))
            if fps is not None:
                next_time += 1.0 / fps
            if max_frames is not None and len(frames) >= max_frames:
                break
    source_fps = 1.0 / float(np.mean(durations))
    return np.stack(frames), (min(fps, source_fps) if fps is not None else source_fps)


def _read_ffmpeg(path: Path, fps: float | None, max_frames: int | None,
                 cover: tuple[int, int] | None) -> tuple[np.ndarray, float]:
    """Decode with the ffmpeg binary; resampling (``fps`` filter), down-scaling (``scale``, area) and the
    frame limit (``-frames:v``) all happen inside ffmpeg, so only the kept, small frames reach Python."""
    info = probe_video(path)
    width, height = cover_size(info.width, info.height, cover)
    filters = []
    out_fps = info.fps
    if fps is not None and fps < info.fps:
        filters.append(f"fps={fps:.6g}")
        out_fps = fps
    if (width, height) != (info.width, info.height):
        filters.append(f"scale={width}:{height}:flags=area")
    else:  # forces the size we read (also for rotated files whose header size is pre-rotation)
        filters.append(f"scale={width}:{height}")
    cmd = [_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:v:0", "-an", "-sn",
           "-vf", ",".join(filters)]
    if max_frames is not None:
        cmd += ["-frames:v", str(int(max_frames))]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = width * height * 3
    frames = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while max_frames is None or len(frames) < max_frames:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            frames.append(np.frombuffer(buf, np.uint8).reshape(height, width, 3))
    finally:
        proc.stdout.close()
        proc.kill()
        _, stderr = proc.communicate()
    if not frames:
        raise ValueError(f"no frames ({stderr.decode(errors='replace').strip()[-200:] or 'empty stream'})")
    return np.stack(frames), out_fps


def read_video(path, *, fps: float | None = None, max_frames: int | None = None,
               cover: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """Read a video file (mp4/webm/gif/mov/...) into ``(uint8 (T,H,W,3) RGB, fps)``.

    Memory is bounded by what is kept, not by the file: ``fps`` resamples to at most that frame rate,
    ``max_frames`` stops after that many frames (the start of the clip), and ``cover=(height, width)``
    scales each frame down as it is decoded to the smallest size covering it (aspect kept). With none
    given, every frame is read at full size.
    """
    path = _existing_file(path)
    if fps is not None:
        fps = _validate_fps(fps)
    if max_frames is not None and int(max_frames) < 1:
        raise InputError(f"max_frames must be at least 1, got {max_frames}")
    try:
        if path.suffix.lower() == ".gif":
            return _read_gif(path, fps, max_frames, cover)
        return _read_ffmpeg(path, fps, max_frames, cover)
    except Exception as err:  # decoders raise many types; the caller needs the file name
        raise InputError(f"could not decode video '{path}': {err}") from err


def _open_image(path):
    from PIL import Image, UnidentifiedImageError

    path = _existing_file(path)
    try:
        im = Image.open(path)
        im.load()
        return im
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"could not decode image '{path}': {err}") from err


def read_image(path) -> np.ndarray:
    """Read an image file into uint8 (H,W,3) RGB (alpha is dropped)."""
    return np.asarray(_open_image(path).convert("RGB")).copy()


def mask_from_array(array, threshold: int = 127) -> np.ndarray:
    """Decode a mask picture into bool (H, W), True = generate / moves.

    ``array``: bool or grey (H, W), RGB (H, W, 3) or RGBA (H, W, 4). With a used alpha channel (a
    brushed layer on a transparent canvas) the painted pixels (alpha > 0) are the mask; otherwise the
    bright ones (ITU-R 601 luma, as PIL's "L", > ``threshold``).

    Raises:
        InputError: not a 2-D or (H, W, 3/4) array.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        return array.astype(bool) if array.dtype == bool else array > threshold
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise InputError(f"a mask image must have shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.shape[-1] == 4 and array[..., 3].min() < 255:
        return array[..., 3] > 0
    rgb = np.clip(array[..., :3], 0, 255).astype(np.uint32)
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16  # PIL's "L"
    return luma > threshold


def mask_from_pil(image, threshold: int = 127) -> np.ndarray:
    """Decode a PIL mask picture into bool (H, W) with :func:`mask_from_array`'s rules (any mode;
    transparency, palette transparency included, counts as an alpha channel)."""
    has_alpha = "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)
    return mask_from_array(np.asarray(image.convert("RGBA" if has_alpha else "RGB")), threshold)


def read_mask(path, threshold: int = 127) -> np.ndarray:
    """Read a mask image file into bool (H, W) with :func:`mask_from_array`'s rules."""
    return mask_from_pil(_open_image(path), threshold)


def write_image(path, image) -> str:
    """Write a uint8 (H,W,3) RGB image (any format Pillow knows from the suffix)."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise InputError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {tuple(image.shape)}")
    Image.fromarray(image).save(os.fspath(path))
    return os.fspath(path)
