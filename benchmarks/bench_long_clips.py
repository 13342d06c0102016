"""Text to video longer than the model's clip: does a 3x clip keep one object and the
prompt's motion, and where do its windows join? One pass, temporal MultiDiffusion windows and FreeNoise's
shared noise (``sampling.shared_window_noise``), on the bundled model at base resolution (CPU).

    OMP_NUM_THREADS=1 LUMIERE_THREADS=1 PYTHONPATH=. python benchmarks/bench_long_clips.py --seeds 2

Prompts: the 8 held-out (colour, shape, motion) triples' canonical prompts (``lumiere.evaluation``'s
backgrounds), seeds 0..seeds-1, ``--multiple`` x the clip (default 3: 48 frames), default steps and
guidance. Per clip: each of its ``multiple`` clip-long parts ("thirds" at 3x) is classified with
``data.analysis.motion_direction`` against the prompt's motion; "seam peak" = the largest frame-to-frame
mean |difference| over the mean one (1: no frame change stands out; a join of disagreeing windows
raises it); "one object" = ``coherence_measures``: an object in every frame, one component in each.
The reference rows are the model's own clip (16 frames, one part per clip) and the world's own render of each
prompt at the long length (no model: what the measures give the training data; at the clip's pace, and with
every motion spread); for the 16-frame rows the bench also prints the
step profile (``profile_table``), where bursts of the temporal down-sampling factor show. Rows are appended to a JSON
lines file as they finish (``--out``), so an interrupted run resumes where it stopped. ``--summary FILE`` writes the
model card's row (the pipeline's default sampling, ``CARD_SETTING``) as a "long_clips" metrics part that
``python -m lumiere compare`` reads next to ``eval``'s parts. ``--timing`` only times one long clip per setting (wall
seconds, best of 3, base and with the SSR, as ratios to the first setting):

    OMP_NUM_THREADS=2 LUMIERE_THREADS=2 PYTHONPATH=. python benchmarks/bench_long_clips.py --threads 2 --timing
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# name: (window in clips = ONE_PASS_FRAMES_FACTOR, window stride in clips, shared noise, noise block in clips,
#        share of the steps laid out in windows of the clip one noise block apart = LONG_CLIP_LAYOUT_SHARE)
SETTINGS = {
    "clip": None,  # the model's own 16-frame clip: the reference
    "one pass": (4, 3.0, False, 0.25, 0.0),
    "one pass, shared noise /4": (4, 3.0, True, 0.25, 0.0),
    "one pass, shared noise /8": (4, 3.0, True, 0.5, 0.0),
    "windows 16 stride 4": (1, 0.25, False, 0.25, 0.0),
    "windows 16 stride 8": (1, 0.5, False, 0.5, 0.0),
    "windows 16 stride 4, shared noise /4": (1, 0.25, True, 0.25, 0.0),
    "windows 16 stride 8, shared noise /8": (1, 0.5, True, 0.5, 0.0),
    "windows 32 stride 8, shared noise /8": (2, 0.5, True, 0.5, 0.0),
    # the pipeline's default: shared noise; the noisiest half of the steps in windows 16 stride 4, the rest one pass
    "layout in windows for half the steps, shared noise /4": (4, 3.0, True, 0.25, 0.5),
    "layout in windows for a quarter of the steps, shared noise /4": (4, 3.0, True, 0.25, 0.25),
    # the model's clip spread over the long clip's span (its frames at every ~multiple-th index), the frames
    # between filled by the conditional model holding them (``keyframes_to_video``): slow motion
    "clip spread, keyframes between": "spread",
    # one pass over the long clip plus one temporal factor of frames at each end, those then dropped: the
    # model's own clip jumps most in its first and last frames
    "one pass, ends trimmed": "trim",
    # no model: the procedural world's own render of the prompt at the long clip's length and the clip's pace
    # (``world.motion_time``: repeating motions go on, bounded ones are spread), as a long training clip
    # (``long_clip_share``) is: what the measures give the data itself
    "world render (reference)": "world",
    # the same with every motion spread over the long clip (the path of the model's clip, slower)
    "world render, every motion spread (reference)": "world spread",
}


def spread(pipe, prompt: str, seed: int, frames: int, steps: int | None) -> np.ndarray:
    clip = pipe.text_to_video(prompt, seed=seed, super_resolve=False, num_inference_steps=steps)
    at = [round(i * (frames - 1) / (len(clip) - 1)) for i in range(len(clip))]
    return pipe.keyframes_to_video(None, None, prompt, indices={j: clip[i] for i, j in enumerate(at)},
                                   num_frames=frames, seed=seed, super_resolve=False, num_inference_steps=steps)


def prompts() -> list[tuple[str, str]]:
    from lumiere.data.world import HELDOUT_COMBINATIONS, canonical_prompt
    from lumiere.evaluation import _background_for

    return [(canonical_prompt(c, s, m, _background_for(c, s, m, i)), m)
            for i, (c, s, m) in enumerate(HELDOUT_COMBINATIONS)]


def measures(video: np.ndarray, motion: str, clip: int) -> dict:
    from lumiere.data.analysis import coherence_measures, motion_direction

    parts = [motion_direction(video[s:s + clip]) for s in range(0, len(video) - clip + 1, clip)]
    diffs = np.abs(np.diff(video.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))
    profile = diffs / max(diffs.mean(), 1e-8)  # each step's change over the mean one; its max is the seam peak
    coherence = coherence_measures(video)
    return {"parts": len(parts), "as_prompted": sum(p == motion for p in parts), "motions": parts,
            "seam_peak": float(profile.max()), "peak_at": int(profile.argmax()),
            "step_profile": [round(float(d), 4) for d in profile],
            "one_object": bool(coherence["present_every_frame"] and coherence["one_component"])}


def configure(setting) -> None:
    from lumiere import options

    if not isinstance(setting, tuple):  # the model's clip, the world's renders, spread and trimmed clips: one pass
        setting = SETTINGS["one pass"]
    options.ONE_PASS_FRAMES_FACTOR, options.BASE_WINDOW_STRIDE_CLIPS, options.LONG_CLIP_SHARED_NOISE, \
        options.SHARED_NOISE_STRIDE_CLIPS, options.LONG_CLIP_LAYOUT_SHARE = setting


def aggregate(rows: list[dict], name: str) -> dict | None:
    """One setting's clips pooled: parts moving as prompted over all parts, the seam peaks, clips with one object."""
    r = [row for row in rows if row["setting"] == name]
    if not r:
        return None
    return {"clips": len(r), "parts": sum(row["parts"] for row in r), "as_prompted": sum(row["as_prompted"] for row in r),
            "peaks": [row["seam_peak"] for row in r], "one_object": sum(row["one_object"] for row in r),
            "seconds": float(np.mean([row["seconds"] for row in r]))}


