"""Torch datasets for every training stage.

Items are dicts of tensors and strings so the default collate works:
``video`` float (3, T, H, W) in [-1, 1] (channels first, as the STUNet takes it), ``caption`` str.
Procedural items are a pure function of (seed, index), so any worker / rank / resume sees the same data.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lumiere.data.world import (
    MOTIONS, STYLES, caption, default_times, motion_probabilities, pace_span, render_clip, sample_clip_spec,
)
from lumiere.errors import InputError
from lumiere.options import InputLimits
from lumiere.preprocessing import resize_center_crop, tensor_to_uint8, uint8_to_tensor


# The training data's names for the one uint8 <-> [-1, 1] conversion (``lumiere.preprocessing``):
# uint8 (T, H, W, 3) -> float (3, T, H, W), and back.
video_to_tensor = uint8_to_tensor
tensor_to_video = tensor_to_uint8


def _item_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def epoch_rng(seed: int, index: int, epoch: int) -> np.random.Generator:
    """The random draws (window, crop, frame) of item ``index`` in ``epoch``: epoch 0 is ``_item_rng``'s
    (what the datasets drew before they had epochs), every later epoch its own stream."""
    return _item_rng(seed, index) if epoch == 0 else np.random.default_rng([seed, index, epoch])


def _style_caption(text: str, style: str | None) -> str:
    return f"{text}, in {style} style" if style else text


def _check_style(style):
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES} or None")


def _world_item(spec, times: np.ndarray, span: float = 1.0) -> dict:
    """A clip's parameters as tensors (``render_torch.clip_parameters``): what a device-rendered item carries."""
    from .render_torch import clip_parameters, parameters_to_tensors

    return parameters_to_tensors(clip_parameters(spec, times, span))


def _render_world(world: dict, height: int, width: int, style: str | None):
    """uint8 (B, F, H, W, 3) frames of a batch of clip parameters -> float (B, 3, F, H, W) in [-1, 1], where
    the parameters are (the same conversion as ``uint8_to_tensor``)."""
    from .render_torch import render_parameters

    frames = render_parameters(world, height, width, style).float() / 127.5 - 1.0
    return frames.permute(0, 4, 1, 2, 3)


