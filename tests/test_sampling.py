"""The noise schedule is a model property (scheduler config ``snr_shift``): the training objective and every
sampler resolve it the same way, a saved pipeline keeps it, and pipelines saved without it sample as before."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lumiere.build import DEFAULT_SCHEDULER
from lumiere.errors import InputError
from lumiere.options import SAMPLERS
from lumiere.sampling import make_scheduler, noise_schedule_config
from lumiere.train.stages import DiffusionObjective


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
