"""Where does a model decide the direction of motion? Two measurements behind the research log's
"Motion research" section (docs/research/lumiere-tiny.md).

    python -m scripts.motion_probe probe [--model DIR] [--timestep 999]
    python -m scripts.motion_probe overfit --pooling attention --min-timestep 990 --steps 200

``probe``: the mean over 8 noise draws of the denoiser's x0 estimate at ``--timestep`` for "a white
square moving right/left/up/down on black"; prints the brightness centroid of frame 0 and of the last
frame. From pure noise (t = 999) the x0 estimate is the prompt's mean video, so a model that follows
"moving right" shows frame 0 near x = 8 and the last frame near x = 24 (32-px frames).

``overfit``: freshly inflate the bundled model's T2I (its text encoder, frozen), train only the new
temporal layers on 2 "moving right" + 2 "moving left" clips at t in [--min-timestep, 1000), and probe
(t = 999) every 50 steps. Shows whether an architecture/recipe can read the direction word at all.
``--clips N`` instead draws N clips with variety (random colour and shape on a dark background, the
world's paraphrased captions; half right, half left, or with ``--all-motions`` a third right/left and
the rest any of the 9 motions; ``--all-backgrounds`` also the bright ones), ``--terminal-fraction f`` draws only that share of t from
[--min-timestep, 1000) and the rest uniformly, and ``--recipe motion`` uses the temporal layers of
configs/tiny-motion.json; the probe then also asks for "a yellow circle moving right/left at night".

    python -m scripts.motion_probe overfit --recipe motion --clips 256 --terminal-fraction 0.4 --steps 400

``--snr-shift S`` / ``--zero-snr`` train and probe on the model's schedule shifted (``sampling.noise_schedule_config``)
and/or rescaled to zero terminal SNR: where the noise schedule spends the training (with ``--terminal-fraction 0``,
uniform draws over the shifted schedule).

``--flow-shift S`` makes the freshly inflated model a rectified-flow model (``FlowMatchEulerDiscreteScheduler``
with ``shift`` S: the T2I's weights, now trained to predict the velocity eps - x0): the objective draws the
noise levels itself (logit-normal, shifted by S; ``--terminal-fraction f`` of them at the top 1 % of noise,
σ in (0.99, 1]; ``--min-timestep`` is not used), and the probe reads x0 = x - σ v at σ = 1 (t = 1000).

    python -m scripts.motion_probe overfit --recipe motion --clips 256 --all-motions --flow-shift 3 --terminal-fraction 0 --steps 800
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from lumiere import LumierePipeline, inflate
from lumiere.data.datasets import video_to_tensor
from lumiere.denoisers import Parametrisation
from lumiere.data.world import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, ClipSpec, ObjectSpec, caption, is_valid_object, render_clip
from lumiere.train.stages import DiffusionObjective

DIRECTIONS = ("moving right", "moving left", "moving up", "moving down")


def centroids(x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, T, H, W) in [-1, 1] -> per-frame brightness centroids x, y (B, T) of what stands out."""
    lum = x0.mean(1)
    weight = (lum - lum.flatten(2).median(-1).values[..., None, None]).clamp(min=0)
    ys, xs = torch.meshgrid(torch.arange(lum.shape[-2], dtype=torch.float32),
                            torch.arange(lum.shape[-1], dtype=torch.float32), indexing="ij")
    total = weight.sum((-1, -2)).clamp(min=1e-8)
    return (weight * xs).sum((-1, -2)) / total, (weight * ys).sum((-1, -2)) / total


@torch.no_grad()
def x0_estimate(model, objective: DiffusionObjective, text: torch.Tensor, noise: torch.Tensor, timestep: int):
    if objective.flow:  # the flow parametrisation: x0 = x - σ v
        v = model(noise, torch.full((noise.shape[0],), float(timestep)), text)
        return Parametrisation(objective.schedule).to_x0(noise, timestep, v).clamp(-1, 1)
    alpha = objective.schedule.alphas_cumprod[timestep]
    v = model(noise, torch.full((noise.shape[0],), timestep), text)
    return (alpha.sqrt() * noise - (1 - alpha).sqrt() * v).clamp(-1, 1)


