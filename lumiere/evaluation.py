"""Evaluation on the procedural world: the renderer's own knowledge measures what was generated.

Metrics (``python -m lumiere eval``):
- text-to-video colour / shape / motion accuracy on held-out (colour, shape, motion) prompts and on
  seen ones (``lumiere.data.analysis`` recovers these attributes from rendered clips; tests/test_data.py),
  per motion and per shape, temporal coherence (and which of its criteria the misses fail), and the
  shape accuracy of the base's T2I U-Net alone (what bounds the video model's shapes);
- video-to-video (SDEdit) on held-out world clips: at a near-identity strength the input must come back
  (PSNR, dB); at a strong one the source's structure must survive (the same number of objects, each
  frame's object where the source's is, within a stated tolerance);
- image-to-video first-frame PSNR, inpainting PSNR outside the mask, cinemagraph temporal std outside
  the mask — all on the *raw* model output (before the pipeline pastes known pixels back, which
  would make these trivially perfect);
- SSR fidelity on held-out clips rendered at high res (low = area down-sampling), with bicubic and
  ground-truth rows: PSNR, |Laplacian| relative to the ground truth, down-sampled-back PSNR vs the
  input, background flicker; and temporal-boundary artifacts (App. C): adjacent-frame difference at
  window boundaries relative to the other pairs, with and without MultiDiffusion and for the truth;
- styles (StyleDrop-like weight interpolation): at a weight of 0.8 the prompt's subject must still be
  found (colour and shape); at 1 the style must show, scored by a nearest-centroid classifier of simple
  image statistics fitted on the world's own renders in each style and unstyled.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .conditioning import cinemagraph_condition, image_to_video_condition, inpaint_condition
from .data.analysis import (COHERENCE_CRITERIA, analyse, classify_shape, coherence_failures, coherence_measures,
                            estimate_background, is_coherent, object_count, object_mask, object_track,
                            world_coherence_bounds)
from .data.world import (HELDOUT_COMBINATIONS, STYLES, ClipSpec, ObjectSpec, canonical_prompt, caption,
                         is_valid_object, render_clip)
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


def eval_prompt(colour: str, shape: str, motion: str, background: str, seed: int) -> str:
    """Seed 0 gets the canonical prompt; later seeds a paraphrase drawn from the world's caption templates
    (the model must follow the meaning, not one wording)."""
    if seed == 0:
        return canonical_prompt(colour, shape, motion, background)
    spec = ClipSpec((ObjectSpec(colour, shape, motion),), background, seed)
    return caption(spec, np.random.default_rng([seed, len(colour), len(shape), len(motion)]), p_background=1.0)


def attribute_accuracy(pipe, combinations, seeds: int, steps: int | None) -> dict:
    """Colour / shape / motion accuracy and temporal coherence of text-to-video at base resolution.

    Motion accuracy is also reported per motion class, shape accuracy per shape, and
    ``coherence_failures`` gives the share of videos failing each coherence criterion. ``world_coherence``
    scores the world's own renders of the same prompts with the same measure (the calibration: it
    should be ~1.0); ``t2i_shape_accuracy`` scores one image per prompt and seed from the base's T2I
    U-Net alone (``text_to_image``): the shape knowledge the video model's spatial weights bring.
    """
    frames, height, width = pipe.base_resolution
    bounds = world_coherence_bounds(frames, height, width)
    hits = {"colour": 0, "shape": 0, "motion": 0, "coherence": 0, "world_coherence": 0, "t2i_shape": 0}
    per_motion: dict[str, list[int]] = {}
    per_shape: dict[str, list[int]] = {}
    failures = dict.fromkeys(COHERENCE_CRITERIA, 0)
    total = 0
    for i, (colour, shape, motion) in enumerate(combinations):
        background = _background_for(colour, shape, motion, i)
        for seed in range(seeds):
            prompt = eval_prompt(colour, shape, motion, background, seed)
            video = pipe.text_to_video(prompt, seed=seed, num_inference_steps=steps, super_resolve=False)
            found, _ = analyse(video)
            hits["colour"] += found.colour == colour
            hits["shape"] += found.shape == shape
            hits["motion"] += found.motion == motion
            failed = coherence_failures(coherence_measures(video), motion, bounds)
            hits["coherence"] += not failed
            for criterion in failed:
                failures[criterion] += 1
            truth = render_clip(ClipSpec((ObjectSpec(colour, shape, motion),), background, 500 + seed), frames, height, width)
            hits["world_coherence"] += is_coherent(coherence_measures(truth), motion, bounds)
            image = pipe.text_to_image(prompt, seed=seed, num_inference_steps=steps)[None]
            hits["t2i_shape"] += classify_shape(object_mask(image)) == shape
            per_motion.setdefault(motion, []).append(int(found.motion == motion))
            per_shape.setdefault(shape, []).append(int(found.shape == shape))
            total += 1
    per_class = {"motion_accuracy_per_class": per_motion, "shape_accuracy_per_class": per_shape}
    return ({f"{k}_accuracy" if k in ("colour", "shape", "motion", "t2i_shape") else k: v / total
             for k, v in hits.items()}
            | {name: {c: float(np.mean(v)) for c, v in sorted(rows.items())} for name, rows in per_class.items()}
            | {"coherence_failures": {criterion: n / total for criterion, n in failures.items()}}
            | {"videos": total})


def _eval_clip(index: int, frames: int, height: int, width: int) -> tuple[np.ndarray, str]:
    colour, shape, motion = HELDOUT_COMBINATIONS[index % len(HELDOUT_COMBINATIONS)]
    background = _background_for(colour, shape, motion, index)
    spec = ClipSpec((ObjectSpec(colour, shape, motion),), background, 1000 + index)
    return render_clip(spec, frames, height, width), canonical_prompt(colour, shape, motion, background)


def _raw_conditional(pipe, condition, keep, prompt: str, seed: int, steps: int | None) -> np.ndarray:
    """The conditional model's own output (known pixels not pasted back), at base resolution."""
    return pipe.sample_conditional(condition, keep, prompt, paste_known=False, seed=seed, num_inference_steps=steps,
                                   super_resolve=False)