class ProceduralVideoDataset(Dataset):
    """Clips of the procedural world.

    holdout=True (training) never yields a HELDOUT_COMBINATIONS triple; ``motion_weights`` (motion name ->
    relative weight, unnamed motions 1; ``world.motion_probabilities``) draws the first object's motion with
    those weights instead of uniformly. ``style`` renders every clip
    in that style and appends ", in <style> style" to the caption. ``return_lowres=(h, w)`` adds
    ``lowres_video``: the same clip rendered at (h, w), for super-resolution training.

    ``render_on_device=True``: an item is the clip's parameters (``"world"``, small tensors) and its
    caption; ``render_batch`` turns a batch of them into the same ``video`` (``lowres_video``) on whatever
    device the batch is on (``render_torch``, equal to ``render_clip`` within its stated tolerance).
    Why: rendering is the data cost; a GPU renders a whole batch in milliseconds. ``long_frames`` (with
    ``render_on_device``): items also carry the same clip at that many frames and the clip's own pace ("world_long":
    ``world.motion_time``: a repeating motion goes on, one the frame bounds is spread over the longer clip),
    which ``render_batch(batch, long=True)`` renders instead. ``long_motions`` (with ``long_frames``): the motions a
    long clip may show; each item's "long_ok" says whether every object of its clip moves so (without it, always),
    and a long batch keeps it for the training step to choose those clips. Why: a move or size change the frame
    bounds is only slowed down by a longer clip, so its long render teaches a slower motion, not a longer one.
    """

    def __init__(self, num_frames: int = 16, height: int = 32, width: int = 32, length: int = 100_000,
                 seed: int = 0, style: str | None = None, holdout: bool = True,
                 return_lowres: tuple[int, int] | None = None, render_on_device: bool = False,
                 long_frames: int | None = None, motion_weights: dict[str, float] | None = None,
                 long_motions: tuple[str, ...] | None = None):
        _check_style(style)
        self.motion_probs = motion_probabilities(motion_weights)
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if long_frames is not None and not (render_on_device and long_frames >= 1):
            raise ValueError(f"long_frames needs render_on_device and >= 1 frame, got {long_frames}")
        if long_motions is not None and (long_frames is None or not long_motions
                                         or not set(long_motions) <= set(MOTIONS)):
            raise ValueError(f"long_motions needs long_frames and some of {list(MOTIONS)}, got {long_motions}")
        self.long_motions = None if long_motions is None else frozenset(long_motions)
        self.num_frames, self.height, self.width = num_frames, height, width
        self.length, self.seed, self.style, self.holdout = length, seed, style, holdout
        self.return_lowres, self.render_on_device, self.long_frames = return_lowres, render_on_device, long_frames

    def render_batch(self, batch: dict, long: bool = False) -> dict:
        """A collated batch of ``render_on_device`` items with its pixels rendered: "world" ("world_long" if
        ``long``) -> "video" (B, 3, T, H, W) and, with ``return_lowres``, "lowres_video"."""
        batch = dict(batch)
        world, long_world = batch.pop("world"), batch.pop("world_long", None)
        long_ok = batch.pop("long_ok", None)
        if long:
            if long_world is None:
                raise ValueError("this dataset has no long clips: build it with long_frames")
            world, batch["long_ok"] = long_world, long_ok
        batch["video"] = _render_world(world, self.height, self.width, self.style)
        if self.return_lowres is not None:
            batch["lowres_video"] = _render_world(world, *self.return_lowres, self.style)
        return batch

    def __len__(self):
        return self.length

    def spec_and_caption(self, index: int):
        rng = _item_rng(self.seed, index)
        spec = sample_clip_spec(rng, holdout=self.holdout, motion_probs=self.motion_probs)
        return spec, caption(spec, rng)

    def __getitem__(self, index: int) -> dict:
        return self.item_frames(index)

    def item_frames(self, index: int, frames: slice | None = None) -> dict:
        """Item ``index`` with only its ``frames`` (a slice of the clip's ``num_frames``) rendered: the same
        pixels as ``self[index]["video"][:, frames]``, at the cost of those frames alone (the SSR stage
        trains on 4-frame windows of 16-frame clips)."""
        if not 0 <= index < self.length:
            raise IndexError(index)
        spec, text = self.spec_and_caption(index)
        times = default_times(self.num_frames)
        times = times[frames] if frames is not None else times
        if self.render_on_device:
            item = {"world": _world_item(spec, times), "caption": _style_caption(text, self.style)}
            if self.long_frames is not None:
                item["world_long"] = _world_item(spec, default_times(self.long_frames),
                                                 pace_span(self.long_frames, self.num_frames))
                item["long_ok"] = torch.tensor(self.long_motions is None
                                               or all(o.motion in self.long_motions for o in spec.objects))
            return item
        item = {"video": video_to_tensor(render_clip(spec, len(times), self.height, self.width, self.style, times)),
                "caption": _style_caption(text, self.style)}
        if self.return_lowres is not None:
            h, w = self.return_lowres
            item["lowres_video"] = video_to_tensor(render_clip(spec, len(times), h, w, self.style, times))
        return item


