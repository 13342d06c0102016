"""The five training stages of the paper, each a small ``nn.Module`` whose forward returns the loss.

t2i -> temporal -> conditional -> ssr -> style. Every stage reads what earlier stages wrote under
``output_dir`` and writes its product into the pipeline directory ``output_dir/pipeline`` (loadable
by ``LumierePipeline.from_pretrained`` as soon as the temporal stage has run).
"""
from __future__ import annotations

import copy
import functools
import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import nn
from torch.utils.data import DataLoader

from ..build import (build_latent_vae, build_ssr_unet, build_t2i_unet, build_text_encoder, model_scheduler_config,
                     pipeline_config)
from ..components import module_device
from ..conditioning import ssr_condition
from ..data.datasets import ImageFolderDataset, epoch_rng
from ..models.stunet import STUNet, inflate
from ..models.text_encoder import TextEncoder
from ..models.vae import check_resolution, encode_video, latent_condition, load_vae, scale_factor
from .. import pipeline_format
from ..pipeline_format import slugify
from ..styles import StyleDelta
from ..errors import InputError
from ..options import NoisePrior, SSROptions
from ..sampling import (augmentation_scheduler, flow_shift, initial_noise, is_flow, make_scheduler,
                        noise_schedule_config)
from .config import STAGES, RunConfig
from .loop import TrainSettings, Validation, train
from .processes import process_state
from .masks import MASK_PROBABILITIES, mask_probabilities, random_condition