def table(rows: list[dict], names: list[str]) -> str:
    lines = ["| sampling | clips | parts moving as prompted | seam peak (mean / max over clips) | clips ≤ 1.3 | "
             "one object in every frame | seconds per clip |", "|---|---|---|---|---|---|---|"]
    for name in names:
        a = aggregate(rows, name)
        if a is None:
            continue
        peaks, n = a["peaks"], a["clips"]
        lines.append(f"| {name} | {n} | {a['as_prompted']} / {a['parts']} | {np.mean(peaks):.2f} / {max(peaks):.2f} | "
                     f"{sum(p <= 1.3 for p in peaks)}/{n} | {a['one_object']}/{n} | {a['seconds']:.1f} |")
    return "\n".join(lines)


CARD_SETTING = "layout in windows for half the steps, shared noise /4"  # the pipeline's default: the card's row


def summary(rows: list[dict]) -> dict:
    """The card's long-clip row as a metrics part: the share of clip-long parts moving as prompted (over
    ``thirds`` parts), the mean seam peak, the share of clips with one object in every frame."""
    a = aggregate(rows, CARD_SETTING)
    if a is None:
        raise SystemExit(f"--summary: no {CARD_SETTING!r} rows measured; add it to --settings")
    return {"long_clips": {"setting": CARD_SETTING, "clips": a["clips"], "thirds": a["parts"],
                           "thirds_as_prompted": a["as_prompted"] / a["parts"], "seam_peak": float(np.mean(a["peaks"])),
                           "one_object": a["one_object"] / a["clips"]}}


def profile_table(rows: list[dict], names: list[str]) -> str:
    """Each setting's frame-to-frame change at every step, over its mean, averaged over the clips: a model
    that advances its object in bursts of the temporal down-sampling factor shows a period there, one
    that moves evenly a flat row of ~1. Rows recorded before this column existed are left out."""
    lines = []
    for name in names:
        profiles = [row["step_profile"] for row in rows if row["setting"] == name and "step_profile" in row]
        if not profiles or len({len(p) for p in profiles}) != 1:
            continue
        mean = np.mean(profiles, axis=0)
        if not lines:
            lines = ["| sampling | clips | " + " | ".join(str(i) for i in range(len(mean))) + " | std |",
                     "|---|---|" + "---|" * (len(mean) + 1)]
        lines.append(f"| {name} | {len(profiles)} | " + " | ".join(f"{v:.2f}" for v in mean) + f" | {mean.std():.3f} |")
    return "\n".join(lines)