class ProceduralImageDataset(Dataset):
    """Single frames of procedural clips for the T2I stage (``image`` float (3, H, W) in [-1, 1]).

    Captions describe appearance only ("a red circle on the grass"): a still frame cannot show
    motion, and teaching the T2I model to ignore motion words would be wasted capacity; the temporal
    stage learns what motion words mean. Set ``include_motion=True`` to keep them anyway.

    ``paired`` (with a ``style``): each item also holds ``plain_image``, the same scene unstyled (a style
    changes no draw, so both renders show one scene), which a style trained as a slider blends toward.
    """

    def __init__(self, height: int = 32, width: int = 32, length: int = 100_000, seed: int = 0,
                 style: str | None = None, holdout: bool = True, include_motion: bool = False,
                 render_on_device: bool = False, motion_weights: dict[str, float] | None = None,
                 paired: bool = False):
        _check_style(style)
        if paired and style is None:
            raise ValueError("paired renders need a style (the unstyled render is the pair's other half)")
        self.motion_probs = motion_probabilities(motion_weights)
        self.height, self.width, self.length = height, width, length
        self.seed, self.style, self.holdout, self.include_motion = seed, style, holdout, include_motion
        self.render_on_device, self.paired = render_on_device, paired

    def render_batch(self, batch: dict) -> dict:
        """A collated batch of ``render_on_device`` items with "world" rendered as "image" (B, 3, H, W)
        (and, ``paired``, as "plain_image" unstyled)."""
        batch = dict(batch)
        world = batch.pop("world")
        batch["image"] = _render_world(world, self.height, self.width, self.style)[:, :, 0]
        if self.paired:
            batch["plain_image"] = _render_world(world, self.height, self.width, None)[:, :, 0]
        return batch

    def __len__(self):
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = _item_rng(self.seed, index)
        spec = sample_clip_spec(rng, holdout=self.holdout, motion_probs=self.motion_probs)
        text = caption(spec, rng, include_motion=self.include_motion)
        frames = 16  # a random frame of the 16-frame clip, rendered alone
        moment = np.array([int(rng.integers(frames)) / (frames - 1)])
        if self.render_on_device:
            return {"world": _world_item(spec, moment), "caption": _style_caption(text, self.style)}
        frame = render_clip(spec, 1, self.height, self.width, self.style, times=moment)[0]
        item = {"image": video_to_tensor(frame[None])[:, 0], "caption": _style_caption(text, self.style)}
        if self.paired:
            item["plain_image"] = video_to_tensor(render_clip(spec, 1, self.height, self.width, None, times=moment))[:, 0]
        return item


# ----------------------------------------------------------------------------- real video
def load_metadata(path) -> list[dict]:
    """Rows {"path", "caption", ...} from a CSV (with a header) or JSONL file.

    Columns: ``path`` and ``caption``, or WebVid's own metadata (``videoid,contentUrl,duration,page_dir,name``):
    the caption from ``name`` and, without a ``path`` column, the file ``<page_dir>/<videoid>.mp4`` (the
    layout WebVid's download scripts write), so WebVid's CSV is read as published.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metadata file not found: '{path}'")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    for n, row in enumerate(rows):
        if row.get("caption") is None and row.get("name") is not None:
            row["caption"] = row["name"]
        if not row.get("path") and row.get("page_dir") and row.get("videoid"):
            row["path"] = f"{row['page_dir']}/{row['videoid']}.mp4"
        if not row.get("path") or row.get("caption") is None:
            raise ValueError(f"{path}: row {n + 1} needs 'path' and 'caption' fields (or WebVid's 'videoid', "
                             f"'page_dir' and 'name'), got {sorted(row)}")
    return rows


def _existing_rows(rows: list[dict], root: Path, metadata) -> list[dict]:
    """The rows whose video file exists. Why: WebVid's download scripts leave out every video they could not
    fetch, so a published CSV lists many missing files; one warning with the count instead of one per file."""
    kept = [row for row in rows if (root / row["path"]).is_file()]  # an absolute path stays absolute
    if not kept:
        raise InputError(f"{metadata}: none of its {len(rows)} video files exist under '{root}' "
                         f"(e.g. '{root / rows[0]['path']}')")
    if len(kept) < len(rows):
        missing = next(row["path"] for row in rows if not (root / row["path"]).is_file())
        warnings.warn(f"{metadata}: skipping {len(rows) - len(kept)} of {len(rows)} rows whose video file is "
                      f"missing (e.g. '{root / missing}')", RuntimeWarning, stacklevel=3)
    return kept


class VideoDecodeError(ValueError):
    """A file that cannot give a training clip (corrupt, unreadable or too short)."""


VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi")


def frame_stride(source_fps: float, fps: float | None) -> int:
    """Source frames per clip frame: clips are taken at ``fps`` by keeping every stride-th frame of a
    ``source_fps`` video (1 when ``fps`` is None, the source's rate unknown, or ``fps`` above it)."""
    return max(1, round(source_fps / fps)) if fps and source_fps > 0 else 1


def frames_needed(num_frames: int, source_fps: float, fps: float | None) -> int:
    """Source frames a clip of ``num_frames`` at ``fps`` spans in a ``source_fps`` video."""
    return (num_frames - 1) * frame_stride(source_fps, fps) + 1


def decode_clip(path, num_frames: int, fps: float | None, rng: np.random.Generator) -> np.ndarray:
    """Decode ``num_frames`` RGB frames at ``fps`` (frame stride from the source fps) from a random start."""
    capture = cv2.VideoCapture(os.fspath(path))
    try:
        if not capture.isOpened():
            raise VideoDecodeError(f"cannot open video '{path}'")
        source_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        stride = frame_stride(source_fps, fps)
        needed = (num_frames - 1) * stride + 1
        if total and total < needed:
            raise VideoDecodeError(f"video '{path}' has {total} frames, needs {needed} "
                                   f"({num_frames} frames at stride {stride})")
        start = int(rng.integers(0, total - needed + 1)) if total else 0
        wanted = set(range(start, start + needed, stride))
        if start:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        frames, index = [], start
        while len(frames) < num_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if index in wanted:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
        if len(frames) < num_frames:
            raise VideoDecodeError(f"video '{path}' ended after {len(frames)} of {num_frames} frames")
        return np.stack(frames)
    finally:
        capture.release()


def clip_item(path, text: str, rng: np.random.Generator, num_frames: int, height: int, width: int,
              fps: float | None, return_lowres: tuple[int, int] | None = None) -> dict:
    """A training item from one video file: ``num_frames`` at ``fps`` from a random start (``rng``), resized
    (shorter side) and centre-cropped to (height, width); ``return_lowres=(h, w)`` adds "lowres_video"."""
    clip = decode_clip(path, num_frames, fps, rng)
    # Enlarged bilinearly: the frames the bundled recipe was trained on.
    clip = np.stack([resize_center_crop(f, height, width, upscale_interpolation=cv2.INTER_LINEAR) for f in clip])
    item = {"video": video_to_tensor(clip), "caption": text}
    if return_lowres is not None:
        h, w = return_lowres
        low = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in clip])
        item["lowres_video"] = video_to_tensor(low)
    return item


