"""Seamless loops (``loop=True``): the jump from the last frame back to the first, against the clip's
own frame-to-frame changes, with and without the option, on the bundled model (CPU).

    PYTHONPATH=. python benchmarks/bench_loops.py --threads 2

Per clip: the pixel change mean |frame t+1 - frame t| (0-255) over t = 0..T-2 (its mean and max) and
the wrap-around jump mean |frame T-1 - frame 0|; the same for the object's centroid
(``lumiere.data.analysis.object_mask`` / ``object_track``, in % of the frame side). "within" counts
the clips whose wrap-around jump is at most the clip's own largest frame-to-frame change; "same-phase
step" is the mean change into frames N, 2N, ... (N the temporal down-sampling factor: with ``loop=True``
the model is circular by N frames, so T-1 -> 0 is one of these steps); "steps <
wrap" is the share of the clip's own frame-to-frame changes smaller than its wrap-around jump (100 %: the
seam is the largest change in the clip; about 50 %: an ordinary step).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from lumiere import LumierePipeline
from lumiere.data.analysis import object_mask, object_track

PROMPTS = ("a red circle moving right on the grass", "a blue square moving left on the sea",
           "a yellow triangle moving up in the sky", "a green circle bouncing on the gray",
           "a white square circling on the black", "an orange triangle moving down at night")


def measures(video: np.ndarray, factor: int) -> dict:
    video = video.astype(np.float64)
    steps = np.abs(np.diff(video, axis=0)).mean(axis=(1, 2, 3))
    # the steps into frames factor, 2 factor, ...: what T-1 -> 0 is to a model circular by ``factor`` frames
    phase = steps[np.arange(len(steps)) % factor == factor - 1]
    centroids, _ = object_track(object_mask(video))
    moves = 100 * np.linalg.norm(np.diff(centroids, axis=0), axis=1)
    wrap = np.abs(video[-1] - video[0]).mean()
    return {"pix_mean": steps.mean(), "pix_max": steps.max(), "pix_wrap": wrap, "pix_rank": 100 * (steps < wrap).mean(),
            "pix_phase": phase.mean(),
            "cen_mean": moves.mean(), "cen_max": moves.max(),
            "cen_wrap": 100 * np.linalg.norm(centroids[-1] - centroids[0])}


def table(rows: list[dict], title: str) -> str:
    lines = [f"### {title}", "",
             "| loop | clips | pixel step mean | pixel step max | same-phase step mean | **pixel wrap jump** | wrap ≤ max | "
             "steps < wrap | centroid step mean | centroid step max | **centroid wrap jump** | wrap ≤ max |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for loop in (False, True):
        r = [row for row in rows if row["loop"] == loop]
        mean = {k: np.mean([row[k] for row in r]) for k in r[0] if k not in ("loop", "prompt", "seed")}
        within_pix = sum(row["pix_wrap"] <= row["pix_max"] for row in r)
        within_cen = sum(row["cen_wrap"] <= row["cen_max"] + 1e-9 for row in r)
        lines.append(f"| {loop} | {len(r)} | {mean['pix_mean']:.1f} | {mean['pix_max']:.1f} | {mean['pix_phase']:.1f} | "
                     f"**{mean['pix_wrap']:.1f}** | "
                     f"{within_pix}/{len(r)} | {mean['pix_rank']:.0f} % | {mean['cen_mean']:.1f} | {mean['cen_max']:.1f} | "
                     f"**{mean['cen_wrap']:.1f}** | {within_cen}/{len(r)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline directory (default: the bundled model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--ssr-seeds", type=int, default=1, help="seeds per prompt of the run with SSR (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = LumierePipeline.from_pretrained(args.model)
    for prompt in PROMPTS:
        assert not pipe.unknown_words(prompt), (prompt, pipe.unknown_words(prompt))
    for super_resolve, seeds in ((False, args.seeds), (True, args.ssr_seeds)):
        if not seeds:
            continue
        rows = []
        for prompt in PROMPTS:
            for seed in range(seeds):
                for loop in (False, True):
                    video = pipe.text_to_video(prompt, seed=seed, loop=loop, super_resolve=super_resolve)
                    rows.append({"loop": loop, "prompt": prompt, "seed": seed,
                                 **measures(video, pipe.temporal_downsampling_factor)})
                    r = rows[-1]
                    print(f"# {prompt!r} seed {seed} loop {loop}: pixel step {r['pix_mean']:.1f} (max {r['pix_max']:.1f}) "
                          f"wrap {r['pix_wrap']:.1f}; centroid step {r['cen_mean']:.1f} (max {r['cen_max']:.1f}) "
                          f"wrap {r['cen_wrap']:.1f}", flush=True)
        shape = "x".join(map(str, video.shape[:3]))
        print(table(rows, f"{'with SSR' if super_resolve else 'base resolution, no SSR'} ({shape}, "
                          f"{len(PROMPTS)} prompts x {seeds} seeds)"), flush=True)


if __name__ == "__main__":
    main()
