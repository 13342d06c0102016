"""lumiere.sampling: the noise schedule and the samplers.

The schedule is a model property (scheduler config ``snr_shift``): the training objective and every sampler
resolve it the same way, a saved pipeline keeps it, and pipelines saved without it sample as before. A pretrained
T2I's own scheduler config (DeepFloyd IF's: DDPM, learned_range variance, dynamic thresholding) is the pipeline's,
under the model config's ``model.scheduler``, and its thresholding applies. Every sampler runs on a learned-variance
(2C-channel) U-Net. The initial noise's priors keep unit variance per frame and correlate frames (around the loop
for a loop)."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from lumiere.build import DEFAULT_SCHEDULER
from lumiere.errors import InputError
from lumiere.options import SAMPLERS
from lumiere.sampling import make_scheduler, noise_schedule_config
from lumiere.train.stages import DiffusionObjective
from tests.tiny import TINY_CONFIG, TINY_WORDS

# DeepFloyd/IF-I-*-v1.0's scheduler/scheduler_config.json, as published, plus a key no supported scheduler reads
IF_SCHEDULER = {"_class_name": "DDPMScheduler", "_diffusers_version": "0.16.0.dev0", "beta_end": 0.02,
                "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, "clip_sample": True,
                "clip_sample_range": 1.0, "dynamic_thresholding_ratio": 0.95, "num_train_timesteps": 1000,
                "prediction_type": "epsilon", "sample_max_value": 1.5, "thresholding": True, "trained_betas": None,
                "variance_type": "learned_range"}
IF_LIKE_SCHEDULER = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                     "prediction_type": "epsilon", "variance_type": "learned_range", "clip_sample": False}


# ----------------------------------------------------------------------------- the noise schedule
def _snr(alphas: torch.Tensor) -> torch.Tensor:
    alphas = alphas.double()
    return alphas / (1 - alphas)


def test_a_shift_divides_every_snr_by_its_square():
    plain = make_scheduler(DEFAULT_SCHEDULER).alphas_cumprod
    shifted = make_scheduler({**DEFAULT_SCHEDULER, "snr_shift": 4.0}).alphas_cumprod
    assert torch.allclose(_snr(shifted), _snr(plain) / 16, rtol=1e-3)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_training_and_every_sampler_use_the_same_schedule(sampler):
    """Fails if the objective (what the model learns at each t) and a sampler (what it is asked at t) disagree."""
    for extra in ({"snr_shift": 3.0}, {"snr_shift": 3.0, "rescale_betas_zero_snr": True}, {}):
        config = {**DEFAULT_SCHEDULER, **extra}
        trained = DiffusionObjective(config).schedule.alphas_cumprod
        sampled = make_scheduler(config, sampler).alphas_cumprod
        # With zero terminal SNR, diffusers' ODE solvers put 2^-24 at the last level instead of 0 (a finite sigma).
        assert torch.allclose(trained, sampled, rtol=1e-6, atol=1e-7), (sampler, extra)


def test_zero_terminal_snr_combines_with_the_shift():
    alphas = make_scheduler({**DEFAULT_SCHEDULER, "snr_shift": 2.0, "rescale_betas_zero_snr": True}, "ddpm").alphas_cumprod
    assert float(alphas[-1]) == pytest.approx(0.0, abs=1e-12)
    assert float(alphas[0]) > 0.99


def test_a_config_without_a_shift_is_unchanged():
    assert noise_schedule_config(DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER
    assert noise_schedule_config({**DEFAULT_SCHEDULER, "snr_shift": 1}) == DEFAULT_SCHEDULER


@pytest.mark.parametrize("shift", [0, -2, "4", True])
def test_a_bad_shift_is_refused(shift):
    with pytest.raises(InputError, match="snr_shift"):
        make_scheduler({**DEFAULT_SCHEDULER, "snr_shift": shift})


def test_a_saved_pipelines_schedule_round_trips_and_drives_sampling(tiny_pipeline_dir, tmp_path):
    from lumiere import LumierePipeline

    old = LumierePipeline.from_pretrained(tiny_pipeline_dir, device="cpu")
    assert "snr_shift" not in old.scheduler_config  # saved before the key existed: loads as it was
    shifted = LumierePipeline.from_pretrained(tiny_pipeline_dir, device="cpu")
    shifted.scheduler_config["snr_shift"] = 4.0
    shifted.save_pretrained(tmp_path / "shifted")
    loaded = LumierePipeline.from_pretrained(tmp_path / "shifted", device="cpu")
    assert loaded.scheduler_config["snr_shift"] == 4.0
    kwargs = {"seed": 3, "num_inference_steps": 3, "super_resolve": False}
    again = LumierePipeline.from_pretrained(tiny_pipeline_dir, device="cpu")
    assert np.array_equal(old.text_to_video("a red circle", **kwargs), again.text_to_video("a red circle", **kwargs))
    assert np.array_equal(loaded.text_to_video("a red circle", **kwargs), shifted.text_to_video("a red circle", **kwargs))
    assert not np.array_equal(loaded.text_to_video("a red circle", **kwargs), old.text_to_video("a red circle", **kwargs))
    # The sampler asks the model at other noise levels: the first step's sigma grows by the shift.
    first = {name: make_scheduler(p.scheduler_config, "euler") for name, p in (("old", old), ("new", loaded))}
    for scheduler in first.values():
        scheduler.set_timesteps(3)
    assert float(first["new"].sigmas[0]) == pytest.approx(4 * float(first["old"].sigmas[0]), rel=1e-3)
    assert math.isfinite(float(first["new"].sigmas[0]))


# ----------------------------------------------------------------------------- a pretrained T2I's scheduler config
@pytest.fixture(scope="module")
def if_like_folder(tmp_path_factory):
    """A tiny folder laid out as an IF repo: unet/ (2C = 6 output channels) and scheduler/."""
    from diffusers import UNet2DConditionModel

    root = tmp_path_factory.mktemp("if_like")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**TINY_CONFIG["t2i"]["unet"], "out_channels": 6},
                                cross_attention_dim=TINY_CONFIG["text_encoder"]["hidden_size"])
    unet.save_pretrained(root / "unet", safe_serialization=True)
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({**IF_SCHEDULER, "not_a_scheduler_key": 1}))
    return root


def _model(root, scheduler=None, subfolder="unet"):
    config = copy.deepcopy(TINY_CONFIG)
    config["t2i"] = {"pretrained": str(root if subfolder else root / "unet"), "subfolder": subfolder}
    if scheduler is not None:
        config["scheduler"] = scheduler
    return config


def test_the_published_scheduler_config_is_the_base_of_the_pipelines(if_like_folder, caplog):
    from lumiere.build import DEFAULT_SCHEDULER, model_scheduler_config

    with caplog.at_level("WARNING", logger="lumiere.build"):
        config = model_scheduler_config(_model(if_like_folder, {"prediction_type": "epsilon", "snr_shift": 2.0}))
    assert "not_a_scheduler_key" in caplog.text and "not_a_scheduler_key" not in config
    assert {k: config[k] for k in IF_SCHEDULER} == IF_SCHEDULER  # every IF key kept, none of Lumiere's defaults
    assert config["snr_shift"] == 2.0 and "timestep_spacing" not in config
    # the U-Net folder named directly (no subfolder): its pipeline folder's scheduler
    assert model_scheduler_config(_model(if_like_folder, subfolder=None))["thresholding"] is True
    # model.scheduler over it; a T2I without a published config keeps Lumiere's default
    assert model_scheduler_config(_model(if_like_folder, {"thresholding": False}))["thresholding"] is False
    assert model_scheduler_config(TINY_CONFIG) == DEFAULT_SCHEDULER


def test_the_built_pipeline_and_the_training_workspace_agree(if_like_folder, tmp_path):
    from lumiere import LumierePipeline
    from lumiere.build import build_pipeline, model_scheduler_config
    from lumiere.train.stages import Workspace
    from tests.tiny import MICRO_CONFIG

    model = _model(if_like_folder)
    pipe = build_pipeline(model, words=TINY_WORDS, with_ssr=False, with_conditional=False)
    assert pipe.scheduler_config == model_scheduler_config(model)
    assert pipe.base.t2i.config.out_channels == 6
    pipe.save_pretrained(tmp_path / "saved")
    assert LumierePipeline.from_pretrained(tmp_path / "saved", device="cpu").scheduler_config["thresholding"] is True
    run = copy.deepcopy(MICRO_CONFIG)
    run["model"]["t2i"] = {"pretrained": str(if_like_folder), "subfolder": "unet"}
    ws = Workspace(run, tmp_path / "run")
    assert ws.scheduler_config["thresholding"] is True and ws.scheduler_config["variance_type"] == "learned_range"
    objective = ws.objective(ws.settings("temporal"))
    assert objective.variance_type == "learned_range" and objective.prediction_type == "epsilon"


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++", "unipc"])
def test_thresholding_applies_in_sampling(if_like_folder, sampler, monkeypatch):
    """Every solver that thresholds (diffusers: DDPM / DDIM in ``step``, DPM-Solver++ / UniPC when converting
    the output) does so on the pipeline's x0; turning it off in model.scheduler changes the video."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    from lumiere.build import build_pipeline

    cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler,
           "unipc": UniPCMultistepScheduler}[sampler]
    calls = []
    original = cls._threshold_sample

    def spy(self, sample):
        out = original(self, sample)
        calls.append((sample.detach().clone(), out.detach().clone()))
        return out

    monkeypatch.setattr(cls, "_threshold_sample", spy)
    torch.manual_seed(0)
    pipe = build_pipeline(_model(if_like_folder), words=TINY_WORDS, with_ssr=False, with_conditional=False)
    with torch.no_grad():  # a random U-Net: push its x0 past the range so thresholding has work to do
        pipe.base.t2i.conv_out.bias[:3] += 3.0
    video = pipe.text_to_video("a red circle", sampler=sampler, seed=0, num_inference_steps=3, super_resolve=False)
    assert len(calls) >= 3
    for before, after in calls:
        assert after.abs().max() <= 1.0 + 1e-6  # dynamic thresholding: clamp to [-s, s] then / s
        assert before.abs().max() > 1.0
    calls.clear()
    pipe.scheduler_config = {**pipe.scheduler_config, "thresholding": False}
    unthresholded = pipe.text_to_video("a red circle", sampler=sampler, seed=0, num_inference_steps=3,
                                       super_resolve=False)
    assert not calls and not (video == unthresholded).all()


