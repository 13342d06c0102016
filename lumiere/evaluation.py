"""Evaluation on the procedural world: the renderer's own knowledge measures what was generated.

Metrics (``python -m lumiere eval``):
- text-to-video colour / shape / motion accuracy on held-out (colour, shape, motion) prompts and on
  seen ones (``lumiere.data.analysis`` recovers these attributes from rendered clips with ~100% accuracy);
- image-to-video first-frame PSNR, inpainting PSNR outside the mask, cinemagraph temporal std outside
  the mask — all on the *raw* model output (before the pipeline pastes known pixels back, which
  would make these trivially perfect);
- SSR temporal-boundary artifacts (App. C): adjacent-frame squared difference at window boundaries,
  relative to the median elsewhere, with and without MultiDiffusion.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .conditioning import cinemagraph_condition, image_to_video_condition, inpaint_condition
from .data.analysis import analyse
from .data.world import HELDOUT_COMBINATIONS, ClipSpec, ObjectSpec, canonical_prompt, is_valid_object, render_clip
from .multidiffusion import temporal_windows
from .preprocessing import image_tensor, video_tensor

EVAL_BACKGROUNDS = ("black", "sky", "night")
SEEN_COMBINATIONS = (("green", "circle", "moving right"), ("blue", "square", "moving up"),
                     ("yellow", "triangle", "bouncing"), ("white", "square", "moving left"),
                     ("orange", "circle", "moving down"), ("purple", "square", "circling"),
                     ("red", "circle", "growing"), ("blue", "triangle", "rotating"))


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    err = (a - b) ** 2
    mse = err[where].mean() if where is not None else err.mean()
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _background_for(colour: str, shape: str, motion: str, index: int) -> str:
    for offset in range(len(EVAL_BACKGROUNDS)):
        background = EVAL_BACKGROUNDS[(index + offset) % len(EVAL_BACKGROUNDS)]
        if is_valid_object(colour, shape, motion, background):
            return background
    return "black"


def attribute_accuracy(pipe, combinations, seeds: int, steps: int | None) -> dict:
    hits = {"colour": 0, "shape": 0, "motion": 0}
    total = 0
    for i, (colour, shape, motion) in enumerate(combinations):
        background = _background_for(colour, shape, motion, i)
        prompt = canonical_prompt(colour, shape, motion, background)
        for seed in range(seeds):
            video = pipe.text_to_video(prompt, seed=seed, num_inference_steps=steps, super_resolve=False)
            found, _ = analyse(video)
            hits["colour"] += found.colour == colour
            hits["shape"] += found.shape == shape
            hits["motion"] += found.motion == motion
            total += 1
    return {f"{k}_accuracy": v / total for k, v in hits.items()} | {"videos": total}


def _eval_clip(index: int, frames: int, height: int, width: int) -> tuple[np.ndarray, str]:
    colour, shape, motion = HELDOUT_COMBINATIONS[index % len(HELDOUT_COMBINATIONS)]
    background = _background_for(colour, shape, motion, index)
    spec = ClipSpec((ObjectSpec(colour, shape, motion),), background, 1000 + index)
    return render_clip(spec, frames, height, width), canonical_prompt(colour, shape, motion, background)


def _raw_conditional(pipe, condition, keep, prompt: str, seed: int, steps: int | None) -> np.ndarray:
    request = pipe._request(prompt, condition.shape[1], steps, None, None, seed, False, None, None, model="conditional")
    return pipe._conditional(request, condition, keep, {}, composite=False)


def conditional_metrics(pipe, samples: int, steps: int | None) -> dict:
    frames, height, width = pipe.base_resolution
    first_frame, kept, still = [], [], []
    for i in range(samples):
        clip, prompt = _eval_clip(i, frames, height, width)
        video = video_tensor(clip, frames, height, width)
        # image-to-video: the first frame must come back
        c, m = image_to_video_condition(image_tensor(clip[0], height, width), frames)
        first_frame.append(psnr(_raw_conditional(pipe, c, m, prompt, i, steps)[0], clip[0]))
        # inpainting: a centre box is generated, the rest must be kept
        hole = np.zeros((height, width), bool)
        hole[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = True
        c, m = inpaint_condition(video, torch.from_numpy(hole))
        kept.append(psnr(_raw_conditional(pipe, c, m, prompt, i, steps), clip, np.broadcast_to(~hole, clip.shape[:3])))
        # cinemagraph: outside the region nothing may move
        region = np.zeros((height, width), bool)
        region[:, width // 2:] = True
        c, m = cinemagraph_condition(image_tensor(clip[0], height, width), torch.from_numpy(region), frames)
        out = _raw_conditional(pipe, c, m, prompt, i, steps).astype(np.float64)
        still.append(float(out[:, ~region].std(axis=0).mean()))
    return {"i2v_first_frame_psnr_db": float(np.mean(first_frame)),
            "inpaint_kept_region_psnr_db": float(np.mean(kept)),
            "cinemagraph_static_region_temporal_std": float(np.mean(still)), "samples": samples}


def boundary_peak(video: np.ndarray, boundaries: list[int]) -> float:
    """Mean adjacent-frame squared difference at the given pair indices over the median of the others."""
    diffs = ((video[1:].astype(np.float64) - video[:-1].astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    others = np.delete(diffs, boundaries)
    return float(diffs[boundaries].mean() / max(np.median(others), 1e-8))


def ssr_boundary_metrics(pipe, samples: int) -> dict:
    frames, height, width = pipe.base_resolution
    window = int(pipe.config["ssr"].get("window", 8))
    no_overlap = temporal_windows(frames, window, 0)
    boundaries = [start - 1 for start, _ in no_overlap[1:]]  # pair (start-1, start) crosses a window edge
    with_md, without_md, reference = [], [], []
    scale = pipe.ssr_scale
    for i in range(samples):
        low, prompt = _eval_clip(i, frames, height, width)
        high_truth, _ = _eval_clip(i, frames, height * scale, width * scale)
        with_md.append(boundary_peak(pipe.super_resolve(low, prompt, seed=i, multidiffusion=True), boundaries))
        without_md.append(boundary_peak(pipe.super_resolve(low, prompt, seed=i, multidiffusion=False), boundaries))
        reference.append(boundary_peak(high_truth, boundaries))
    return {"ssr_boundary_peak_multidiffusion": float(np.mean(with_md)),
            "ssr_boundary_peak_no_overlap": float(np.mean(without_md)),
            "ssr_boundary_peak_ground_truth": float(np.mean(reference)),
            "ssr_window": window, "ssr_boundary_pairs": boundaries, "samples": samples}


def evaluate_pipeline(model=None, samples: int | None = None, steps: int | None = None, quick: bool = False,
                      device=None) -> dict:
    from .pipeline import LumierePipeline

    pipe = model if isinstance(model, LumierePipeline) else LumierePipeline.from_pretrained(model, device=device)
    seeds = 1 if quick else (samples or 3)
    per_app = 2 if quick else (samples or 8)
    heldout = HELDOUT_COMBINATIONS[:2] if quick else HELDOUT_COMBINATIONS
    seen = SEEN_COMBINATIONS[:2] if quick else SEEN_COMBINATIONS
    started = time.time()
    metrics = {"heldout": attribute_accuracy(pipe, heldout, seeds, steps),
               "seen": attribute_accuracy(pipe, seen, seeds, steps)}
    if pipe.has_component("conditional"):
        metrics["conditional"] = conditional_metrics(pipe, per_app, steps)
    if pipe.has_component("ssr"):
        metrics["ssr"] = ssr_boundary_metrics(pipe, 1 if quick else min(per_app, 4))
    metrics["seconds"] = round(time.time() - started, 1)
    return metrics
