"""lumiere.train.loop and lumiere.train.checkpoint: the training loop. Frozen parts stay in eval mode; a resume
gives the uninterrupted run bit for bit (the optimizer state restored, DeepSpeed's sharded checkpoints too);
seeded model construction; every step accumulates full micro-batches and the LR schedule counts optimizer steps;
the checkpoint branch follows accelerate's distributed type; an epoch without batches is an error, not a hang."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lumiere.train import loop
from lumiere.train.loop import TrainSettings, _lr_factor, train, train_frozen_in_eval
from tests.tiny import Regression


def test_frozen_parts_stay_in_eval_mode():
    frozen_encoder = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1)).requires_grad_(False)
    trained = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
    module = nn.ModuleDict({"text_encoder": frozen_encoder, "model": trained})
    module.eval()
    train_frozen_in_eval(module)
    assert not frozen_encoder.training and not frozen_encoder[1].training  # T5-style dropout stays off
    assert trained.training and trained[1].training  # a parameterless layer follows its trained parent
    assert module.training


# ----------------------------------------------------------------------------- exact resume
class Numbers(Dataset):
    """Item i is the number i: which items a step saw is readable from its batch."""

    def __init__(self, length: int = 7):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return torch.tensor([float(index)])


class Probe(nn.Module):
    """A loss that depends on the batch, torch's generator (timesteps / noise) and a numpy generator seeded
    from it (the conditional stage's masks); records what each micro-batch saw."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(-1.0, 1.0, 4))
        self.seen = []

    def forward(self, batch):
        noise = torch.randn(4)
        mask = np.random.default_rng(int(torch.randint(0, 2**62, ()))).random(4)
        self.seen.append((batch.flatten().tolist(), noise.tolist(), mask.tolist()))
        target = batch.mean() + noise * torch.from_numpy(mask).float()
        return ((self.weight - target) ** 2).mean()


class Interrupted(Exception):
    pass


def run(output_dir, steps: int = 6, stop_at: int | None = None, resume: bool = False, **overrides):
    torch.manual_seed(0)
    module = Probe()
    settings = TrainSettings(**{"steps": steps, "batch_size": 2, "grad_accum": 2, "lr": 0.05, "warmup_steps": 1,
                                "ema_decay": 0.9, "checkpoint_every": 2, "log_every": 1, "seed": 3,
                                "log_with": "none", **overrides})

    def interrupt(step):
        if step == stop_at:
            raise Interrupted

    loader = DataLoader(Numbers(), batch_size=2, shuffle=True, drop_last=True)
    try:
        result = loop.train(module, [module.weight], loader, settings, output_dir, resume=resume,
                            on_checkpoint=interrupt)
    except Interrupted:
        result = None
    return module, result


def test_resume_gives_the_uninterrupted_run_bit_for_bit(tmp_path):
    """N steps, a crash, --resume, M steps == N + M uninterrupted: the same batches (mid-epoch: 7 items make
    3 batches of 2, so step 2's data starts inside epoch 1), the same noise and masks, the same weights."""
    whole, _ = run(tmp_path / "whole")
    first, _ = run(tmp_path / "split", stop_at=2)
    rest, _ = run(tmp_path / "split", resume=True)
    assert first.seen + rest.seen == whole.seen
    assert torch.equal(rest.weight, whole.weight)  # EMA weights, copied in at the end
    # Not a replay: a new seed gives other draws.
    other, _ = run(tmp_path / "other", seed=4)
    assert [s[1] for s in other.seen] != [s[1] for s in whole.seen]


def test_every_step_accumulates_grad_accum_micro_batches_across_epoch_ends(tmp_path, monkeypatch):
    """7 items in batches of 2 = 3 batches an epoch; grad_accum 2: each optimizer step still takes 2."""
    sizes, counted = [], [0]

    class Counting(torch.optim.AdamW):
        def step(self, closure=None):
            sizes.append(counted[0])
            counted[0] = 0
            return super().step(closure)

    original = Probe.forward

    def forward(self, batch):
        counted[0] += 1
        return original(self, batch)

    monkeypatch.setattr(torch.optim, "AdamW", Counting)
    monkeypatch.setattr(Probe, "forward", forward)
    module, result = run(tmp_path, steps=5, ema_decay=None)
    assert result["step"] == 5 and sizes == [2] * 5
    assert len(module.seen) == 10


def test_logged_loss_is_the_mean_over_the_micro_batches(tmp_path):
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1))

        def forward(self, batch):  # the loss is the batch's mean item: known for each micro-batch
            return batch.mean() + 0 * self.weight.sum()

    module = Constant()
    settings = TrainSettings(steps=1, batch_size=1, grad_accum=4, warmup_steps=1, ema_decay=None, log_every=1,
                             checkpoint_every=100, log_with="none")
    loader = DataLoader(Numbers(4), batch_size=1, shuffle=False, drop_last=True)
    result = loop.train(module, [module.weight], loader, settings, tmp_path)
    assert result["loss"] == pytest.approx((0 + 1 + 2 + 3) / 4)  # not the last micro-batch's 3


