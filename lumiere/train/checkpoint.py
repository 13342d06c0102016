"""Resumable training state as safetensors + json (model, EMA, optimizer, LR schedule): no pickles anywhere.

Under DeepSpeed ZeRO-1/2 the optimizer state is sharded across ranks, so the main rank alone cannot write it:
there the model and optimizer go through ``accelerator.save_state`` (every rank writes its shard, DeepSpeed's
format) into ``sharded/`` inside the checkpoint, and EMA, LR schedule and step stay in our files.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import DistributedType
from safetensors.torch import save_file
from torch import nn

from ..errors import InputError
from ..hub import read_json, read_safetensors

STATE_FILE = "training_state.safetensors"
META_FILE = "training_state.json"
SHARDED_DIR = "sharded"  # accelerate.save_state's folder inside a checkpoint of a sharded run


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


def shards_optimizer_state(accelerator) -> bool:
    """Whether each rank holds only its shard of the optimizer state (DeepSpeed ZeRO): then checkpoints go
    through ``accelerator.save_state`` / ``load_state``. (The training loop refuses FSDP and ZeRO-3, which
    shard the parameters as well.)"""
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _checkpoint_paths(directory: Path, step: int) -> tuple[Path, Path]:
    final = Path(directory) / f"checkpoint-{step:07d}"
    return final, final.with_name(final.name + ".tmp")


def _add_ema_and_schedule(tensors: dict, meta: dict, ema, schedule) -> None:
    if schedule is not None:
        meta["schedule"] = _schedule_state(schedule)
    if ema is not None:
        ema_state = ema.state_dict()
        for i, shadow in enumerate(ema_state.pop("shadow_params")):
            tensors[f"ema.{i}"] = shadow.detach().cpu().contiguous()
        meta["ema"] = {k: v for k, v in ema_state.items() if not torch.is_tensor(v)}


def _write_and_publish(tmp: Path, final: Path, tensors: dict, meta: dict) -> None:
    save_file(tensors, str(tmp / STATE_FILE))
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def save_training_state(directory: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                        ema=None, extra: dict | None = None, schedule=None) -> Path:
    """Write checkpoint-<step>/ atomically (tmp dir + rename) so a kill mid-write never corrupts resume.

    ``schedule``: the LR scheduler, whose step count and base rates go into the json (resume continues
    the schedule where it stopped instead of restarting the warm-up)."""
    final, tmp = _checkpoint_paths(directory, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Only what trains: a frozen pretrained T2I (gigabytes at full size) is already on disk.
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in trainable}
    optimizer_tensors, optimizer_meta = _flatten_optimizer(optimizer)
    tensors.update(optimizer_tensors)
    meta = {"step": step, "optimizer": optimizer_meta, **(extra or {})}
    _add_ema_and_schedule(tensors, meta, ema, schedule)
    _write_and_publish(tmp, final, tensors, meta)
    return final


def save_sharded_training_state(accelerator, directory: Path, step: int, ema=None, extra: dict | None = None,
                                schedule=None) -> Path:
    """``save_training_state`` for a run whose optimizer state is sharded; every rank must call it.

    The prepared model and optimizer go through ``accelerator.save_state`` into ``sharded/`` (each rank
    writes its own shard); the main rank adds EMA, LR schedule and step in our format and publishes the
    directory by renaming it, as the unsharded checkpoint does.
    """
    final, tmp = _checkpoint_paths(directory, step)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / SHARDED_DIR), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tensors, meta = {}, {"step": step, "sharded": SHARDED_DIR, **(extra or {})}
        _add_ema_and_schedule(tensors, meta, ema, schedule)
        _write_and_publish(tmp, final, tensors, meta)
    accelerator.wait_for_everyone()
    return final


def checkpoint_step(checkpoint: Path) -> int:
    """The step a checkpoint was written at (read before the model is prepared: the run's seeds depend on it)."""
    return int(read_json(Path(checkpoint) / META_FILE)["step"])


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
    if meta.get("sharded"):
        raise InputError(f"checkpoint {checkpoint} was written by a DeepSpeed ZeRO run (its optimizer state is in "
                         f"per-rank shards): resume it under the same accelerate config and number of processes")
    _, unexpected = model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
                                          strict=False)
    if unexpected:
        raise ValueError(f"checkpoint {checkpoint} does not match the model: unexpected {unexpected[:5]}")
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    _restore_ema_and_schedule(tensors, meta, ema, schedule)
    return meta


def load_sharded_training_state(accelerator, checkpoint: Path, ema=None, schedule=None) -> dict:
    """Restore what ``save_sharded_training_state`` wrote, on every rank, after ``accelerator.prepare``:
    the model and optimizer shards through ``accelerator.load_state``, EMA and schedule from our files.

    The random generators are left as they were: ``load_state`` would restore the ones of the save, while the
    loop seeds each (step, rank) itself, as it does on an unsharded resume.

    Raises:
        InputError: the checkpoint was written without sharding (its optimizer state is one full copy, which
            DeepSpeed's optimizer cannot take).
    """
    tensors = read_safetensors(Path(checkpoint) / STATE_FILE)
    meta = read_json(Path(checkpoint) / META_FILE)
    if not meta.get("sharded"):
        raise InputError(f"checkpoint {checkpoint} was written without DeepSpeed (one process or DDP): resume it "
                         f"under that launcher config, or start the DeepSpeed run in a new output directory")
    generators = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
                  torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    accelerator.load_state(str(Path(checkpoint) / meta["sharded"]))
    random.setstate(generators[0])
    np.random.set_state(generators[1])
    torch.set_rng_state(generators[2])
    if generators[3] is not None:
        torch.cuda.set_rng_state_all(generators[3])
    _restore_ema_and_schedule(tensors, meta, ema, schedule)
    return meta


def _restore_ema_and_schedule(tensors: dict, meta: dict, ema, schedule) -> None:
    """A checkpoint from before the schedule was saved resumes the schedule at the saved step."""
    if ema is not None and "ema" in meta:
        shadows = [tensors[f"ema.{i}"] for i in range(sum(k.startswith("ema.") for k in tensors))]
        ema.load_state_dict({**meta["ema"], "shadow_params": shadows})
    if schedule is not None:
        if "schedule" in meta:
            schedule.load_state_dict(meta["schedule"])
        else:
            schedule.last_epoch = int(meta["step"])