# ----------------------------------------------------------------------------- learned-variance U-Nets
@pytest.fixture(scope="module")
def learned_variance_pipe():
    """A tiny pipeline whose T2I U-Net outputs 2C = 6 channels (mean, variance), as DeepFloyd IF's do."""
    import copy

    from lumiere.build import build_pipeline

    from tests.tiny import TINY_CONFIG, TINY_WORDS

    config = copy.deepcopy(TINY_CONFIG)
    config["t2i"]["unet"]["out_channels"] = 6
    torch.manual_seed(0)
    pipe = build_pipeline(config, words=TINY_WORDS, with_ssr=False)
    assert pipe.base.t2i.config.out_channels == 6 and pipe.base.t2i.config.in_channels == 3
    return pipe


@pytest.mark.parametrize("scheduler_config", [None, IF_LIKE_SCHEDULER], ids=["v-prediction", "if-like"])
@pytest.mark.parametrize("sampler", ["dpm++", "ddim", "ddpm", "euler", "unipc"])
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


@pytest.mark.parametrize("sampler", ["dpm++", "ddim", "euler", "ddpm", "unipc"])
def test_solvers_without_variance_use_the_first_channels(sampler):
    """A 2C-channel prediction samples exactly like its first C channels (guidance and x0 constraints
    included), except with DDPM's learned variance, which reads the other C."""
    from lumiere.build import DEFAULT_SCHEDULER
    from lumiere.denoisers import Constrained, Guided, Parametrisation, sample
    from lumiere.sampling import make_scheduler

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
            denoiser = Constrained(Guided(predict, text, uncond, 3.0, Parametrisation(scheduler)),
                                   lambda x0: x0.clamp(-1, 1))
            results.append(sample(denoiser, x, scheduler, scheduler.timesteps, torch.Generator().manual_seed(2)))
        assert results[0].shape == (1, 3, 8, 8) and torch.isfinite(results[0]).all()
        if learned:
            assert not torch.allclose(results[0], results[1])  # the learned variance is used
        else:
            assert all(torch.equal(results[0], other) for other in results[1:])


