"""Training clips streamed from webdataset tar shards (``data.type: "webdataset"``), for WebVid-scale sets.

The format is webdataset's (what ``webdataset.ShardWriter``, video2dataset and img2dataset write): each
shard a plain tar whose members sharing a key (the path up to the first "." of the file name) form one
sample, here a video (``.mp4``, ``.webm``, ``.mkv``, ``.mov``, ``.avi``) and its caption (``.txt``, or a
``.json`` with a "caption" key).

Read with the standard library's ``tarfile`` rather than the ``webdataset`` package. Why: the format is
what makes shards interchangeable, and the package's value is its pipeline of decoders, of which this
reader uses none (OpenCV decodes the video from a file; the package's default decoders would also unpickle
``.pyd``/``.pkl`` members); the parts that matter here are ours anyway (a per-epoch shard order reproducible
from the seed, one disjoint share per rank that fails loudly when empty, the folder dataset's temporal
windows); and it keeps CI's requirements as they are. ~150 lines instead of a dependency.
"""
from __future__ import annotations

import json
import os
import re
import tarfile
import tempfile
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lumiere.data.datasets import VideoDecodeError, clip_item, epoch_rng
from lumiere.errors import InputError

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov", "avi")
_BRACES = re.compile(r"\{([^{}]*)\}")


def expand_shards(spec) -> list[str]:
    """Shard paths from a brace pattern ("shards/{00000..00099}.tar", "{train,val}-{0..3}.tar") or a list
    of patterns / paths, in order; numeric ranges keep the start's zero padding (as ``braceexpand``)."""
    if isinstance(spec, (list, tuple)):
        return [path for item in spec for path in expand_shards(item)]
    match = _BRACES.search(str(spec))
    if match is None:
        return [str(spec)]
    body = match.group(1)
    numbers = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if numbers:
        first, last = numbers.groups()
        width = len(first) if first.lstrip("-").startswith("0") and len(first) > 1 else 0
        step = 1 if int(last) >= int(first) else -1
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + step, step)]
    else:
        choices = body.split(",")
    head, tail = spec[:match.start()], spec[match.end():]
    return [path for choice in choices for path in expand_shards(head + choice + tail)]


def _process() -> tuple[int, int]:
    """(rank, number of processes) of this run: torch.distributed's once initialised, else what the launcher
    (``accelerate launch``, torchrun, deepspeed) put in the environment. Read, not set up: creating
    accelerate's state here would fix its options (e.g. ``cpu``) before the training loop's Accelerator."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a tar member, as webdataset splits it: at the first "." of the file name."""
    directory, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def _caption(tar: tarfile.TarFile, members: dict) -> str | None:
    if "txt" in members:
        return tar.extractfile(members["txt"]).read().decode("utf-8").strip()
    if "json" in members:
        value = json.loads(tar.extractfile(members["json"]).read()).get("caption")
        return None if value is None else str(value)
    return None


class ShardedVideoDataset(IterableDataset):
    """Clips streamed shard by shard from webdataset tars; items as ``RealVideoDataset``'s.

    Each epoch (``set_epoch``) the shards are shuffled with (seed, epoch), the same order on every rank,
    and dealt out: rank r of N takes every N-th shard from r, and each of its data loader workers every
    W-th of those, so every sample is read once per epoch by exactly one worker of one rank. Within a
    shard the samples come in an order drawn from (seed, epoch, shard). The window and crop of a sample
    are ``epoch_rng`` of (seed, its id, epoch), its id a CRC-32 of "<shard name>/<key>": the folder
    dataset's temporal augmentation, another window each epoch, reproducible.

    ``rank`` / ``world_size``: this process's share (default: the launcher's rank and process count). The
    training loop reads ``splits_across_processes`` and so leaves the splitting to this dataset (accelerate
    would otherwise read every shard on the main process and send the batches out). No ``len``: the loop
    counts steps; each worker drops its last incomplete batch of an epoch (fewer than batch_size items).

    Raises:
        InputError: no shard, a shard file missing, or fewer shards than processes (a rank without data).
    """

    splits_across_processes = True

    def __init__(self, shards, num_frames: int = 16, height: int = 64, width: int = 64, fps: float | None = 8.0,
                 seed: int = 0, return_lowres: tuple[int, int] | None = None, rank: int | None = None,
                 world_size: int | None = None):
        self.shards = expand_shards(shards)
        if not self.shards:
            raise InputError("data.shards lists no shard")
        missing = [path for path in self.shards if not Path(path).is_file()]
        if missing:
            raise InputError(f"data.shards: {len(missing)} of {len(self.shards)} shard files do not exist "
                             f"(e.g. '{missing[0]}')")
        if rank is None or world_size is None:
            rank, world_size = _process()
        if len(self.shards) < world_size:
            raise InputError(f"data.shards: {len(self.shards)} shard(s) for {world_size} processes; process {rank} "
                             f"would get none. Write at least one shard per process (better: several per process "
                             f"and data loader worker)")
        self.rank, self.world_size = int(rank), int(world_size)
        self.num_frames, self.height, self.width, self.fps = num_frames, height, width, fps
        self.seed, self.return_lowres = seed, return_lowres
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle the shards and draw the windows of ``epoch`` (reproducible from the seed)."""
        self.epoch = int(epoch)

    def shards_for(self, epoch: int, worker: int = 0, num_workers: int = 1) -> list[str]:
        """The shards one worker of this rank reads in ``epoch``, in order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        return [self.shards[i] for i in order[self.rank::self.world_size][worker::num_workers]]

    def __iter__(self):
        return (item for _, item in self.iter_indexed())

    def iter_indexed(self):
        """(sample id, item) pairs: the id seeds a stage wrapper's per-item draws (frames, crops)."""
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        with tempfile.TemporaryDirectory(prefix="lumiere-shard-") as scratch:
            for shard in self.shards_for(self.epoch, worker, num_workers):
                yield from self._read_shard(shard, Path(scratch))

    def _read_shard(self, shard: str, scratch: Path):
        name = Path(shard).name
        with tarfile.open(shard) as tar:
            samples: dict[str, dict] = {}
            for member in tar.getmembers():  # headers only: tarfile seeks past the contents
                if member.isfile():
                    key, extension = _split_name(member.name)
                    samples.setdefault(key, {})[extension] = member
            keys = sorted(samples)
            order = np.random.default_rng([self.seed, self.epoch, zlib.crc32(name.encode())]).permutation(len(keys))
            incomplete = 0
            for k in order:
                key, members = keys[k], samples[keys[k]]
                video = next((members[e] for e in VIDEO_EXTENSIONS if e in members), None)
                text = _caption(tar, members)
                if video is None or text is None:
                    incomplete += 1
                    continue
                sample_id = zlib.crc32(f"{name}/{key}".encode())
                path = scratch / f"clip.{_split_name(video.name)[1]}"  # OpenCV decodes files, not bytes
                path.write_bytes(tar.extractfile(video).read())
                try:
                    item = clip_item(path, text, epoch_rng(self.seed, sample_id, self.epoch), self.num_frames,
                                     self.height, self.width, self.fps, self.return_lowres)
                except (VideoDecodeError, cv2.error) as err:
                    warnings.warn(f"skipping sample '{key}' of shard '{shard}': {err}", RuntimeWarning, stacklevel=2)
                    continue
                yield sample_id, item
        if incomplete:
            warnings.warn(f"shard '{shard}': skipped {incomplete} sample(s) without a video "
                          f"({'/'.join(VIDEO_EXTENSIONS)}) or a caption (.txt, or .json with \"caption\")",
                          RuntimeWarning, stacklevel=2)
