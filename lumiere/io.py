"""Video, image and mask files.

Videos are ``uint8`` arrays ``(T, H, W, 3)`` RGB. Writing goes through the ffmpeg binary bundled
with imageio-ffmpeg so results do not depend on the system: ``.mp4`` is H.264 yuv420p with
``+faststart`` (plays in every browser, unlike OpenCV's ``mp4v``), ``.webm`` is VP9, ``.gif``
loops forever. yuv420p needs even sizes, so odd frames are padded by edge replication.

Reading is the one bounded decoder of every front end (CLI, app, Python API): a file is refused from its
header before decoding when it is over ``options.InputLimits``, and a video is decoded inside ffmpeg only
as far as the caller keeps it (see :func:`read_video`).
"""
from __future__ import annotations

import math
import os
import re
import struct
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, MissingFileError
from .options import DEFAULT_INPUT_LIMITS, InputLimits

WRITABLE_SUFFIXES = (".mp4", ".webm", ".gif")
# What decoding a damaged or foreign file raises: Pillow (OSError incl. UnidentifiedImageError, SyntaxError,
# ValueError, EOFError), imageio-ffmpeg (OSError, RuntimeError; StopIteration when it yields no header),
# ffmpeg's own failures (ValueError below). A bug in this module (TypeError, AttributeError, ...) is not one.
DECODER_ERRORS = (OSError, RuntimeError, ValueError, EOFError, SyntaxError)


def _pillow_bomb_error() -> type[Exception]:
    from PIL import Image

    return Image.DecompressionBombError  # a frame past Pillow's own pixel limit (ours is checked from headers)


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
# Every front end (the CLI, the app, the Python API) reads its files through the functions below: a
# file is refused by its header before anything is decoded (``options.InputLimits``), videos are
# decoded frame by frame inside ffmpeg keeping only the frames and the size asked for, and every
# failure is one InputError sentence that names the input (``name``) and the file, never a decoder log.
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


_FFMPEG_BANNER = ("ffmpeg version", "built with", "configuration:", "lib")
_LOG_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")


def _ffmpeg_reason(log: str) -> str:
    """The line of an ffmpeg log (or of an imageio-ffmpeg error that quotes one) that says what went
    wrong, without the version banner and build configuration it starts with."""
    lines = [line.strip() for line in str(log).split("=== stderr ===")[-1].splitlines()]
    lines = [_LOG_PREFIX.sub("", line) for line in lines if line and not line.startswith(_FFMPEG_BANNER)]
    return lines[-1][:200] if lines else "no details"


def _subject(name: str, path: Path) -> str:
    return f"{name} '{path.name}'"


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def probe_video(path) -> VideoInfo:
    """Size, frame rate and duration of a video file, from its header (cheap, decodes nothing).

    Raises:
        MissingFileError: no such file.
        InputError: not a video file, or damaged (the message gives ffmpeg's one-line reason).
    """
    path = _existing_file(path)
    try:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
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
    except (*DECODER_ERRORS, StopIteration, KeyError, _pillow_bomb_error()) as err:  # KeyError: a header without
        raise _UnreadableVideo(path, _ffmpeg_reason(err)) from None  # a size; the caller needs the file, not the log


class _UnreadableVideo(InputError):
    def __init__(self, path: Path, reason: str):
        super().__init__(f"could not read video '{path.name}': it is not a video file or it is damaged ({reason})")
        self.reason = reason


def check_video(path, *, limits: InputLimits = DEFAULT_INPUT_LIMITS, name: str = "video") -> VideoInfo:
    """Refuse a video file by what its header says, before any frame is decoded; returns its VideoInfo.

    ``name`` is the input as the caller's user knows it ("--video", "the uploaded video"); messages start
    with it and the file name.

    Raises:
        MissingFileError: no such file.
        InputError: not a video, no picture, or over one of ``limits`` (longest side, seconds, pixels).
    """
    path = _existing_file(path)
    subject = _subject(name, path)
    try:
        info = probe_video(path)
    except _UnreadableVideo as err:
        raise InputError(f"Could not read {subject}: it is not a video file or it is damaged ({err.reason}). "
                         "Use an mp4, webm, mov or gif file.") from None
    if info.width < 1 or info.height < 1:
        raise InputError(f"{_capitalized(subject)} has no picture; use an mp4, webm, mov or gif file.")
    side = limits.max_video_side
    if max(info.width, info.height) > side:
        raise InputError(f"{_capitalized(subject)} is {info.width}x{info.height}; use one at most {side}x{side} pixels.")
    if info.seconds > limits.max_video_seconds:
        raise InputError(f"{_capitalized(subject)} is {info.seconds:.0f} s long; use a clip of at most "
                         f"{limits.max_video_seconds:.0f} s.")
    total = info.width * info.height * info.frames
    if total > limits.max_decode_pixels:
        raise InputError(
            f"{_capitalized(subject)} holds too many pixels to decode: {info.width}x{info.height} at {info.fps:.0f} "
            f"fps for {info.seconds:.0f} s is {total / 1e9:.1f} billion pixels, the limit is "
            f"{limits.max_decode_pixels / 1e9:.1f} billion. Use a shorter, smaller or lower-frame-rate clip.")
    return info


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