def timing(pipe, names: list[str], frames: int, steps: int | None, repeats: int = 3) -> str:
    """Wall seconds of one ``frames``-long text-to-video clip per sampling setting (best of ``repeats``), at base
    resolution and with the SSR, each over the first setting's: what a creator waits for the long clip."""
    prompt = prompts()[0][0]
    pipe.text_to_video(prompt, seed=0, num_frames=frames, num_inference_steps=steps)  # warm-up: load, first call
    seconds = {}
    for name in names:
        configure(SETTINGS[name])
        for ssr in (False, True):
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                pipe.text_to_video(prompt, seed=0, num_frames=frames, super_resolve=ssr, num_inference_steps=steps)
                best = min(best, time.perf_counter() - start)
            seconds[name, ssr] = best
    first = names[0]
    lines = [f"| sampling ({frames} frames) | base | × | with SSR | × |", "|---|---|---|---|---|"]
    for name in names:
        lines.append(f"| {name} | {seconds[name, False]:.2f} s | {seconds[name, False] / seconds[first, False]:.2f} | "
                     f"{seconds[name, True]:.2f} s | {seconds[name, True] / seconds[first, True]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline directory (default: the bundled model)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--multiple", type=int, default=3, help="clip length in model clips")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--settings", nargs="*", default=None, choices=list(SETTINGS),
                        help="default: every setting; with --timing, 'one pass' and the card's")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/long_clips.jsonl"))
    parser.add_argument("--summary", type=Path, default=None,
                        help=f"write the {CARD_SETTING!r} row as a metrics part for `python -m lumiere compare`")
    parser.add_argument("--repeats", type=int, default=3, help="--timing: the best of this many calls")
    parser.add_argument("--timing", action="store_true",
                        help="only time one long clip per sampling setting")
    args = parser.parse_args()
    import torch

    from lumiere import LumierePipeline

    torch.set_num_threads(args.threads)
    pipe = LumierePipeline.from_pretrained(args.model)
    clip = pipe.base_resolution[0]
    from lumiere import options

    if args.timing:
        names = [n for n in args.settings or ["one pass", CARD_SETTING] if isinstance(SETTINGS[n], tuple)]
        print(timing(pipe, names, args.multiple * clip, args.steps, args.repeats))
        return
    args.settings = args.settings or list(SETTINGS)

    defaults = (options.ONE_PASS_FRAMES_FACTOR, options.BASE_WINDOW_STRIDE_CLIPS, options.LONG_CLIP_SHARED_NOISE,
                options.SHARED_NOISE_STRIDE_CLIPS, options.LONG_CLIP_LAYOUT_SHARE)
    done = []
    if args.out.is_file():
        done = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    key = {(row["setting"], row["prompt"], row["seed"], row["frames"], row["steps"]) for row in done}
    for seed in range(args.seeds):  # seed-major: a partial run still covers every prompt and setting
        for prompt, motion in prompts():
            assert not pipe.unknown_words(prompt), (prompt, pipe.unknown_words(prompt))
            for name in args.settings:
                frames = clip if SETTINGS[name] is None else args.multiple * clip
                if (name, prompt, seed, frames, args.steps) in key:
                    continue
                configure(SETTINGS[name])
                start = time.process_time()
                if SETTINGS[name] in ("world", "world spread"):
                    from lumiere.data.world import pace_span, render_clip, spec_from_prompt

                    span = pace_span(frames, clip) if SETTINGS[name] == "world" else 1.0
                    video = render_clip(spec_from_prompt(prompt, seed), frames, *pipe.base_resolution[1:], span=span)
                elif SETTINGS[name] == "spread":
                    video = spread(pipe, prompt, seed, frames, args.steps)
                elif SETTINGS[name] == "trim":
                    margin = pipe.temporal_downsampling_factor
                    video = pipe.text_to_video(prompt, seed=seed, num_frames=frames + 2 * margin, super_resolve=False,
                                               num_inference_steps=args.steps)[margin:-margin]
                else:
                    video = pipe.text_to_video(prompt, seed=seed, num_frames=frames, super_resolve=False,
                                               num_inference_steps=args.steps)
                row = {"setting": name, "prompt": prompt, "seed": seed, "frames": frames, "steps": args.steps,
                       "seconds": time.process_time() - start, **measures(video, motion, clip)}
                print(json.dumps(row), flush=True)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
    configure(defaults)
    rows = [row for row in done if row["steps"] == args.steps and row["frames"] in (clip, args.multiple * clip)]
    print(table(rows, args.settings))
    print("\nframe-to-frame change by step, over the clip's mean (16-frame rows):")
    print(profile_table([row for row in rows if row["frames"] == clip], args.settings))
    if args.summary is not None:
        seeds = set(range(args.seeds))
        args.summary.write_text(json.dumps(summary([row for row in rows if row["seed"] in seeds]), indent=2))


if __name__ == "__main__":
    main()
