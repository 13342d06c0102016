"""End-to-end pipeline timings: per-stage time of every application, and the sampler/steps trade-off.

Part 1 -- every application at the model's default settings (steps, guidance, frames, sampler):
``text_to_video``, ``image_to_video``, ``inpaint``, ``cinemagraph``, ``stylize`` (text_to_video with
``style=pipe.styles[0]``; skipped when the model has no style) and ``video_to_video`` (strength 0.6).
Stages of one request:
  * text      ``pipe.text_encoder.encode([prompt, negative])`` on a prompt not seen before, cache cleared
              (exactly the call the pipeline makes, so the generation below then hits the cache);
  * base      start of the full ``super_resolve=True`` call -> the step callback of the last base step
              (input pre-processing + base denoising loop + compositing of known pixels);
  * SSR       last base step -> return (super-resolution with temporal MultiDiffusion + uint8 conversion);
              split inside one call with the step callback (called once per step, base steps first);
  * mp4       ``lumiere.io.write_video`` of the output to a temporary .mp4 (H.264; ffmpeg runs as a child
              process, its CPU time -- summed over its threads -- is counted);
  * total     text + base + SSR + mp4 (what a user waits for from prompt to playable file).
Inputs for the conditional applications are a clip rendered by the procedural world at the base
resolution (``lumiere.data.world.render_clip``), the same clip for every run.

Part 2 -- samplers x steps for text_to_video (``super_resolve=False``): "dpm++", "ddim", "euler" x
{8, 12, 20} steps; time per call and the mean absolute difference (uint8 levels) to a reference drawn
with "ddpm" at 100 steps from the same seed (same initial noise): lower = closer to the long-run
sample. DDPM is itself stochastic, so the distance does not go to 0. Attribute correctness: the
prompt's (colour, shape, motion) from ``lumiere.data.world.parse_prompt`` compared to what
``lumiere.data.analysis.analyse`` measures on the generated clip (meaningful on the bundled model
only; a random-weight model draws noise).

    PYTHONPATH=. python benchmarks/bench_end_to_end.py                     # bundled model, full run
    PYTHONPATH=. python benchmarks/bench_end_to_end.py --model tiny --smoke  # tiny random pipeline, < 60 s
    PYTHONPATH=. python benchmarks/bench_end_to_end.py --model path/to/pipeline --repeats 3 --seeds 4

Time: process CPU time with 1 torch thread on CPU (robust to other processes on a shared machine,
see _common.time_call2), wall time otherwise; the best of ``--repeats`` runs per stage.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, markdown_table, sync, time_call2  # noqa: E402

APPS = ("text_to_video", "image_to_video", "inpaint", "cinemagraph", "stylize", "video_to_video")
STAGES = ("text", "base", "ssr", "mp4")
INPUT_PROMPT = "a blue square moving left on the grass"   # rendered as the input clip / image
ATTRIBUTE_PROMPT = "a red circle moving to the right"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None,
                   help="pipeline directory / Hub id; omitted or 'bundled' = the bundled model; "
                        "'tiny' = the tests' tiny random pipeline (development only)")
    p.add_argument("--apps", nargs="+", default=list(APPS), choices=APPS)
    p.add_argument("--samplers", nargs="+", default=["dpm++", "ddim", "euler"])
    p.add_argument("--steps", type=int, nargs="+", default=[8, 12, 20])
    p.add_argument("--reference", default="ddpm:100", help="SAMPLER:STEPS of the quality reference")
    p.add_argument("--seeds", type=int, default=1, help="seeds per sampler/steps point (MAD and attributes averaged)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per point (best kept)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1; 0 = torch's default)")
    p.add_argument("--no-tradeoff", action="store_true", help="skip part 2")
    p.add_argument("--smoke", action="store_true",
                   help="tiny pipeline unless --model (then 1 app), 2 samplers x 2 steps, ddpm:8 reference: < 60 s")
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--gpu-only", action="store_true")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/end_to_end[_smoke].json)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- pipeline
def load_pipeline(model: str | None, device: str):
    if model == "tiny":
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import make_tiny_pipeline

        return make_tiny_pipeline().to(device=device, dtype=torch.float32), "tiny random pipeline (tests/conftest.py)"
    from lumiere import LumierePipeline

    try:
        pipe = LumierePipeline.from_pretrained(None if model in (None, "bundled") else model, device=device)
    except Exception as error:  # a missing bundled model: say how to develop without it
        raise SystemExit(f"cannot load model {model or 'bundled'!r}: {error}\n"
                         "(for development use --model tiny)") from error
    return pipe, str(getattr(pipe, "source", model or "bundled"))


def time_with_children(fn) -> tuple[float, float]:
    """(wall, CPU) of one call, the CPU time including child processes (write_video runs ffmpeg)."""
    def cpu():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    cpu0, wall0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - wall0, cpu() - cpu0


class StepClock:
    """Step callback: (wall, CPU) time of every denoising step, device-synchronised."""

    def __init__(self, device: str):
        self.device = device
        self.marks: list[tuple[int, int, float, float]] = []

    def __call__(self, step: int, total: int) -> None:
        sync(self.device)
        self.marks.append((step, total, time.perf_counter(), time.process_time()))


def app_inputs(pipe) -> dict:
    from lumiere.data.world import render_clip, spec_from_prompt

    frames, height, width = pipe.base_resolution
    clip = render_clip(spec_from_prompt(INPUT_PROMPT, seed=0), frames, height, width)
    box = np.zeros((height, width), dtype=bool)
    box[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = True
    return {"video": clip, "image": clip[0], "mask": box}


def app_call(pipe, app: str, inputs: dict, prompt: str, **kw):
    if app == "text_to_video":
        return pipe.text_to_video(prompt, **kw)
    if app == "stylize":
        return pipe.text_to_video(prompt, style=pipe.styles[0], **kw)
    if app == "image_to_video":
        return pipe.image_to_video(inputs["image"], prompt, **kw)
    if app == "inpaint":
        return pipe.inpaint(inputs["video"], inputs["mask"], prompt, **kw)
    if app == "cinemagraph":
        return pipe.cinemagraph(inputs["image"], inputs["mask"], prompt, **kw)
    if app == "video_to_video":
        return pipe.video_to_video(inputs["video"], prompt, strength=0.6, **kw)
    raise ValueError(app)


def warm_up(pipe, inputs: dict, apps: list[str]) -> dict:
    """Load every component (lazy loading is not a per-request cost) and run each model once for 1 step."""
    loads = {}
    for name in pipe.component_names:
        start = time.perf_counter()
        pipe.get_component(name)
        loads[name] = time.perf_counter() - start
    conditional = {"image_to_video", "inpaint", "cinemagraph"} & set(apps)
    video = pipe.text_to_video("warm up", num_inference_steps=1, super_resolve=False, seed=0)
    if conditional and pipe.has_component("conditional"):
        app_call(pipe, sorted(conditional)[0], inputs, "warm up", num_inference_steps=1, super_resolve=False, seed=0)
    if pipe.has_component("ssr"):
        pipe.super_resolve(video, "warm up", num_inference_steps=1, seed=0)
    return loads


# ----------------------------------------------------------------------------- part 1
def stage_run(pipe, app: str, inputs: dict, prompt: str, device: str) -> dict:
    """One request, split into stages: {stage: (wall, cpu)} plus step counts."""
    encoder = pipe.text_encoder
    negative = pipe.defaults.negative_prompt
    encoder.clear_cache()
    gc.collect()
    text = time_call2(lambda: encoder.encode([prompt, negative]), device)  # what the pipeline encodes

    clock = StepClock(device)
    sync(device)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    video = app_call(pipe, app, inputs, prompt, seed=0, super_resolve=True, callback=clock)
    sync(device)
    wall1, cpu1 = time.perf_counter(), time.process_time()
    total_steps = clock.marks[-1][1] if clock.marks else 0
    # The SSR steps actually run (an SDEdit start runs only the last ``strength`` of its schedule).
    ssr_steps = pipe.ssr_options.steps_run() if pipe.has_component("ssr") else 0
    base_steps = total_steps - ssr_steps
    if base_steps > 0:
        _, _, wall_b, cpu_b = clock.marks[base_steps - 1]
    else:  # nothing denoised at base resolution (e.g. SDEdit strength 0)
        wall_b, cpu_b = wall0, cpu0
    with tempfile.TemporaryDirectory() as tmp:
        from lumiere.io import write_video

        mp4 = time_with_children(lambda: write_video(Path(tmp) / "clip.mp4", video, pipe.fps))
    return {"text": text, "base": (wall_b - wall0, cpu_b - cpu0), "ssr": (wall1 - wall_b, cpu1 - cpu_b), "mp4": mp4,
            "base_steps": base_steps, "ssr_steps": ssr_steps, "output_shape": list(video.shape)}


def run_apps(pipe, inputs: dict, apps: list[str], repeats: int, device: str, use_cpu: bool) -> list[dict]:
    rows = []
    for app in apps:
        if app == "stylize" and not pipe.styles:
            print(f"[{device}] {app}: skipped (the model has no styles)", flush=True)
            rows.append({"app": app, "skipped": "no styles"})
            continue
        runs = [stage_run(pipe, app, inputs, f"a red circle moving right on the sea {app} {r}", device)
                for r in range(repeats)]
        row = {"app": app, "base_steps": runs[0]["base_steps"], "ssr_steps": runs[0]["ssr_steps"],
               "output_shape": runs[0]["output_shape"], "runs_wall_cpu_s": {s: [r[s] for r in runs] for s in STAGES}}
        for stage in STAGES:
            row[f"{stage}_wall_s"] = min(r[stage][0] for r in runs)
            row[f"{stage}_cpu_s"] = min(r[stage][1] for r in runs)
            row[f"{stage}_s"] = row[f"{stage}_cpu_s"] if use_cpu else row[f"{stage}_wall_s"]
        row["total_s"] = sum(row[f"{s}_s"] for s in STAGES)
        row["total_wall_s"] = sum(row[f"{s}_wall_s"] for s in STAGES)
        rows.append(row)
        print(f"[{device}] {app:15s} " + " ".join(f"{s}={row[f'{s}_s']:.2f}s" for s in STAGES)
              + f" total={row['total_s']:.2f}s", flush=True)
    return rows


# ----------------------------------------------------------------------------- part 2
def attribute_match(video: np.ndarray, expected) -> dict:
    from lumiere.data.analysis import analyse

    try:
        found, _ = analyse(video)
    except Exception as error:  # an analyser failing on a noise clip is a miss, not a crash
        return {"colour": False, "shape": False, "motion": False, "error": repr(error)}
    return {"colour": found.colour == expected.colour, "shape": found.shape == expected.shape,
            "motion": found.motion == expected.motion, "found": list(found.triple)}


def run_tradeoff(pipe, args, device: str, use_cpu: bool) -> dict:
    from lumiere.data.world import parse_prompt

    expected = parse_prompt(ATTRIBUTE_PROMPT).objects[0]
    ref_sampler, ref_steps = args.reference.rsplit(":", 1)
    ref_steps = int(ref_steps)
    seeds = list(range(args.seeds))

    def generate(sampler, steps, seed):
        return pipe.text_to_video(ATTRIBUTE_PROMPT, sampler=sampler, num_inference_steps=steps, seed=seed,
                                  super_resolve=False)

    references, ref_times = {}, []
    for seed in seeds:
        holder = {}
        ref_times.append(time_call2(lambda: holder.setdefault("v", generate(ref_sampler, ref_steps, seed)), device))
        references[seed] = holder["v"]
    ref_attrs = [attribute_match(references[s], expected) for s in seeds]

    def attr_summary(matches):
        return {k: float(np.mean([m[k] for m in matches])) for k in ("colour", "shape", "motion")}

    rows = [{"sampler": ref_sampler, "steps": ref_steps, "reference": True,
             "wall_s": min(w for w, _ in ref_times), "cpu_s": min(c for _, c in ref_times),
             "time_s": min(c if use_cpu else w for w, c in ref_times), "mad": 0.0,
             "attributes": attr_summary(ref_attrs), "found": [m.get("found") for m in ref_attrs]}]
    print(f"[{device}] reference {ref_sampler}:{ref_steps} {rows[0]['time_s']:.2f}s", flush=True)
    for sampler in args.samplers:
        for steps in args.steps:
            times, mads, matches = [], [], []
            for seed in seeds:
                for r in range(args.repeats):
                    holder = {}
                    times.append(time_call2(lambda: holder.__setitem__("v", generate(sampler, steps, seed)), device))
                video = holder["v"]
                mads.append(float(np.abs(video.astype(np.int16) - references[seed].astype(np.int16)).mean()))
                matches.append(attribute_match(video, expected))
            row = {"sampler": sampler, "steps": steps, "reference": False,
                   "wall_s": min(w for w, _ in times), "cpu_s": min(c for _, c in times),
                   "time_s": min(c if use_cpu else w for w, c in times), "mad": float(np.mean(mads)),
                   "mad_per_seed": mads, "attributes": attr_summary(matches), "found": [m.get("found") for m in matches]}
            rows.append(row)
            print(f"[{device}] {sampler:6s} {steps:3d} steps {row['time_s']:.2f}s MAD={row['mad']:.2f}", flush=True)
    return {"prompt": ATTRIBUTE_PROMPT, "expected": list(expected.triple), "reference": args.reference,
            "seeds": seeds, "rows": rows}


# ----------------------------------------------------------------------------- section / tables
def run_section(device: str, args) -> dict:
    use_cpu = device == "cpu" and torch.get_num_threads() == 1
    pipe, source = load_pipeline(args.model, device)
    inputs = app_inputs(pipe)
    start = time.perf_counter()
    loads = warm_up(pipe, inputs, args.apps)
    print(f"[{device}] model {source}: loaded + warmed up in {time.perf_counter() - start:.1f} s", flush=True)
    section = {
        "device": device, "machine": machine_info(device), "model": source,
        "dtype": str(pipe.dtype).replace("torch.", ""),
        "latency": "process CPU time (1 thread)" if use_cpu else "wall time",
        "base_resolution": list(pipe.base_resolution), "output_resolution": list(pipe.output_resolution),
        "defaults": dataclasses.asdict(pipe.defaults), "ssr_steps": pipe.ssr_options.num_inference_steps,
        "styles": pipe.styles, "component_load_s": loads,
        "params": {n: sum(p.numel() for p in pipe.get_component(n).parameters()) for n in pipe.component_names},
        "apps": run_apps(pipe, inputs, args.apps, args.repeats, device, use_cpu),
    }
    if not args.no_tradeoff:
        section["tradeoff"] = run_tradeoff(pipe, args, device, use_cpu)
    return section


def tables(section: dict) -> str:
    t, h, w = section["base_resolution"]
    _, oh, ow = section["output_resolution"]
    params = ", ".join(f"{n} {p / 1e6:.2f} M" for n, p in section["params"].items())
    head = (f"### {section['device']}: end to end, {section['model']} ({section['dtype']}); base {t}×{h}×{w} -> "
            f"{t}×{oh}×{ow}; params {params}; time = {section['latency']}, best of the timed runs")
    rows = []
    for r in section["apps"]:
        if "skipped" in r:
            rows.append({"app": r["app"], "text": f"skipped: {r['skipped']}"})
            continue
        row = {"app": r["app"], "steps": f"{r['base_steps']} + {r['ssr_steps']}",
               "total": f"{r['total_s']:.2f} s", "wall": f"{r['total_wall_s']:.2f} s"}
        for s in STAGES:
            row[s] = f"{r[f'{s}_s']:.3f} s ({100 * r[f'{s}_s'] / r['total_s']:.0f}%)"
        rows.append(row)
    out = head + "\n\n" + markdown_table(rows, [
        ("application", "app"), ("steps base + SSR", "steps"), ("text encoding", "text"), ("base sampling", "base"),
        ("SSR", "ssr"), ("mp4 encoding", "mp4"), ("total", "total"), ("total (wall)", "wall")]) + "\n"
    trade = section.get("tradeoff")
    if trade:
        rows = [{"sampler": r["sampler"] + (" (reference)" if r["reference"] else ""), "steps": r["steps"],
                 "time": f"{r['time_s']:.2f} s", "per": f"{1000 * r['time_s'] / r['steps']:.0f} ms",
                 "mad": "-" if r["reference"] else f"{r['mad']:.2f}",
                 **{k: f"{100 * v:.0f}%" for k, v in r["attributes"].items()}} for r in trade["rows"]]
        out += (f"\n### {section['device']}: samplers × steps, text_to_video without SSR, \"{trade['prompt']}\" "
                f"(expected {'/'.join(map(str, trade['expected']))}), seeds {trade['seeds']}; MAD = mean |video − "
                f"{trade['reference']} video| in uint8 levels, same seed\n\n") + markdown_table(rows, [
            ("sampler", "sampler"), ("steps", "steps"), ("time", "time"), ("per step", "per"), ("MAD to reference", "mad"),
            ("colour ok", "colour"), ("shape ok", "shape"), ("motion ok", "motion")]) + "\n"
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        args.model = args.model or "tiny"
        if args.model != "tiny":  # a real model: one application only
            args.apps = args.apps[:1]
        args.samplers, args.steps, args.reference, args.seeds, args.repeats = ["dpm++", "ddim"], [2, 4], "ddpm:8", 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    sections, report = {}, []
    if not args.gpu_only:
        sections["cpu"] = run_section("cpu", args)
        report.append(tables(sections["cpu"]))
    if not args.no_gpu:
        if torch.cuda.is_available():
            sections["cuda"] = run_section("cuda", args)
            report.append(tables(sections["cuda"]))
        else:
            print("GPU section: skipped: no CUDA")
            report.append("### cuda\n\nskipped: no CUDA\n")
    print("\n" + "\n".join(report))
    path = Path(args.out) if args.out else RESULTS_DIR / ("end_to_end_smoke.json" if args.smoke else "end_to_end.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"args": vars(args), **sections}, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