def _continues(animated: np.ndarray, clip: np.ndarray) -> bool:
    """The same object as frame 0 of ``clip`` (colour, shape, motion), present in every frame."""
    expected, _ = analyse(clip)
    found, _ = analyse(animated)
    return found == expected and coherence_measures(animated)["present_every_frame"]


def conditional_metrics(pipe, samples: int, steps: int | None) -> dict:
    """The raw conditional model (nothing pasted, no guidance: what the weights themselves do), and for
    image-to-video also what the application gives at base resolution (``i2v_continues_object_app``:
    known pixels held at every denoising step and pasted back)."""
    frames, height, width = pipe.base_resolution
    first_frame, continues, continues_app, kept, still = [], [], [], [], []
    for i in range(samples):
        clip, prompt = _eval_clip(i, frames, height, width)
        video = video_tensor(clip, frames, height, width)
        # image-to-video: the first frame must come back, and the clip must go on with the same object,
        # present throughout and moving as prompted
        c, m = image_to_video_condition(image_tensor(clip[0], height, width), frames)
        animated = _raw_conditional(pipe, c, m, prompt, i, steps)
        first_frame.append(psnr(animated[0], clip[0]))
        continues.append(_continues(animated, clip))
        app = pipe.sample_conditional(c, m, prompt, seed=i, num_inference_steps=steps, super_resolve=False)
        continues_app.append(_continues(app, clip))
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
    return {"i2v_first_frame_psnr_db": float(np.mean(first_frame)), "i2v_continues_object": float(np.mean(continues)),
            "i2v_continues_object_app": float(np.mean(continues_app)),
            "inpaint_kept_region_psnr_db": float(np.mean(kept)),
            "cinemagraph_static_region_temporal_std": float(np.mean(still)), "samples": samples}


# ----------------------------------------------------------------------------- video-to-video

