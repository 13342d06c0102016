"""lumiere.train.loop: experiment tracking (accelerate's trackers) and validation samples during training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from lumiere.errors import InputError
from lumiere.train import loop
from lumiere.train.loop import TrainSettings, Validation
from tests.tiny import MICRO_CONFIG


class Probe(nn.Module):
    """A one-weight model whose loss pulls the weight towards 0."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return self.weight.pow(2).sum() + 0 * batch.sum()


def run(tmp_path, validation=None, module=None, **settings):
    module = module or Probe()
    options = dict(steps=3, batch_size=1, warmup_steps=1, ema_decay=None, checkpoint_every=100, log_every=1,
                   log_with="none", lr=0.1)
    loop.train(module, [module.weight], DataLoader(torch.zeros(8, 1), batch_size=1, drop_last=True),
               TrainSettings(**{**options, **settings}), tmp_path, validation=validation)
    return module


def scalars(directory) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for events in directory.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values[tag] = [(event.step, event.value) for event in accumulator.Scalars(tag)]
    return values


def test_tensorboard_logs_loss_lr_and_throughput(tmp_path):
    pytest.importorskip("tensorboard")
    run(tmp_path, log_with="tensorboard")
    logged = scalars(tmp_path / "logs")
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3]
    assert logged["train/loss"][0][1] == pytest.approx(1.0)  # the first step's loss: weight 1, squared
    assert [value for _, value in logged["train/lr"]] == pytest.approx([0.1, 0.1, 0.055], rel=1e-3)  # as applied
    assert all(value > 0 for _, value in logged["train/clips_per_second"])


def test_none_writes_no_events_and_auto_falls_back_with_a_notice(tmp_path, monkeypatch, capsys):
    run(tmp_path / "none", log_with="none")
    assert not list((tmp_path / "none").rglob("events.out.tfevents.*"))

    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    monkeypatch.setattr(loop, "_NOTICES", set())
    run(tmp_path / "auto", log_with="auto")
    run(tmp_path / "auto2", log_with="auto")
    assert capsys.readouterr().out.count("pip install tensorboard") == 1  # once per process
    assert not list(tmp_path.rglob("events.out.tfevents.*"))
    with pytest.raises(InputError, match="tensorboard package is not installed"):
        run(tmp_path / "explicit", log_with="tensorboard")
    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    with pytest.raises(InputError, match="pip install wandb"):
        run(tmp_path / "wandb", log_with="wandb")


@pytest.mark.parametrize("values, message", [
    ({"log_with": "mlflow"}, "log_with must be one of auto, tensorboard, wandb, none"),
    ({"validation_every": 5}, "validation_prompts is empty"),
    ({"validation_prompts": "a red circle"}, "must be a list of prompts"),
    ({"validation_every": -1, "validation_prompts": ["a"]}, "validation_every must be >= 0"),
])
def test_bad_tracking_settings_are_refused(values, message):
    with pytest.raises(InputError, match=message):
        TrainSettings.from_dict(values)


def test_validation_renders_the_ema_weights_at_the_configured_steps(tmp_path):
    def validated(ema_decay):
        module, seen = Probe(), []

        def render(prompt, seed, steps):
            seen.append((prompt, seed, steps, module.weight.item(), module.training))
            module.requires_grad_(False)  # as a pipeline does with what it samples with
            return np.full((4, 8, 8, 3), 128, np.uint8)

        directory = tmp_path / f"ema-{ema_decay}"
        run(directory, Validation(render, fps=4), module, steps=4, ema_decay=ema_decay, validation_every=2,
            validation_prompts=["a red circle", "two squares"], validation_steps=3, seed=7)
        return module, seen, directory

    module, seen, directory = validated(0.5)
    assert [(p, s, n) for p, s, n, *_ in seen] == [("a red circle", 7, 3), ("two squares", 7, 3)] * 2
    assert not any(training for *_, training in seen)  # eval mode while rendering
    assert module.weight.requires_grad and module.training  # the training state is back
    raw, raw_seen, _ = validated(None)
    assert seen[0][3] > raw_seen[0][3]  # the EMA weight (lagging behind the descent from 1), not the raw one
    unvalidated = run(tmp_path / "plain", steps=4, ema_decay=0.5)
    assert module.weight.item() == unvalidated.weight.item()  # validation leaves training unchanged
    files = sorted(p.relative_to(directory).as_posix() for p in (directory / "validation").rglob("*.mp4"))
    assert files == ["validation/step-0000002/00-a-red-circle.mp4", "validation/step-0000002/01-two-squares.mp4",
                     "validation/step-0000004/00-a-red-circle.mp4", "validation/step-0000004/01-two-squares.mp4"]


def test_only_the_main_process_validates(tmp_path, monkeypatch):
    class WorkerAccelerator(Accelerator):
        @property
        def is_main_process(self):
            return False

    monkeypatch.setattr(loop, "Accelerator", WorkerAccelerator)
    calls = []
    run(tmp_path, Validation(lambda *args: calls.append(args) or np.zeros((4, 8, 8, 3), np.uint8)),
        validation_every=1, validation_prompts=["a"])
    assert not calls and not (tmp_path / "validation").exists()


@pytest.mark.parametrize("latent", [False, True], ids=["pixels", "latents"])
def test_stages_write_decodable_validation_samples_and_log_them(tmp_path, latent):
    """The t2i stage renders images, the temporal stage clips of the model's length, from the run's modules
    (a latent model's decoded by its VAE)."""
    from lumiere.io import read_image, read_video
    from lumiere.train.stages import run_stage
    from tests.tiny import LATENT_MODEL

    pytest.importorskip("tensorboard")
    config = dict(MICRO_CONFIG, output_dir=str(tmp_path / "out"), model=LATENT_MODEL if latent else MICRO_CONFIG["model"])
    config["train"] = {**config["train"], "validation_every": 2, "validation_prompts": ["a red circle"],
                       "validation_steps": 2, "log_with": "tensorboard", "checkpoint_every": 100}
    run_stage("t2i", config)
    run_stage("temporal", config)
    out = tmp_path / "out"
    images = [p for p in (out / "t2i" / "validation").rglob("*") if p.is_file()]
    assert [p.name for p in images] == ["00-a-red-circle.png"] and read_image(images[0]).shape == (16, 16, 3)
    clips = sorted((out / "temporal" / "validation").rglob("*.mp4"))
    assert [p.parent.name for p in clips] == ["step-0000002"]
    frames, fps = read_video(clips[0])
    assert frames.shape == (4, 16, 16, 3) and fps == pytest.approx(MICRO_CONFIG["model"]["fps"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(out / "temporal" / "logs"))
    accumulator.Reload()
    assert "validation/00-a-red-circle" in accumulator.Tags()["images"]
    assert {"train/loss", "train/lr", "train/clips_per_second"} <= set(accumulator.Tags()["scalars"])
