"""Packing a training run's model for a machine that hands back only a few small files.

A rented or lent GPU box often returns its results through a narrow channel: a handful of files, each
under a size cap, with plain names, no deep folders. A run there must also survive being cut off at its
time limit. So a time-boxed run exports its pipeline (fp16) and packs it into one uncompressed tar
(split into numbered parts if it would exceed the cap) every so often and at the end: whatever stops
the run, the newest usable model is already in the output folder. ``unpack`` restores the pipeline
directory; ``check_output_folder`` states the limits, so a test can hold a smoke run to them.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
import time
from pathlib import Path

from ..errors import InputError

MAX_FILES = 8
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 2  # folders below the output folder
NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")
PACK_NAME = "model.tar"


def pack_directory(directory: str | Path, out_dir: str | Path, max_bytes: int = MAX_FILE_BYTES,
                   name: str = PACK_NAME) -> list[Path]:
    """Write ``directory`` as an uncompressed tar ``out_dir/name`` (members relative to it), or as
    ``name.000``, ``name.001``, ... parts of at most ``max_bytes`` each when it is larger; returns the files.

    Written next to the old pack and renamed over it, and stale parts are removed, so the folder holds
    one complete pack at every moment a run could be cut off (a part set is replaced part by part:
    ``unpack`` checks the sizes add up)."""
    directory, out_dir = Path(directory), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    data = buffer.getvalue()
    chunks = [data] if len(data) <= max_bytes else [data[i:i + max_bytes] for i in range(0, len(data), max_bytes)]
    names = [name] if len(chunks) == 1 else [f"{name}.{i:03d}" for i in range(len(chunks))]
    written = []
    for chunk, part in zip(chunks, names):
        target = out_dir / part
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(chunk)
        os.replace(tmp, target)
        written.append(target)
    for stale in [out_dir / name, *out_dir.glob(f"{name}.[0-9][0-9][0-9]")]:
        if stale not in written and stale.exists():
            stale.unlink()
    return written


def unpack(pack: str | Path, destination: str | Path) -> Path:
    """Extract a pack (``model.tar``, its first part ``model.tar.000``, or the folder holding it) into
    ``destination``; returns ``destination``.

    Raises:
        InputError: no pack there, or a member that would land outside ``destination``.
    """
    pack, destination = Path(pack), Path(destination)
    if pack.is_dir():
        pack = pack / PACK_NAME if (pack / PACK_NAME).is_file() else pack / f"{PACK_NAME}.000"
    if pack.suffix == ".000":
        parts = sorted(pack.parent.glob(pack.name[:-4] + ".[0-9][0-9][0-9]"))
    else:
        parts = [pack]
    if not parts or not parts[0].is_file():
        raise InputError(f"no packed model at '{pack}' (expected {PACK_NAME} or {PACK_NAME}.000)")
    data = b"".join(part.read_bytes() for part in parts)
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(destination, filter="data")  # refuses absolute paths, '..' and links out of it
    return destination


def check_output_folder(out_dir: str | Path, max_files: int = MAX_FILES, max_bytes: int = MAX_FILE_BYTES,
                        max_depth: int = MAX_DEPTH) -> list[str]:
    """The ways ``out_dir`` breaks the hand-back limits (empty: none): file count, file size, names
    (letters, digits, '.', '_', '-'), folder depth, and anything that is not a plain file or folder."""
    out_dir = Path(out_dir)
    problems, files = [], []
    for path in sorted(out_dir.rglob("*")):
        relative = path.relative_to(out_dir)
        if any(not NAME_PATTERN.match(part) for part in relative.parts):
            problems.append(f"{relative}: the name has characters other than letters, digits, '.', '_', '-'")
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            problems.append(f"{relative}: not a plain file or folder")
        elif path.is_file():
            files.append(relative)
            if len(relative.parts) - 1 > max_depth:
                problems.append(f"{relative}: more than {max_depth} folders deep")
            if path.stat().st_size > max_bytes:
                problems.append(f"{relative}: {path.stat().st_size} bytes, over {max_bytes}")
    if len(files) > max_files:
        problems.append(f"{len(files)} files, over {max_files}")
    return problems


class Packer:
    """A run's ``Workspace.on_write``: export the pipeline (fp16) to ``export_dir`` and pack it into
    ``out_dir``, at most every ``every`` seconds (``force`` at the end), once the pipeline can load
    (a text encoder and a base model written)."""

    def __init__(self, run_dir: str | Path, out_dir: str | Path, every: float = 60.0,
                 export_dir: str | Path | None = None):
        self.run_dir, self.out_dir, self.every = Path(run_dir), Path(out_dir), float(every)
        self.export_dir = Path(export_dir) if export_dir else self.run_dir / "export"
        self.last: float | None = None
        self.packs = 0

    def ready(self) -> bool:
        pipeline = self.run_dir / "pipeline"
        return all((pipeline / part / "config.json").is_file() for part in ("text_encoder", "base"))

    def __call__(self, force: bool = False) -> bool:
        """Pack now if due (or ``force``) and possible; returns whether it packed."""
        if not self.ready() or (not force and self.last is not None and time.monotonic() - self.last < self.every):
            return False
        from .stages import export_pipeline

        tmp = self.export_dir.with_name(self.export_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        export_pipeline(self.run_dir, tmp, process=_SingleProcess())
        shutil.rmtree(self.export_dir, ignore_errors=True)
        os.replace(tmp, self.export_dir)
        pack_directory(self.export_dir, self.out_dir)
        self.last, self.packs = time.monotonic(), self.packs + 1
        return True


class _SingleProcess:
    """``export_pipeline``'s process argument when called from the main process alone (no barrier)."""

    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass
