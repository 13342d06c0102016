"""STUNet vs peer video U-Nets at the same widths: latency, FLOPs, parameters, memory, MFU.

Models (all pixel space, 3 channels in/out, widths 64-128-256-256, 2 resnets per block, see models.py):
  stunet       lumiere.inflate(unet2d)                         temporal down/up-sampling (ours)
  fixed        lumiere.inflate(unet2d, temporal_resize=False)  same temporal blocks, full T everywhere
  unet3d       diffusers UNet3DConditionModel (ModelScope T2V style)
  animatediff  diffusers UNetMotionModel.from_unet2d(unet2d, MotionAdapter(...))

    PYTHONPATH=. python benchmarks/bench_architectures.py                 # full CPU run (~15 min on 2 cores)
    PYTHONPATH=. python benchmarks/bench_architectures.py --smoke         # one tiny config, < 60 s
    PYTHONPATH=. python benchmarks/bench_architectures.py --res 32 --frames 16 32 --repeats 5

A GPU section runs the same configs on CUDA when available (``--gpu-only`` / ``--no-gpu``); it
prints "skipped: no CUDA" otherwise.
"""
from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    fmt_bytes,
    fmt_num,
    machine_info,
    markdown_table,
    matmul_peak_flops,
    instrumented_run,
    time_call2,
    training_peak_memory,
    write_json,
)
from models import MODEL_LABELS, MODEL_NAMES, TEXT_DIM, TEXT_TOKENS, build, forward_fn  # noqa: E402
from models import temporal_parameter_count, trainable_parameter_count  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--res", type=int, nargs="+", default=[32, 64], help="spatial resolutions (square)")
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32, 80], help="clip lengths (multiples of 8)")
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per model and config (best is kept)")
    p.add_argument("--budget", type=float, default=60.0,
                   help="CPU: seconds of timed runs per config; fewer repeats (>= 1) for slow configs")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: on a shared machine multi-threaded ops stall on the busiest core; "
                        "0 = torch's default)")
    p.add_argument("--peer-max-voxels", type=int, default=32 * 64 * 64,
                   help="CPU only: skip UNet3D/AnimateDiff on configs with T*H*W above this (too slow); 0 = no limit")
    p.add_argument("--smoke", action="store_true", help="one tiny config (T=8, 16x16, tiny widths): < 60 s")
    p.add_argument("--train-memory-frames", type=int, nargs="*", default=[80],
                   help="clip lengths at which STUNet/fixed also get a forward+backward memory measurement")
    p.add_argument("--train-memory-res", type=int, nargs="*", default=[32],
                   help="resolutions for that measurement (64x64x80 fixed-T needs > 20 GB with the profiler on CPU)")
    p.add_argument("--no-memory", action="store_true", help="skip the (profiled) memory run")
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--gpu-only", action="store_true")
    p.add_argument("--out", default=None, help="JSON file name under benchmarks/results/")
    return p.parse_args(argv)


def run_section(device: str, args) -> dict:
    """Benchmark every (resolution, frames) config on one device; returns a JSON-able dict."""
    dtype = torch.float32
    use_cpu_time = device == "cpu" and torch.get_num_threads() == 1
    kwargs = dict(widths=(32, 64, 64, 64), layers=1) if args.smoke else {}
    peak = max(matmul_peak_flops(device), matmul_peak_flops(device))
    print(f"[{device}] fp32 matmul peak: {fmt_num(peak, 'FLOP/s')}", flush=True)

    models, params = {}, {}
    for name in args.models:
        torch.manual_seed(0)
        model = build(name, **kwargs).to(device=device, dtype=dtype)
        models[name] = model
        params[name] = {
            "total": sum(p.numel() for p in model.parameters()),
            "trainable": trainable_parameter_count(name, model),
            "temporal": temporal_parameter_count(name, model),
        }

    results = []
    for res in args.res:
        for frames in args.frames:
            gen = torch.Generator().manual_seed(0)
            sample = torch.randn(args.batch, 3, frames, res, res, generator=gen).to(device, dtype)
            text = torch.randn(args.batch, TEXT_TOKENS, kwargs.get("text_dim", TEXT_DIM), generator=gen).to(device, dtype)
            timestep = torch.full((args.batch,), 500, device=device)
            skip = device == "cpu" and args.peer_max_voxels and frames * res * res > args.peer_max_voxels
            fns = {name: forward_fn(name, m, sample, timestep, text) for name, m in models.items()
                   if not (skip and name in ("unet3d", "animatediff"))}
            if len(fns) < len(models):
                print(f"  (UNet3D/AnimateDiff skipped at {res}x{res}x{frames}: above --peer-max-voxels on CPU)")
            rows = {name: {"model": name, "res": res, "frames": frames, "batch": args.batch} for name in fns}
            peak = max(peak, matmul_peak_flops(device))  # re-measured per config: the machine may be shared
            print(f"[{device}] {res}x{res}, {frames} frames", flush=True)
            with torch.inference_mode():
                first = {}
                for name, fn in fns.items():  # FLOPs + memory; doubles as the warm-up run
                    rows[name].update(instrumented_run(fn, device, memory=not args.no_memory))
                    first[name] = rows[name]["instrumented_s"]
                # Timed runs interleaved across models (A, B, C, D, B, C, D, A, ...), best kept; on CPU
                # the repeat count shrinks for slow configs (never below 2) to keep the run ~15 min.
                repeats = args.repeats
                if device == "cpu":
                    repeats = max(min(2, args.repeats), min(args.repeats, int(args.budget / sum(first.values()))))
                times = {name: [] for name in fns}
                order = list(fns)
                for r in range(repeats):
                    for name in order[r % len(order):] + order[: r % len(order)]:
                        times[name].append(time_call2(fns[name], device))
            if frames in args.train_memory_frames and res in args.train_memory_res and not args.no_memory:
                # Training activation memory (forward + backward, temporal params trainable) of ours only:
                # the peers' backward at these sizes does not fit the CPU time budget.
                for name in ("stunet", "fixed"):
                    if name in fns:
                        rows[name]["train_peak_bytes"] = training_peak_memory(fns[name], device)
                        for p in models[name].parameters():
                            p.grad = None
            for name in fns:
                row = rows[name]
                row["wall_s"] = min(w for w, _ in times[name])
                row["cpu_s"] = min(c for _, c in times[name])
                row["timings_wall_cpu_s"] = times[name]
                # The compared latency: process CPU time on a 1-thread CPU run (robust to other processes
                # on a shared machine, see _common.time_call2), wall time otherwise.
                row["latency_s"] = row["cpu_s"] if use_cpu_time else row["wall_s"]
                row["flops_per_s"] = row["flops"] / row["latency_s"]
                row.update({f"params_{k}": v for k, v in params[name].items()})
                results.append(row)
                if args.partial_out:
                    write_json(args.partial_out, {"device": device, "partial": True, "results": results})
                print(f"  {MODEL_LABELS[name]:32s} {row['latency_s']:8.3f} s (wall {row['wall_s']:7.3f})  {fmt_num(row['flops'], 'FLOP'):>12s}"
                      f"  {fmt_bytes(row.get('peak_bytes')):>9s}  {fmt_num(row['flops_per_s'], 'FLOP/s'):>14s}  (best of {repeats})",
                      flush=True)
            del sample, fns
            gc.collect()
    peak = max(peak, matmul_peak_flops(device))
    for row in results:  # MFU against the best peak seen anywhere in this run
        row["mfu"] = row["flops_per_s"] / peak
    return {"device": device, "latency": "process CPU time (1 thread)" if use_cpu_time else "wall time",
            "peak_flops_per_s": peak, "peak_method": "best fp32 2048^3 matmul over the whole run (re-measured before every config)",
            "machine": machine_info(device), "smoke": args.smoke, "results": results, "ratios": ratios(results)}


def _find(results, model, res, frames):
    return next((r for r in results if r["model"] == model and r["res"] == res and r["frames"] == frames), None)