# ----------------------------------------------------------------------------- the initial noise
def _neighbour_correlation(noise: torch.Tensor) -> float:
    """Mean correlation between consecutive frames of (B, C, F, H, W) noise."""
    return float((noise[:, :, 1:] * noise[:, :, :-1]).mean() / noise.pow(2).mean())


@pytest.mark.parametrize("kind", ["mixed", "progressive"])
def test_noise_prior_keeps_unit_variance_and_correlates_frames(kind):
    from lumiere.options import NoisePrior
    from lumiere.sampling import initial_noise

    shape = (4, 3, 8, 32, 32)
    independent = initial_noise(shape, torch.Generator().manual_seed(0), "cpu", torch.float32, NoisePrior())
    assert torch.equal(independent, torch.randn(shape, generator=torch.Generator().manual_seed(0)))  # same seeds, same videos
    for alpha in (1.0, 2.0):
        noise = initial_noise(shape, torch.Generator().manual_seed(1), "cpu", torch.float32, NoisePrior(kind, alpha))
        per_frame_variance = noise.transpose(0, 2).reshape(shape[2], -1).var(dim=1)
        assert torch.allclose(per_frame_variance, torch.ones(shape[2]), atol=0.05)  # a T2I's input statistics per frame
        expected = alpha**2 / (1 + alpha**2) if kind == "mixed" else alpha / math.sqrt(1 + alpha**2)
        assert abs(_neighbour_correlation(noise) - expected) < 0.03
    assert abs(_neighbour_correlation(independent)) < 0.03
    images = initial_noise((2, 3, 16, 16), torch.Generator().manual_seed(0), "cpu", torch.float32, NoisePrior(kind))
    assert torch.equal(images, torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(0)))  # no frames


