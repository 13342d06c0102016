"""Checkpoint files and the Hugging Face Hub: safetensors + json only, clear errors, no pickles."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .errors import CheckpointError, MissingFileError

__all__ = ["BUNDLED_MODEL_DIR", "CheckpointError", "read_json", "read_safetensors", "resolve_folder", "resolve_pretrained"]

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "lumiere-tiny"


def read_json(path: str | os.PathLike) -> dict:
    """A checkpoint's JSON file. Raises CheckpointError (naming the file) when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"corrupt JSON in {path}: {error}") from None


def read_safetensors(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (CPU). Raises CheckpointError (naming the file) when missing or corrupt.

    Without ``dtype``: the file's tensors, memory-mapped (read when first touched). With ``dtype``: copies in
    this process's own memory, floating ones cast to ``dtype``, made one tensor at a time with the file
    opened anew for each (its mapped pages count as this process's memory until it is closed), so reading
    costs the result's size, not also the file's. Why copies: mapped tensors keep the file open and are not
    aligned for the CPU kernels (outputs then differ in the last bits from the saved model's).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file: {path}")
    try:
        if dtype is None:
            return load_file(str(path))
        with safe_open(str(path), framework="pt") as file:
            keys = list(file.keys())
        state = {}
        for key in keys:
            with safe_open(str(path), framework="pt") as file:
                tensor = file.get_tensor(key)
            state[key] = tensor.to(dtype, copy=True) if tensor.is_floating_point() else tensor.clone()
            del tensor
        return state
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"corrupt safetensors file {path}: {error}") from None


PIPELINE_FILES = ["*.json", "*.safetensors", "*.txt", "*.md", "*.model"]


def resolve_pretrained(path_or_repo: str | os.PathLike | None) -> Path:
    """A local pipeline directory for ``path_or_repo``.

    None / "bundled" -> the model shipped in assets/; anything else as :func:`resolve_folder`.

    Raises:
        MissingFileError: no bundled model, no such directory, or the repo could not be fetched.
    """
    if path_or_repo is None or str(path_or_repo) == "bundled":
        if not (BUNDLED_MODEL_DIR / "model_index.json").is_file():
            raise MissingFileError(
                f"bundled model not found at {BUNDLED_MODEL_DIR}; train it with "
                "`python -m lumiere train --stage all --config configs/tiny.json --export assets/lumiere-tiny` "
                "or pass a pipeline directory / Hub repo id"
            )
        return BUNDLED_MODEL_DIR
    return resolve_folder(path_or_repo, PIPELINE_FILES, "pipeline")


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE) or flag


def resolve_folder(path_or_repo: str | os.PathLike, allow_patterns: list[str] | None = None,
                   what: str = "model") -> Path:
    """A local folder for ``path_or_repo``: an existing directory is itself; anything else is a Hub repo
    id, fetched (only the files matching ``allow_patterns``) with ``snapshot_download``, which honours
    ``HF_HUB_OFFLINE`` and answers from the local cache when the Hub cannot be reached.

    Raises:
        MissingFileError: no such directory, not a repo id, no such repo, or the Hub could not be reached
            and the repo is not cached; the message is one line that says which and what to do.
    """
    local = Path(path_or_repo).expanduser()
    if local.is_dir():
        return local
    repo = str(path_or_repo)
    if local.exists() or repo.startswith((".", "/", "~")) or repo.count("/") > 1:
        raise MissingFileError(f"no {what} directory at {local}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    try:
        return Path(snapshot_download(repo_id=repo, allow_patterns=allow_patterns))
    except HFValidationError:
        raise MissingFileError(f"'{repo}' is neither a local folder nor a Hub repo id (owner/name)") from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if _offline() else "no network connection"
        raise MissingFileError(f"'{repo}' is not a local folder and could not be fetched from the Hugging Face Hub: "
                               f"the Hub could not be reached ({why}) and there is no cached copy; pass a local "
                               f"{what} folder") from None
    except RepositoryNotFoundError:
        raise MissingFileError(f"'{repo}' is neither a local folder nor a model on the Hugging Face Hub (a private or "
                               "gated one needs `hf auth login`)") from None
    except HfHubHTTPError as error:
        reason = " ".join(str(error).split())[:200]
        raise MissingFileError(f"could not download '{repo}' from the Hugging Face Hub: {reason}") from None