V2V_FIDELITY_STRENGTH = 0.05     # one step near the clean end: a near-identity edit
V2V_STRUCTURE_STRENGTH = 0.6     # most of the schedule re-run: the edit may change looks, not layout
V2V_CENTROID_TOLERANCE = 0.1     # of the frame's width / height (3.2 px at 32x32): "where the source's is"


def structure_kept(output: np.ndarray, source: np.ndarray, tolerance: float = V2V_CENTROID_TOLERANCE) -> dict:
    """Does ``output`` keep the layout of ``source`` (both uint8 (T, H, W, 3))? Per frame: the same number
    of objects, present in every frame, and the objects' centroid within ``tolerance`` (normalised units)
    of the source's. Masks use the source's background, so a recoloured object still counts as an object."""
    background = estimate_background(source)
    masks = object_mask(source, background), object_mask(output, background)
    counts = [np.array([object_count(f) for f in m]) for m in masks]
    (source_xy, _), (output_xy, _) = (object_track(m) for m in masks)
    error = float(np.linalg.norm(output_xy - source_xy, axis=1).max())
    same_count = bool((counts[0] == counts[1]).all())
    present = bool((counts[1] > 0).all())
    return {"kept": same_count and present and error <= tolerance, "same_count": same_count,
            "present": present, "max_centroid_error": error}


def v2v_metrics(pipe, samples: int, steps: int | None) -> dict:
    """SDEdit at base resolution on held-out world clips, with the clip's own prompt: the near-identity
    strength's PSNR to the input (the low-noise end of what the model learned; with at least 20 steps, so one
    step runs) and the share of clips whose structure survives the strong edit (``structure_kept``)."""
    frames, height, width = pipe.base_resolution
    # at least one denoising step must run at the near-identity strength (SDEdit rounds steps x strength)
    fidelity_steps = max(steps or 0, round(1 / V2V_FIDELITY_STRENGTH))
    fidelity, kept, errors = [], [], []
    for i in range(samples):
        clip, prompt = _eval_clip(i, frames, height, width)
        near = pipe.video_to_video(clip, prompt, strength=V2V_FIDELITY_STRENGTH, seed=i, super_resolve=False,
                                   num_inference_steps=fidelity_steps)
        fidelity.append(psnr(near, clip))
        edited = pipe.video_to_video(clip, prompt, strength=V2V_STRUCTURE_STRENGTH, seed=i, super_resolve=False,
                                     num_inference_steps=steps)
        structure = structure_kept(edited, clip)
        kept.append(structure["kept"])
        errors.append(structure["max_centroid_error"])
    return {f"v2v_psnr_db_at_{V2V_FIDELITY_STRENGTH}": float(np.mean(fidelity)),
            f"v2v_structure_kept_at_{V2V_STRUCTURE_STRENGTH}": float(np.mean(kept)),
            "v2v_max_centroid_error": float(np.mean(errors)), "v2v_centroid_tolerance": V2V_CENTROID_TOLERANCE,
            "samples": samples}


# ----------------------------------------------------------------------------- styles

STYLE_SUBJECT_WEIGHT = 0.8   # the strongest weight at which the subject must still be found
STYLE_REFERENCE_SEEDS = 3    # world renders per held-out prompt and look that fit the style classifier


def style_features(video: np.ndarray) -> np.ndarray:
    """Image statistics that tell the world's looks apart (uint8 (T, H, W, 3) in): the background's
    brightness and saturation, the whole clip's saturation, the share of paper-white pixels, detail
    (mean |Laplacian|) and the share of object pixels, each on a 0..1 scale."""
    background = estimate_background(video)
    pixels = video.astype(np.float64)
    return np.array([background.mean() / 255, np.ptp(background, axis=-1).mean() / 255,
                     np.ptp(pixels, axis=-1).mean() / 255, (pixels > 215).all(axis=-1).mean(),
                     laplacian_energy(video) / 255, object_mask(video, background).mean()])


