"""Issue 10, the real-model path: LR schedule under accumulation and resume, learned-variance sampling,
real-video temporal augmentation and small-dataset errors, stage skipping, gradient checkpointing."""
import json
import warnings

import pytest
import torch
from torch import nn

from lumiere.train.loop import TrainSettings, _lr_factor, train


# ----------------------------------------------------------------------------- item 3: LR schedule
class _Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, batch):
        return (self.linear(batch["x"]) - batch["y"]).pow(2).mean()


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
        module = _Regression()
        loader = torch.utils.data.DataLoader(_Points(), batch_size=2, shuffle=True, drop_last=True)
        assert train(module, list(module.parameters()), loader, settings, tmp_path)["step"] == 3
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert _saved_lr(tmp_path, 3) == pytest.approx(0.01 * _lr_factor(3, settings))  # not factor(12): 4x early

    longer = TrainSettings(**{**settings.__dict__, "steps": 7})
    module = _Regression()
    loader = torch.utils.data.DataLoader(_Points(), batch_size=2, shuffle=True, drop_last=True)
    assert train(module, list(module.parameters()), loader, longer, tmp_path, resume=True)["step"] == 7
    assert _saved_lr(tmp_path, 7) == pytest.approx(0.01 * _lr_factor(7, longer))
    meta = json.loads((tmp_path / "checkpoints" / "checkpoint-0000007" / "training_state.json").read_text())
    assert meta["schedule"]["last_epoch"] == 7

