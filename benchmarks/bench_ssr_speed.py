"""Text-to-video + SSR at default settings, before and after the SSR speed settings, in one run.

"before" is the SSR as the paper runs it (pure-noise start, every step; 8-frame windows with a
2-frame overlap, 24 frame evaluations per step for a 16-frame clip; detail 0.15); "after" is the
bundled model's ``model_index.json`` (SDEdit start: the last ``ssr.strength`` of the steps; one
16-frame window per 16-frame clip, the paper's window). Both also print the SSR fidelity on the
evaluation's held-out clips, so a speed-up is only read together with what it costs.

    PYTHONPATH=. python benchmarks/bench_ssr_speed.py --threads 2 --repeats 3

Variants are interleaved and the best of ``--repeats`` is kept (wall and process CPU time).
"""
from __future__ import annotations

import argparse
import time

import torch

from lumiere import LumierePipeline
from lumiere.evaluation import _mean_rows, _ssr_clip, ssr_fidelity

PAPER_SSR = {"strength": 1.0, "window": 8, "detail_gain": 0.15}
PROMPT = "a red circle moving to the right over the sea"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline directory (default: the bundled model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=4, help="held-out clips for the fidelity columns")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = LumierePipeline.from_pretrained(args.model, device="cpu", dtype=torch.float32)
    pipe.progress_bar = False
    after = dict(pipe.config["ssr"])
    variants = {"base only (no SSR)": None, "T2V + SSR before (paper settings)": {**after, **PAPER_SSR},
                "T2V + SSR after (bundled settings)": after}
    best = {name: (float("inf"), float("inf")) for name in variants}
    pipe.text_to_video(PROMPT, seed=0, super_resolve=False)  # warm-up
    for _ in range(args.repeats):
        for name, ssr in variants.items():
            if ssr is not None:
                pipe.config["ssr"] = ssr
            wall, cpu = time.perf_counter(), time.process_time()
            pipe.text_to_video(PROMPT, seed=0, super_resolve=ssr is not None)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    frames, height, width = pipe.base_resolution
    clips = [_ssr_clip(i, frames, height, width, pipe.ssr_scale) for i in range(args.clips)]
    fidelity = {}
    for name, ssr in variants.items():
        if ssr is None:
            continue
        pipe.config["ssr"] = ssr
        rows = [ssr_fidelity(pipe.super_resolve(low, prompt, seed=i), truth, low) for i, (low, truth, prompt) in enumerate(clips)]
        fidelity[name] = _mean_rows(rows)
    base_wall = best["base only (no SSR)"][0]
    print(f"### text_to_video at default settings, {args.threads} thread(s), best of {args.repeats}; "
          f"SSR fidelity on {args.clips} held-out clips\n")
    print("| variant | wall | CPU time | SSR wall / base wall | PSNR dB | |Laplacian| ratio | down-sampled PSNR dB | background flicker |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (wall, cpu) in best.items():
        f = fidelity.get(name)
        cols = (f"{f['psnr_db']:.2f} | {f['laplacian_ratio']:.2f} | {f['downsampled_psnr_db']:.1f} | "
                f"{f['background_frame_diff']:.2f}") if f else "- | - | - | -"
        ratio = f"{(wall - base_wall) / base_wall:.2f}" if f else "-"
        print(f"| {name} | {wall:.2f} s | {cpu:.2f} s | {ratio} | {cols} |")
    before, now = best["T2V + SSR before (paper settings)"][0], best["T2V + SSR after (bundled settings)"][0]
    print(f"\nspeed-up of T2V + SSR: {before / now:.2f}x ({before:.2f} s -> {now:.2f} s)")


if __name__ == "__main__":
    main()