class StyleClassifier:
    """Which look of its scene a video has: nearest centroid over standardised ``style_features``, one
    centroid per held-out prompt (its scene: colour, shape, motion, background) and look (None: unstyled),
    fitted on the world's renders. Scenes differ more than looks do (a sky is brighter than a night), so a
    video is compared with the renders of its own prompt. It scores whether a styled video *looks* like the
    style's training images: a measurable style, independent of the model."""

    def __init__(self, looks, frames: int, height: int, width: int, seeds: int = STYLE_REFERENCE_SEEDS):
        prompts = len(HELDOUT_COMBINATIONS)
        rows = {look: np.stack([style_features(render_clip(spec, frames, height, width, style=look))
                                for spec in _reference_specs(seeds, 500)]).reshape(prompts, seeds, -1)
                for look in looks}
        every = np.concatenate([r.reshape(prompts * seeds, -1) for r in rows.values()])
        self.mean, self.scale = every.mean(axis=0), every.std(axis=0) + 1e-9
        self.centroids = {look: ((r - self.mean) / self.scale).mean(axis=1) for look, r in rows.items()}

    def __call__(self, video: np.ndarray, prompt_index: int) -> str | None:
        """The look of ``video``, generated for ``HELDOUT_COMBINATIONS[prompt_index]``."""
        z = (style_features(video) - self.mean) / self.scale
        return min(self.centroids, key=lambda look: float(np.linalg.norm(z - self.centroids[look][prompt_index])))


def _reference_specs(seeds: int, first_seed: int) -> list[ClipSpec]:
    """``seeds`` scenes of each held-out prompt (prompt-major), with its evaluation background."""
    return [ClipSpec((ObjectSpec(colour, shape, motion),), _background_for(colour, shape, motion, i), first_seed + seed)
            for i, (colour, shape, motion) in enumerate(HELDOUT_COMBINATIONS) for seed in range(seeds)]


def _subject_found(video: np.ndarray, colour: str, shape: str) -> bool:
    found, _ = analyse(video)
    return found.colour == colour and found.shape == shape


def style_metrics(pipe, samples: int, steps: int | None) -> dict:
    """Per style of the pipeline that the world can render (a style trained from a folder of images has no
    reference renders here), on ``samples`` held-out prompts (each prompt in turn, the seed counting up):

    - ``subject_at_0`` / ``subject_at_0.8``: the share of videos whose colour and shape are the prompt's,
      without the style and at ``STYLE_SUBJECT_WEIGHT``;
    - ``recognised_at_1`` / ``recognised_at_0``: the share classified as the style (``StyleClassifier``)
      at full weight, and without the style (how often the classifier says so anyway);
    - calibration on the world's renders: ``world_recognised`` (the classifier on other seeds' renders in
      the style) and ``world_subject_at_1`` (the analysis finding the subject in them: line drawings and
      pastels are not always read as their palette colour, so subject-at-1 is not a target)."""
    frames, height, width = pipe.base_resolution
    styles = [style for style in pipe.styles if style in STYLES]
    if not styles:
        return {"styles": {}, "samples": samples, "skipped": "no style the procedural world renders"}
    classify = StyleClassifier((None, *styles), frames, height, width)
    plain, metrics = [], {}
    cases = []  # (colour, shape, prompt index, seed, prompt)
    for i in range(samples):
        index, seed = i % len(HELDOUT_COMBINATIONS), i // len(HELDOUT_COMBINATIONS)
        colour, shape, motion = HELDOUT_COMBINATIONS[index]
        prompt = eval_prompt(colour, shape, motion, _background_for(colour, shape, motion, index), seed)
        cases.append((colour, shape, index, seed, prompt))
        plain.append(pipe.text_to_video(prompt, seed=seed, num_inference_steps=steps, super_resolve=False))
    world_specs = _reference_specs(1, 900)
    for style in styles:
        subject, recognised = [], []
        for (colour, shape, index, seed, prompt), unstyled in zip(cases, plain):
            styled = {weight: pipe.text_to_video(prompt, seed=seed, num_inference_steps=steps, super_resolve=False,
                                                 style=style, style_weight=weight)
                      for weight in (STYLE_SUBJECT_WEIGHT, 1.0)}
            subject.append((_subject_found(unstyled, colour, shape),
                            _subject_found(styled[STYLE_SUBJECT_WEIGHT], colour, shape)))
            recognised.append((classify(unstyled, index) == style, classify(styled[1.0], index) == style))
        world = [render_clip(spec, frames, height, width, style=style) for spec in world_specs]
        subject_at, recognised_at = np.mean(subject, axis=0), np.mean(recognised, axis=0)
        metrics[style] = {"subject_at_0": float(subject_at[0]), f"subject_at_{STYLE_SUBJECT_WEIGHT}": float(subject_at[1]),
                          "recognised_at_1": float(recognised_at[1]), "recognised_at_0": float(recognised_at[0]),
                          "world_recognised": float(np.mean([classify(v, i) == style for i, v in enumerate(world)])),
                          "world_subject_at_1": float(np.mean([_subject_found(v, spec.objects[0].colour,
                                                                               spec.objects[0].shape)
                                                               for v, spec in zip(world, world_specs)]))}
    return {"styles": metrics, "samples": samples}