def test_circular_progressive_noise_prior_has_no_seam():
    """The AR(1) chain correlates neighbours but not frame F-1 with frame 0; its circular form (loop=True)
    correlates frames by their distance around the loop; independent noise is the same with or without it."""
    from lumiere.options import NoisePrior
    from lumiere.sampling import initial_noise

    shape = (1, 4, 8, 32, 32)

    def correlations(**kwargs):
        noise = initial_noise(shape, torch.Generator().manual_seed(0), "cpu", torch.float32, **kwargs)
        frames = noise[0].transpose(0, 1).reshape(8, -1)
        return torch.corrcoef(frames), frames.std(dim=1)

    progressive = NoisePrior(kind="progressive", alpha=1.0)
    chain, _ = correlations(prior=progressive)
    loop, std = correlations(prior=progressive, circular=True)
    neighbours = [loop[t, t + 1].item() for t in range(7)]
    assert chain[7, 0] < 0.2 < chain[0, 1] - 0.3  # the chain: a seam
    assert abs(loop[7, 0].item() - np.mean(neighbours)) < 0.05 and min(neighbours) > 0.6
    assert torch.allclose(std, torch.ones(8), atol=0.05)  # still unit variance
    for prior in (None, NoisePrior()):
        a = initial_noise(shape, torch.Generator().manual_seed(0), "cpu", torch.float32, prior)
        b = initial_noise(shape, torch.Generator().manual_seed(0), "cpu", torch.float32, prior, circular=True)
        assert torch.equal(a, b)
