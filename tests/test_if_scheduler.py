"""Issue 26 item 7: a pretrained T2I's own scheduler config (DeepFloyd IF's: DDPM, learned_range variance,
dynamic thresholding) is the pipeline's, under the model config's ``model.scheduler``; thresholding applies."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from tests.tiny import TINY_CONFIG, TINY_WORDS

# DeepFloyd/IF-I-*-v1.0's scheduler/scheduler_config.json, as published, plus a key no supported scheduler reads
IF_SCHEDULER = {"_class_name": "DDPMScheduler", "_diffusers_version": "0.16.0.dev0", "beta_end": 0.02,
                "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, "clip_sample": True,
                "clip_sample_range": 1.0, "dynamic_thresholding_ratio": 0.95, "num_train_timesteps": 1000,
                "prediction_type": "epsilon", "sample_max_value": 1.5, "thresholding": True, "trained_betas": None,
                "variance_type": "learned_range"}


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
