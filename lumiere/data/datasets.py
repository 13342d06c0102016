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
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from lumiere.data.world import STYLES, caption, default_times, render_clip, sample_clip_spec
from lumiere.errors import InputError
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


def _world_item(spec, times: np.ndarray) -> dict:
    """A clip's parameters as tensors (``render_torch.clip_parameters``): what a device-rendered item carries."""
    from .render_torch import clip_parameters, parameters_to_tensors

    return parameters_to_tensors(clip_parameters(spec, times))


def _render_world(world: dict, height: int, width: int, style: str | None):
    """uint8 (B, F, H, W, 3) frames of a batch of clip parameters -> float (B, 3, F, H, W) in [-1, 1], where
    the parameters are (the same conversion as ``uint8_to_tensor``)."""
    from .render_torch import render_parameters

    frames = render_parameters(world, height, width, style).float() / 127.5 - 1.0
    return frames.permute(0, 4, 1, 2, 3)


class ProceduralVideoDataset(Dataset):
    """Clips of the procedural world.

    holdout=True (training) never yields a HELDOUT_COMBINATIONS triple. ``style`` renders every clip
    in that style and appends ", in <style> style" to the caption. ``return_lowres=(h, w)`` adds
    ``lowres_video``: the same clip rendered at (h, w), for super-resolution training.

    ``render_on_device=True``: an item is the clip's parameters (``"world"``, small tensors) and its
    caption; ``render_batch`` turns a batch of them into the same ``video`` (``lowres_video``) on whatever
    device the batch is on (``render_torch``, equal to ``render_clip`` within its stated tolerance).
    Why: rendering is the data cost; a GPU renders a whole batch in milliseconds.
    """

    def __init__(self, num_frames: int = 16, height: int = 32, width: int = 32, length: int = 100_000,
                 seed: int = 0, style: str | None = None, holdout: bool = True,
                 return_lowres: tuple[int, int] | None = None, render_on_device: bool = False):
        _check_style(style)
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.num_frames, self.height, self.width = num_frames, height, width
        self.length, self.seed, self.style, self.holdout = length, seed, style, holdout
        self.return_lowres, self.render_on_device = return_lowres, render_on_device

    def render_batch(self, batch: dict) -> dict:
        """A collated batch of ``render_on_device`` items with its pixels rendered: "world" -> "video"
        (B, 3, T, H, W) and, with ``return_lowres``, "lowres_video"."""
        batch = dict(batch)
        world = batch.pop("world")
        batch["video"] = _render_world(world, self.height, self.width, self.style)
        if self.return_lowres is not None:
            batch["lowres_video"] = _render_world(world, *self.return_lowres, self.style)
        return batch

    def __len__(self):
        return self.length

    def spec_and_caption(self, index: int):
        rng = _item_rng(self.seed, index)
        spec = sample_clip_spec(rng, holdout=self.holdout)
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
            return {"world": _world_item(spec, times), "caption": _style_caption(text, self.style)}
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
    """

    def __init__(self, height: int = 32, width: int = 32, length: int = 100_000, seed: int = 0,
                 style: str | None = None, holdout: bool = True, include_motion: bool = False,
                 render_on_device: bool = False):
        _check_style(style)
        self.height, self.width, self.length = height, width, length
        self.seed, self.style, self.holdout, self.include_motion = seed, style, holdout, include_motion
        self.render_on_device = render_on_device

    def render_batch(self, batch: dict) -> dict:
        """A collated batch of ``render_on_device`` items with "world" rendered as "image" (B, 3, H, W)."""
        batch = dict(batch)
        batch["image"] = _render_world(batch.pop("world"), self.height, self.width, self.style)[:, :, 0]
        return batch

    def __len__(self):
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = _item_rng(self.seed, index)
        spec = sample_clip_spec(rng, holdout=self.holdout)
        text = caption(spec, rng, include_motion=self.include_motion)
        frames = 16  # a random frame of the 16-frame clip, rendered alone
        moment = np.array([int(rng.integers(frames)) / (frames - 1)])
        if self.render_on_device:
            return {"world": _world_item(spec, moment), "caption": _style_caption(text, self.style)}
        frame = render_clip(spec, 1, self.height, self.width, self.style, times=moment)[0]
        return {"image": video_to_tensor(frame[None])[:, 0], "caption": _style_caption(text, self.style)}


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


def decode_clip(path, num_frames: int, fps: float | None, rng: np.random.Generator) -> np.ndarray:
    """Decode ``num_frames`` RGB frames at ``fps`` (frame stride from the source fps) from a random start."""
    capture = cv2.VideoCapture(os.fspath(path))
    try:
        if not capture.isOpened():
            raise VideoDecodeError(f"cannot open video '{path}'")
        source_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        stride = max(1, round(source_fps / fps)) if fps and source_fps > 0 else 1
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


class RealVideoDataset(Dataset):
    """WebVid-style folder of videos listed in a CSV (path,caption) or JSONL ({"path","caption"}), or
    WebVid's own CSV (``load_metadata``).

    Paths are relative to ``root`` (or absolute); rows whose file is missing are left out with one
    warning. Clips of ``num_frames`` at ``fps`` are resized (shorter side) and centre-cropped to
    (height, width). A corrupt or too-short file never stops training: it is skipped with a warning
    naming it, and another index is used instead.

    Temporal augmentation: each epoch (``set_epoch``, which the training loop calls through
    accelerate's data loader) takes another window of each video, a pure function of (seed, index,
    epoch); epoch 0 takes the window a dataset without epochs always took.
    """

    def __init__(self, root, metadata, num_frames: int = 16, height: int = 64, width: int = 64,
                 fps: float | None = 8.0, seed: int = 0, return_lowres: tuple[int, int] | None = None,
                 max_retries: int = 20):
        self.root = Path(root)
        metadata = Path(metadata)
        self.rows = load_metadata(metadata if metadata.is_absolute() or metadata.exists() else self.root / metadata)
        if not self.rows:
            raise ValueError(f"metadata '{metadata}' lists no videos")
        self.rows = _existing_rows(self.rows, self.root, metadata)
        self.num_frames, self.height, self.width, self.fps = num_frames, height, width, fps
        self.seed, self.return_lowres, self.max_retries = seed, return_lowres, max_retries
        self.bad_paths: set[str] = set()
        self.epoch = 0

    def __len__(self):
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's windows (reproducible from the seed: the same epoch gives the same clips)."""
        self.epoch = int(epoch)

    def _load(self, index: int, rng) -> dict:
        row = self.rows[index]
        path = Path(row["path"])
        path = path if path.is_absolute() else self.root / path
        if not path.is_file():
            raise VideoDecodeError(f"video file not found: '{path}'")
        return clip_item(path, str(row["caption"]), rng, self.num_frames, self.height, self.width, self.fps,
                         self.return_lowres)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.rows):
            raise IndexError(index)
        for attempt in range(self.max_retries + 1):
            candidate = (index + attempt * 7919) % len(self.rows)  # a prime step visits other files
            path = self.rows[candidate]["path"]
            if path in self.bad_paths:
                continue
            try:
                return self._load(candidate, epoch_rng(self.seed, candidate, self.epoch))
            except (VideoDecodeError, cv2.error) as err:
                self.bad_paths.add(path)
                warnings.warn(f"skipping video '{path}': {err}", RuntimeWarning, stacklevel=2)
        raise RuntimeError(f"no decodable video found after {self.max_retries + 1} tries from index {index}; "
                           f"check the files under '{self.root}'")


# ----------------------------------------------------------------------------- style images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
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
        image = resize_center_crop(read_image(path), self.height, self.width, upscale_interpolation=cv2.INTER_LINEAR)
        return {"image": video_to_tensor(image[None])[:, 0], "caption": text}
