"""lumiere.sampling (flow matching): rectified flow as a model property. A scheduler config naming diffusers'
``FlowMatchEulerDiscreteScheduler`` (with its ``shift``) makes a flow model, trained (``DiffusionObjective``)
and sampled (``sampling.make_scheduler``, ``denoisers.Parametrisation``, SDEdit) on the same σ."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from lumiere.build import DEFAULT_SCHEDULER
from lumiere.denoisers import Constrained, Guided, Parametrisation, sample
from lumiere.errors import InputError
from lumiere.progress import Progress
from lumiere.sampling import flow_shift, is_flow, make_scheduler, scheduler_sampler, sdedit_start
from lumiere.train.stages import DiffusionObjective

FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}


def test_a_flow_config_builds_the_flow_solver_and_only_it():
    assert is_flow(FLOW) and not is_flow(DEFAULT_SCHEDULER)
    assert scheduler_sampler(FLOW) == "euler"  # a pipeline's default sampler for a flow model
    for sampler in (None, "euler"):
        scheduler = make_scheduler(FLOW, sampler)
        assert isinstance(scheduler, FlowMatchEulerDiscreteScheduler) and is_flow(scheduler)
        assert scheduler.config.shift == 3.0 and scheduler.init_noise_sigma == 1.0
    # A training config merges DEFAULT_SCHEDULER's DDPM keys in: they mean nothing to the flow model.
    assert torch.equal(make_scheduler({**DEFAULT_SCHEDULER, **FLOW}).sigmas, make_scheduler(FLOW).sigmas)
    # The objective's shift is the scheduler's.
    reference = FlowMatchEulerDiscreteScheduler(shift=3.0)
    unshifted = torch.arange(1000, 0, -1, dtype=torch.float32) / 1000
    assert torch.allclose(flow_shift(unshifted, 3.0), reference.sigmas, atol=1e-6)


@pytest.mark.parametrize("config, sampler, match", [
    (FLOW, "ddim", "rectified-flow"),
    (FLOW, "dpm++", "rectified-flow"),
    ({**FLOW, "snr_shift": 4.0}, None, "snr_shift"),
    ({**FLOW, "rescale_betas_zero_snr": True}, None, "rescale_betas_zero_snr"),
    ({**FLOW, "shift": 0}, None, "shift"),
    ({**FLOW, "use_dynamic_shifting": True}, None, "use_dynamic_shifting"),
    ({**DEFAULT_SCHEDULER, "shift": 3.0}, None, "shift"),  # the flow option on a DDPM model
    ({**DEFAULT_SCHEDULER, "shift": 3.0}, "euler", "shift"),
    ({**DEFAULT_SCHEDULER, "use_flow_sigmas": True, "prediction_type": "flow_prediction"}, None, "rectified-flow"),
])
def test_bad_combinations_are_refused(config, sampler, match):
    with pytest.raises(InputError, match=match):
        make_scheduler(config, sampler)


def test_the_objective_refuses_ddpm_only_options_for_a_flow_model():
    with pytest.raises(ValueError, match="rectified-flow"):
        DiffusionObjective(FLOW, loss_weighting="min_snr")
    with pytest.raises(ValueError, match="rectified-flow"):
        DiffusionObjective(FLOW, timestep_sampling="high_noise")


def test_the_objective_noises_as_the_scheduler_and_targets_the_velocity():
    objective = DiffusionObjective(FLOW)
    scheduler = make_scheduler(FLOW)  # unset: its 1000 training sigmas, timesteps = sigma x 1000
    timesteps = scheduler.timesteps[[0, 10, 500, 990]]
    clean = torch.rand(4, 3, 4, 8, 8) * 2 - 1
    torch.manual_seed(5)
    noisy, returned, target = objective.noisy(clean, timesteps)
    torch.manual_seed(5)
    noise = torch.randn(clean.shape)  # what the objective drew (sampling.initial_noise, no generator)
    assert torch.equal(returned, timesteps)  # the model's timestep input: sigma x T
    assert torch.allclose(noisy, scheduler.scale_noise(clean, timesteps, noise), atol=1e-6)
    assert torch.allclose(target, noise - clean)
    sigma = scheduler.sigmas[[0, 10, 500, 990]].reshape(-1, 1, 1, 1, 1)
    assert torch.allclose(noisy - sigma * target, clean, atol=1e-5)  # x0 = x_t - sigma v


def test_the_objective_draws_shifted_logit_normal_sigmas_and_keeps_the_terminal_band():
    torch.manual_seed(0)
    plain = DiffusionObjective({**FLOW, "shift": 1.0}).sample_timesteps(20000, "cpu") / 1000
    logit = torch.log(plain) - torch.log1p(-plain)
    assert abs(float(logit.mean())) < 0.05 and abs(float(logit.std()) - 1) < 0.05
    shifted = DiffusionObjective(FLOW).sample_timesteps(20000, "cpu") / 1000
    assert float(shifted.median()) == pytest.approx(0.75, abs=0.02)  # shift(0.5) = 3 x 0.5 / 2
    top = DiffusionObjective(FLOW, terminal_fraction=1.0).sample_timesteps(1000, "cpu")
    assert float(top.min()) >= 990 and float(top.max()) <= 1000
    share = DiffusionObjective(FLOW, terminal_fraction=0.4).sample_timesteps(20000, "cpu")
    assert float((share >= 990).float().mean()) == pytest.approx(0.4, abs=0.02)


def test_the_parametrisation_converts_x0_and_velocity_both_ways():
    scheduler = make_scheduler(FLOW)
    scheduler.set_timesteps(6)
    parametrisation = Parametrisation(scheduler)
    assert parametrisation.kind == "flow"
    generator = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 1, 3, 2, 4, 4, generator=generator)
    for index, t in enumerate(scheduler.timesteps):
        sigma = float(scheduler.sigmas[index])
        x0 = parametrisation.to_x0(x, t, v)
        assert torch.allclose(x0, x - sigma * v, atol=1e-6)
        assert torch.allclose(parametrisation.from_x0(x, t, x0), v, atol=1e-4)


def _oracle(clip: torch.Tensor):
    """A model that returns the exact velocity from x_t toward ``clip``: v = (x_t - clip) / sigma, sigma = t / T."""
    def model(x, t, states):
        return (x - clip) / (float(t) / 1000)
    return model


def test_an_oracle_velocity_recovers_its_clip_and_constraints_act_on_x0():
    generator = torch.Generator().manual_seed(1)
    clip = torch.rand(1, 3, 4, 8, 8, generator=generator) * 2 - 1
    states = torch.zeros(1, 2, 4)
    for steps in (1, 4):
        scheduler = make_scheduler(FLOW)
        scheduler.set_timesteps(steps)
        x = torch.randn(clip.shape, generator=generator) * scheduler.init_noise_sigma
        estimates = []
        progress = Progress(steps, lambda step, total, x0, found=estimates: found.append(x0))
        denoiser = Guided(_oracle(clip), states, None, 1.0, Parametrisation(scheduler))
        out = sample(denoiser, x, scheduler, scheduler.timesteps, None, progress)
        assert torch.allclose(out, clip, atol=1e-4), steps
        assert len(estimates) == steps and all(torch.allclose(e, clip, atol=1e-4) for e in estimates)  # live preview
    # A constraint on x0 (known pixels / low-res projection) steers any model: here a useless one to the clip.
    scheduler = make_scheduler(FLOW)
    scheduler.set_timesteps(3)
    useless = Guided(lambda x, t, states: torch.zeros_like(x), states, None, 1.0, Parametrisation(scheduler))
    out = sample(Constrained(useless, lambda x0: clip), torch.randn(clip.shape, generator=generator), scheduler,
                 scheduler.timesteps, None)
    assert torch.allclose(out, clip, atol=1e-4)


def test_sdedit_starts_on_the_flow_path():
    generator = torch.Generator().manual_seed(2)
    source, noise = torch.randn(2, 1, 3, 2, 4, 4, generator=generator)
    x, timesteps = sdedit_start(make_scheduler(FLOW), 4, 0.0, source, noise)
    assert x is None and len(timesteps) == 0  # strength 0: the input is the result
    x, timesteps = sdedit_start(make_scheduler(FLOW), 4, 1.0, source, noise)
    assert torch.equal(x, noise) and len(timesteps) == 4  # strength 1: pure noise at sigma 1
    scheduler = make_scheduler(FLOW)
    x, timesteps = sdedit_start(scheduler, 4, 0.5, source, noise)
    sigma = float(scheduler.sigmas[2])
    assert len(timesteps) == 2 and torch.allclose(x, (1 - sigma) * source + sigma * noise, atol=1e-6)
    clip = torch.rand(source.shape, generator=generator)  # the oracle then finishes from SDEdit's start
    out = sample(Guided(_oracle(clip), torch.zeros(1, 2, 4), None, 1.0, Parametrisation(scheduler)),
                 (1 - sigma) * clip + sigma * noise, scheduler, timesteps, None)
    assert torch.allclose(out, clip, atol=1e-4)


def test_a_flow_pipeline_samples_and_refuses_other_samplers(tiny_pipe):
    tiny_pipe.scheduler_config = dict(FLOW)
    del tiny_pipe.config["defaults"]["sampler"]  # (build_pipeline writes the library's "dpm++" into every config)
    assert tiny_pipe.defaults.sampler == "euler"  # defaults naming no sampler: the flow model's solver
    kwargs = {"seed": 3, "num_inference_steps": 2, "super_resolve": False}
    video = tiny_pipe.text_to_video("a red circle", **kwargs)
    assert video.dtype == np.uint8 and video.shape[0] == 8
    assert np.array_equal(video, tiny_pipe.text_to_video("a red circle", sampler="euler", **kwargs))
    with pytest.raises(InputError, match="rectified-flow"):
        tiny_pipe.text_to_video("a red circle", sampler="ddim", **kwargs)
    assert np.array_equal(tiny_pipe.video_to_video(video, "a red circle", strength=0.0, **kwargs), video)
    edited = tiny_pipe.video_to_video(video, "a red circle", strength=0.5, **kwargs)
    assert edited.shape == video.shape


def test_a_flow_scheduler_config_round_trips_through_save_and_load(tiny_pipe, tmp_path):
    from lumiere import LumierePipeline

    tiny_pipe.scheduler_config = dict(FLOW)
    tiny_pipe.config["defaults"]["sampler"] = "euler"
    tiny_pipe.save_pretrained(tmp_path / "flow")
    loaded = LumierePipeline.from_pretrained(tmp_path / "flow", device="cpu")
    assert is_flow(loaded.scheduler_config) and loaded.scheduler_config["shift"] == 3.0
    kwargs = {"seed": 3, "num_inference_steps": 2, "super_resolve": False}
    assert np.array_equal(loaded.text_to_video("a red circle", **kwargs), tiny_pipe.text_to_video("a red circle", **kwargs))


def test_a_flow_model_built_from_a_config_samples_with_its_solver_through_the_ssr():
    """``build_pipeline`` gives a flow model the flow Euler solver as its default sampler, and its SSR's
    conditioning augmentation uses a DDPM schedule of its own (``sampling.augmentation_scheduler``)."""
    from lumiere.build import build_pipeline
    from lumiere.sampling import augmentation_scheduler
    from tests.tiny import TINY_CONFIG, TINY_WORDS

    torch.manual_seed(0)
    pipe = build_pipeline({**TINY_CONFIG, "scheduler": dict(FLOW)}, words=TINY_WORDS)
    assert pipe.defaults.sampler == "euler"
    assert augmentation_scheduler(FLOW).config.beta_schedule == "squaredcos_cap_v2"
    video = pipe.text_to_video("a red circle", seed=0, num_inference_steps=2)
    assert video.shape == (8, 32, 32, 3)