# ----------------------------------------------------------------------------- real video: listing, headers
def folder_rows(root) -> list[dict]:
    """Rows {"path", "caption"} of a folder of videos with sidecar captions (``data.type: "folder"``): every
    video (``VIDEO_SUFFIXES``) under ``root``, in sub-folders too, captioned by the text file next to it
    (``clip.mp4`` -> ``clip.txt``); sorted by path, so every rank lists the same clips in the same order.
    Hidden files and folders are ignored; videos without a caption file (or an empty one) are left out with
    one warning listing them.

    Raises:
        InputError: ``root`` is not a folder, holds no video, or no video with a caption.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data.root: '{root}' is not a folder (data.type 'folder' reads the videos under it, "
                         f"each with its caption in a .txt file of the same name next to it)")
    videos = sorted(path.relative_to(root) for path in root.rglob("*")
                    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()
                    and not any(part.startswith(".") for part in path.relative_to(root).parts))
    if not videos:
        raise InputError(f"data.root: no videos ({', '.join(VIDEO_SUFFIXES)}) in '{root}' or its sub-folders")
    rows, uncaptioned = [], []
    for video in videos:
        sidecar = root / video.with_suffix(".txt")
        text = sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else ""
        if text:
            rows.append({"path": video.as_posix(), "caption": text})
        else:
            uncaptioned.append(video.as_posix())
    if not rows:
        raise InputError(f"data.root: none of the {len(videos)} videos in '{root}' has a caption file next to it "
                         f"(e.g. '{uncaptioned[0]}' needs '{Path(uncaptioned[0]).with_suffix('.txt').as_posix()}'); "
                         f"write each video's caption into <video name>.txt, or list videos and captions in a CSV "
                         f"and use data.type 'real' with data.metadata")
    if uncaptioned:
        warnings.warn(f"data.root '{root}': skipping {len(uncaptioned)} of {len(videos)} videos without a caption "
                      f"file (<video name>.txt, not empty) next to them: {_some(uncaptioned, 20)}",
                      RuntimeWarning, stacklevel=3)
    return rows


def _some(names: list[str], shown: int = 3) -> str:
    """A few names of a list, and how many more: for one warning about many files."""
    text = ", ".join(f"'{name}'" for name in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


@dataclass(frozen=True)
class ClipHeader:
    """What a video file's header says, as the decoder (OpenCV) reads it; 0 where it does not say."""

    fps: float
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0