def test_two_runs_of_one_config_start_from_the_same_model(tmp_path):
    """The seed applies before inflate draws the temporal layers: two fresh runs end bit-identical."""
    import json

    from safetensors.torch import load_file

    from lumiere.train.stages import run_stage
    from tests.tiny import MICRO_CONFIG

    config = json.loads(json.dumps(MICRO_CONFIG))

    weights = []
    for index, name in enumerate(("a", "b")):
        run_stage("t2i", config, tmp_path / name, steps=1)
        torch.manual_seed(1000 + index)  # whatever ran before in the process (another run, a test) drew from it
        run_stage("temporal", config, tmp_path / name, steps=1)
        files = sorted((tmp_path / name / "pipeline" / "base").glob("*.safetensors"))
        weights.append({k: v for f in files for k, v in load_file(f).items()})
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resume_restores_optimizer_state(tmp_path):
    from lumiere.train.checkpoint import load_training_state, save_training_state

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_training_state(tmp_path, 7, model, optimizer)
    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    meta = load_training_state(tmp_path / "checkpoint-0000007", fresh, fresh_optimizer)
    assert meta["step"] == 7 and torch.equal(fresh.weight, model.weight)
    state, fresh_state = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg"], fresh_state[i]["exp_avg"]) for i in state)


# ----------------------------------------------------------------------------- the LR schedule
class _Points(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, index):
        x = torch.tensor([index % 5, index % 3, 1.0]) / 4
        return {"x": x, "y": x.sum(0, keepdim=True)}


def _saved_lr(output_dir, step):
    meta = json.loads((output_dir / "checkpoints" / f"checkpoint-{step:07d}" / "training_state.json").read_text())
    return meta["optimizer"]["param_groups"][0]["lr"]


