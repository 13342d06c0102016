"""The training loop leaves no global state behind and keeps frozen parts out of training mode."""
import torch
from torch import nn

from lumiere.components import _flushing_denormals, flush_denormals
from lumiere.train.loop import train_frozen_in_eval


def test_flush_denormals_is_scoped():
    for before in (False, True):
        torch.set_flush_denormal(before)
        with flush_denormals():
            assert _flushing_denormals()
        assert _flushing_denormals() == before
    torch.set_flush_denormal(False)


def test_frozen_parts_stay_in_eval_mode():
    frozen_encoder = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1)).requires_grad_(False)
    trained = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
    module = nn.ModuleDict({"text_encoder": frozen_encoder, "model": trained})
    module.eval()
    train_frozen_in_eval(module)
    assert not frozen_encoder.training and not frozen_encoder[1].training  # T5-style dropout stays off
    assert trained.training and trained[1].training  # a parameterless layer follows its trained parent
    assert module.training
