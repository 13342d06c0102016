"""Resumable training state as safetensors + json (model, EMA, optimizer, LR schedule): no pickles anywhere."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..hub import read_json, read_safetensors

STATE_FILE = "training_state.safetensors"
META_FILE = "training_state.json"


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _schedule_state(schedule) -> dict:
    """An LR scheduler's state as json: its counters and base rates. The rate function itself is code
    (rebuilt from the settings on resume), so callables are left out, as torch's own state_dict does."""
    state = {k: v for k, v in schedule.state_dict().items() if not callable(v)}
    json.dumps(state)  # fail at save time, not at resume, if a scheduler keeps something json cannot hold
    return state


def save_training_state(directory: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                        ema=None, extra: dict | None = None, schedule=None) -> Path:
    """Write checkpoint-<step>/ atomically (tmp dir + rename) so a kill mid-write never corrupts resume.

    ``schedule``: the LR scheduler, whose step count and base rates go into the json (resume continues
    the schedule where it stopped instead of restarting the warm-up)."""
    final = Path(directory) / f"checkpoint-{step:07d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Only what trains: a frozen pretrained T2I (gigabytes at full size) is already on disk.
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in trainable}
    optimizer_tensors, optimizer_meta = _flatten_optimizer(optimizer)
    tensors.update(optimizer_tensors)
    meta = {"step": step, "optimizer": optimizer_meta, **(extra or {})}
    if schedule is not None:
        meta["schedule"] = _schedule_state(schedule)
    if ema is not None:
        ema_state = ema.state_dict()
        for i, shadow in enumerate(ema_state.pop("shadow_params")):
            tensors[f"ema.{i}"] = shadow.detach().cpu().contiguous()
        meta["ema"] = {k: v for k, v in ema_state.items() if not torch.is_tensor(v)}
    save_file(tensors, str(tmp / STATE_FILE))
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    checkpoints = sorted(p for p in Path(directory).glob("checkpoint-*") if p.is_dir() and not p.name.endswith(".tmp"))
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(directory: Path, keep: int = 2) -> None:
    checkpoints = sorted(p for p in Path(directory).glob("checkpoint-*") if not p.name.endswith(".tmp"))
    for old in checkpoints[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_training_state(checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema=None,
                        schedule=None) -> dict:
    """Restore what ``save_training_state`` wrote into ``model`` (its trained parameters), ``optimizer``,
    ``ema`` and ``schedule``; returns the json metadata. A checkpoint from before the schedule was saved
    resumes the schedule at the saved step."""
    tensors = read_safetensors(Path(checkpoint) / STATE_FILE)
    meta = read_json(Path(checkpoint) / META_FILE)
    _, unexpected = model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
                                          strict=False)
    if unexpected:
        raise ValueError(f"checkpoint {checkpoint} does not match the model: unexpected {unexpected[:5]}")
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    if ema is not None and "ema" in meta:
        shadows = [tensors[f"ema.{i}"] for i in range(sum(k.startswith("ema.") for k in tensors))]
        ema.load_state_dict({**meta["ema"], "shadow_params": shadows})
    if schedule is not None:
        if "schedule" in meta:
            schedule.load_state_dict(meta["schedule"])
        else:
            schedule.last_epoch = int(meta["step"])
    return meta
