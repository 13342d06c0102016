"""lumiere.train.stages.DiffusionObjective: what the stages train on. Timestep sampling and loss weighting
options; the variance channels of a learned-variance U-Net (DeepFloyd IF: 2C outputs) train with improved DDPM's
hybrid loss L_simple + lambda L_vlb while every C-channel model's loss is unchanged; the video stages noise with
the model's noise prior, as its pipeline samples."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lumiere.build import DEFAULT_SCHEDULER
from lumiere.train.stages import DiffusionObjective

IF_LIKE = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
           "prediction_type": "epsilon", "variance_type": "learned_range", "clip_sample": False}
V_LEARNED = {**DEFAULT_SCHEDULER, "variance_type": "learned_range"}


# ----------------------------------------------------------------------------- timestep sampling and loss weighting
def test_diffusion_objective_options():
    from lumiere.build import DEFAULT_SCHEDULER
    from lumiere.train.stages import DiffusionObjective

    uniform = DiffusionObjective(DEFAULT_SCHEDULER)
    high = DiffusionObjective(DEFAULT_SCHEDULER, timestep_sampling="high_noise", loss_weighting="min_snr")
    torch.manual_seed(0)
    assert high.sample_timesteps(4000, "cpu").float().mean() > uniform.sample_timesteps(4000, "cpu").float().mean() + 100
    prediction, target = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    timesteps = torch.tensor([10, 990])
    alphas = high.schedule.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    natural = snr + 1 if high.prediction_type == "v_prediction" else snr
    expected = (snr.clamp(max=5.0) / natural).mean()
    assert torch.allclose(high.loss(prediction, target, timesteps), expected)
    assert torch.allclose(uniform.loss(prediction, target, timesteps), torch.tensor(1.0))
    with pytest.raises(ValueError, match="timestep_sampling"):
        DiffusionObjective(DEFAULT_SCHEDULER, timestep_sampling="late")
    # terminal_fraction: that share of draws lands in the top 1% of the schedule, where the text alone
    # must choose the motion; uniform sampling puts ~1% there.
    terminal = DiffusionObjective(DEFAULT_SCHEDULER, terminal_fraction=0.25)
    share = (terminal.sample_timesteps(8000, "cpu") >= 990).float().mean()
    assert 0.23 < share < 0.28
    assert (uniform.sample_timesteps(8000, "cpu") >= 990).float().mean() < 0.02
    with pytest.raises(ValueError, match="terminal_fraction"):
        DiffusionObjective(DEFAULT_SCHEDULER, terminal_fraction=1.5)


# ----------------------------------------------------------------------------- the variance term
def _batch(objective, timesteps, channels=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(len(timesteps), channels, 8, 8, generator=generator) * 2 - 1
    torch.manual_seed(seed)
    noisy, t, target = objective.noisy(clean, torch.tensor(timesteps))
    return clean, noisy, t, target


@pytest.mark.parametrize("config", [IF_LIKE, V_LEARNED], ids=["epsilon", "v"])
def test_the_variance_term_trains_the_variance_channels_only(config):
    objective = DiffusionObjective(config)
    clean, noisy, t, target = _batch(objective, [0, 3, 400, 999])
    prediction = torch.randn(4, 6, 8, 8).requires_grad_(True)
    term = objective.variance_loss(prediction, clean, noisy, t)
    term.backward()
    assert torch.isfinite(term) and term > 0
    assert torch.count_nonzero(prediction.grad[:, :3]) == 0  # the mean is detached: L_simple trains it
    assert (prediction.grad[:, 3:].flatten(1).abs().sum(1) > 0).all()  # every sample, t = 0 (decoder NLL) too
    # and through loss(): the mean channels get exactly L_simple's gradient
    prediction.grad = None
    objective.loss(prediction, target, t, clean=clean, noisy=noisy).backward()
    mean_grad = prediction.grad[:, :3].clone()
    reference = prediction.detach()[:, :3].clone().requires_grad_(True)
    torch.nn.functional.mse_loss(reference, target).backward()
    assert torch.allclose(mean_grad, reference.grad)


@pytest.mark.parametrize("config", [IF_LIKE, V_LEARNED], ids=["epsilon", "v"])
def test_the_exact_posterior_gives_zero_kl(config):
    """With the true mean and v = -1 (learned_range's frac 0: the posterior variance beta~_t) the KL is ~0;
    any other variance costs more."""
    objective = DiffusionObjective(config)
    timesteps = [1, 10, 250, 500, 750, 990]
    clean, noisy, t, target = _batch(objective, timesteps)
    exact = torch.cat([target, -torch.ones_like(target)], dim=1)
    assert objective.variance_loss(exact, clean, noisy, t).abs() < 1e-4
    for v in (-0.5, 0.0, 1.0):
        other = torch.cat([target, torch.full_like(target, v)], dim=1)
        assert objective.variance_loss(other, clean, noisy, t) > 1e-3


def test_the_kl_matches_a_float64_reference():
    """The term against the formula written out per sample in float64 (KL of two Gaussians, in bits)."""
    objective = DiffusionObjective(IF_LIKE)
    clean, noisy, t, target = _batch(objective, [5, 600])
    prediction = torch.cat([target + 0.1 * torch.randn_like(target), torch.rand_like(target) * 2 - 1], dim=1)
    acp = objective.schedule.alphas_cumprod.double()
    expected = []
    for i, step in enumerate(t.tolist()):
        a, a_prev = acp[step], acp[step - 1]
        beta = 1 - a / a_prev
        post_var = beta * (1 - a_prev) / (1 - a)
        x0 = (noisy[i].double() - (1 - a).sqrt() * prediction[i, :3].double()) / a.sqrt()
        c0, ct = a_prev.sqrt() * beta / (1 - a), (1 - beta).sqrt() * (1 - a_prev) / (1 - a)
        frac = (prediction[i, 3:].double() + 1) / 2
        log_var = frac * beta.log() + (1 - frac) * post_var.log()
        mu_q, mu_p = c0 * clean[i].double() + ct * noisy[i].double(), c0 * x0 + ct * noisy[i].double()
        kl = 0.5 * (-1 + log_var - post_var.log() + post_var / log_var.exp() + (mu_q - mu_p) ** 2 / log_var.exp())
        expected.append(kl.mean() / torch.log(torch.tensor(2.0, dtype=torch.float64)))
    # lambda T = 1e-3 x 1000 = 1
    assert torch.allclose(objective.variance_loss(prediction, clean, noisy, t).double(),
                          torch.stack(expected).mean(), rtol=1e-3)


@pytest.mark.parametrize("config", [DEFAULT_SCHEDULER, IF_LIKE, V_LEARNED], ids=["default", "if-like", "v"])
@pytest.mark.parametrize("weighting", ["none", "min_snr"])
def test_c_channel_models_and_fixed_variance_schedules_are_unchanged(config, weighting):
    """A C-channel output, or 2C channels on a schedule that does not read a variance, lose exactly what
    they lost before (the MSE of the first C channels), with or without clean / x_t."""
    objective = DiffusionObjective(config, loss_weighting=weighting)
    clean, noisy, t, target = _batch(objective, [0, 100, 900])
    prediction = torch.randn(3, 3, 8, 8)
    plain = objective.loss(prediction, target, t)
    assert torch.equal(plain, objective.loss(prediction, target, t, clean=clean, noisy=noisy))
    if weighting == "none":
        assert torch.equal(plain, torch.nn.functional.mse_loss(prediction, target))
    fixed = DiffusionObjective({**config, "variance_type": "fixed_small"}, loss_weighting=weighting)
    wide = torch.cat([prediction, torch.randn(3, 3, 8, 8)], dim=1)
    assert torch.equal(fixed.loss(wide, target, t, clean=clean, noisy=noisy), fixed.loss(prediction, target, t))


@pytest.mark.parametrize("weighting", ["none", "min_snr"])
def test_element_weights_scale_each_squared_error(weighting):
    """``weights`` (the conditional stage's known-pixel weight): all ones is the plain loss; an error on an
    element of weight w counts w times; the weights broadcast over the channels."""
    objective = DiffusionObjective(DEFAULT_SCHEDULER, loss_weighting=weighting)
    _, _, t, target = _batch(objective, [0, 500, 999])
    prediction = torch.randn(3, 3, 8, 8)
    plain = objective.loss(prediction, target, t)
    assert torch.allclose(objective.loss(prediction, target, t, weights=torch.ones(3, 1, 8, 8)), plain)
    known = torch.zeros(3, 1, 8, 8)
    known[:, :, :2] = 1
    off_known = target.clone()
    off_known[:, :, :2] += 1  # an error of 1 on the known rows only
    heavy = objective.loss(off_known, target, t, weights=1 + 3 * known)
    assert torch.allclose(heavy, 4 * objective.loss(off_known, target, t))
    off_rest = target.clone()
    off_rest[:, :, 2:] += 1  # an error of 1 on the rest only: the same loss as unweighted
    assert torch.allclose(objective.loss(off_rest, target, t, weights=1 + 3 * known), objective.loss(off_rest, target, t))


def test_the_temporal_difference_term_penalises_uneven_errors_only():
    """``temporal_difference_weight``: an error that is the same in every frame costs what plain MSE says;
    one that jumps between frames costs lambda x its mean squared jump more; images and a weight of 0 are
    the plain loss; a negative weight is refused."""
    plain = DiffusionObjective(DEFAULT_SCHEDULER)
    weighted = DiffusionObjective(DEFAULT_SCHEDULER, temporal_difference_weight=2.0)
    t = torch.tensor([10, 990])
    target = torch.randn(2, 3, 6, 4, 4)
    even = target + 0.5  # the same error in every frame
    assert torch.allclose(weighted.loss(even, target, t), plain.loss(even, target, t))
    jumpy = target.clone()
    jumpy[:, :, 3:] += 1.0  # one jump of 1 between frames 2 and 3: 1 of the 5 frame steps
    assert torch.allclose(weighted.loss(jumpy, target, t), plain.loss(jumpy, target, t) + 2.0 / 5)
    images = torch.randn(2, 3, 4, 4)
    assert torch.allclose(weighted.loss(images + 1, images, t), plain.loss(images + 1, images, t))
    with pytest.raises(ValueError, match="temporal_difference_weight"):
        DiffusionObjective(DEFAULT_SCHEDULER, temporal_difference_weight=-1.0)


def test_a_learned_variance_output_without_x0_is_an_error():
    objective = DiffusionObjective(IF_LIKE)
    clean, noisy, t, target = _batch(objective, [10])
    with pytest.raises(ValueError, match="variance term"):
        objective.loss(torch.randn(1, 6, 8, 8), target, t)


def test_video_outputs_and_wider_inputs():
    """(B, 2C, F, H, W) video outputs; a conditional model's x_t is the first C channels of its input."""
    objective = DiffusionObjective(IF_LIKE)
    clean = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    noisy, t, target = objective.noisy(clean, torch.tensor([0, 500]))
    wide_input = torch.cat([noisy, torch.randn(2, 4, 4, 8, 8)], dim=1)
    prediction = torch.randn(2, 6, 4, 8, 8, requires_grad=True)
    loss = objective.loss(prediction, target, t, clean=clean, noisy=wide_input)
    assert torch.allclose(loss, torch.nn.functional.mse_loss(prediction[:, :3], target)
                          + objective.variance_loss(prediction, clean, noisy, t))


def test_a_learned_variance_t2i_module_trains_its_variance_channels():
    """The T2I stage's module end to end: a 2C-output U-Net's variance channels get gradient."""
    from diffusers import UNet2DConditionModel

    from lumiere.build import build_text_encoder
    from lumiere.train.stages import T2IModule
    from tests.tiny import TINY_CONFIG, TINY_WORDS

    torch.manual_seed(0)
    encoder = build_text_encoder(TINY_CONFIG["text_encoder"], TINY_WORDS)
    config = {**copy.deepcopy(TINY_CONFIG["t2i"]["unet"]), "out_channels": 6, "cross_attention_dim": encoder.hidden_size}
    unet = UNet2DConditionModel(**config)
    module = T2IModule(unet, encoder, DiffusionObjective(IF_LIKE, caption_dropout=0.0), train_text_encoder=False)
    batch = {"image": torch.rand(2, 3, 16, 16) * 2 - 1, "caption": ["a red circle", "a blue square"]}
    loss = module(batch)
    loss.backward()
    # conv_out's variance rows (output channels 3..5) get gradient from the variance term alone
    assert unet.conv_out.weight.grad[3:].abs().sum() > 0


# ----------------------------------------------------------------------------- the noise prior
def _neighbour_correlation(noise: torch.Tensor) -> float:
    """Mean correlation between consecutive frames of (B, C, F, H, W) noise."""
    return float((noise[:, :, 1:] * noise[:, :, :-1]).mean() / noise.pow(2).mean())


def test_noise_prior_is_the_same_in_training_and_sampling(tmp_path):
    """The prior is part of the model: the video stages' objective noises with it, the pipeline it writes
    samples with it, the SSR (another model) keeps independent noise, and a bad prior is refused."""
    from tests.tiny import TINY_CONFIG, TINY_WORDS

    from lumiere import LumierePipeline
    from lumiere.build import ModelConfig, build_pipeline
    from lumiere.errors import InputError
    from lumiere.options import NoisePrior
    from lumiere.train.config import RunConfig
    from lumiere.train.stages import Workspace

    model = {**TINY_CONFIG, "noise_prior": {"kind": "mixed", "alpha": 1.0}}
    config = RunConfig.from_dict({"output_dir": str(tmp_path / "run"), "data": {"type": "procedural"}, "model": model})
    workspace = Workspace(config)
    settings = workspace.settings("temporal")
    objective = workspace.objective(settings, recipe=True)
    assert objective.noise_prior == NoisePrior("mixed", 1.0)
    assert workspace.objective(settings).noise_prior == NoisePrior()  # the SSR and image stages
    torch.manual_seed(0)
    noisy, _, _ = objective.noisy(torch.zeros(8, 3, 8, 16, 16), torch.full((8,), 999))
    assert abs(_neighbour_correlation(noisy) - 0.5) < 0.05

    torch.manual_seed(0)
    pipe = build_pipeline(model, words=TINY_WORDS)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = LumierePipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.settings.noise_prior == NoisePrior("mixed", 1.0)
    mixed = loaded.text_to_video("a red circle moving left", seed=3, super_resolve=False)
    loaded.config["noise_prior"] = {"kind": "independent", "alpha": 1.0}
    assert not np.array_equal(mixed, loaded.text_to_video("a red circle moving left", seed=3, super_resolve=False))
    with pytest.raises(InputError, match="noise_prior.kind"):
        ModelConfig.from_dict({**TINY_CONFIG, "noise_prior": {"kind": "pink"}})