# ----------------------------------------------------------------------------- SSR
# Backgrounds with texture (sea swell, grass blades, stars) so detail and flicker are measurable.
SSR_BACKGROUNDS = ("sea", "grass", "night", "sky")


def area_downsample(video: np.ndarray, scale: int) -> np.ndarray:
    """(T, H, W, C) -> (T, H/scale, W/scale, C) float block means (how the world's low-res clips are made)."""
    t, h, w, c = video.shape
    return video.astype(np.float64).reshape(t, h // scale, scale, w // scale, scale, c).mean(axis=(2, 4))


def bicubic_upsample(video: np.ndarray, scale: int) -> np.ndarray:
    """The baseline up-sampler: per-frame bicubic, uint8."""
    import cv2

    return np.stack([np.clip(cv2.resize(f, (f.shape[1] * scale, f.shape[0] * scale), interpolation=cv2.INTER_CUBIC),
                             0, 255).astype(np.uint8) for f in video])


def laplacian_energy(video: np.ndarray) -> float:
    """Mean |4-neighbour Laplacian| over interior pixels: detail plus grain (noise raises it, blur lowers it)."""
    v = video.astype(np.float64)
    lap = 4 * v[:, 1:-1, 1:-1] - v[:, :-2, 1:-1] - v[:, 2:, 1:-1] - v[:, 1:-1, :-2] - v[:, 1:-1, 2:]
    return float(np.abs(lap).mean())


def static_background(truth: np.ndarray) -> np.ndarray:
    """(H, W) pixels the ground truth never changes over the clip: background the object never crosses."""
    return np.ptp(truth.astype(np.int16), axis=0).max(axis=-1) <= 1


def background_frame_diff(video: np.ndarray, static: np.ndarray) -> float:
    """Mean |frame t+1 - frame t| on the static background: flicker (the ground truth's is ~0)."""
    diffs = np.abs(np.diff(video.astype(np.float64), axis=0))
    return float(diffs[:, static].mean()) if static.any() else float("nan")


def ssr_fidelity(output: np.ndarray, truth: np.ndarray, low: np.ndarray) -> dict:
    """How faithful an up-sampling ``output`` of ``low`` is to the high-res ``truth`` (all uint8 (T, H, W, 3)).

    psnr_db: to the ground truth; laplacian_ratio: |Laplacian| relative to the ground truth's (1 =
    the same amount of detail; < 1 blurry, > 1 grainy); downsampled_psnr_db: the output area-down-
    sampled back vs ``low`` (does it keep the input's structure?); background_frame_diff: flicker on
    the ground truth's static background.
    """
    scale = truth.shape[1] // low.shape[1]
    return {"psnr_db": psnr(output, truth),
            "laplacian_ratio": laplacian_energy(output) / max(laplacian_energy(truth), 1e-8),
            "downsampled_psnr_db": psnr(area_downsample(output, scale), low),
            "background_frame_diff": background_frame_diff(output, static_background(truth))}


def boundary_peak(video: np.ndarray, boundaries: list[int]) -> float:
    """Mean |adjacent-frame difference| at the given pair indices over its mean at the other pairs.

    ~1 when nothing happens at the boundaries; a jump between independently sampled windows raises it.
    """
    diffs = np.abs(np.diff(video.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))
    others = np.delete(diffs, boundaries)
    return float(diffs[boundaries].mean() / max(others.mean(), 1e-8))


def _ssr_clip(index: int, frames: int, height: int, width: int, scale: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(low, truth, prompt): a held-out prompt's clip rendered at high res; low = its area down-sampling."""
    colour, shape, motion = HELDOUT_COMBINATIONS[index % len(HELDOUT_COMBINATIONS)]
    rotated = [SSR_BACKGROUNDS[(index + k) % len(SSR_BACKGROUNDS)] for k in range(len(SSR_BACKGROUNDS))]
    background = next((b for b in rotated if is_valid_object(colour, shape, motion, b)), "black")
    spec = ClipSpec((ObjectSpec(colour, shape, motion),), background, 2000 + index)
    truth = render_clip(spec, frames, height * scale, width * scale)
    low = np.clip(area_downsample(truth, scale) + 0.5, 0, 255).astype(np.uint8)
    return low, truth, canonical_prompt(colour, shape, motion, background)


def _mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _mean_rows(rows: list[dict]) -> dict:
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def ssr_metrics(pipe, samples: int) -> dict:
    """SSR fidelity (vs a bicubic baseline and the ground truth) and window-boundary artifacts (App. C).

    One clip per sample (held-out prompt, textured background, SSR seed = sample index), at the base
    clip length, scored for fidelity. The boundary peak needs clips spanning at least two windows, so
    it is measured on clips of max(base frames, 2 x window) frames, with MultiDiffusion and with the
    no-overlap ablation, at the pairs where non-overlapping windows meet.

    Next to the peaks, why they can be equal: ``ssr_temporal_layers_change`` is the mean |difference|
    (0-255) between the output with the configured window and with every frame alone (window 1), i.e.
    what the SSR's temporal layers contribute; ``ssr_seed_change`` is what another seed changes. When
    the first is a small part of the second, windows generate no content of their own that could
    disagree at their edges, so MultiDiffusion has nothing to reconcile.
    """
    frames, height, width = pipe.base_resolution
    scale = pipe.ssr_scale
    window = int(pipe.ssr_options.window)
    boundary_frames = max(frames, 2 * window)
    no_overlap = temporal_windows(boundary_frames, window, 0)
    boundaries = [start - 1 for start, _ in no_overlap[1:]]  # pair (start-1, start) crosses a window edge
    rows = {"ssr": [], "bicubic": [], "ground_truth": []}
    peaks = {"multidiffusion": [], "no_overlap": [], "ground_truth": []}
    seconds, temporal_change, seed_change = 0.0, [], []
    for i in range(samples):
        low, truth, prompt = _ssr_clip(i, frames, height, width, scale)
        started = time.time()
        output = pipe.super_resolve(low, prompt, seed=i, multidiffusion=True)
        seconds += time.time() - started
        alone = pipe.super_resolve(low, prompt, seed=i, window=1)
        other_seed = pipe.super_resolve(low, prompt, seed=i + samples, multidiffusion=True)
        temporal_change.append(_mean_abs_difference(output, alone))
        seed_change.append(_mean_abs_difference(output, other_seed))
        rows["ssr"].append(ssr_fidelity(output, truth, low))
        rows["bicubic"].append(ssr_fidelity(bicubic_upsample(low, scale), truth, low))
        rows["ground_truth"].append(ssr_fidelity(truth, truth, low))
        long_low, long_truth, prompt = _ssr_clip(i, boundary_frames, height, width, scale)
        for name, multidiffusion in (("multidiffusion", True), ("no_overlap", False)):
            long_output = pipe.super_resolve(long_low, prompt, seed=i, multidiffusion=multidiffusion)
            peaks[name].append(boundary_peak(long_output, boundaries))
        peaks["ground_truth"].append(boundary_peak(long_truth, boundaries))
    return {"fidelity": {name: _mean_rows(r) for name, r in rows.items()},
            **{f"ssr_boundary_peak_{name}": float(np.mean(p)) for name, p in peaks.items()},
            "ssr_temporal_layers_change": float(np.mean(temporal_change)), "ssr_seed_change": float(np.mean(seed_change)),
            "ssr_seconds_per_clip": seconds / samples, "ssr_window": window, "ssr_boundary_frames": boundary_frames,
            "ssr_boundary_pairs": boundaries, "samples": samples}


EVAL_PARTS = ("t2v", "v2v", "conditional", "ssr", "style")
# Defaults: six seeds per text-to-video prompt (48 videos per split: one video is 2 points) and sixteen
# world clips per application metric (the SSR's too: its window-boundary peak varies by ~0.3 from clip to clip,
# so four clips could not order two SSRs), so that two models can be told apart by one command's numbers.
EVAL_SEEDS = 6
EVAL_CLIPS = 16


def evaluate_pipeline(model=None, samples: int | None = None, steps: int | None = None, quick: bool = False,
                      device=None, parts: tuple[str, ...] = EVAL_PARTS) -> dict:
    """Run the evaluation ``parts`` (text-to-video attributes and coherence, video-to-video fidelity and
    structure, raw conditional model, SSR, styles) on a pipeline (object, directory or Hub id); ``samples`` = seeds
    per prompt (text to video, styled or not) and clips per application metric (default ``EVAL_SEEDS`` and
    ``EVAL_CLIPS``)."""
    unknown = set(parts) - set(EVAL_PARTS)
    if unknown:
        raise ValueError(f"unknown evaluation parts {sorted(unknown)}; choose from {', '.join(EVAL_PARTS)}")
    from .pipeline import LumierePipeline

    pipe = model if isinstance(model, LumierePipeline) else LumierePipeline.from_pretrained(model, device=device)
    seeds = 1 if quick else (samples or EVAL_SEEDS)
    per_app = 2 if quick else (samples or EVAL_CLIPS)
    heldout = HELDOUT_COMBINATIONS[:2] if quick else HELDOUT_COMBINATIONS
    seen = SEEN_COMBINATIONS[:2] if quick else SEEN_COMBINATIONS
    started = time.time()
    metrics = {}
    if "t2v" in parts:
        metrics["heldout"] = attribute_accuracy(pipe, heldout, seeds, steps)
        metrics["seen"] = attribute_accuracy(pipe, seen, seeds, steps)
    if "v2v" in parts:
        metrics["v2v"] = v2v_metrics(pipe, per_app, steps)
    if "conditional" in parts and pipe.has_component("conditional"):
        metrics["conditional"] = conditional_metrics(pipe, per_app, steps)
    if "ssr" in parts and pipe.has_component("ssr"):
        metrics["ssr"] = ssr_metrics(pipe, 1 if quick else per_app)
    if "style" in parts and pipe.styles:
        # Styled text to video, sampled as the t2v part is (every held-out prompt at each seed): at the 16 clips of
        # an application metric one video moves a style's row by 6 points.
        metrics["style"] = style_metrics(pipe, len(heldout) * seeds, steps)
    metrics["seconds"] = round(time.time() - started, 1)
    return finite_or_none(metrics)


def finite_or_none(value):
    """``value`` with every non-finite float (the ground truth's PSNR to itself is infinite) as None, so
    the metrics serialise as standard JSON (``null``), which every parser reads."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# The rows a candidate model is judged on against the shipped one (the model card's evaluation table): the path
# into the metrics JSON, the row's name, whether a higher value is better, and for a share of videos the path of
# its sample count (the standard error of a share p over n is sqrt(p (1 - p) / n); the other rows keep no spread).
# Styles add two rows each.
COMPARED_ROWS = (
    *((f"{split}.{key}", f"{split} {name}", True, f"{split}.videos") for split in ("heldout", "seen")
      for key, name in (("colour_accuracy", "colour"), ("shape_accuracy", "shape"), ("motion_accuracy", "motion"),
                        ("coherence", "temporal coherence"))),
    ("v2v.v2v_psnr_db_at_0.05", "video-to-video PSNR at strength 0.05 (dB)", True, None),
    ("v2v.v2v_structure_kept_at_0.6", "video-to-video structure kept at 0.6", True, "v2v.samples"),
    ("conditional.i2v_first_frame_psnr_db", "I2V first frame, raw (dB)", True, None),
    ("conditional.i2v_continues_object", "I2V continues the object, raw", True, "conditional.samples"),
    ("conditional.i2v_continues_object_app", "I2V continues the object, as the app gives it", True,
     "conditional.samples"),
    ("conditional.inpaint_kept_region_psnr_db", "inpainting kept region, raw (dB)", True, None),
    ("conditional.cinemagraph_static_region_temporal_std", "cinemagraph still-region std, raw", False, None),
    ("ssr.fidelity.ssr.psnr_db", "SSR PSNR (dB)", True, None),
    ("ssr.ssr_boundary_peak_multidiffusion", "SSR window-boundary peak", False, None),
    # from ``benchmarks/bench_long_clips.py --summary`` (text to video at 3x the clip, the default sampling)
    ("long_clips.thirds_as_prompted", "3x clip: thirds moving as prompted", True, "long_clips.thirds"),
    ("long_clips.seam_peak", "3x clip: seam peak", False, None),
)
STYLE_ROWS = (("subject_at_0.8", "subject found at weight 0.8", True),
              ("recognised_at_1", "recognised as the style at weight 1", True))


def _lookup(metrics: dict, path: str):
    """The value at ``path`` (keys joined by dots; a key may itself hold a dot, as in ``at_0.05``), or None."""
    node, rest = metrics, path
    while rest:
        if not isinstance(node, dict):
            return None
        key = next((k for k in sorted(node, key=len, reverse=True) if rest == k or rest.startswith(k + ".")), None)
        if key is None:
            return None
        node, rest = node[key], rest[len(key) + 1:]
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _share_error(metrics: dict, path: str, count_path: str | None):
    """The standard error of the share at ``path`` over the sample count at ``count_path``, or None."""
    share, count = _lookup(metrics, path), _lookup(metrics, count_path) if count_path else None
    if share is None or not count:
        return None
    return float(np.sqrt(share * (1 - share) / count))


def compare_metrics(baseline: dict, candidate: dict) -> list[dict]:
    """Each compared row of two ``evaluate_pipeline`` results: ``{"row", "baseline", "candidate", "verdict",
    "z"}``, where verdict is ``better``, ``same``, ``worse``, or ``not measured`` when either side lacks the row,
    and ``z`` (shares of videos only, else None) is the difference over its standard error, both samples taken as
    independent: |z| < 2 is a difference the evaluation's sample size cannot tell from chance. The shipping rule
    reads the verdicts alone: a candidate replaces the bundled model only when no row is worse or unmeasured."""
    rows = list(COMPARED_ROWS)
    for style in sorted((baseline.get("style") or {}).get("styles", {})):
        rows += [(f"style.styles.{style}.{key}", f"{style}: {name}", higher, "style.samples")
                 for key, name, higher in STYLE_ROWS]
    compared = []
    for path, name, higher, count_path in rows:
        old, new = _lookup(baseline, path), _lookup(candidate, path)
        z = None
        if old is None or new is None:
            verdict = "not measured"
        else:
            verdict = "same" if new == old else "better" if (new > old) == higher else "worse"
            errors = [_share_error(m, path, count_path) for m in (baseline, candidate)]
            if None not in errors and (errors[0] or errors[1]):
                z = float((new - old) / np.hypot(*errors))
        compared.append({"row": name, "baseline": old, "candidate": new, "verdict": verdict, "z": z})
    return compared
