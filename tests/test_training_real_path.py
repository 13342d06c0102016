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


# ----------------------------------------------------------------------------- item 7: learned variance
IF_LIKE_SCHEDULER = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                     "prediction_type": "epsilon", "variance_type": "learned_range", "clip_sample": False}


@pytest.fixture(scope="module")
def learned_variance_pipe():
    """A tiny pipeline whose T2I U-Net outputs 2C = 6 channels (mean, variance), as DeepFloyd IF's do."""
    import copy

    from lumiere.build import build_pipeline

    from conftest import TINY_CONFIG, TINY_WORDS

    config = copy.deepcopy(TINY_CONFIG)
    config["t2i"]["unet"]["out_channels"] = 6
    torch.manual_seed(0)
    pipe = build_pipeline(config, words=TINY_WORDS, with_ssr=False)
    assert pipe.base.t2i.config.out_channels == 6 and pipe.base.t2i.config.in_channels == 3
    return pipe


@pytest.mark.parametrize("scheduler_config", [None, IF_LIKE_SCHEDULER], ids=["v-prediction", "if-like"])
@pytest.mark.parametrize("sampler", ["dpm++", "ddim", "ddpm", "euler"])
def test_every_sampler_runs_on_a_learned_variance_unet(learned_variance_pipe, sampler, scheduler_config):
    from lumiere.options import SAMPLERS

    assert sampler in SAMPLERS
    pipe = learned_variance_pipe
    original = pipe.scheduler_config
    if scheduler_config is not None:
        pipe.scheduler_config = dict(scheduler_config)
    try:
        video = pipe.text_to_video("a red circle", sampler=sampler, seed=0, num_inference_steps=2, super_resolve=False)
        assert video.shape == (8, 16, 16, 3)
        clip = pipe.image_to_video(video[0], "a red circle", sampler=sampler, seed=0, num_inference_steps=2,
                                   super_resolve=False)
        assert clip.shape == (8, 16, 16, 3)
    finally:
        pipe.scheduler_config = original


@pytest.mark.parametrize("sampler", ["dpm++", "ddim", "euler", "ddpm"])
def test_solvers_without_variance_use_the_first_channels(sampler):
    """A 2C-channel prediction samples exactly like its first C channels (guidance and x0 constraints
    included), except with DDPM's learned variance, which reads the other C."""
    from lumiere.build import DEFAULT_SCHEDULER
    from lumiere.sampling import constrain_x0, denoise, guided, make_scheduler

    weights = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))

    def predict_2c(x, t, states):  # a stand-in model: mean and variance channels that depend on x and the text
        return torch.tanh(torch.einsum("oc,bchw->bohw", weights, x) * (1 + states.mean()) + 0.01 * t.float())

    def predict_other_variance(x, t, states):
        out = predict_2c(x, t, states)
        return torch.cat([out[:, :3], -out[:, 3:]], dim=1)

    def predict_c(x, t, states):
        return predict_2c(x, t, states)[:, :3]

    text, uncond = torch.ones(1, 2, 4), torch.zeros(1, 2, 4)
    for config in (DEFAULT_SCHEDULER, IF_LIKE_SCHEDULER):
        learned = sampler == "ddpm" and config is IF_LIKE_SCHEDULER
        results = []
        for predict in (predict_2c, predict_other_variance) + (() if learned else (predict_c,)):
            scheduler = make_scheduler(config, sampler)
            scheduler.set_timesteps(3)
            x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * scheduler.init_noise_sigma
            prediction = constrain_x0(guided(predict, text, uncond, 3.0), scheduler, lambda x0: x0.clamp(-1, 1))
            results.append(denoise(prediction, x, scheduler, scheduler.timesteps, torch.Generator().manual_seed(2)))
        assert results[0].shape == (1, 3, 8, 8) and torch.isfinite(results[0]).all()
        if learned:
            assert not torch.allclose(results[0], results[1])  # the learned variance is used
        else:
            assert all(torch.equal(results[0], other) for other in results[1:])