def test_lr_schedule_counts_optimizer_steps_under_accumulation_and_resumes(tmp_path):
    """After k optimizer steps with grad_accum 4 the LR is the schedule's value at k, also across a resume."""
    settings = TrainSettings(steps=3, batch_size=2, lr=0.01, warmup_steps=5, grad_accum=4, ema_decay=None,
                             checkpoint_every=100, log_every=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = Regression()
        loader = torch.utils.data.DataLoader(_Points(), batch_size=2, shuffle=True, drop_last=True)
        assert train(module, list(module.parameters()), loader, settings, tmp_path)["step"] == 3
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert _saved_lr(tmp_path, 3) == pytest.approx(0.01 * _lr_factor(3, settings))  # not factor(12): 4x early

    longer = TrainSettings(**{**settings.__dict__, "steps": 7})
    module = Regression()
    loader = torch.utils.data.DataLoader(_Points(), batch_size=2, shuffle=True, drop_last=True)
    assert train(module, list(module.parameters()), loader, longer, tmp_path, resume=True)["step"] == 7
    assert _saved_lr(tmp_path, 7) == pytest.approx(0.01 * _lr_factor(7, longer))
    meta = json.loads((tmp_path / "checkpoints" / "checkpoint-0000007" / "training_state.json").read_text())
    assert meta["schedule"]["last_epoch"] == 7


# ----------------------------------------------------------------------------- sharded checkpoints and the launcher
class _SameBatch(torch.utils.data.Dataset):
    """Two points, read as one batch of 2: every step sees the same batch, so a resumed run's trajectory
    cannot differ from an uninterrupted one by data order, only by the state it restored."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        x = torch.tensor([index, 1.0 - index, 1.0])
        return {"x": x, "y": x.sum(0, keepdim=True) * 0.5}


def _train_regression(output_dir, steps, resume=False):
    torch.manual_seed(0)
    module = Regression()
    # Warm-up longer than the run: the rate then does not depend on the run length (the cosine part does).
    settings = TrainSettings(steps=steps, batch_size=2, lr=0.05, warmup_steps=10, ema_decay=0.9, checkpoint_every=3,
                             log_every=100, log_with="none")
    loader = torch.utils.data.DataLoader(_SameBatch(), batch_size=2, shuffle=True, drop_last=True)
    train(module, list(module.parameters()), loader, settings, output_dir, resume=resume)
    return module.linear.weight.detach().clone()


def test_sharded_checkpoint_resumes_the_uninterrupted_trajectory(tmp_path, monkeypatch):
    """The DeepSpeed branch (accelerator.save_state / load_state + our EMA and schedule files), run in one process
    by forcing the branch: 3 steps + resume to 6 ends where 6 uninterrupted steps do (weights are the EMA's)."""
    import lumiere.train.loop as loop

    plain = _train_regression(tmp_path / "plain", 6)
    monkeypatch.setattr(loop, "shards_optimizer_state", lambda accelerator: True)
    uninterrupted = _train_regression(tmp_path / "uninterrupted", 6)
    _train_regression(tmp_path / "resumed", 3)
    checkpoint = tmp_path / "resumed" / "checkpoints" / "checkpoint-0000003"
    meta = json.loads((checkpoint / "training_state.json").read_text())
    assert meta["sharded"] == "sharded" and meta["schedule"]["last_epoch"] == 3 and "ema" in meta
    assert (checkpoint / "sharded" / "model.safetensors").is_file()
    resumed = _train_regression(tmp_path / "resumed", 6, resume=True)
    torch.testing.assert_close(resumed, uninterrupted, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(uninterrupted, plain, rtol=1e-6, atol=1e-7)
    # Without the optimizer state (fresh AdamW moments) the same resume ends elsewhere: the check has teeth.
    monkeypatch.setattr(loop, "load_sharded_training_state",
                        lambda accelerator, checkpoint, ema, schedule: schedule.load_state_dict(
                            json.loads((checkpoint / "training_state.json").read_text())["schedule"]))
    _train_regression(tmp_path / "no_optimizer", 3)
    assert not torch.allclose(_train_regression(tmp_path / "no_optimizer", 6, resume=True), uninterrupted)


def test_checkpoints_refuse_the_other_launcher(tmp_path, monkeypatch):
    """A DeepSpeed checkpoint is not resumed as a plain one (its optimizer state is in shards), nor the reverse."""
    import lumiere.train.loop as loop
    from lumiere.errors import InputError
    from lumiere.train.checkpoint import load_training_state

    _train_regression(tmp_path / "plain", 3)
    monkeypatch.setattr(loop, "shards_optimizer_state", lambda accelerator: True)
    with pytest.raises(InputError, match="without DeepSpeed"):
        _train_regression(tmp_path / "plain", 6, resume=True)
    _train_regression(tmp_path / "sharded", 3)
    module = Regression()
    with pytest.raises(InputError, match="DeepSpeed ZeRO run"):
        load_training_state(tmp_path / "sharded" / "checkpoints" / "checkpoint-0000003", module,
                            torch.optim.AdamW(module.parameters()))


@pytest.mark.parametrize("kind, zero_stage, sharded, refused", [
    ("NO", None, False, None), ("MULTI_GPU", None, False, None), ("DEEPSPEED", 2, True, None),
    ("DEEPSPEED", 3, True, "ZeRO stage 3"), ("FSDP", None, False, "FSDP is not supported")])
def test_branch_selection_by_distributed_type(kind, zero_stage, sharded, refused):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from lumiere.errors import InputError
    from lumiere.train.checkpoint import shards_optimizer_state
    from lumiere.train.loop import refuse_sharded_parameters

    accelerator = SimpleNamespace(distributed_type=DistributedType[kind],
                                  state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=zero_stage)))
    assert shards_optimizer_state(accelerator) is sharded
    if refused:
        with pytest.raises(InputError, match=refused):
            refuse_sharded_parameters(accelerator)
    else:
        refuse_sharded_parameters(accelerator)


# ----------------------------------------------------------------------------- empty epochs
@pytest.mark.timeout(30)
def test_an_epoch_without_batches_is_an_error_not_a_hang():
    from lumiere.errors import InputError
    from lumiere.train.loop import infinite

    with pytest.raises(InputError, match="no batch in a whole epoch"):
        next(infinite([]))