def _frame_cap(width: int, height: int, max_frames: int | None, limits: InputLimits) -> int:
    """The most frames a read may return, whatever the stream really holds (a header can lie): the
    caller's ``max_frames``, and never more than ``limits.max_decode_pixels`` at the kept size."""
    cap = max(1, limits.max_decode_pixels // (width * height))
    return min(cap, int(max_frames)) if max_frames is not None else cap


def _read_gif(path: Path, info: VideoInfo, fps: float | None, max_frames: int | None,
              cover: tuple[int, int] | None, limits: InputLimits) -> tuple[np.ndarray, float]:
    """Decode a GIF with Pillow frame by frame: resampled to ``fps`` by timestamps, each frame scaled
    down as it is read, stopping after ``max_frames`` (or at the limits)."""
    from PIL import Image, ImageSequence

    size = cover_size(info.width, info.height, cover)
    cap = _frame_cap(*size, max_frames, limits)
    with Image.open(path) as im:
        durations = []
        frames = []
        clock, next_time = 0.0, 0.0
        for frame in ImageSequence.Iterator(im):
            duration = (frame.info.get("duration", 100) or 100) / 1000.0
            durations.append(duration)
            keep = fps is None or clock + 1e-9 >= next_time
            if clock >= limits.max_video_seconds:  # a header can lie about the length
                break
            clock += duration
            if not keep:
                continue
            rgb = frame.convert("RGB")
            if rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.BOX)
            frames.append(np.asarray(rgb))
            if fps is not None:
                next_time += 1.0 / fps
            if len(frames) >= cap:
                break
    if not frames:
        raise ValueError("no frames")
    source_fps = 1.0 / float(np.mean(durations))
    return np.stack(frames), (min(fps, source_fps) if fps is not None else source_fps)