def ratios(results) -> list[dict]:
    """The issue's goal ratios, for every resolution where both models ran."""
    out = []
    for res in sorted({r["res"] for r in results}):
        for peer, frames, what in (("unet3d", 32, "speed-up vs UNet3DConditionModel"),
                                   ("fixed", 80, "speed-up vs fixed-T inflation"),
                                   ("fixed", 80, "activation memory: fixed-T / STUNet"),
                                   ("fixed", 80, "training memory: fixed-T / STUNet")):
            ours, theirs = _find(results, "stunet", res, frames), _find(results, peer, res, frames)
            if ours is None or theirs is None:
                continue
            if what.startswith("training"):
                if "train_peak_bytes" not in ours or "train_peak_bytes" not in theirs:
                    continue
                value, extra = theirs["train_peak_bytes"] / ours["train_peak_bytes"], {}
            elif what.startswith("activation"):
                if "peak_bytes" not in ours:
                    continue
                value = theirs["peak_bytes"] / ours["peak_bytes"]
                extra = {"rss_ratio": theirs["rss_peak_delta_bytes"] / max(1, ours["rss_peak_delta_bytes"])} \
                    if "rss_peak_delta_bytes" in ours else {}
            else:
                value = theirs["latency_s"] / ours["latency_s"]
                extra = {"flops_ratio": theirs["flops"] / ours["flops"]}
            out.append({"what": what, "res": res, "frames": frames, "value": value, **extra})
    return out


def print_section(section: dict) -> str:
    rows = []
    for r in section["results"]:
        rows.append({
            "model": MODEL_LABELS[r["model"]],
            "cfg": f"{r['res']}² × {r['frames']}",
            "lat": f"{r['latency_s'] * 1e3:.0f} ms",
            "wall": f"{r['wall_s'] * 1e3:.0f} ms",
            "flops": fmt_num(r["flops"], "FLOP"),
            "fps": fmt_num(r["flops_per_s"], "FLOP/s"),
            "mfu": f"{100 * r['mfu']:.1f}%",
            "mem": fmt_bytes(r.get("peak_bytes")),
            "tmem": fmt_bytes(r.get("train_peak_bytes")),
            "rss": fmt_bytes(r.get("rss_peak_delta_bytes")),
            "params": f"{r['params_total'] / 1e6:.1f} M",
            "train": f"{r['params_trainable'] / 1e6:.1f} M",
            "temp": f"{r['params_temporal'] / 1e6:.1f} M",
        })
    cols = [("model", "model"), ("H² × T", "cfg"), ("latency", "lat"), ("wall", "wall"), ("FLOPs", "flops"), ("achieved", "fps"),
            ("MFU", "mfu"), ("act. mem (inference)", "mem"), ("fwd+bwd mem", "tmem")]
    if section["device"] == "cpu":
        cols.append(("RSS Δ", "rss"))
    cols += [("params", "params"), ("trainable", "train"), ("temporal", "temp")]
    text = [f"### {section['device']}: {section['machine'].get('gpu', section['machine']['cpu'])}, "
            f"peak {fmt_num(section['peak_flops_per_s'], 'FLOP/s')} (fp32 matmul), "
            f"{section['machine']['torch_threads']} thread(s); latency = {section['latency']}, best of the timed runs", "",
            markdown_table(rows, cols), ""]
    if section["ratios"]:
        text += [markdown_table([{"w": x["what"], "c": f"{x['res']}² × {x['frames']}", "v": f"{x['value']:.2f}×",
                                  "f": f"{x['flops_ratio']:.2f}×" if "flops_ratio" in x else
                      (f"RSS {x['rss_ratio']:.2f}×" if "rss_ratio" in x else "")}
                                 for x in section["ratios"]],
                                [("ratio", "w"), ("config", "c"), ("measured", "v"), ("FLOPs ratio / RSS", "f")]), ""]
    return "\n".join(text)


def main(argv=None):
    args = parse_args(argv)
    args.partial_out = (args.out or "architectures.json").replace(".json", ".partial.json") if not args.smoke else None
    if args.smoke:
        args.res, args.frames, args.repeats, args.train_memory_frames, args.train_memory_res = [16], [8], 3, [8], [16]
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    sections, report = {}, []
    if not args.gpu_only:
        sections["cpu"] = run_section("cpu", args)
        report.append(print_section(sections["cpu"]))
    if not args.no_gpu:
        if torch.cuda.is_available():
            sections["cuda"] = run_section("cuda", args)
            report.append(print_section(sections["cuda"]))
        else:
            print("GPU section: skipped: no CUDA")
            report.append("### cuda\n\nskipped: no CUDA\n")
    print("\n" + "\n".join(report))
    name = args.out or ("architectures_smoke.json" if args.smoke else "architectures.json")
    print(f"wrote {write_json(name, sections)}")
    if args.partial_out:
        (Path(__file__).resolve().parent / "results" / args.partial_out).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
