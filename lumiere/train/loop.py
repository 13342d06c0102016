"""One readable training loop for every stage, under accelerate (devices, DDP, mixed precision).

A stage supplies an ``nn.Module`` whose ``forward(batch)`` returns the loss (so DDP sees one module),
the parameters to train, and a data loader. The loop adds gradient accumulation, EMA, periodic
checkpoints with resume, and a tqdm bar with the running loss.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm.auto import tqdm

from ..components import flush_denormals
from ..errors import InputError
from ..options import from_mapping
from .checkpoint import latest_checkpoint, load_training_state, prune_checkpoints, save_training_state


@dataclass
class TrainSettings:
    """One stage's optimisation settings: the config's "train" section under the stage's own
    (``config.RunConfig.settings``); an unknown key is an error, not a silently kept default."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    ema_decay: float | None = 0.999
    checkpoint_every: int = 200
    log_every: int = 20
    mixed_precision: str = "no"
    seed: int = 0
    num_workers: int = 0
    # Bundled-recipe switches (defaults = the paper: frozen T2I, uniform timesteps, plain MSE).
    spatial_lr_scale: float = 0.0      # > 0: the video stages also train the T2I weights at lr x this
    timestep_sampling: str = "uniform"  # or "high_noise": t = T * (1 - u^2), where motion is decided
    loss_weighting: str = "none"        # or "min_snr": Min-SNR-gamma weighting (Hang et al., 2023)
    min_snr_gamma: float = 5.0
    terminal_fraction: float = 0.0      # share of draws from the top 1% of the schedule (see DiffusionObjective)
    caption_dropout: float = 0.1        # share of captions replaced by "": trains the unconditional model CFG needs
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~1 more forward
    text_embedding_cache: str | None = None  # a directory: frozen text states cached there (train section only)

    @classmethod
    def from_dict(cls, values: dict, where: str = "train settings") -> "TrainSettings":
        """Settings from a config section; keys starting with "_" are comments.

        Raises:
            InputError: a key that is not a setting (the message names it, ``where`` and the allowed keys).
        """
        return from_mapping(cls, values, where)


def process_seed(seed: int, process_index: int = 0, step: int = 0, num_processes: int = 1) -> int:
    """The seed of one process at ``step``: ``seed + step * num_processes + process_index``.

    Why: under ``accelerate launch`` every rank runs the same code; one seed for all would make every
    rank draw the same timesteps and noise (N GPUs training on one draw). Distinct for every (step,
    rank) pair, and ``seed + step`` for a single process (as before).
    """
    return int(seed) + int(step) * int(num_processes) + int(process_index)


def infinite(loader, epoch: int = 0):
    """The loader's batches, epoch after epoch (from ``epoch``), telling it each epoch (``set_epoch``:
    accelerate forwards it to the sampler and the dataset, whose per-epoch draws then differ; a plain
    loader's dataset, e.g. streamed shards, is told directly).

    Raises:
        InputError: an epoch without a single batch (which would otherwise loop forever).
    """
    dataset = getattr(loader, "dataset", None)
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        elif hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise InputError("the training data gave no batch in a whole epoch: the dataset is empty or smaller "
                             "than one batch per process (batch_size x processes; streamed shards: per data "
                             "loader worker of each process)")
        epoch += 1


def check_enough_data(loader, settings: TrainSettings, num_processes: int, description: str = "train") -> None:
    """Refuse a sized dataset with fewer items than one full batch per process.

    Why: the loaders drop incomplete batches (``drop_last``, so every step has the same batch size on
    every rank), so such a dataset gives no batch at all and training would wait forever.

    Raises:
        InputError: naming the dataset size, the batch size and the process count.
    """
    dataset = getattr(loader, "dataset", None)
    try:
        size = len(dataset)
    except TypeError:  # an iterable dataset: ``infinite`` catches an empty epoch instead
        return
    needed = settings.batch_size * num_processes
    if size < needed:
        raise InputError(f"{description}: the training data has {size} item(s), fewer than one batch per process "
                         f"(batch_size {settings.batch_size} x {num_processes} process(es) = {needed}); add clips "
                         f"or lower batch_size")


def train(module: nn.Module, params: list, loader, settings: TrainSettings, output_dir: Path,
          resume: bool = False, description: str = "train") -> dict:
    """Train ``params`` of ``module``; returns {"step", "loss", "seconds"}. EMA weights are copied in at the end.

    ``params`` is a list of parameters, or of optimizer parameter groups (dicts with "params" and an
    optional "lr_scale" relative to ``settings.lr``), e.g. temporal layers at full rate, spatial at 0.1x.
    Denormals are flushed for the duration of the run (tiny late-training values as denormals slow CPU
    math by 10x+); the previous setting is restored afterwards.
    """
    with flush_denormals():
        return _train(module, params, loader, settings, Path(output_dir), resume, description)