def top_timestep(objective: DiffusionObjective) -> int:
    """The probe's top noise level: t = 999 on a DDPM schedule, σ = 1 (t = T) for a flow model."""
    return objective.schedule.config.num_train_timesteps if objective.flow else 999


def probe(args) -> None:
    pipe = LumierePipeline.from_pretrained(args.model, device="cpu", dtype=torch.float32)
    objective = DiffusionObjective(pipe.scheduler_config)
    frames, height, width = pipe.base_resolution
    generator = torch.Generator().manual_seed(0)
    for motion in DIRECTIONS:
        text = pipe.text_encoder([f"a white square {motion} on black"] * 8)
        noise = torch.randn(8, 3, frames, height, width, generator=generator)
        x, y = centroids(x0_estimate(pipe.base.eval(), objective, text, noise, args.timestep))
        print(f"t={args.timestep} {motion:13s} x {x[:, 0].mean():5.1f} -> {x[:, -1].mean():5.1f}   "
              f"y {y[:, 0].mean():5.1f} -> {y[:, -1].mean():5.1f}")


def _training_clips(args, frames: int, height: int, width: int) -> tuple[torch.Tensor, list[str]]:
    """The overfit set: the 4 fixed white-square clips, or ``--clips`` varied ones (see the module doc)."""
    if not args.clips:
        motions = [m for m in ("moving right", "moving left") for _ in range(2)]
        clips = [render_clip(ClipSpec((ObjectSpec("white", "square", m),), "black", seed % 2), frames, height, width)
                 for seed, m in enumerate(motions)]
        return torch.stack([video_to_tensor(c) for c in clips]), [f"a white square {m} on black" for m in motions]
    rng = np.random.default_rng(0)
    clips, captions = [], []
    while len(clips) < args.clips:
        horizontal = ("moving right", "moving left")[len(clips) % 2]
        motion = str(rng.choice(MOTIONS)) if args.all_motions and len(clips) % 3 else horizontal
        backgrounds = BACKGROUNDS if args.all_backgrounds else ("black", "night")
        colour, shape, background = str(rng.choice(COLOURS)), str(rng.choice(SHAPES)), str(rng.choice(backgrounds))
        if not is_valid_object(colour, shape, motion, background):
            continue
        spec = ClipSpec((ObjectSpec(colour, shape, motion),), background, int(rng.integers(1_000_000)))
        clips.append(video_to_tensor(render_clip(spec, frames, height, width)))
        captions.append(caption(spec, rng))
    return torch.stack(clips), captions