def _read_exactly(stream, view: memoryview) -> int:
    """Fill ``view`` from ``stream``; returns the bytes read (fewer only at the end of the stream)."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _read_ffmpeg(path: Path, info: VideoInfo, fps: float | None, max_frames: int | None,
                 cover: tuple[int, int] | None, limits: InputLimits) -> tuple[np.ndarray, float]:
    """Decode with the ffmpeg binary; resampling (``fps`` filter), down-scaling (``scale``, area), the frame
    limit (``-frames:v``) and the duration limit (``-t``) all happen inside ffmpeg, so only the kept, small
    frames reach Python, straight into one preallocated array (no per-frame copies, no final stack)."""
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
    cap = _frame_cap(width, height, max_frames, limits)
    expected = min(cap, math.ceil(info.seconds * out_fps) + 2 if info.seconds > 0 else 16)
    cmd = [_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:v:0",
           "-an", "-sn", "-vf", ",".join(filters), "-t", f"{limits.max_video_seconds:.6g}", "-frames:v", str(cap),
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = width * height * 3
    frames = np.empty((expected, height, width, 3), np.uint8)
    count = 0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while count < cap:
            if count == len(frames):  # the header under-counted: grow (rare; amortised by doubling)
                grown = np.empty((min(cap, 2 * len(frames)), height, width, 3), np.uint8)
                grown[:count] = frames
                frames = grown
            if _read_exactly(proc.stdout, memoryview(frames[count]).cast("B")) < frame_bytes:
                break
            count += 1
    finally:
        proc.stdout.close()
        proc.kill()
        _, stderr = proc.communicate()
    if not count:
        raise ValueError(_ffmpeg_reason(stderr.decode(errors="replace")) if stderr.strip() else "no video frames")
    return frames[:count], out_fps


def read_video(path, *, fps: float | None = None, max_frames: int | None = None,
               cover: tuple[int, int] | None = None, limits: InputLimits = DEFAULT_INPUT_LIMITS,
               name: str = "video") -> tuple[np.ndarray, float]:
    """Read a video file (mp4/webm/gif/mov/...) into ``(uint8 (T,H,W,3) RGB, fps)``.

    The file is first refused by its header if it is over ``limits`` (:func:`check_video`). Memory is
    then bounded by what is kept, not by the file: ``fps`` resamples to at most that frame rate,
    ``max_frames`` stops after that many frames (the start of the clip), and ``cover=(height, width)``
    scales each frame down as it is decoded to the smallest size covering it (aspect kept). With none
    given, every frame is read at full size. The front ends read what a generation uses:
    ``fps=pipe.fps, max_frames=num_frames, cover=`` the output's (height, width).

    ``name`` is the input as the caller's user knows it ("--video", "the uploaded video"); messages
    start with it and the file name.

    Raises:
        MissingFileError: no such file.
        InputError: not a video, damaged, over ``limits``, or a bad ``fps`` / ``max_frames``.
    """
    path = _existing_file(path)
    if fps is not None:
        fps = _validate_fps(fps)
    if max_frames is not None and int(max_frames) < 1:
        raise InputError(f"max_frames must be at least 1, got {max_frames}")
    info = check_video(path, limits=limits, name=name)
    try:
        if path.suffix.lower() == ".gif":
            return _read_gif(path, info, fps, max_frames, cover, limits)
        return _read_ffmpeg(path, info, fps, max_frames, cover, limits)
    except (*DECODER_ERRORS, _pillow_bomb_error()) as err:  # the caller needs the file name, not the decoder log
        raise InputError(f"Could not decode {_subject(name, path)}: it is damaged or in an unsupported format "
                         f"({_ffmpeg_reason(err)}). Use an mp4, webm, mov or gif file.") from None


def open_image(path, *, limits: InputLimits = DEFAULT_INPUT_LIMITS, name: str = "image"):
    """A decoded PIL image from a file, refused by its header (not an image, over ``limits``) before its
    pixels are decoded, turned the way up it was taken (EXIF orientation, as phones store photos).

    ``name`` is the input as the caller's user knows it ("--image", "Mask"); messages start with it.

    Raises:
        MissingFileError: no such file.
        InputError: not an image, too large, truncated or damaged.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = _existing_file(path)
    side = limits.max_image_side
    try:
        with warnings.catch_warnings():  # Pillow warns above its own limit; ours is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as error:
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f" ({int(pixels.group(1)) / 1e6:.0f} megapixels)" if pixels else ""
        raise InputError(f"{name}: the picture '{path.name}' is far too large{size}; use one at most "
                         f"{side}x{side} pixels.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError(f"{name}: the file '{path.name}' is not an image file (or it is damaged): use a png, "
                         "jpg or webp picture.") from None
    width, height = im.size
    if max(width, height) > side or width * height > limits.max_image_pixels:
        im.close()
        raise InputError(f"{name}: the picture '{path.name}' is {width}x{height}; use one at most "
                         f"{side}x{side} pixels.")
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError):  # what Pillow raises for damaged data
        im.close()
        raise InputError(f"{name}: the file '{path.name}' is truncated or damaged: re-save it as png or jpg.") from None
    try:
        transposed = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error):  # malformed EXIF: keep the picture
        return im
    if transposed is not im:
        im.close()
    return transposed


def read_image(path, *, limits: InputLimits = DEFAULT_INPUT_LIMITS, name: str = "image") -> np.ndarray:
    """Read an image file into uint8 (H,W,3) RGB (alpha is dropped), checked as :func:`open_image` does."""
    with open_image(path, limits=limits, name=name) as im:
        return np.asarray(im.convert("RGB")).copy()


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


def read_mask(path, threshold: int = 127, *, limits: InputLimits = DEFAULT_INPUT_LIMITS,
              name: str = "mask") -> np.ndarray:
    """Read a mask image file into bool (H, W) with :func:`mask_from_array`'s rules (the file is checked
    as :func:`open_image` does)."""
    with open_image(path, limits=limits, name=name) as im:
        return mask_from_pil(im, threshold)


def write_image(path, image) -> str:
    """Write a uint8 (H,W,3) RGB image (any format Pillow knows from the suffix)."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise InputError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {tuple(image.shape)}")
    Image.fromarray(image).save(os.fspath(path))
    return os.fspath(path)
