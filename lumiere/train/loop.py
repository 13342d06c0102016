"""One readable training loop for every stage, under accelerate (devices, DDP, mixed precision).

A stage supplies an ``nn.Module`` whose ``forward(batch)`` returns the loss (so DDP sees one module),
the parameters to train, and a data loader. The loop adds gradient accumulation, EMA, periodic
checkpoints with resume, a tqdm bar with the running loss, metrics to an experiment tracker
(TensorBoard / W&B through accelerate) and, given a stage's ``Validation``, periodic validation samples.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import (DataLoaderConfiguration, DistributedType, GradientAccumulationPlugin,
                              ProjectConfiguration, set_seed)
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm.auto import tqdm

from ..components import flush_denormals
from ..errors import InputError
from ..options import from_mapping
from .checkpoint import (checkpoint_step, latest_checkpoint, load_sharded_training_state, load_training_state,
                         prune_checkpoints, save_sharded_training_state, save_training_state, shards_optimizer_state)
from .processes import check_replicas, process_state


LOG_WITH = ("auto", "tensorboard", "wandb", "none")


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
    # Wall-clock budget (seconds) of the stage: it ends at ``steps`` or at the budget, whichever comes first,
    # and the learning-rate schedule runs over that (a time-boxed run still anneals). None: steps only.
    time_budget: float | None = None
    checkpoint_seconds: float | None = None  # also checkpoint whenever this much time passed since the last
    mixed_precision: str = "no"
    seed: int = 0
    num_workers: int = 0
    # Bundled-recipe switches (defaults = the paper: frozen T2I, uniform timesteps, plain MSE).
    spatial_lr_scale: float = 0.0      # > 0: the video stages also train the T2I weights at lr x this
    timestep_sampling: str = "uniform"  # or "high_noise": t = T * (1 - u^2), where motion is decided
    loss_weighting: str = "none"        # or "min_snr": Min-SNR-gamma weighting (Hang et al., 2023)
    min_snr_gamma: float = 5.0
    terminal_fraction: float = 0.0      # share of draws from the top 1% of the schedule (see DiffusionObjective)
    temporal_difference_weight: float = 0.0  # > 0: also fit the frame-to-frame differences (DiffusionObjective)
    # The temporal stage on procedural data rendered on the device: this share of the steps trains on clips
    # long_clip_multiple x the model's clip at its pace (``world.motion_time``: bouncing, rotating and circling go
    # on; moves and size changes, which the frame bounds, are spread over the clip), on 1/multiple of the batch,
    # so a long clip sampled in one pass is not a length the model never saw
    # (it would move at its clip's speed near the ends and stall between). 0: every step on the model's clip.
    long_clip_share: float = 0.0
    long_clip_multiple: int = 3
    # The motions a long clip may show (every object's; the world's names), or None: any. The repeating ones
    # (bouncing, rotating, circling) are what a longer clip can show going on; a long render of a move or a size
    # change is the same motion slowed down.
    long_clip_motions: tuple[str, ...] | None = None
    caption_dropout: float = 0.1        # share of captions replaced by "": trains the unconditional model CFG needs
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~1 more forward
    text_embedding_cache: str | None = None  # a directory: frozen text states cached there (train section only)
    # Experiment tracking (accelerate's trackers, main process): loss, lr, clips / s every log_every steps.
    log_with: str = "auto"  # "tensorboard", "wandb", "none"; "auto": tensorboard when installed, else none
    # Validation samples from the current (EMA) weights: every validation_every steps (0 = off), one per
    # prompt, fixed seed, validation_steps denoising steps; under <stage dir>/validation/ and to the tracker.
    validation_every: int = 0
    validation_prompts: tuple[str, ...] = ()
    validation_steps: int = 10

    def __post_init__(self):
        """Check the tracking and validation settings (the rest are checked where they are used)."""
        if self.log_with not in LOG_WITH:
            raise InputError(f"log_with must be one of {', '.join(LOG_WITH)}, got {self.log_with!r}")
        prompts = self.validation_prompts
        if isinstance(prompts, str) or not all(isinstance(prompt, str) for prompt in prompts):
            raise InputError(f"validation_prompts must be a list of prompts, got {prompts!r}")
        self.validation_prompts = tuple(prompts)
        if int(self.validation_every) < 0 or int(self.validation_steps) < 1:
            raise InputError(f"validation_every must be >= 0 (0 = off) and validation_steps >= 1, got "
                             f"{self.validation_every} and {self.validation_steps}")
        if self.validation_every and not self.validation_prompts:
            raise InputError("validation_every is set but validation_prompts is empty: give the prompts to render")
        for name in ("time_budget", "checkpoint_seconds"):
            value = getattr(self, name)
            if value is not None and not float(value) > 0:
                raise InputError(f"{name} must be a number of seconds > 0 (or null: none), got {value!r}")
        if int(self.log_every) < 1:
            raise InputError(f"log_every must be >= 1, got {self.log_every}")
        if not 0.0 <= float(self.long_clip_share) <= 1.0 or int(self.long_clip_multiple) < 2:
            raise InputError(f"long_clip_share must be in [0, 1] and long_clip_multiple >= 2, got "
                             f"{self.long_clip_share} and {self.long_clip_multiple}")
        if self.long_clip_motions is not None:
            from ..data.world import MOTIONS

            motions = self.long_clip_motions
            if isinstance(motions, str) or not motions or not set(motions) <= set(MOTIONS):
                raise InputError(f"long_clip_motions must be a list of some of {list(MOTIONS)} (or null: any), "
                                 f"got {motions!r}")
            self.long_clip_motions = tuple(motions)

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


_END = object()


def infinite(loader, epoch: int = 0, skip: int = 0, skip_batches: Callable | None = None):
    """The loader's batches, epoch after epoch (from ``epoch``), telling it each epoch (``set_epoch``:
    accelerate forwards it to the sampler and the dataset, whose per-epoch draws then differ; a plain
    loader's dataset, e.g. streamed shards, is told directly). ``skip`` batches of the first epoch are
    passed over without being loaded (``skip_batches(loader, n)``: accelerate's), so a resumed run
    continues at the batch it stopped at.

    Raises:
        InputError: an epoch without a single batch (which would otherwise loop forever).
    """
    dataset = getattr(loader, "dataset", None)
    while True:
        source = skip_batches(loader, skip) if skip and skip_batches is not None else loader
        for each in {id(loader): loader, id(source): source}.values():
            if hasattr(each, "set_epoch"):
                each.set_epoch(epoch)
            elif hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
        empty = not skip  # a skipped-into epoch may hold no batch after the skip
        iterator = iter(source)
        while True:
            # Loading draws from torch's global generator (a new epoch's iterator draws its workers' base
            # seed): kept out of the training step's stream, so its draws do not depend on where an epoch
            # starts (or a resumed run restarts one) nor on the number of workers.
            with torch.random.fork_rng(devices=[]):
                batch = next(iterator, _END)
            if batch is _END:
                break
            empty = False
            yield batch
        skip = 0
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


@dataclass
class Validation:
    """How a stage renders its validation samples (``TrainSettings.validation_every``).

    ``render(prompt, seed, steps)`` returns a uint8 clip (T, H, W, 3), saved as mp4, or image (H, W, 3),
    saved as png, sampled from the stage's modules as they are. The loop calls it on the main process
    only, with the EMA weights swapped in and the modules in eval mode, and restores the training state
    (weights, modes, ``requires_grad``) afterwards; its time is left out of the throughput.
    """

    render: Callable[[str, int, int], np.ndarray]
    fps: float = 8.0


class Progress:
    """How far a stage is, in [0, 1]: by steps and, with ``settings.time_budget``, by wall-clock time.

    The clock is read only at log steps (``sync``) and extrapolated in between at the seconds per step
    of the last interval. Why: under DDP every rank must use the same learning rate and stop at the same
    step, but each has its own clock; ``sync`` takes one agreed time (the slowest rank's), so the schedule
    and the stop are pure functions of agreed numbers. Reading the clock every step would also need a
    host-device sync per step to be exact; this needs none.
    """

    def __init__(self, settings: TrainSettings, step: int = 0, seconds: float = 0.0):
        self.steps, self.budget = int(settings.steps), settings.time_budget
        self.synced_step, self.synced_seconds, self.seconds_per_step = int(step), float(seconds), 0.0

    def seconds(self, step: int) -> float:
        """The training seconds at ``step`` (measured at the last sync, extrapolated since)."""
        return self.synced_seconds + max(0, step - self.synced_step) * self.seconds_per_step

    def fraction(self, step: int) -> float:
        done = step / max(1, self.steps)
        if self.budget:
            done = max(done, self.seconds(step) / float(self.budget))
        return min(1.0, done)

    def sync(self, step: int, seconds: float) -> None:
        if step > self.synced_step:
            self.seconds_per_step = max(0.0, seconds - self.synced_seconds) / (step - self.synced_step)
        self.synced_step, self.synced_seconds = int(step), float(seconds)

    def due(self, step: int, interval: int) -> bool:
        """Whether the clock should be read at ``step`` besides every ``interval`` steps: at steps 1, 2, 4, ...
        (a first seconds-per-step before the first interval ends) and whenever the extrapolated time
        reaches the budget, so a stage with slow steps stops within about one step of its budget."""
        if not self.budget:
            return False
        early = step < interval and step & (step - 1) == 0
        return early or self.seconds(step + 1) >= float(self.budget) > self.synced_seconds

    def resume(self, step: int, seconds: float) -> None:
        """Continue a run that had trained ``seconds`` by ``step`` (from its checkpoint)."""
        self.synced_step, self.synced_seconds, self.seconds_per_step = int(step), float(seconds), 0.0

    def finished(self, step: int) -> bool:
        return step >= self.steps or (self.budget is not None and self.synced_seconds >= float(self.budget))


def train(module: nn.Module, params: list, loader, settings: TrainSettings, output_dir: Path,
          resume: bool = False, description: str = "train", validation: Validation | None = None,
          on_checkpoint: Callable[[int], None] | None = None) -> dict:
    """Train ``params`` of ``module``; returns {"step", "loss", "seconds", "batch_size", "clips_per_second"}.
    EMA weights are copied in at the end.

    ``params`` is a list of parameters, or of optimizer parameter groups (dicts with "params" and an
    optional "lr_scale" relative to ``settings.lr``), e.g. temporal layers at full rate, spatial at 0.1x.
    Denormals are flushed for the duration of the run (tiny late-training values as denormals slow CPU
    math by 10x+); the previous setting is restored afterwards.

    The stage ends at ``settings.steps`` or, with ``settings.time_budget``, when that many seconds have
    passed (checkpoints included), whichever comes first (``Progress``). ``on_checkpoint(step)`` is called
    on every process after each checkpoint with the EMA weights swapped into ``params`` (e.g. to write
    the stage's model where a time-boxed run's latest usable result is picked up).
    """
    with flush_denormals():
        return _train(module, params, loader, settings, Path(output_dir), resume, description, validation,
                      on_checkpoint)


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
           description: str, validation: Validation | None, on_checkpoint: Callable[[int], None] | None) -> dict:
    log_with = _log_with(settings)
    process_state()  # the process group first (see processes.py)
    # Every optimizer step takes exactly grad_accum micro-batches, also across epoch ends (accelerate
    # would otherwise cut the step at each end of the loader while still dividing the loss by grad_accum).
    # The shuffle is a function of (seed, epoch), not of the global generator, so a resumed run sees
    # the order the uninterrupted one saw.
    accelerator = Accelerator(gradient_accumulation_plugin=GradientAccumulationPlugin(
                                  num_steps=settings.grad_accum, sync_with_dataloader=False),
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True,
                                                                        data_seed=int(settings.seed)),
                              mixed_precision=settings.mixed_precision,
                              log_with=log_with, project_config=ProjectConfiguration(project_dir=str(output_dir),
                                                                                     logging_dir=str(output_dir)))
    if settings.log_with == "auto" and log_with is None and not _NOTICES:
        _NOTICES.add("auto")
        accelerator.print("training metrics are not tracked: `pip install tensorboard` to log them, or set "
                          "train.log_with to \"none\" to silence this")
    refuse_sharded_parameters(accelerator)
    check_replicas(accelerator, module, description)
    sharded = shards_optimizer_state(accelerator)
    set_seed(process_seed(settings.seed, accelerator.process_index))
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    groups = [{"params": [p for p in g["params"] if p.requires_grad], "lr": settings.lr * g.get("lr_scale", 1.0)}
              for g in groups]
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError(f"{description}: nothing to train (no parameter requires grad)")
    if accelerator.device.type == "cuda":  # fixed shapes: let cuDNN pick the fastest kernels once
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    progress = Progress(settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, settings, progress.fraction(s)))
    # foreach: one fused update over all EMA tensors (a loop over them costs a kernel launch each on a GPU).
    ema = (EMAModel(params, decay=settings.ema_decay, use_ema_warmup=True, power=2 / 3, foreach=True)
           if settings.ema_decay else None)

    step = 0
    checkpoint = latest_checkpoint(output_dir / "checkpoints") if resume else None
    if checkpoint is not None and sharded:
        step = checkpoint_step(checkpoint)  # the shards load after prepare (below)
    elif checkpoint is not None:
        meta = load_training_state(checkpoint, module, optimizer, ema, schedule)
        step = int(meta["step"])
        progress.resume(step, float((meta or {}).get("seconds", 0.0)))
        accelerator.print(f"{description}: resumed from {checkpoint} at step {step}")
    check_enough_data(loader, settings, accelerator.num_processes, description)
    if getattr(loader.dataset, "splits_across_processes", False):
        # Streamed shards already give each rank its own share: accelerate would instead read them all on
        # the main process and send the batches out (or have every rank read everything).
        module, optimizer = accelerator.prepare(module, optimizer)
        loader = _OnDevice(loader, accelerator.device)
    else:
        module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    if checkpoint is not None and sharded:
        meta = load_sharded_training_state(accelerator, checkpoint, ema, schedule)
        progress.resume(step, float((meta or {}).get("seconds", 0.0)))
        accelerator.print(f"{description}: resumed from {checkpoint} at step {step}")
    if ema is not None:  # after any load: EMA shadows load on the CPU
        ema.to(accelerator.device)
    train_frozen_in_eval(module)
    # A resumed run continues at the batch it stopped at (the shuffle is a function of the epoch); streamed
    # data (no length) continues in epoch ``step x grad_accum``, one no earlier run reached (an epoch has
    # at least one batch).
    batches_done = step * settings.grad_accum
    if _sized(loader):
        epoch, skip = divmod(batches_done, len(loader))
    else:
        epoch, skip = (batches_done if step else 0), 0
    batches = infinite(loader, epoch=epoch, skip=skip, skip_batches=accelerator.skip_first_batches)
    if log_with:
        # TensorBoard: events under <stage dir>/logs; W&B: project "lumiere", the run named after the stage.
        accelerator.init_trackers("logs" if log_with == "tensorboard" else "lumiere",
                                  config=_hparams(settings, description, accelerator.num_processes),
                                  init_kwargs={"wandb": {"name": description, "dir": str(output_dir)}})
    running, started = None, time.time()
    clock_start = time.perf_counter() - progress.synced_seconds  # a resumed run's budget counts its earlier time
    # Throughput over each logging interval, less the time spent checkpointing and validating. The loss
    # is summed on the device and read once per interval: reading it every step would wait for the GPU.
    interval = {"loss": torch.zeros((), device=accelerator.device), "steps": 0, "start": time.perf_counter(),
                "excluded": 0.0}
    throughput = {"clips": 0, "seconds": 0.0}
    last_checkpoint = progress.synced_seconds
    bar = tqdm(total=None if settings.time_budget else settings.steps, initial=step, desc=description, disable=not accelerator.is_local_main_process)
    try:
        while not progress.finished(step):
            # Every draw of a step (timesteps, noise, masks) comes from a seed of (step, rank): each rank
            # draws its own, and a resumed run draws exactly what the uninterrupted one would have.
            set_seed(process_seed(settings.seed, accelerator.process_index, step, accelerator.num_processes))
            step_loss = torch.zeros((), device=accelerator.device)
            for _ in range(settings.grad_accum):
                with accelerator.accumulate(module):
                    loss = module(next(batches))
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and settings.max_grad_norm:
                        accelerator.clip_grad_norm_(params, settings.max_grad_norm)
                    optimizer.step()  # accelerate's wrapper skips it on accumulation micro-batches
                    optimizer.zero_grad(set_to_none=True)
                step_loss += loss.detach().float() / settings.grad_accum
            assert accelerator.sync_gradients, "an optimizer step must end on its last micro-batch"
            applied_lr = schedule.get_last_lr()[0]  # the rate this step used (logged to the tracker)
            # The schedule counts optimizer steps, not micro-batches (else warm-up ends grad_accum x early);
            # an fp16 step skipped for overflow does not advance it either.
            if not accelerator.optimizer_step_was_skipped:
                schedule.step()
            step += 1
            if ema is not None:
                ema.step(params)
            interval["loss"] += step_loss
            interval["steps"] += 1
            bar.update(1)
            if step % settings.log_every == 0 or step >= settings.steps or progress.due(step, settings.log_every):
                # The agreed clock (the slowest rank's) decides the schedule and the stop on every rank.
                elapsed = torch.tensor(time.perf_counter() - clock_start, device=accelerator.device)
                progress.sync(step, accelerator.reduce(elapsed, reduction="max").item())
                value = _interval_metrics(accelerator, interval, throughput, settings)
                running = value if running is None else 0.8 * running + 0.2 * value
                bar.set_postfix(loss=f"{running:.4f}", lr=f"{schedule.get_last_lr()[0]:.2e}")
                if log_with:
                    accelerator.log({"train/loss": value, "train/lr": applied_lr,
                                     "train/clips_per_second": throughput["last"]}, step=step)
            paused = time.perf_counter()
            stop = progress.finished(step)
            due = settings.checkpoint_seconds and progress.seconds(step) - last_checkpoint >= settings.checkpoint_seconds
            if step % settings.checkpoint_every == 0 or stop or due:
                last_checkpoint = progress.seconds(step)
                accelerator.wait_for_everyone()
                meta = {"loss": running, "seconds": progress.seconds(step)}
                if sharded:  # every rank writes its optimizer shard
                    save_sharded_training_state(accelerator, output_dir / "checkpoints", step, ema, meta, schedule)
                elif accelerator.is_main_process:
                    save_training_state(output_dir / "checkpoints", step, accelerator.unwrap_model(module), optimizer,
                                        ema, meta, schedule)
                if accelerator.is_main_process:
                    prune_checkpoints(output_dir / "checkpoints")
                if on_checkpoint is not None:
                    _with_ema_weights(ema, params, on_checkpoint, step)
            if validation is not None and settings.validation_every and step % settings.validation_every == 0:
                if accelerator.is_main_process:
                    _validate(validation, settings, accelerator, module, params, ema, output_dir, step)
                accelerator.wait_for_everyone()
            interval["excluded"] += time.perf_counter() - paused
        bar.close()
        accelerator.wait_for_everyone()
    finally:
        # Flush and close the trackers, also when interrupted. Not accelerator.end_training(): it also destroys
        # the process group, which the next stage of a multi-process run still needs.
        for tracker in accelerator.trackers:
            tracker.finish()
    if ema is not None:
        ema.copy_to(params)
    return {"step": step, "loss": running, "seconds": time.time() - started,
            "batch_size": settings.batch_size * settings.grad_accum * accelerator.num_processes,
            "clips_per_second": throughput["clips"] / throughput["seconds"] if throughput["seconds"] else None}


_NOTICES: set[str] = set()  # one-time notices already printed by this process


def refuse_sharded_parameters(accelerator: Accelerator) -> None:
    """Raise InputError under FSDP or DeepSpeed ZeRO-3.

    Why: they shard the parameters themselves. The loop keeps the trained parameters' list for EMA and
    gradient clipping (under FSDP those become stale copies) and a stage writes its model's weights at its
    end from the main process (one rank's shard there): both would be silently wrong.
    """
    advice = ("use DDP (configs/accelerate/multi_gpu.yaml) or DeepSpeed ZeRO-2 "
              "(configs/accelerate/deepspeed_zero2.yaml), which shard only the optimizer state and gradients")
    if accelerator.distributed_type == DistributedType.FSDP:
        raise InputError(f"FSDP is not supported: it shards the parameters, which the EMA and the weights a stage "
                         f"writes need whole; {advice}")
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        stage = getattr(accelerator.state.deepspeed_plugin, "zero_stage", None)
        if stage == 3:
            raise InputError(f"DeepSpeed ZeRO stage 3 is not supported: it shards the parameters, which the EMA and "
                             f"the weights a stage writes need whole; {advice}")


def _log_with(settings: TrainSettings) -> str | None:
    """The tracker accelerate logs to (None: none), from ``settings.log_with``.

    Raises:
        InputError: a tracker asked for by name whose package is not installed.
    """
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    if settings.log_with == "none":
        return None
    if settings.log_with == "auto":
        return "tensorboard" if available["tensorboard"] else None
    if not available[settings.log_with]:
        raise InputError(f"log_with {settings.log_with!r}: the {settings.log_with} package is not installed "
                         f"(pip install {settings.log_with}), or set log_with to \"none\"")
    return settings.log_with


def _hparams(settings: TrainSettings, description: str, num_processes: int) -> dict:
    """The run's settings as tracker hyper-parameters (TensorBoard takes only numbers, strings and bools)."""
    values = {**dataclasses.asdict(settings), "stage": description, "num_processes": num_processes}
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


def _interval_metrics(accelerator: Accelerator, interval: dict, throughput: dict, settings: TrainSettings) -> float:
    """The interval's mean loss (over every process; one host-device sync) and its clips per second (also
    added to the stage's totals in ``throughput``, its last value under "last"); resets the interval.

    Called on every process (the loss is averaged across them)."""
    steps = max(1, interval["steps"])
    loss = accelerator.reduce(interval["loss"] / steps, reduction="mean").item()
    seconds = max(1e-9, time.perf_counter() - interval["start"] - interval["excluded"])
    clips = interval["steps"] * settings.batch_size * settings.grad_accum * accelerator.num_processes
    throughput.update(clips=throughput["clips"] + clips, seconds=throughput["seconds"] + seconds, last=clips / seconds)
    interval.update(loss=torch.zeros((), device=accelerator.device), steps=0, start=time.perf_counter(), excluded=0.0)
    return loss


def _with_ema_weights(ema, params: list, action: Callable[[int], None], step: int) -> None:
    """Run ``action(step)`` with the EMA weights in ``params`` (the ones a stage exports), then put the
    training weights back."""
    if ema is None:
        action(step)
        return
    ema.store(params)
    ema.copy_to(params)
    try:
        action(step)
    finally:
        ema.restore(params)


def _validate(validation: Validation, settings: TrainSettings, accelerator: Accelerator, module: nn.Module,
              params: list, ema, output_dir: Path, step: int) -> None:
    """Render the validation prompts from the current weights (the EMA ones if the run keeps them), save them
    under ``validation/step-NNNNNNN/`` and show them in the tracker; the training state is restored after."""
    grads = [(p, p.requires_grad) for p in module.parameters()]  # a pipeline freezes what it samples with
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    module.eval()
    try:
        samples = [(prompt, validation.render(prompt, settings.seed, settings.validation_steps))
                   for prompt in settings.validation_prompts]
    finally:
        if ema is not None:
            ema.restore(params)
        for param, flag in grads:
            param.requires_grad_(flag)
        train_frozen_in_eval(module)
    paths = write_samples(output_dir / "validation" / f"step-{step:07d}", samples, validation.fps)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":  # torch's add_video needs moviepy 1.x: the frames as one image
            for (_, sample), path in zip(samples, paths):
                tracker.writer.add_image(f"validation/{path.stem}", frame_grid(sample), step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({f"validation/{path.stem}": wandb.Video(str(path), caption=prompt, format="mp4")
                         if path.suffix == ".mp4" else wandb.Image(str(path), caption=prompt)
                         for (prompt, _), path in zip(samples, paths)}, step=step)


def write_samples(directory: Path, samples: list[tuple[str, np.ndarray]], fps: float) -> list[Path]:
    """Write (prompt, uint8 clip (T, H, W, 3) or image (H, W, 3)) samples as NN-<prompt>.mp4 / .png."""
    from ..io import write_image, write_video
    from ..pipeline_format import slugify

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (prompt, sample) in enumerate(samples):
        path = directory / f"{index:02d}-{slugify(prompt) or 'empty'}{'.mp4' if sample.ndim == 4 else '.png'}"
        (write_video(path, sample, fps) if sample.ndim == 4 else write_image(path, sample))
        paths.append(path)
    return paths


def frame_grid(sample: np.ndarray, columns: int = 8) -> np.ndarray:
    """A clip (T, H, W, 3) as one image, ``columns`` frames a row (an image is returned as it is)."""
    if sample.ndim == 3:
        return sample
    frames, height, width, channels = sample.shape
    columns = min(columns, frames)
    rows = -(-frames // columns)
    grid = np.zeros((rows * height, columns * width, channels), dtype=sample.dtype)
    for index, frame in enumerate(sample):
        row, column = divmod(index, columns)
        grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = frame
    return grid


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


def _lr_factor(step: int, settings: TrainSettings, fraction: float | None = None) -> float:
    """Linear warm-up then cosine decay to 10% (stable for the short from-scratch runs).

    The cosine runs over the steps after warm-up or, when ``fraction`` (the stage's ``Progress``, time
    included) is further along, over that: a time-boxed stage anneals by its deadline."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = min(1.0, (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps))
    if fraction is not None and settings.time_budget:
        progress = max(progress, fraction)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