def overfit(args) -> None:
    torch.manual_seed(0)
    pipe = LumierePipeline.from_pretrained(args.model, device="cpu", dtype=torch.float32)
    text_encoder = pipe.text_encoder.eval()
    if args.recipe == "motion":
        temporal = json.loads((Path(__file__).parents[1] / "configs" / "tiny-motion.json").read_text())["model"]["temporal"]
    else:
        temporal = {"temporal_attention_depth": 2, "temporal_head_dim": 32,
                    "spatial_kernel_size": args.spatial_kernel_size, "text_pooling": args.pooling}
    model = inflate(copy.deepcopy(pipe.base.t2i), **temporal)
    if args.flow_shift is not None:  # a rectified-flow model: the objective draws its own noise levels
        if args.snr_shift != 1.0 or args.zero_snr:
            raise SystemExit("--flow-shift takes neither --snr-shift nor --zero-snr (DDPM schedule options)")
        schedule = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": args.flow_shift,
                    "num_train_timesteps": pipe.scheduler_config.get("num_train_timesteps", 1000)}
        objective = DiffusionObjective(schedule, terminal_fraction=args.terminal_fraction)
    else:
        schedule = {**pipe.scheduler_config, "snr_shift": args.snr_shift, "rescale_betas_zero_snr": args.zero_snr}
        objective = DiffusionObjective(schedule)  # trained and probed on this noise schedule
    top = top_timestep(objective)
    video, captions = _training_clips(args, *pipe.base_resolution)
    probes = ["a white square moving right on black", "a white square moving left on black"]
    if args.clips:
        probes += ["a yellow circle moving right at night", "a yellow circle moving left at night"]
    with torch.no_grad():
        text = text_encoder(captions)
        draws = 4 if args.clips else 2  # the 4-clip check probes as it always did: 2 noise draws per prompt
        probe_text = text_encoder([p for p in probes for _ in range(draws)])
    optimizer = torch.optim.AdamW(list(model.temporal_parameters()), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    started = time.time()
    for step in range(args.steps + 1):
        batch = torch.randperm(len(video), generator=generator)[:4] if len(video) > 4 else torch.arange(len(video))
        timesteps = None if objective.flow else torch.randint(args.min_timestep, 1000, (len(batch),))
        if timesteps is not None and args.terminal_fraction < 1.0:
            timesteps = torch.where(torch.rand(len(batch)) < args.terminal_fraction, timesteps,
                                    torch.randint(0, 1000, (len(batch),)))
        noisy, timesteps, target = objective.noisy(video[batch], timesteps)
        loss = objective.loss(model(noisy, timesteps, text[batch]), target, timesteps)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 50 == 0:
            noise = torch.randn((len(probe_text), *video.shape[1:]), generator=torch.Generator().manual_seed(0))
            x, _ = centroids(x0_estimate(model, objective, probe_text, noise, top))
            shown = "  ".join(f"{' '.join(p.split()[1:3])} {p.split()[4]}: x {x[draws * i:draws * (i + 1), 0].mean():4.1f}"
                              f" -> {x[draws * i:draws * (i + 1), -1].mean():4.1f}" for i, p in enumerate(probes))
            print(f"step {step:4d} ({time.time() - started:4.0f} s) loss {loss.item():.4f}  x0 at t={top}: {shown}"
                  f"   (target 8 -> 24 right / 24 -> 8 left)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["probe", "overfit"])
    parser.add_argument("--model", default=None, help="pipeline directory or Hub id (default: the bundled model)")
    parser.add_argument("--timestep", type=int, default=999)
    parser.add_argument("--pooling", choices=["mean", "attention"], default="attention")
    parser.add_argument("--spatial-kernel-size", type=int, default=0)
    parser.add_argument("--min-timestep", type=int, default=990)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--clips", type=int, default=0, help="overfit: N varied clips instead of the 4 fixed ones")
    parser.add_argument("--all-motions", action="store_true", help="overfit --clips: all 9 motions, not only right/left")
    parser.add_argument("--all-backgrounds", action="store_true",
                        help="overfit --clips: all 6 backgrounds, not only black/night (the probe stays on dark ones)")
    parser.add_argument("--terminal-fraction", type=float, default=1.0, help="overfit: share of t in [--min-timestep, 1000)")
    parser.add_argument("--recipe", choices=["plain", "motion"], default="plain",
                        help="overfit: temporal layers from --pooling/--spatial-kernel-size, or configs/tiny-motion.json")
    parser.add_argument("--snr-shift", type=float, default=1.0,
                        help="overfit: train (and probe) on the model's schedule with its SNR divided by this squared")
    parser.add_argument("--zero-snr", action="store_true", help="overfit: rescale the schedule to zero terminal SNR")
    parser.add_argument("--flow-shift", type=float, default=None,
                        help="overfit: make the model rectified flow with this shift (logit-normal draws; "
                             "--terminal-fraction of them at sigma >= 0.99)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    probe(args) if args.command == "probe" else overfit(args)


if __name__ == "__main__":
    main()