def train_frozen_in_eval(module: nn.Module) -> None:
    """``module.train()``, except that frozen parts (parameters, none requiring grad) stay in eval mode.

    Why: a frozen text encoder's dropout (T5: 0.1) would make its states in training differ from the
    ones the pipeline samples with. Parameterless layers follow their parent, so dropout inside a
    trained block still trains.
    """
    module.train()

    def visit(child: nn.Module) -> None:
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params):
            child.eval()
            return
        for grandchild in child.children():
            visit(grandchild)

    visit(module)


def _train(module: nn.Module, params: list, loader, settings: TrainSettings, output_dir: Path, resume: bool,
           description: str) -> dict:
    accelerator = Accelerator(gradient_accumulation_steps=settings.grad_accum, mixed_precision=settings.mixed_precision)
    set_seed(process_seed(settings.seed, accelerator.process_index))
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    groups = [{"params": [p for p in g["params"] if p.requires_grad], "lr": settings.lr * g.get("lr_scale", 1.0)}
              for g in groups]
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError(f"{description}: nothing to train (no parameter requires grad)")
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, settings))
    ema = EMAModel(params, decay=settings.ema_decay, use_ema_warmup=True, power=2 / 3) if settings.ema_decay else None

    step = 0
    checkpoint = latest_checkpoint(output_dir / "checkpoints") if resume else None
    if checkpoint is not None:
        meta = load_training_state(checkpoint, module, optimizer, ema, schedule)
        step = int(meta["step"])
        accelerator.print(f"{description}: resumed from {checkpoint} at step {step}")
    # Each rank draws its own timesteps / noise; a resumed run draws fresh ones, not a replay of the start.
    set_seed(process_seed(settings.seed, accelerator.process_index, step, accelerator.num_processes))

    check_enough_data(loader, settings, accelerator.num_processes, description)
    if getattr(loader.dataset, "splits_across_processes", False):
        # Streamed shards already give each rank its own share: accelerate would instead read them all on
        # the main process and send the batches out (or have every rank read everything).
        module, optimizer = accelerator.prepare(module, optimizer)
        loader = _OnDevice(loader, accelerator.device)
    else:
        module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    if ema is not None:
        ema.to(accelerator.device)
    train_frozen_in_eval(module)
    # A resumed run continues in the epoch it stopped in (other windows / crops than the first epoch's);
    # for streamed data (no length) in epoch ``step x grad_accum``, one no earlier run reached (an epoch
    # has at least one batch).
    batches_done = step * settings.grad_accum
    epoch = (batches_done // len(loader) if _sized(loader) else batches_done) if step else 0
    batches = infinite(loader, epoch=epoch)
    running, started = None, time.time()
    bar = tqdm(total=settings.steps, initial=step, desc=description, disable=not accelerator.is_local_main_process)
    while step < settings.steps:
        with accelerator.accumulate(module):
            loss = module(next(batches))
            accelerator.backward(loss)
            if accelerator.sync_gradients and settings.max_grad_norm:
                accelerator.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()  # accelerate's wrapper skips it on accumulation micro-batches
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        # The schedule counts optimizer steps, not micro-batches (else warm-up ends grad_accum x early);
        # an fp16 step skipped for overflow does not advance it either.
        if not accelerator.optimizer_step_was_skipped:
            schedule.step()
        step += 1
        if ema is not None:
            ema.step(params)
        value = loss.detach().float().item()
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(1)
        if step % settings.log_every == 0 or step == settings.steps:
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{schedule.get_last_lr()[0]:.2e}")
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_training_state(output_dir / "checkpoints", step, accelerator.unwrap_model(module), optimizer, ema,
                                    {"loss": running}, schedule)
                prune_checkpoints(output_dir / "checkpoints")
    bar.close()
    accelerator.wait_for_everyone()
    if ema is not None:
        ema.copy_to(params)
    return {"step": step, "loss": running, "seconds": time.time() - started}


class _OnDevice:
    """A data loader whose batches are moved to ``device`` (what accelerate's prepared loader does)."""

    def __init__(self, loader, device):
        self.loader, self.dataset, self.device = loader, loader.dataset, device

    def __iter__(self):
        from accelerate.utils import send_to_device

        return (send_to_device(batch, self.device) for batch in self.loader)

    def __len__(self):
        return len(self.loader)


def _sized(loader) -> bool:
    try:
        return len(loader) > 0
    except TypeError:
        return False


def _lr_factor(step: int, settings: TrainSettings) -> float:
    """Linear warm-up then cosine decay to 10% (stable for the short from-scratch runs)."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = min(1.0, (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