# ----------------------------------------------------------------------------- diffusion objective
class DiffusionObjective(nn.Module):
    """Noise a clean batch at random timesteps and regress the scheduler's prediction target (eps or v).

    ``timestep_sampling="high_noise"`` draws t = T (1 - u^2) (71% of draws in the noisier half),
    where a video's layout and motion are decided; ``loss_weighting="min_snr"`` weights each sample
    by min(SNR, gamma) relative to the target's natural weight (Min-SNR-gamma, Hang et al., 2023).

    ``terminal_fraction`` draws that share of the batch from the top 1% of the schedule (t >= 0.99 T,
    SNR < 2e-4). Why: a 16-frame clip carries so much evidence that already at SNR ~1e-4 the noisy
    video itself tells which way the object goes; only in the top ~1% must the model choose the
    layout and the motion from the text, and that is where sampling starts. Uniform draws spend
    ~1% of the training there, and Min-SNR weighting (v-prediction) gives those draws ~0 weight.

    ``temporal_difference_weight`` (lambda) adds lambda x the mean squared error of the prediction's
    frame-to-frame differences, (e_{f+1} - e_f)^2 with e = prediction - target, for a video batch
    (B, C, F, H, W). Why: a plain MSE spends almost all of its gradient on what each frame shows; how
    evenly the object advances from frame to frame is a small share of the error's energy. A model whose
    frames agree one by one can still move its object in bursts (the temporal down-sampling groups frames
    by the factor N, and the up-sampling's conv must learn to spread them out again); this term weights
    that temporal high-frequency part of the error directly. Images (4-D) are unaffected.

    ``noise_prior`` (``options.NoisePrior``) correlates a video's noise across frames; it is drawn by
    ``sampling.initial_noise``, the function sampling draws with, so both see the same prior.

    A rectified-flow model (``sampling.is_flow``: ``FlowMatchEulerDiscreteScheduler`` with its ``shift`` s)
    trains as SD3: σ = sigmoid(n), n ~ N(``logit_normal``) (mean 0, std 1 by default), shifted as the
    scheduler shifts (σ' = s σ / (1 + (s - 1) σ), ``sampling.flow_shift``), x_t = (1 - σ') x0 + σ' eps,
    target the velocity eps - x0, the model's timestep σ' x T (as diffusers' flow pipelines feed it).
    ``terminal_fraction`` keeps its meaning: that share of draws at the top 1% of noise, σ' in (0.99, 1].
    ``timestep_sampling`` "high_noise" (a DDPM t-curve) and Min-SNR weighting (defined on a DDPM
    schedule's SNR) are refused for it. ``schedule`` is then the flow scheduler (``sampling.make_scheduler``).

    A U-Net with a learned variance (DeepFloyd IF: 2C output channels, the scheduler's ``variance_type``
    "learned_range" or "learned", the variance DDPM sampling reads from the other C channels) trains those
    channels with improved DDPM's hybrid loss (Nichol & Dhariwal, 2021): L_simple + lambda L_vlb,
    lambda = ``VLB_WEIGHT`` (``variance_loss``). Every C-channel model's loss is unchanged.
    """

    VLB_WEIGHT = 1e-3  # lambda of L_hybrid = L_simple + lambda L_vlb (improved DDPM, Sec. 3.1)

    def __init__(self, scheduler_config: dict, caption_dropout: float = 0.1, timestep_sampling: str = "uniform",
                 loss_weighting: str = "none", min_snr_gamma: float = 5.0, terminal_fraction: float = 0.0,
                 noise_prior: NoisePrior | None = None, logit_normal: tuple[float, float] = (0.0, 1.0),
                 temporal_difference_weight: float = 0.0):
        super().__init__()
        if not float(temporal_difference_weight) >= 0.0:
            raise ValueError(f"temporal_difference_weight must be >= 0, got {temporal_difference_weight}")
        self.temporal_difference_weight = float(temporal_difference_weight)
        self.noise_prior = noise_prior or NoisePrior()
        if not 0.0 <= terminal_fraction <= 1.0:
            raise ValueError(f"terminal_fraction must be in [0, 1], got {terminal_fraction}")
        self.terminal_fraction = terminal_fraction
        if timestep_sampling not in ("uniform", "high_noise"):
            raise ValueError(f"timestep_sampling must be 'uniform' or 'high_noise', got {timestep_sampling!r}")
        if loss_weighting not in ("none", "min_snr"):
            raise ValueError(f"loss_weighting must be 'none' or 'min_snr', got {loss_weighting!r}")
        self.flow = is_flow(scheduler_config)
        if self.flow:
            if timestep_sampling != "uniform" or loss_weighting != "none":
                raise ValueError("a rectified-flow model draws its noise levels logit-normal and trains with plain "
                                 f"MSE: timestep_sampling {timestep_sampling!r} / loss_weighting {loss_weighting!r} "
                                 "are DDPM-schedule options")
            self.schedule = make_scheduler(scheduler_config)
            self.prediction_type, self.logit_normal = "flow", logit_normal
        else:
            self.schedule = DDPMScheduler.from_config(noise_schedule_config(scheduler_config))
            self.prediction_type = self.schedule.config.prediction_type
        self.variance_type = None if self.flow else self.schedule.config.variance_type
        self.augmentation = augmentation_scheduler(scheduler_config)  # the SSR's conditioning noise
        self.caption_dropout = caption_dropout
        self.timestep_sampling, self.loss_weighting, self.min_snr_gamma = timestep_sampling, loss_weighting, min_snr_gamma

    def captions(self, captions: list[str]) -> list[str]:
        # Dropping captions trains the unconditional model classifier-free guidance needs.
        return ["" if random.random() < self.caption_dropout else c for c in captions]

    def noisy(self, clean: torch.Tensor, timesteps: torch.Tensor | None = None):
        noise = initial_noise(clean.shape, None, clean.device, clean.dtype, self.noise_prior)
        if timesteps is None:
            timesteps = self.sample_timesteps(clean.shape[0], clean.device)
        if self.flow:  # x_t = (1 - σ) x0 + σ eps, target eps - x0; the timestep is σ x T
            sigma = (timesteps.float() / self.schedule.config.num_train_timesteps).to(clean.dtype)
            sigma = sigma.reshape(-1, *[1] * (clean.ndim - 1))
            return (1 - sigma) * clean + sigma * noise, timesteps, noise - clean
        noisy = self.schedule.add_noise(clean, noise, timesteps)
        target = self.schedule.get_velocity(clean, noise, timesteps) if self.prediction_type == "v_prediction" else noise
        return noisy, timesteps, target

    def sample_timesteps(self, count: int, device) -> torch.Tensor:
        total = self.schedule.config.num_train_timesteps
        if self.flow:  # logit-normal σ, shifted as the scheduler shifts; the top-1% draws at σ' in (0.99, 1]
            mean, std = self.logit_normal
            sigma = flow_shift(torch.sigmoid(mean + std * torch.randn(count, device=device)), self.schedule.config.shift)
            if self.terminal_fraction > 0:
                terminal = torch.rand(count, device=device) < self.terminal_fraction
                sigma = torch.where(terminal, 1 - 0.01 * torch.rand(count, device=device), sigma)
            return sigma * total
        if self.timestep_sampling == "high_noise":
            u = torch.rand(count, device=device)
            timesteps = (total * (1 - u**2)).long().clamp(0, total - 1)
        else:
            timesteps = torch.randint(0, total, (count,), device=device)
        if self.terminal_fraction > 0:
            band = max(1, total // 100)
            terminal = torch.rand(count, device=device) < self.terminal_fraction
            timesteps = torch.where(terminal, torch.randint(total - band, total, (count,), device=device), timesteps)
        return timesteps

    def loss(self, prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
             clean: torch.Tensor | None = None, noisy: torch.Tensor | None = None,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``prediction`` (the model's output at ``noisy`` = x_t, ``timesteps``) for ``target``;
        a learned-variance output (``learns_variance``) adds ``variance_loss``, which needs ``clean`` (x0)
        and ``noisy`` (x_t, its first C channels when the model's input has more). ``weights`` (broadcast to
        ``target``, e.g. (B, 1, F, H, W)) scale each element's squared error before the mean; None is the
        plain mean.

        Raises:
            ValueError: a learned-variance output without ``clean`` / ``noisy``.
        """
        differences = self.temporal_difference_weight > 0 and target.ndim == 5 and target.shape[2] > 1
        if weights is None and self.loss_weighting == "none" and not differences:
            loss = _mse(prediction, target)
        else:
            error = prediction[:, : target.shape[1]].float() - target.float()
            squared = error.pow(2)
            if weights is not None:
                squared = squared * weights.float()
            per_sample = squared.flatten(1).mean(1)
            if differences:
                steps = (error[:, :, 1:] - error[:, :, :-1]).pow(2)
                per_sample = per_sample + self.temporal_difference_weight * steps.flatten(1).mean(1)
            if self.loss_weighting != "none":
                alphas = self.schedule.alphas_cumprod.to(timesteps.device)[timesteps].float()
                snr = alphas / (1 - alphas)
                weight = snr.clamp(max=self.min_snr_gamma) / (snr + 1 if self.prediction_type == "v_prediction" else snr)
                per_sample = weight * per_sample
            loss = per_sample.mean()
        if not self.learns_variance(prediction, target):
            return loss
        if clean is None or noisy is None:
            raise ValueError("a learned-variance output (2C channels) needs the clean sample and x_t for its "
                             "variance term: loss(prediction, target, timesteps, clean=..., noisy=...)")
        return loss + self.variance_loss(prediction, clean, noisy[:, : clean.shape[1]], timesteps)

    def learns_variance(self, prediction: torch.Tensor, target: torch.Tensor) -> bool:
        """Whether ``prediction`` carries a learned variance DDPM sampling reads (``denoisers.split_variance``
        and ``uses_learned_variance``): 2C channels and a "learned" / "learned_range" ``variance_type``."""
        return (self.variance_type in ("learned", "learned_range")
                and prediction.shape[1] == 2 * target.shape[1])

    @functools.cached_property
    def _posterior(self) -> dict[str, torch.Tensor]:
        """Per-timestep quantities of the true posterior q(x_{t-1} | x_t, x0) on the DDPM schedule (float64):
        beta_t = 1 - abar_t / abar_{t-1} (as diffusers' ``DDPMScheduler._get_variance`` steps), the posterior
        variance beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t), its log clipped at t = 0 to beta~_1 (beta~_0
        is 0; as the paper), and the posterior mean's coefficients of x0 and x_t."""
        acp = self.schedule.alphas_cumprod.double()
        acp_prev = torch.cat([acp.new_ones(1), acp[:-1]])
        beta = 1 - acp / acp_prev
        variance = beta * (1 - acp_prev) / (1 - acp)
        return {"acp": acp, "log_beta": beta.log(),
                "log_variance": torch.cat([variance[1:2], variance[1:]]).log(),
                "coef_x0": acp_prev.sqrt() * beta / (1 - acp), "coef_xt": (1 - beta).sqrt() * (1 - acp_prev) / (1 - acp)}

    def variance_loss(self, prediction: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor,
                      timesteps: torch.Tensor) -> torch.Tensor:
        """lambda L_vlb of improved DDPM's L_hybrid, for the variance channels only.

        The model's Gaussian p(x_{t-1} | x_t) has the mean its first C channels imply (detached: this
        term trains the variance only, L_simple the mean) and the log-variance DDPM sampling uses
        (``DDPMScheduler._get_variance``): for "learned_range" frac log beta_t + (1 - frac) log beta~_t,
        frac = (v + 1) / 2 of the other C channels v; for "learned" log v (diffusers reads v as the variance).
        The term per sample is L_t: for t > 0 the KL(q(x_{t-1} | x_t, x0) || p) between the true posterior
        and that Gaussian; at t = 0 the decoder's negative log-likelihood of x0 under the discretized
        Gaussian of 8-bit data in [-1, 1] (256 bins; as the paper, so meant for pixel models such as IF).
        Both are in bits per dimension. L_vlb = sum_t L_t is estimated from the uniform t as T L_t, so
        the term is lambda T mean(L_t) (= mean(L_t) for T = 1000, the paper's setting).
        """
        channels = clean.shape[1]
        table = {k: v.to(prediction.device) for k, v in self._posterior.items()}
        t = timesteps.long()
        shape = (-1, *[1] * (clean.ndim - 1))

        def at(name: str) -> torch.Tensor:
            return table[name][t].float().reshape(shape)

        output, raw = prediction[:, :channels].detach().float(), prediction[:, channels:].float()
        clean, noisy = clean.detach().float(), noisy.detach().float()
        a, s = at("acp").sqrt(), (1 - at("acp")).sqrt()
        if self.prediction_type == "epsilon":
            x0 = (noisy - s * output) / a
        elif self.prediction_type == "v_prediction":
            x0 = a * noisy - s * output
        else:  # "sample"
            x0 = output
        if self.variance_type == "learned_range":
            frac = (raw + 1) / 2
            log_variance = frac * at("log_beta") + (1 - frac) * at("log_variance")
        else:
            log_variance = raw.clamp(min=1e-20).log()
        mean = at("coef_x0") * x0 + at("coef_xt") * noisy
        true_mean, true_log_variance = at("coef_x0") * clean + at("coef_xt") * noisy, at("log_variance")
        kl = 0.5 * (-1.0 + log_variance - true_log_variance + torch.exp(true_log_variance - log_variance)
                    + (true_mean - mean).pow(2) * torch.exp(-log_variance))
        per_sample = kl.flatten(1).mean(1)
        if bool((t == 0).any()):
            per_sample = torch.where(t == 0, _decoder_nll(clean, mean, log_variance).flatten(1).mean(1), per_sample)
        per_sample = per_sample / np.log(2.0)
        total = self.schedule.config.num_train_timesteps
        return self.VLB_WEIGHT * total * per_sample.mean()


def _mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # U-Nets with a learned variance (DeepFloyd IF) output 2C channels; the mean is the first C.
    return F.mse_loss(prediction[:, : target.shape[1]].float(), target.float())


def _decoder_nll(x: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """-log p(x) (nats, per element) of 8-bit data ``x`` in [-1, 1] under N(mean, exp(log_variance)) binned
    into its 256 levels (width 2/255; the end bins reach to -inf / +inf): improved DDPM's L_0."""
    inv_std = torch.exp(-0.5 * log_variance)
    cdf_plus = torch.special.ndtr(inv_std * (x - mean + 1 / 255))
    cdf_minus = torch.special.ndtr(inv_std * (x - mean - 1 / 255))
    probability = torch.where(x < -0.999, cdf_plus, torch.where(x > 0.999, 1 - cdf_minus, cdf_plus - cdf_minus))
    return -probability.clamp(min=1e-12).log()


def _loader(dataset, settings: TrainSettings) -> DataLoader:
    """Shuffled full batches (``drop_last``: the loop refuses a dataset too small for one batch per
    process). Workers persist across epochs unless the dataset draws per epoch (``set_epoch``): a
    persistent worker keeps its own copy of the dataset and would never see the new epoch.
    Streamed data (webdataset shards, also under the stages' wrappers) comes in its own shuffled order."""
    per_epoch = hasattr(dataset, "set_epoch")
    if _streamed(dataset):
        dataset = dataset if isinstance(dataset, torch.utils.data.IterableDataset) else _Stream(dataset)
    streamed = isinstance(dataset, torch.utils.data.IterableDataset)
    from ..threads import count_workers  # torch's threads leave a CPU to each worker (lumiere/threads.py)
    return count_workers(DataLoader(dataset, batch_size=settings.batch_size, shuffle=not streamed,
                                    num_workers=settings.num_workers, drop_last=True,
                                    persistent_workers=settings.num_workers > 0 and not per_epoch))


def _streamed(dataset) -> bool:
    """Whether the innermost dataset under the stages' wrappers is an iterable (streamed shards)."""
    while isinstance(dataset, _EpochWrapper):
        dataset = dataset.dataset
    return isinstance(dataset, torch.utils.data.IterableDataset)


class _EpochWrapper(torch.utils.data.Dataset):
    """A dataset over another one, changing each item (``apply(item, index)``, its own per-item draws
    from the index): by index over a map-style dataset, or over streamed shards with each sample's id
    (``iter_indexed``). Forwards ``set_epoch`` to it (and keeps the epoch for its own draws)."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def apply(self, item: dict, index: int) -> dict:
        raise NotImplementedError

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.apply(self.dataset[index], index)

    def iter_indexed(self):
        for index, item in self.dataset.iter_indexed():
            yield index, self.apply(item, index)


class _Stream(torch.utils.data.IterableDataset):
    """The stages' wrappers over streamed shards, as the iterable a DataLoader reads."""

    splits_across_processes = True  # the source shares its shards out per rank (data.shards)

    def __init__(self, dataset: _EpochWrapper):
        self.dataset = dataset

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self):
        return (item for _, item in self.dataset.iter_indexed())


def _memory_settings(settings: TrainSettings, *models) -> None:
    """Apply ``settings.gradient_checkpointing`` to the trained models: a STUNet's own switch (its
    forward calls the U-Net's layers itself) or diffusers' on a plain U-Net."""
    if settings.gradient_checkpointing:
        for model in models:
            model.enable_gradient_checkpointing()


def _frozen(vae):
    return None if vae is None else vae.requires_grad_(False)


def _latents(vae, pixels: torch.Tensor) -> torch.Tensor:
    """A latent model's training batch: video (B, 3, T, H, W) pixels encoded by the frozen VAE (posterior
    mean x scaling factor, ``models.vae.encode_video``); a pixel model's (``vae`` None) as it is."""
    if vae is None:
        return pixels
    with torch.no_grad():
        return encode_video(vae, pixels)


class T2IModule(nn.Module):
    """The T2I / style stages: a U-Net on single images (latents with a ``vae``, which stays frozen)."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder: TextEncoder, objective: DiffusionObjective,
                 train_text_encoder: bool, vae=None, render: Callable[[dict], dict] | None = None):
        super().__init__()
        self.unet, self.text_encoder, self.objective, self.vae = unet, text_encoder, objective, _frozen(vae)
        self.text_encoder.requires_grad_(train_text_encoder)
        self.render = render

    def forward(self, batch):
        batch = self.render(batch) if self.render is not None else batch
        return self.denoising_loss(batch["image"], batch["caption"], self.unet)

    def denoising_loss(self, pixels: torch.Tensor, captions, unet: Callable) -> torch.Tensor:
        """The objective's loss of ``unet(noisy, t, states)`` on images ``pixels`` (B, 3, H, W) captioned ``captions``."""
        images = _latents(self.vae, pixels[:, :, None])[:, :, 0]
        with torch.set_grad_enabled(any(p.requires_grad for p in self.text_encoder.parameters())):
            states = self.text_encoder(self.objective.captions(captions))
        noisy, t, target = self.objective.noisy(images)
        return self.objective.loss(unet(noisy, t, states).sample, target, t, clean=images, noisy=noisy)


SLIDER_FULL_WEIGHT_SHARE = 0.5  # the share of a slider style's steps at weight 1, where the style itself is learned


class StyleSliderModule(T2IModule):
    """The style stage trained as the app's weight slider uses it (Lumiere Sec. 4.1 interpolates W_orig toward
    the style's weights): the trainable difference Delta (zero at the start) enters as W_orig + alpha Delta, with
    alpha drawn each step (1 for ``SLIDER_FULL_WEIGHT_SHARE`` of the steps, else uniform on [0, 1]; from the
    global generator, which the loop seeds per step), and the target is the pixel blend (1 - alpha) plain +
    alpha styled of one scene. Trained at weight 1 only, a style need not be anything in particular at 0.8;
    trained like this, an in-between weight has an in-between target. W_orig stays frozen."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder: TextEncoder, objective: DiffusionObjective,
                 vae=None, render: Callable[[dict], dict] | None = None):
        super().__init__(unet.requires_grad_(False), text_encoder, objective, train_text_encoder=False, vae=vae,
                         render=render)
        self.names = [name for name, _ in unet.named_parameters()]
        # ParameterDict keys cannot hold dots: parameter i's difference is delta[str(i)].
        self.delta = nn.ParameterDict({str(i): nn.Parameter(torch.zeros_like(param))
                                       for i, (_, param) in enumerate(unet.named_parameters())})

    def weights(self, alpha: float) -> dict[str, torch.Tensor]:
        """W_orig + alpha Delta under the U-Net's parameter names."""
        params = dict(self.unet.named_parameters())
        return {name: params[name] + alpha * self.delta[str(i)] for i, name in enumerate(self.names)}

    def forward(self, batch):
        batch = self.render(batch) if self.render is not None else batch
        draw = float(torch.rand(()))
        alpha = 1.0 if draw < SLIDER_FULL_WEIGHT_SHARE else (draw - SLIDER_FULL_WEIGHT_SHARE) / (1 - SLIDER_FULL_WEIGHT_SHARE)
        weights = self.weights(alpha)
        return self.denoising_loss(torch.lerp(batch["plain_image"], batch["image"], alpha), batch["caption"],
                                   lambda *inputs: torch.func.functional_call(self.unet, weights, inputs))


def _long_clips(batch: dict, multiple: int) -> dict | None:
    """A rendered long batch cut to 1/multiple of its clips (at least one), so a long step's frames stay about
    the same: its first clips whose "long_ok" holds (the dataset's ``long_motions``), or None when none does."""
    eligible = batch.pop("long_ok", None)
    chosen = list(range(len(batch["caption"]))) if eligible is None else torch.nonzero(eligible).flatten().tolist()
    chosen = chosen[:max(1, len(batch["caption"]) // multiple)]
    if not chosen:
        return None
    return {key: [value[i] for i in chosen] if isinstance(value, list) else value[chosen]
            for key, value in batch.items()}


class VideoModule(nn.Module):
    """Temporal / conditional / SSR stages: a STUNet on video batches, text encoder frozen. With a
    ``vae`` (a latent model's base / conditional; never the pixel-space SSR) the STUNet trains on the
    frozen VAE's latents and the conditional model on the encoded (C, M) sampling uses."""

    def __init__(self, model: STUNet, text_encoder: TextEncoder, objective: DiffusionObjective,
                 kind: str = "temporal", ssr: SSROptions | None = None, vae=None,
                 render: Callable[..., dict] | None = None, mask_probabilities: tuple[float, ...] = MASK_PROBABILITIES,
                 known_weight: float = 1.0, long_clips: tuple[float, int] | None = None):
        """``render(batch)``: the batch's pixels from the clip parameters the loader gave (a dataset's
        ``render_batch``, ``data.render_on_device``), on the device the batch is on. ``mask_probabilities``:
        the conditional model's draws of each mask kind (``masks.mask_probabilities``); ``known_weight``: its
        loss's weight on the known pixels (M = 1) against 1 on the rest. Why a weight: the known pixels are
        a small share of most draws (an I2V draw knows 1 frame of 16), so a plain mean spends little of the
        gradient on learning to copy C. ``long_clips`` = (share, multiple): that share of the steps (drawn from
        the step's seed) renders the batch's long clips (``render(batch, long=True)``, multiple x the frames) and
        trains on its first 1/multiple of the clips (at least one), so a step's frames stay about the same."""
        super().__init__()
        self.model, self.text_encoder, self.objective, self.kind = model, text_encoder.requires_grad_(False), objective, kind
        self.vae = _frozen(vae)
        self.ssr = ssr or SSROptions()
        self.render = render
        self.mask_probabilities = mask_probabilities
        self.known_weight = float(known_weight)
        self.long_clips = long_clips
        if long_clips is not None and render is None:
            raise ValueError("long_clips needs a renderer of the batch's long clips (procedural data on the device)")

    def forward(self, batch):
        long_batch = None
        if self.long_clips is not None and float(torch.rand(())) < self.long_clips[0]:
            long_batch = _long_clips(self.render(batch, long=True), self.long_clips[1])
        if long_batch is not None:
            batch = long_batch
        elif self.render is not None:
            batch = self.render(batch)  # an ordinary batch: the renderer drops "long_ok"
        pixels = batch["video"]
        if self.kind == "conditional":  # draw (C, M) before noising: a cinemagraph draw may change the clip to produce
            # Seeded from the global generator, which the loop seeds per (step, rank): reproducible on resume.
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
            draws = [random_condition(v.cpu(), rng, probabilities=self.mask_probabilities) for v in pixels]
            pixels = torch.stack([d.target for d in draws]).to(pixels)
            condition = torch.stack([d.condition for d in draws]).to(pixels)
            keep = torch.stack([d.keep for d in draws]).to(pixels)
        video = _latents(self.vae, pixels)
        with torch.no_grad():
            states = self.text_encoder(self.objective.captions(batch["caption"]))
        noisy, t, target = self.objective.noisy(video)
        class_labels, weights = None, None
        if self.kind == "conditional":
            if self.vae is not None:
                with torch.no_grad():
                    condition, keep = latent_condition(self.vae, condition, keep)
            noisy = torch.cat([noisy, condition.to(noisy), keep.to(noisy)], dim=1)
            if self.known_weight != 1.0:
                weights = 1.0 + (self.known_weight - 1.0) * keep.to(noisy)
        elif self.kind == "ssr":
            condition, class_labels = self._sr_condition(batch["lowres_video"], video)
            noisy = torch.cat([noisy, condition], dim=1)
        return self.objective.loss(self.model(noisy, t, states, class_labels=class_labels), target, t,
                                   clean=video, noisy=noisy, weights=weights)  # x_t: noisy's first C channels

    def _sr_condition(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The SSR model's input at random augmentation levels (``conditioning.ssr_condition``, the
        function sampling uses); returns (video, levels)."""
        b, c, t, height, width = high.shape
        levels = torch.randint(0, int(self.ssr.max_noise_level), (b,), device=high.device)
        # Drawn into a frame-major layout, as training always has, so a seeded run draws the same noise.
        noise = torch.empty(b, t, c, height, width, dtype=low.dtype, device=high.device).transpose(1, 2).normal_()
        return ssr_condition(low, (height, width), levels, self.objective.augmentation, noise), levels


class SRImageModule(VideoModule):
    """The SSR stage's first phase: the image SR U-Net on single frames (T = 1) before inflation."""

    def forward(self, batch):
        with torch.no_grad():
            states = self.text_encoder(self.objective.captions(batch["caption"]))
        high, low = batch["video"][:, :, 0], batch["lowres_video"]
        condition, levels = self._sr_condition(low[:, :, :1], high[:, :, None])
        noisy, t, target = self.objective.noisy(high)
        prediction = self.model(torch.cat([noisy, condition[:, :, 0]], dim=1), t, states, class_labels=levels).sample
        return self.objective.loss(prediction, target, t, clean=high, noisy=noisy)


class RandomCrop(_EpochWrapper):
    """Aligned random spatial crops of (high, low) pairs: SSR trains on crops, runs on full frames.
    Each epoch (``set_epoch``) crops other places (epoch 0: the crops it always took)."""

    def __init__(self, dataset, crop: int, scale: int, window: int | None = None, seed: int = 0):
        self.dataset, self.crop, self.scale, self.window, self.seed = dataset, crop, scale, window, seed

    def _draw(self, index: int, frames: int, low_height: int, low_width: int) -> tuple[int, int, int, int]:
        """(top, left) of the low-res crop and the window's (start, end) frames of item ``index``."""
        rng = epoch_rng(self.seed, index, self.epoch)
        low_crop = self.crop // self.scale
        top = int(rng.integers(0, low_height - low_crop + 1))
        left = int(rng.integers(0, low_width - low_crop + 1))
        start = int(rng.integers(0, frames - self.window + 1)) if self.window else 0
        return top, left, start, start + self.window if self.window else frames

    def __getitem__(self, index):
        """As ``apply(dataset[index])``; a procedural dataset renders only the window's frames (the same
        pixels, a quarter of the work for 4-frame windows of 16-frame clips)."""
        if not (self.window and hasattr(self.dataset, "item_frames") and self.dataset.return_lowres):
            return super().__getitem__(index)
        top, left, start, end = self._draw(index, self.dataset.num_frames, *self.dataset.return_lowres)
        return self._crop(self.dataset.item_frames(index, slice(start, end)), top, left, 0, end - start)

    def apply(self, item, index):
        high, low = item["video"], item["lowres_video"]
        return self._crop(item, *self._draw(index, high.shape[1], low.shape[2], low.shape[3]))

    def _crop(self, item: dict, top: int, left: int, start: int, end: int) -> dict:
        high, low = item["video"], item["lowres_video"]
        low_crop = self.crop // self.scale
        return {
            "video": high[:, start:end, top * self.scale:(top + low_crop) * self.scale, left * self.scale:(left + low_crop) * self.scale],
            "lowres_video": low[:, start:end, top:top + low_crop, left:left + low_crop],
            "caption": item["caption"],
        }


# ----------------------------------------------------------------------------- data
def video_dataset(config: RunConfig | dict, num_frames: int, height: int, width: int,
                  lowres: tuple[int, int] | None = None, style: str | None = None, on_device: bool = False,
                  long_frames: int | None = None, long_motions: tuple[str, ...] | None = None):
    """The config's video data (procedural, real, folder or webdataset shards) at (num_frames, height, width);
    ``lowres`` adds "lowres_video" items of that size. ``config`` is a RunConfig or a config dict.
    ``on_device`` (procedural data with ``data.render_on_device``): items carry the clips' parameters, and
    the dataset's ``render_batch`` renders a batch of them where it is (``device_renderer``); ``long_frames``
    (only there: ``RunConfig.from_dict`` refuses ``long_clip_share`` elsewhere) adds each clip at that length,
    ``long_motions`` which of them a long step may train on."""
    config = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    data = config.data
    if data.type == "procedural":
        from ..data.datasets import ProceduralVideoDataset

        return ProceduralVideoDataset(num_frames, height, width, length=data.length, seed=data.seed, style=style,
                                      return_lowres=lowres, render_on_device=on_device and data.render_on_device,
                                      long_frames=long_frames, motion_weights=data.motion_weights,
                                      long_motions=long_motions)
    if data.type == "webdataset":
        from ..data.shards import ShardedVideoDataset

        return ShardedVideoDataset(data.shards, num_frames=num_frames, height=height, width=width,
                                   fps=data.fps if data.fps is not None else config.model.fps, seed=data.seed,
                                   return_lowres=lowres)
    from ..data.datasets import RealVideoDataset

    # "folder": no metadata, each video's caption is the .txt next to it.
    return RealVideoDataset(data.root, data.metadata if data.type == "real" else None, num_frames=num_frames,
                            height=height, width=width, fps=data.fps if data.fps is not None else config.model.fps,
                            seed=data.seed, return_lowres=lowres, check_headers=data.check_headers)


def device_renderer(dataset) -> Callable[[dict], dict] | None:
    """The ``render`` a stage module needs for ``dataset`` (under the stages' wrappers): its ``render_batch``
    when it yields clip parameters to render on the device, else None (the items are pixels already)."""
    while isinstance(dataset, _EpochWrapper):
        dataset = dataset.dataset
    return dataset.render_batch if getattr(dataset, "render_on_device", False) else None


class FramesAsImages(_EpochWrapper):
    """Random single frames of a video dataset (the T2I / style stages on real video data), other
    frames each epoch."""

    def __init__(self, dataset):
        self.dataset = dataset

    def apply(self, item, index):
        rng = np.random.default_rng(index) if self.epoch == 0 else np.random.default_rng([index, self.epoch])
        frame = rng.integers(item["video"].shape[1])
        return {"image": item["video"][:, frame], "caption": item["caption"]}


def image_dataset(config: RunConfig, height: int, width: int, style: str | None = None, on_device: bool = False,
                  paired: bool = False):
    """Single images for the T2I / style stages; ``paired`` (procedural data, with a style): each also unstyled."""
    if config.data.type == "procedural":
        from ..data.datasets import ProceduralImageDataset

        return ProceduralImageDataset(height, width, length=config.data.length, seed=config.data.seed, style=style,
                                      include_motion=True, render_on_device=on_device and config.data.render_on_device,
                                      motion_weights=config.data.motion_weights, paired=paired)
    return FramesAsImages(video_dataset(config, 1, height, width, style=style))


# ----------------------------------------------------------------------------- stage runners
class Workspace:
    """Where a training run keeps its stages' products (``output_dir``) and the assembled pipeline."""

    def __init__(self, config: RunConfig | dict, output_dir: str | Path | None = None, process=None,
                 time_scale: float = 1.0, on_write: Callable[[], None] | None = None):
        """``config``: a RunConfig or a config dict, parsed (and checked for unknown keys) here.
        ``process``: this process's accelerate state (default: ``process_state()``, shared by the whole run).
        ``time_scale`` multiplies every stage's ``time_budget`` (a whole run fitted to one budget).
        ``on_write()`` runs on the main process after each write into the pipeline directory: a stage's
        final model, and its EMA snapshot at every checkpoint (how a time-boxed run packs its latest model)."""
        self._process = process
        self.time_scale, self.on_write = float(time_scale), on_write
        self._raw_config = config
        self.config = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
        self.model = self.config.model
        self.root = Path(output_dir or self.config.output_dir or "runs/default")
        self.pipeline = self.root / "pipeline"
        self.scheduler_config = model_scheduler_config(self.model)  # a pretrained T2I's own, else Lumiere's

    @functools.cached_property
    def training(self) -> dict:
        """``training_record`` of this run's config, made once, when the first index is written."""
        return training_record(self._raw_config)

    @property
    def process(self):
        """The accelerate process state: ``is_main_process``, ``process_index``, ``wait_for_everyone``."""
        return self._process if self._process is not None else process_state()

    def on_main_process(self, write, *args) -> None:
        """Run ``write(*args)`` on the main process only (under ``accelerate launch`` every rank would
        otherwise write the same files at once), then wait until it is done: the next stage reads them."""
        process = self.process
        if process.is_main_process:
            write(*args)
        process.wait_for_everyone()

    def settings(self, stage: str, phase: str | None = None, **overrides) -> TrainSettings:
        return self.config.settings(stage, phase, time_scale=self.time_scale, **overrides)

    def snapshot(self, name: str, module) -> Callable[[int], None]:
        """A training loop's ``on_checkpoint``: write ``module`` (the EMA weights then) as pipeline component
        ``name``, so a run cut off mid-stage still leaves its latest model in the pipeline directory."""
        return lambda step: self.write_component(name, module)

    def objective(self, settings: TrainSettings, recipe: bool = False) -> DiffusionObjective:
        """The stage's diffusion objective; ``recipe`` applies the settings' timestep / loss switches and
        the model's noise prior (the base and conditional video stages), otherwise the paper's uniform
        timesteps, plain MSE and independent noise."""
        options = {} if not recipe else {"timestep_sampling": settings.timestep_sampling,
                                         "loss_weighting": settings.loss_weighting,
                                         "min_snr_gamma": settings.min_snr_gamma,
                                         "terminal_fraction": settings.terminal_fraction,
                                         "temporal_difference_weight": settings.temporal_difference_weight,
                                         "noise_prior": self.model.noise_prior}
        return DiffusionObjective(self.scheduler_config, settings.caption_dropout, **options)

    def text_encoder(self) -> TextEncoder:
        """The stages' text encoder: the pipeline's (as saved, prompt length included), else the t2i stage's,
        else a new one from the config (``max_length`` there sets the prompt length of a pretrained one).
        With ``train.text_embedding_cache`` set, its states come from that disk cache while it is frozen
        (``text_cache.CachedTextEncoder``: the same calls and weights)."""
        encoder = self._text_encoder()
        cache = TrainSettings.from_dict(self.config.train, "train").text_embedding_cache
        if not cache:
            return encoder
        from .text_cache import CachedTextEncoder

        return CachedTextEncoder(encoder, cache)

    def _text_encoder(self) -> TextEncoder:
        directory = self.pipeline / "text_encoder"
        if (directory / "config.json").is_file():
            return TextEncoder.from_pretrained(directory, self.pipeline / "tokenizer")
        t2i_dir = self.root / "t2i" / "final"
        if (t2i_dir / "text_encoder" / "config.json").is_file():
            return TextEncoder.from_pretrained(t2i_dir / "text_encoder", t2i_dir / "tokenizer")
        encoder = build_text_encoder(self.model.text_encoder)
        if self.model.text_encoder.max_length:  # a pretrained encoder: the config's prompt length
            encoder.max_length = self.model.text_encoder.max_length
        return encoder

    def vae(self):
        """A latent model's frozen VAE (None for a pixel model): the pipeline's saved one, else built from
        ``model.vae`` and saved into the pipeline, so every stage encodes with the same weights.

        Raises:
            InputError: base_resolution (pixels) is not divisible by the VAE's down-sampling factor.
        """
        if self.model.vae is None:
            return None
        directory = self.pipeline / "vae"
        if (directory / "config.json").is_file():
            vae = load_vae(directory)
            _, height, width = self.model.base_resolution
            check_resolution(height, width, scale_factor(vae))
            return vae.requires_grad_(False)
        vae = build_latent_vae(self.model).requires_grad_(False)
        self.write_component("vae", vae)
        return vae

    def t2i_unet(self) -> UNet2DConditionModel:
        final = self.root / "t2i" / "final" / "unet"
        if (final / "config.json").is_file():
            return UNet2DConditionModel.from_pretrained(str(final), use_safetensors=True)
        if self.model.t2i.pretrained:
            return build_t2i_unet(self.model.t2i, 0)
        raise FileNotFoundError(f"no T2I U-Net at {final}: run the t2i stage first (or set t2i.pretrained)")

    def load_stunet(self, name: str) -> STUNet:
        directory = self.pipeline / name
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"no {name} model at {directory}: run the {name} stage first")
        return STUNet.from_pretrained(directory)

    def _write(self, save: Callable[[], Any]) -> None:
        """On the main process: ``save()`` into the pipeline directory, refresh model_index.json, then tell
        ``on_write`` (e.g. the packer)."""
        def write():
            save()
            self._write_index()
            if self.on_write is not None:
                self.on_write()
        self.on_main_process(write)

    def write_component(self, name: str, module) -> None:
        """Save one component into the pipeline directory and refresh model_index.json (main process)."""
        self._write(lambda: pipeline_format.write_component(self.pipeline, name, module))

    def write_style(self, style: str, spatial_state: dict[str, torch.Tensor]) -> None:
        self._write(lambda: pipeline_format.write_style(self.pipeline, style, spatial_state))

    def write_index(self) -> None:
        """List what the stages have written so far (``pipeline_format``: the same format as an export)."""
        self.on_main_process(self._write_index)

    def _write_index(self) -> None:
        components, styles = pipeline_format.saved_parts(self.pipeline)
        base_config = self.pipeline / "base" / "config.json"
        factor = STUNet.downsampling_factor_of(json.loads(base_config.read_text())) if base_config.is_file() else 1
        pipeline_format.write_index(self.pipeline, pipeline_config(self.model, factor), self.scheduler_config,
                                    components, styles, self.training)


def training_record(config: RunConfig | dict) -> dict:
    """What a pipeline records of the run that trained it (``model_index.json``'s "training"): the sha256
    of the training config (canonical JSON; keys starting with "_" are comments and do not count) and the
    git commit of the code, when it runs from a git checkout (None otherwise, e.g. a copied tree)."""
    import dataclasses
    import hashlib
    import subprocess

    values = config if isinstance(config, dict) else dataclasses.asdict(config)
    strip = lambda v: ({k: strip(x) for k, x in v.items() if not str(k).startswith("_")}  # noqa: E731
                       if isinstance(v, dict) else [strip(x) for x in v] if isinstance(v, (list, tuple)) else v)
    canonical = json.dumps(strip(values), sort_keys=True, default=str, separators=(",", ":"))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    from .. import __version__

    return {"config_sha256": hashlib.sha256(canonical.encode()).hexdigest(), "commit": commit,
            "lumiere_version": __version__}


def _video_parameters(model: STUNet, settings: TrainSettings, also_full_rate: list | None = None) -> list[dict]:
    """Optimizer groups for a video stage: the temporal layers (plus ``also_full_rate``) at the stage's
    rate; the T2I weights frozen (the paper) or, with ``spatial_lr_scale > 0``, trained at a lower rate."""
    full_rate = list(model.temporal_parameters()) + list(also_full_rate or [])
    groups = [{"params": full_rate}]
    if settings.spatial_lr_scale > 0:
        model.t2i.requires_grad_(True)
        chosen = {id(p) for p in full_rate}
        groups.append({"params": [p for p in model.t2i.parameters() if id(p) not in chosen],
                       "lr_scale": settings.spatial_lr_scale})
    return groups


def _validation_pipeline(ws: Workspace, components: dict, temporal_downsampling_factor: int):
    """A pipeline over the run's own modules as they are (in memory, nothing copied): validation samples are
    drawn by the library's samplers, the way the saved pipeline will draw them."""
    from ..pipeline import LumierePipeline

    model = components["base"]
    return LumierePipeline(config=pipeline_config(ws.model, temporal_downsampling_factor),
                           scheduler_config=ws.scheduler_config, components=components,
                           device=module_device(model), dtype=next(model.parameters()).dtype)


def _video_validation(ws: Workspace, module: VideoModule) -> Validation:
    """The temporal stage's validation clips: text-to-video at base resolution (no SSR) from the STUNet in training."""
    def render(prompt: str, seed: int, steps: int) -> np.ndarray:
        pipe = _validation_pipeline(ws, {"text_encoder": module.text_encoder, "base": module.model, "vae": module.vae},
                                    module.model.temporal_downsampling_factor)
        return pipe.text_to_video(prompt, seed=seed, num_inference_steps=steps, super_resolve=False)

    return Validation(render, fps=ws.model.fps)


class _ImageBase(nn.Module):
    """A stand-in base holding only the T2I U-Net as ``t2i``: what the pipeline's image sampler reads."""

    def __init__(self, unet: UNet2DConditionModel):
        super().__init__()
        self.t2i = unet


def _image_validation(ws: Workspace, module: T2IModule) -> Validation:
    """The t2i stage's validation images, drawn by the pipeline's image sampler (reference guidance's first frame)."""
    def render(prompt: str, seed: int, steps: int) -> np.ndarray:
        pipe = _validation_pipeline(ws, {"text_encoder": module.text_encoder, "base": _ImageBase(module.unet),
                                         "vae": module.vae}, 1)
        return pipe.text_to_image(prompt, seed=seed, num_inference_steps=steps)

    return Validation(render, fps=ws.model.fps)


def run_t2i(ws: Workspace, resume: bool, **overrides) -> dict:
    """Train the T2I U-Net (and text encoder) from scratch; a pretrained T2I (``model.t2i.pretrained``)
    is skipped with a log line (the video stages inflate it as published) unless the config opts in
    with ``stages.t2i.finetune_pretrained``.

    With ``stages.t2i.refine`` a second phase follows in the same run: the first phase's EMA U-Net trained
    further with that section's settings (a fresh optimizer, schedule and EMA; checkpoints in ``t2i/refine``)
    and the text encoder frozen, so that the prompt states the video stages learn on are the first phase's.
    Why: a T2I continued this way with a fresh schedule learns the world's shapes that one schedule of the
    same length does not reach (``docs/research/lumiere-tiny.md``). The result is the first phase's, with
    the second's under "refine"."""
    settings = ws.settings("t2i", **overrides)
    pretrained = bool(ws.model.t2i.pretrained)
    if pretrained and not ws.config.stage("t2i").finetune_pretrained:
        reason = (f"model.t2i.pretrained is set ({ws.model.t2i.pretrained}): the video stages use it as it is; "
                  f"set stages.t2i.finetune_pretrained to true in the config to fine-tune it")
        process_state().print(f"t2i: skipped: {reason}")
        return {"skipped": reason}
    text_encoder = ws.text_encoder() if pretrained else build_text_encoder(ws.model.text_encoder)
    unet = build_t2i_unet(ws.model.t2i, text_encoder.hidden_size)
    _, height, width = ws.model.base_resolution
    data = image_dataset(ws.config, height, width, on_device=True)
    vae, render = ws.vae(), device_renderer(data)  # both phases encode and render with the same ones

    def phase(settings: TrainSettings, train_text_encoder: bool, directory: Path, description: str,
              parameters: list | None = None) -> dict:
        """One phase over the shared U-Net; ``parameters``: what it trains (None: the whole module's)."""
        module = T2IModule(unet, text_encoder, ws.objective(settings), train_text_encoder=train_text_encoder,
                           vae=vae, render=render)
        _memory_settings(settings, unet)
        return train(module, list(module.parameters()) if parameters is None else parameters,
                     _loader(data, settings), settings, directory, resume, description,
                     validation=_image_validation(ws, module))

    result = phase(settings, not pretrained, ws.root / "t2i", "t2i")
    if "refine" in ws.config.phases("t2i"):  # train() leaves the first phase's EMA weights in the U-Net
        result["refine"] = phase(ws.settings("t2i", "refine", **overrides), False, ws.root / "t2i" / "refine",
                                 "t2i-refine", list(unet.parameters()))
    final = ws.root / "t2i" / "final"
    ws.on_main_process(lambda: (unet.save_pretrained(str(final / "unet"), safe_serialization=True),
                                text_encoder.save_pretrained(final / "text_encoder", final / "tokenizer")))
    ws.write_component("text_encoder", text_encoder)
    return result


def run_temporal(ws: Workspace, resume: bool, **overrides) -> dict:
    """Train the temporal layers of the base STUNet: inflated from the T2I, or, with
    ``stages.temporal.init_from``, continued from a STUNet saved earlier (``lumiere inflate``'s output or a
    pipeline's ``base/``) with a fresh optimizer and schedule, e.g. to change the recipe part-way.

    With ``stages.temporal.refine`` a second phase follows in the same run: the first phase's EMA weights
    trained further with that section's settings over the stage's (a fresh optimizer, schedule and EMA;
    checkpoints in ``temporal/refine``), so a recipe that changes its timestep draws or rate part-way is
    still one config and one command. The result is the first phase's, with the second's under "refine"."""
    text_encoder = ws.text_encoder()
    ws.write_component("text_encoder", text_encoder)  # with each snapshot of the base, a loadable pipeline
    result = _train_base(ws, _initial_stunet(ws, text_encoder), text_encoder, ws.settings("temporal", **overrides),
                         ws.root / "temporal", resume, "temporal")
    if "refine" in ws.config.phases("temporal"):
        base = ws.load_stunet("base")
        base.t2i.requires_grad_(False)
        result["refine"] = _train_base(ws, base, text_encoder, ws.settings("temporal", "refine", **overrides),
                                       ws.root / "temporal" / "refine", resume, "temporal-refine")
    return result


def _train_base(ws: Workspace, base: STUNet, text_encoder: TextEncoder, settings: TrainSettings, directory: Path,
                resume: bool, description: str) -> dict:
    """One phase of the temporal stage: train ``base`` and write its EMA weights as the pipeline's base."""
    frames, height, width = ws.model.base_resolution
    long = (float(settings.long_clip_share), int(settings.long_clip_multiple)) if settings.long_clip_share else None
    data = video_dataset(ws.config, frames, height, width, on_device=True,
                         long_frames=frames * long[1] if long else None,
                         long_motions=settings.long_clip_motions if long else None)
    module = VideoModule(base, text_encoder, ws.objective(settings, recipe=True), "temporal",
                         vae=ws.vae(), render=device_renderer(data), long_clips=long)
    _memory_settings(settings, base)
    result = train(module, _video_parameters(base, settings), _loader(data, settings),
                   settings, directory, resume, description, validation=_video_validation(ws, module),
                   on_checkpoint=ws.snapshot("base", base))
    base.t2i.requires_grad_(False)
    ws.write_component("base", base)
    return result


def _initial_stunet(ws: Workspace, text_encoder: TextEncoder) -> STUNet:
    base = _stunet_to_continue(ws, "temporal", text_encoder)
    if base is None:
        return inflate(ws.t2i_unet(), ws.model.temporal)
    if base.extra_input_channels:
        raise InputError(f"stages.temporal.init_from: {ws.config.stage('temporal').init_from} is a conditional "
                         f"model ({base.extra_input_channels} extra input channels); the temporal stage trains the base")
    return base


def _stunet_to_continue(ws: Workspace, stage: str, text_encoder: TextEncoder) -> STUNet | None:
    """The STUNet named by ``stages.<stage>.init_from`` (T2I / SR weights frozen), or None."""
    init_from = ws.config.stage(stage).init_from
    if not init_from:
        return None
    directory = Path(init_from).expanduser()
    if not (directory / "config.json").is_file():
        raise InputError(f"stages.{stage}.init_from: no STUNet config.json in {directory}")
    model = STUNet.from_pretrained(directory)
    # The config's temporal options describe the model the run trains: a STUNet saved with others would be
    # trained (and exported) as it is, under a config that says something else. The stage checks the two
    # options that differ per model itself (the base's / SSR's temporal resizing, a conditional's inputs).
    section, config = ("model.ssr.temporal", ws.model.ssr_temporal) if stage == "ssr" else ("model.temporal", ws.model.temporal)
    wanted, saved = config.to_dict(), model.temporal_config.to_dict()
    differ = {key: (value, saved[key]) for key, value in wanted.items()
              if key not in ("temporal_resize", "extra_input_channels") and saved[key] != value}
    if differ:
        listed = ", ".join(f"{key} {saved!r} (config: {wanted!r})" for key, (wanted, saved) in differ.items())
        raise InputError(f"stages.{stage}.init_from: {directory} was saved with {listed}: inflate it with this "
                         f"config (`python -m lumiere inflate --config ...`) or make {section} match")
    width = model.t2i.config.cross_attention_dim
    if width != text_encoder.hidden_size:
        raise InputError(f"stages.{stage}.init_from: {directory} attends to {width}-wide text states, "
                         f"the run's text encoder gives {text_encoder.hidden_size}")
    model.t2i.requires_grad_(False)
    return model


def run_conditional(ws: Workspace, resume: bool, **overrides) -> dict:
    settings = ws.settings("conditional", **overrides)
    text_encoder = ws.text_encoder()
    stage = ws.config.stage("conditional")
    conditional = _stunet_to_continue(ws, "conditional", text_encoder)  # a conditional model trained further
    if conditional is None:
        conditional = ws.load_stunet("base")  # start from the trained temporal layers
        conditional.expand_input_channels(conditional.in_channels + 1,
                                          ws.model.temporal.condition_every_level)
    elif not conditional.extra_input_channels:
        raise InputError(f"stages.conditional.init_from: {stage.init_from} has no C and M "
                         "input channels: give a conditional STUNet (a pipeline's conditional/ folder), or leave "
                         "init_from out to start from the run's base")
    conditional.t2i.conv_in.requires_grad_(True)  # must learn to read C and M
    frames, height, width = ws.model.base_resolution
    data = video_dataset(ws.config, frames, height, width, on_device=True)
    module = VideoModule(conditional, text_encoder, ws.objective(settings, recipe=True), "conditional",
                         vae=ws.vae(), render=device_renderer(data),
                         mask_probabilities=mask_probabilities(stage.mask_shares), known_weight=stage.known_weight)
    _memory_settings(settings, conditional)
    params = _video_parameters(conditional, settings, also_full_rate=list(conditional.t2i.conv_in.parameters()))
    result = train(module, params, _loader(data, settings), settings, ws.root / "conditional", resume, "conditional",
                   on_checkpoint=ws.snapshot("conditional", conditional))
    conditional.t2i.requires_grad_(False)
    ws.write_component("conditional", conditional)
    return result


def run_ssr(ws: Workspace, resume: bool, **overrides) -> dict:
    """Image SR U-Net first (single frames), then inflate it and train its temporal layers on windows.
    SSR is pixel-space, also for a latent model (it super-resolves the decoded clip); a config without
    ``model.ssr`` skips the stage with a log line (``--stage all`` runs through)."""
    if ws.model.ssr is None:  # SSR is optional (a latent model outputs at its decoded resolution)
        reason = "the config has no model.ssr section: the pipeline outputs at base_resolution"
        process_state().print(f"ssr: skipped: {reason}")
        return {"skipped": reason}
    options, stage = ws.model.ssr_options, ws.config.stage("ssr")
    scale, crop = int(options.scale), int(stage.crop)
    frames, height, width = ws.model.base_resolution
    text_encoder = ws.text_encoder()
    high = (height * scale, width * scale)

    image_settings = ws.settings("ssr", "image", **overrides)
    objective = ws.objective(image_settings)
    ssr = _stunet_to_continue(ws, "ssr", text_encoder)
    if ssr is not None:  # continue a saved SSR's temporal layers: its image U-Net is already trained
        if ssr.temporal_downsampling_factor != 1:
            raise InputError(f"stages.ssr.init_from: {stage.init_from} down-samples time "
                             f"(factor {ssr.temporal_downsampling_factor}): a base model, not an SSR")
        image_result = {"skipped": f"image phase: continuing the SSR in {stage.init_from}"}
        process_state().print(f"ssr: {image_result['skipped']}")
    else:
        unet = build_ssr_unet(ws.model.ssr, text_encoder.hidden_size)
        image_module = SRImageModule(unet, text_encoder, objective, "ssr", options)
        _memory_settings(image_settings, unet)
        image_data = RandomCrop(video_dataset(ws.config, 1, *high, lowres=(height, width)), crop, scale, seed=1)
        image_result = train(image_module, list(unet.parameters()), _loader(image_data, image_settings),
                             image_settings, ws.root / "ssr" / "image", resume, "ssr-image")
        ssr = inflate(unet, ws.model.ssr_temporal)

    video_settings = ws.settings("ssr", "video", **overrides)
    video_module = VideoModule(ssr, text_encoder, objective, "ssr", options)
    _memory_settings(video_settings, ssr)
    window = int(stage.train_window if stage.train_window is not None else options.window)
    video_data = RandomCrop(video_dataset(ws.config, frames, *high, lowres=(height, width)), crop, scale, window, seed=2)
    video_result = train(video_module, list(ssr.temporal_parameters()), _loader(video_data, video_settings),
                         video_settings, ws.root / "ssr" / "video", resume, "ssr-video",
                         on_checkpoint=ws.snapshot("ssr", ssr))
    ws.write_component("ssr", ssr)
    return {"image": image_result, "video": video_result}


def run_style(ws: Workspace, resume: bool, styles: list[str] | None = None, **overrides) -> dict:
    """Fine-tune a copy of the spatial T2I weights on each style's images (StyleDrop-like data): its own
    folder of images where ``stages.style.styles`` maps it to one, else the procedural world rendered in
    that style (real videos have no styles: a bare name there is an error, not a silently unstyled style)."""
    stage = ws.config.stage("style")
    styles = styles or list(stage.styles)
    if not styles:
        raise InputError("no styles to train: set stages.style.styles in the config (a list of style names, "
                         "or a mapping style name -> folder of its images)")
    _, height, width = ws.model.base_resolution
    ws.config.check_styles(styles)
    # Every folder checked before the first style trains (a typo in the last one fails now, not hours later).
    datasets = {}
    for style in styles:
        if style in stage.style_folders:
            datasets[style] = ImageFolderDataset(stage.style_folders[style], height, width, f"stages.style.styles.{style}")
        else:  # a slider style also needs each scene's plain render, which it blends toward
            datasets[style] = _PlainCaptions(image_dataset(ws.config, height, width, style=style, on_device=True,
                                                           paired=stage.is_slider(style)))
    text_encoder = ws.text_encoder()
    results = {}
    # Start from the base's spatial weights: W_orig of the interpolation (the same as the T2I's when the
    # video stages kept it frozen, the video-tuned ones when they trained it).
    original = ws.load_stunet("base").t2i if (ws.pipeline / "base" / "config.json").is_file() else ws.t2i_unet()
    for style in styles:
        settings = ws.settings("style", style, **overrides)  # the stage's, then stages.style.per_style's
        unet = copy.deepcopy(original).requires_grad_(True)
        render = device_renderer(datasets[style])
        slider = stage.is_slider(style)
        if slider:
            module = StyleSliderModule(unet, text_encoder, ws.objective(settings), vae=ws.vae(), render=render)
            trained = list(module.delta.parameters())
        else:
            module = T2IModule(unet, text_encoder, ws.objective(settings), train_text_encoder=False, vae=ws.vae(),
                               render=render)
            trained = list(unet.parameters())
        _memory_settings(settings, unet)
        results[style] = train(module, trained, _loader(datasets[style], settings), settings,
                               ws.root / "style" / slugify(style), resume, f"style:{style}")
        weights = {name: value.detach() for name, value in module.weights(1.0).items()} if slider \
            else unet.state_dict()
        # Stored as its low-rank difference to W_orig (styles.StyleDelta, rank styles.STYLE_RANK): all the
        # interpolation needs, a fraction of a full copy of the T2I.
        ws.write_style(style, StyleDelta.between(weights, original.state_dict()))
    return results


class _PlainCaptions(_EpochWrapper):
    """Drop the ", in <style> style" suffix: the style lives in the weights, prompts stay the same."""

    def __init__(self, dataset):
        self.dataset = dataset

    def apply(self, item, index):
        item = dict(item)
        item["caption"] = item["caption"].split(", in ")[0]
        return item


RUNNERS = {"t2i": run_t2i, "temporal": run_temporal, "conditional": run_conditional, "ssr": run_ssr, "style": run_style}


def run_stage(stage: str, config: dict, output_dir: str | Path | None = None, resume: bool = False,
              time_scale: float = 1.0, on_write: Callable[[], None] | None = None, **overrides) -> dict:
    """Run one stage (``Workspace`` says what ``time_scale`` and ``on_write`` do; ``overrides`` are
    TrainSettings values over every stage's, None = the config's)."""
    if stage not in RUNNERS:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    process_state()  # the process group before anything else (processes.py)
    ws = Workspace(config, output_dir, time_scale=time_scale, on_write=on_write)
    # Weights drawn before training (a fresh T2I, inflate's temporal layers, the SSR's) follow the run's
    # seed, identically on every rank: two runs of one config start from the same model.
    set_seed(int(ws.settings(stage, **overrides).seed))
    return RUNNERS[stage](ws, resume, **overrides)


def continue_pipeline(start: str | Path, parts: dict[str, str | Path], destination: str | Path, config: RunConfig | dict,
                      dtype: torch.dtype = torch.float16) -> Path:
    """Write ``start`` (a saved pipeline, e.g. the bundle) to ``destination`` with the STUNets in ``parts``
    (component name -> a saved STUNet folder: what runs continuing its base or conditional model wrote) in
    place of its own; everything else (text encoder, the other models, styles, inference config, noise
    schedule) is ``start``'s. Its "training" record names ``config`` (the recipe that continued it) and keeps
    ``start``'s own record under "continued_from": a continued model's recipe is both.

    Raises:
        InputError: a name in ``parts`` that is not one of ``start``'s STUNets.
    """
    from ..pipeline import LumierePipeline

    pipe = LumierePipeline.from_pretrained(start, device="cpu", dtype=torch.float32)
    names = [name for name in ("base", "conditional", "ssr") if pipe.has_component(name)]
    unknown = sorted(set(parts) - set(names))
    if unknown:
        raise InputError(f"{start} has no {', '.join(unknown)} to replace (its models: {', '.join(names)})")
    # Only the models kept are read from ``start``: the replaced ones come from ``parts`` alone.
    models = {name: STUNet.from_pretrained(Path(parts[name])) if name in parts else pipe.get_component(name)
              for name in names}
    training = {**training_record(config), "continued_from": pipe.training}
    continued = LumierePipeline(text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                vae=pipe.vae if pipe.is_latent else None, **models, config=pipe.config,
                                scheduler_config=pipe.scheduler_config,
                                styles={name: pipe.style_state(name) for name in pipe.styles},
                                device="cpu", dtype=torch.float32, training=training)
    destination = Path(destination)
    shutil.rmtree(destination, ignore_errors=True)
    continued.save_pretrained(destination, dtype=dtype)
    if (Path(start) / "README.md").is_file():
        shutil.copy(Path(start) / "README.md", destination / "README.md")
    return destination


def export_pipeline(output_dir: str | Path, destination: str | Path, dtype: torch.dtype = torch.float16,
                    process=None) -> Path:
    """Copy the trained pipeline to ``destination`` with weights cast to ``dtype`` (fp16, the default, halves
    the bundled size; bf16 or fp32 as ``python -m lumiere export --dtype`` asks; the text encoder's modules
    transformers keeps in fp32 stay fp32: ``TextEncoder.save_pretrained``).

    Under ``accelerate launch`` only the main process writes; the others wait for it (``process``: the
    accelerate state, default ``process_state()``)."""
    destination = Path(destination)
    process = process if process is not None else process_state()
    if process.is_main_process:
        from ..pipeline import LumierePipeline

        pipe = LumierePipeline.from_pretrained(Path(output_dir) / "pipeline", device="cpu", dtype=torch.float32)
        card = destination / "README.md"
        kept = card.read_text() if card.is_file() else None
        shutil.rmtree(destination, ignore_errors=True)
        pipe.save_pretrained(destination, dtype=dtype)
        if kept:
            card.write_text(kept)
    process.wait_for_everyone()
    return destination
