"""The training processes: form the process group first, then check that it is the one that was launched.

Why a module of its own: accelerate keeps one process state per process (``PartialState``), made by
whichever object asks first. Made without ``cpu=True`` on a machine without a GPU it does not join the
process group ``torchrun`` / ``accelerate launch`` set up, and every rank then trains alone believing it
is the main process (each writes the pipeline, the weights drift apart). So every entry point of the
training code calls :func:`process_state` before anything else, and the loop calls
:func:`check_replicas` before its first step: a run that did not form refuses to start.
"""
from __future__ import annotations

import atexit
import os

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

from ..errors import InputError

WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size() -> int | None:
    """The number of processes the launcher started (torchrun / accelerate / MPI), or None when not launched."""
    for name in WORLD_SIZE_VARIABLES:
        value = os.environ.get(name)
        if value:
            try:
                return int(value)
            except ValueError:
                raise InputError(f"{name}={value!r} is not a number of processes") from None
    return None


def process_state() -> PartialState:
    """This process's accelerate state, forming the process group on the first call.

    On a machine without a GPU (or under ``ACCELERATE_USE_CPU``) the group is formed on the CPU (gloo).

    Raises:
        InputError: ``accelerate launch --cpu --num_processes N`` (N > 1) without MPI, which starts a single
            process; or a group smaller or larger than the launcher's world size.
    """
    if not PartialState._shared_state:
        requested = parse_flag_from_env("ACCELERATE_USE_CPU") and os.environ.get("MASTER_ADDR") and launched_world_size() is None
        if requested:  # accelerate's simple launcher sets MASTER_ADDR only when asked for more than one process
            raise InputError("`accelerate launch --cpu --num_processes N` starts one process (accelerate runs several "
                             "CPU processes only through mpirun). On one machine without a GPU use `torchrun "
                             "--nproc_per_node N -m lumiere train ...` or `accelerate launch --multi_gpu "
                             "--num_processes N -m lumiere train ...` (the processes then train on the CPU)")
        cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
        PartialState(cpu=cpu)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Released before the interpreter's teardown: a gloo group left to it can abort the process
            # ("terminate called without an active exception") after all its work is done.
            atexit.register(_release_group)
    state = PartialState()
    expected = launched_world_size()
    if expected is not None and state.num_processes != expected:
        raise InputError(f"the launcher started {expected} processes but this one sees a group of "
                         f"{state.num_processes}: the process group did not form (check MASTER_ADDR / MASTER_PORT and "
                         f"that every rank runs the same command)")
    return state


def _release_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def parameter_checksum(module: torch.nn.Module) -> torch.Tensor:
    """A float64 fingerprint of every parameter and buffer: the sum, the sum of squares and a position-weighted
    sum of the tensors' sums. Reduced tensor by tensor where each lives (no float64 copy of the whole model:
    for a real T2I that would be gigabytes of host memory)."""
    tensors = [t.detach() for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()]
    total = torch.zeros(3, dtype=torch.float64)
    for position, tensor in enumerate(tensors, start=1):
        value = tensor.sum(dtype=torch.float64)
        total += torch.stack([value, tensor.double().square().sum(), position * value]).cpu()
    return total


def check_replicas(accelerator, module: torch.nn.Module, description: str = "train") -> None:
    """Refuse to train unless every launched process is in the group and all hold the same weights.

    Raises:
        InputError: the group has another size than the launcher started, or a rank's weights differ
            (e.g. drawn from another seed) — training would average gradients of different models.
    """
    expected = launched_world_size()
    if expected is not None and accelerator.num_processes != expected:
        raise InputError(f"{description}: {accelerator.num_processes} process(es) in the group, {expected} launched")
    if accelerator.num_processes == 1:
        return
    local = parameter_checksum(module).to(accelerator.device)
    every = accelerator.gather(local[None]).cpu()
    if not torch.allclose(every, every[:1].expand_as(every), rtol=1e-9, atol=1e-6):
        raise InputError(f"{description}: the ranks start from different weights (checksums {every[:, 0].tolist()}): "
                         "every rank must build the model from the same seed and files")