def read_header(path) -> ClipHeader | None:
    """The frame rate and frame count of a video file from its header (about 1 ms, nothing decoded), as
    ``decode_clip`` will see them; None when the file cannot be opened."""
    capture = cv2.VideoCapture(os.fspath(path))
    try:
        if not capture.isOpened():
            return None
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        return ClipHeader(fps if fps > 0 else 0.0, max(frames, 0))
    except cv2.error:
        return None
    finally:
        capture.release()


def read_headers(paths: list[Path]) -> list[ClipHeader | None]:
    """``read_header`` of each path, in order, on a few threads (OpenCV releases the GIL while it reads)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    if len(paths) < 16 or cpus < 2:
        return [read_header(path) for path in paths]
    with ThreadPoolExecutor(max_workers=min(16, cpus)) as pool:
        return list(pool.map(read_header, paths, chunksize=64))


def _fps_text(fps: float) -> str:
    return f"{fps:g}" if float(fps).is_integer() else f"{fps:.2f}"


def check_clips(rows: list[dict], root: Path, num_frames: int, fps: float | None, where: str) -> list[dict]:
    """The rows whose video can give a clip of ``num_frames`` at ``fps``, by each file's header: files that
    cannot be opened and clips too short are left out, with one warning each saying how many and naming a
    few; videos whose own frame rate is below ``fps`` are kept with one warning (their frames are taken
    consecutively, so the clip moves faster than real time). Headers that do not say (frame count or rate
    0) keep the file: decoding decides.

    Raises:
        InputError: no row left, or ``fps`` above the frame rate of every video.
    """
    headers = read_headers([_video_path(root, row) for row in rows])
    unreadable = [row["path"] for row, header in zip(rows, headers) if header is None]
    kept, short, slow = [], [], []
    for row, header in zip(rows, headers):
        if header is None:
            continue
        if header.frames and header.frames < frames_needed(num_frames, header.fps, fps):
            short.append((row["path"], header))
            continue
        if num_frames > 1 and fps and header.fps and header.fps < 0.99 * fps:
            slow.append((row["path"], header))
        kept.append(row)
    need = (f"{num_frames} frames at {_fps_text(fps)} fps (needs ≥ {num_frames / fps:.2f} s at "
            f"{_fps_text(fps)} fps)" if fps else f"{num_frames} frames at the video's own frame rate")
    if unreadable:
        warnings.warn(f"{where}: skipping {len(unreadable)} of {len(rows)} videos that cannot be opened (not a "
                      f"video or damaged): {_some(unreadable)}", RuntimeWarning, stacklevel=3)
    if short:
        names = [f"{path} ({header.seconds:.2f} s, {header.frames} frames at {_fps_text(header.fps)} fps)"
                 for path, header in short]
        warnings.warn(f"{where}: skipping {len(short)} of {len(rows)} videos too short for {need}: {_some(names)}",
                      RuntimeWarning, stacklevel=3)
    if not kept:
        longest = max((header.seconds for _, header in short), default=0.0)
        raise InputError(f"{where}: none of its {len(rows)} videos can give a clip of {need}"
                         + (f"; the longest is {longest:.2f} s" if short else "")
                         + (f"; {len(unreadable)} cannot be opened" if unreadable else "")
                         + ". Use longer videos, or fewer frames (model.base_resolution) or a higher data.fps "
                           "(at most the videos' own frame rate)")
    if slow:
        rates = sorted({header.fps for _, header in slow})
        if len(slow) == len(kept):  # every clip left (whose header gives its rate) is slower than fps
            raise InputError(f"{where}: data.fps {_fps_text(fps)} (default: model.fps) is above the frame rate of "
                             f"every video (the fastest is {_fps_text(rates[-1])} fps): their clips would play "
                             f"{fps / rates[-1]:.1f}x faster than real time or more. Set data.fps to at most "
                             f"{_fps_text(rates[-1])}, or use videos of at least {_fps_text(fps)} fps")
        path, header = min(slow, key=lambda pair: pair[1].fps)
        warnings.warn(f"{where}: data.fps {_fps_text(fps)} is above the frame rate of {len(slow)} of {len(kept)} "
                      f"videos ({', '.join(_fps_text(rate) for rate in rates[:5])} fps; e.g. '{path}' at "
                      f"{_fps_text(header.fps)} fps): their frames are taken consecutively, so those clips play up to "
                      f"{fps / header.fps:.1f}x faster than real time. Lower data.fps, or leave those videos out",
                      RuntimeWarning, stacklevel=3)
    return kept


def _video_path(root: Path, row: dict) -> Path:
    path = Path(row["path"])
    return path if path.is_absolute() else root / path


# ----------------------------------------------------------------------------- real video: the dataset
_REPLACEMENT = 0x7265706C  # the stream of a bad file's replacement draws ("repl"), apart from epoch_rng's


class RealVideoDataset(Dataset):
    """Real videos: a folder of videos listed in a CSV (path,caption) or JSONL ({"path","caption"}), or
    WebVid's own CSV (``load_metadata``); or, with ``metadata=None``, every video under ``root`` captioned
    by the .txt file next to it (``folder_rows``, ``data.type: "folder"``).

    Paths are relative to ``root`` (or absolute); rows whose file is missing are left out with one
    warning. Clips of ``num_frames`` at ``fps`` are resized (shorter side) and centre-cropped to
    (height, width).

    ``check_headers`` (default): when the dataset is built, every file's header is read (``check_clips``,
    ~1 ms a file on a few threads) and files that cannot be opened or are too short for ``num_frames`` at
    ``fps`` are left out with one summary warning each; ``fps`` above the videos' own rate is warned about
    (refused when it is above every video's).

    A file that fails to decode during training (``VideoDecodeError``, an OpenCV error) is dropped for the
    rest of the run (one warning per file and process; the flags live in shared memory, so the data loader's
    workers, also next epoch's, skip it without trying again) and its index takes a replacement: the first
    decodable file of a sequence drawn from (seed, index, epoch) among the others. The length never changes,
    so every rank's sampler keeps the same number of items per epoch and a resumed run the same batches; the
    replacement depends only on (seed, index, epoch), not on which process found which file bad, and it is
    another file for each bad index and each epoch, not always the same neighbour.

    Temporal augmentation: each epoch (``set_epoch``, which the training loop calls through
    accelerate's data loader) takes another window of each video, a pure function of (seed, index,
    epoch); epoch 0 takes the window a dataset without epochs always took.

    Raises:
        InputError: no video left to train on (``_existing_rows``, ``folder_rows``, ``check_clips``).
    """

    def __init__(self, root, metadata=None, num_frames: int = 16, height: int = 64, width: int = 64,
                 fps: float | None = 8.0, seed: int = 0, return_lowres: tuple[int, int] | None = None,
                 max_retries: int = 20, check_headers: bool = True):
        self.root = Path(root)
        if metadata is None:
            self.rows = folder_rows(self.root)
            where = f"data.root '{self.root}'"
        else:
            metadata = Path(metadata)
            self.rows = load_metadata(metadata if metadata.is_absolute() or metadata.exists() else self.root / metadata)
            if not self.rows:
                raise ValueError(f"metadata '{metadata}' lists no videos")
            self.rows = _existing_rows(self.rows, self.root, metadata)
            where = f"'{metadata}'"
        if check_headers:
            self.rows = check_clips(self.rows, self.root, num_frames, fps, where)
        # Only what an item needs (WebVid's CSV has 5 columns more): every data loader worker of every rank
        # holds (and, touching it, copies) this list.
        self.rows = [{"path": str(row["path"]), "caption": str(row["caption"])} for row in self.rows]
        self.num_frames, self.height, self.width, self.fps = num_frames, height, width, fps
        self.seed, self.return_lowres, self.max_retries = seed, return_lowres, max_retries
        # One flag a file, in shared memory: what a data loader worker finds, the main process (and so the
        # workers of the next epoch) knows too.
        self.bad = torch.zeros(len(self.rows), dtype=torch.bool).share_memory_()
        self.epoch = 0

    def __len__(self):
        return len(self.rows)

    @property
    def bad_paths(self) -> set[str]:
        """The files dropped because they failed to decode (as far as this process and its workers know)."""
        return {self.rows[int(i)]["path"] for i in torch.nonzero(self.bad).flatten()}

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's windows (reproducible from the seed: the same epoch gives the same clips)."""
        self.epoch = int(epoch)

    def _load(self, index: int, rng) -> dict:
        row = self.rows[index]
        path = _video_path(self.root, row)
        if not path.is_file():
            raise VideoDecodeError(f"video file not found: '{path}'")
        return clip_item(path, str(row["caption"]), rng, self.num_frames, self.height, self.width, self.fps,
                         self.return_lowres)

    def _try(self, candidate: int, index: int) -> dict | None:
        """File ``candidate``'s clip with item ``index``'s window draws, or None when it is (now) known bad."""
        if self.bad[candidate]:
            return None
        try:
            return self._load(candidate, epoch_rng(self.seed, index, self.epoch))
        except (VideoDecodeError, cv2.error) as err:
            if not self.bad[candidate]:
                self.bad[candidate] = True
                warnings.warn(f"dropping video '{self.rows[candidate]['path']}' for the rest of the run, another "
                              f"video takes its place: {err}", RuntimeWarning, stacklevel=3)
            return None

    def replacements(self, index: int):
        """The files that stand in for a bad ``index`` this epoch, in the order they are tried: a sequence
        drawn from (seed, index, epoch), known-bad files left out (so whichever process knows what, the first
        decodable one is the same); if a long stretch of it is all bad, the files not known bad in an order
        drawn from the same stream."""
        rng = np.random.default_rng([self.seed, index, self.epoch, _REPLACEMENT])
        for _ in range(4 * self.max_retries + 64):
            candidate = int(rng.integers(len(self.rows)))
            if not self.bad[candidate]:
                yield candidate
        good = torch.nonzero(~self.bad).flatten().numpy()
        yield from (int(c) for c in good[rng.permutation(len(good))])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.rows):
            raise IndexError(index)
        item = self._try(index, index)
        failures = 0
        if item is None:
            for candidate in self.replacements(index):
                item = self._try(candidate, index)
                if item is not None:
                    break
                failures += 1
                if failures > self.max_retries:
                    break
        if item is None:
            raise RuntimeError(f"no decodable video found for item {index}: {int(self.bad.sum())} of "
                               f"{len(self.rows)} files failed to decode so far; check the files under '{self.root}'")
        return item


# ----------------------------------------------------------------------------- style images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
TRAINING_IMAGE_LIMITS = InputLimits(max_image_side=16384, max_image_pixels=16384 * 16384)
FOLDER_CAPTION = "caption.txt"  # a style folder's default caption, for images without their own .txt


class ImageFolderDataset(Dataset):
    """One style's own images (StyleDrop-like data) for the style stage: ``image`` (3, H, W) in [-1, 1].

    Every image directly in ``folder`` (sorted by name), captioned by its sidecar text file
    (``cat.png`` -> ``cat.txt``), else by the folder's ``caption.txt``. Captions describe the content,
    not the style: the style lives in the fine-tuned weights, so prompts stay the same with and without
    it. Images are resized (shorter side) and centre-cropped like the video frames.

    Raises:
        InputError: no such folder, no image in it, or an image without a caption (``where`` names the
            config key).
    """

    def __init__(self, folder, height: int, width: int, where: str = "image folder"):
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{where}: no folder '{folder}'")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise InputError(f"{where}: no images ({', '.join(IMAGE_SUFFIXES)}) in '{folder}'")
        default = folder / FOLDER_CAPTION
        default_caption = default.read_text().strip() if default.is_file() else None
        self.items, missing = [], []
        for path in paths:
            sidecar = path.with_suffix(".txt")
            if sidecar.is_file():
                self.items.append((path, sidecar.read_text().strip()))
            elif default_caption is not None:
                self.items.append((path, default_caption))
            else:
                missing.append(path.name)
        if missing:
            raise InputError(f"{where}: {len(missing)} image(s) in '{folder}' have no caption (e.g. {missing[0]}); "
                             f"add a sidecar <image name>.txt, or a {FOLDER_CAPTION} that captions the whole folder")
        self.folder, self.height, self.width = folder, height, width

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.items):
            raise IndexError(index)
        from lumiere.io import read_image

        path, text = self.items[index]
        # A style's own images (print scans, renders) may exceed what the app accepts from a visitor.
        image = resize_center_crop(read_image(path, limits=TRAINING_IMAGE_LIMITS, name=f"style image {path}"),
                                   self.height, self.width, upscale_interpolation=cv2.INTER_LINEAR)
        return {"image": video_to_tensor(image[None])[:, 0], "caption": text}
