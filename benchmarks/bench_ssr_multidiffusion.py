"""SSR with temporal MultiDiffusion: model-level time and peak memory vs clip length and window overlap.

One denoising step of the SSR model (an ``inflate(unet2d_sr, temporal_resize=False)`` STUNet with
6 input channels = noisy high-res video + up-sampled low-res video, 3 output channels) is run
  * ``whole``      on the whole clip in one pass, and
  * ``window/oK``  on temporal windows of ``--window`` frames with overlap K, one window at a time,
                   averaging the overlapping predictions (what MultiDiffusion does at every step).
Windows come from ``lumiere.multidiffusion`` (``temporal_windows`` / ``windowed_prediction``)
when available, else from a local fallback with the same semantics.

    PYTHONPATH=. python benchmarks/bench_ssr_multidiffusion.py              # full CPU run (~6 min on 2 shared cores)
    PYTHONPATH=. python benchmarks/bench_ssr_multidiffusion.py --smoke      # tiny, < 60 s
    PYTHONPATH=. python benchmarks/bench_ssr_multidiffusion.py --frames 16 80 --overlaps 2

Memory is the activation high-water mark of one step (see _common.py: torch CPU profiler on CPU,
cuda.max_memory_allocated on CUDA); the model weights and the input clip are not counted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    fmt_bytes,
    fmt_num,
    instrumented_run,
    machine_info,
    markdown_table,
    time_call2,
    write_json,
)
from models import TEXT_DIM, TEXT_TOKENS, unet2d  # noqa: E402

from lumiere import inflate  # noqa: E402

try:  # the pipeline's own window logic, so the benchmark measures what ships
    from lumiere.multidiffusion import temporal_windows, windowed_prediction
    WINDOWS_SOURCE = "lumiere.multidiffusion"
except ImportError:  # pragma: no cover - only before lumiere/multidiffusion.py existed
    WINDOWS_SOURCE = "benchmarks fallback"

    def temporal_windows(num_frames, window, overlap=2):
        if window >= num_frames:
            return [(0, num_frames)]
        starts = list(range(0, num_frames - window + 1, window - overlap))
        if starts[-1] + window < num_frames:
            starts.append(num_frames - window)
        return [(s, s + window) for s in starts]

    def windowed_prediction(predict_window, x, windows):
        total = torch.zeros(x.shape[0], 3, *x.shape[2:], device=x.device)
        counts = torch.zeros(x.shape[2], device=x.device)
        for s, e in windows:
            total[:, :, s:e] += predict_window(x[:, :, s:e], s, e).float()
            counts[s:e] += 1
        return (total / counts.view(1, 1, -1, 1, 1)).to(x.dtype)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32, 48, 64, 80])
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--overlaps", type=int, nargs="+", default=[0, 2, 4])
    p.add_argument("--res", type=int, default=32, help="SSR output resolution (square)")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 128], help="SSR U-Net widths")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per point (best kept)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1, see bench_architectures.py)")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--gpu-only", action="store_true")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def run_section(device: str, args) -> dict:
    use_cpu_time = device == "cpu" and torch.get_num_threads() == 1  # see _common.time_call2
    torch.manual_seed(0)
    model = inflate(unet2d(in_channels=6, out_channels=3, widths=tuple(args.widths), layers=2),
                    temporal_resize=False).eval().to(device)
    text = torch.randn(1, TEXT_TOKENS, TEXT_DIM, device=device)
    timestep = torch.full((1,), 500, device=device)

    def predict(clip, start=0, end=None):
        return model(clip, timestep, text)

    modes = [("whole", None)] + [(f"window {args.window} / overlap {o}", o) for o in args.overlaps]
    rows = []
    for frames in args.frames:
        x = torch.randn(1, 6, frames, args.res, args.res, generator=torch.Generator().manual_seed(frames)).to(device)
        fns = {}
        for mode, overlap in modes:
            if overlap is None:
                fns[mode] = (lambda x=x: predict(x)), 1, frames
            else:
                windows = temporal_windows(frames, args.window, overlap)
                fns[mode] = ((lambda x=x, w=windows: windowed_prediction(predict, x, w)), len(windows),
                             sum(e - s for s, e in windows))
        with torch.inference_mode():
            stats = {mode: instrumented_run(fn, device) for mode, (fn, _, _) in fns.items()}
            times = {mode: [] for mode in fns}
            order = list(fns)
            for r in range(args.repeats):  # interleaved across modes, rotating the order
                for mode in order[r % len(order):] + order[: r % len(order)]:
                    times[mode].append(time_call2(fns[mode][0], device))
        for mode, (_, n_windows, frames_run) in fns.items():
            wall, cpu = min(w for w, _ in times[mode]), min(c for _, c in times[mode])
            row = {"frames": frames, "mode": mode, "windows": n_windows, "frames_evaluated": frames_run,
                   "wall_s": wall, "cpu_s": cpu, "latency_s": cpu if use_cpu_time else wall,
                   "timings_wall_cpu_s": times[mode], **stats[mode]}
            rows.append(row)
            print(f"[{device}] T={frames:3d} {mode:24s} windows={n_windows:2d} {row['latency_s']:7.2f} s "
                  f"{fmt_bytes(row.get('peak_bytes')):>9s}", flush=True)
    return {"device": device, "machine": machine_info(device), "windows_from": WINDOWS_SOURCE,
            "latency": "process CPU time (1 thread)" if use_cpu_time else "wall time",
            "model": {"widths": args.widths, "layers_per_block": 2, "in_channels": 6, "out_channels": 3,
                      "res": args.res, "params": sum(p.numel() for p in model.parameters())},
            "window": args.window, "rows": rows}


def table(section: dict) -> str:
    whole = {r["frames"]: r for r in section["rows"] if r["mode"] == "whole"}
    rows = [{
        "T": r["frames"], "mode": r["mode"], "n": r["windows"], "fe": r["frames_evaluated"],
        "lat": f"{r['latency_s']:.2f} s", "wall": f"{r['wall_s']:.2f} s", "rel": f"{r['latency_s'] / whole[r['frames']]['latency_s']:.2f}×",
        "mem": fmt_bytes(r.get("peak_bytes")),
        "mrel": f"{r['peak_bytes'] / whole[r['frames']]['peak_bytes']:.2f}×" if "peak_bytes" in r else "-",
        "flops": fmt_num(r["flops"], "FLOP"),
    } for r in section["rows"]]
    m = section["model"]
    head = (f"### {section['device']}: SSR STUNet (fixed T) widths {m['widths']}, {m['res']}×{m['res']}, "
            f"{m['params'] / 1e6:.1f} M params; windows from {section['windows_from']}; "
            f"time = {section['latency']}, best of the timed runs")
    return head + "\n\n" + markdown_table(rows, [
        ("T", "T"), ("mode", "mode"), ("windows", "n"), ("frames evaluated", "fe"), ("time / step", "lat"), ("wall", "wall"),
        ("vs whole", "rel"), ("FLOPs", "flops"), ("activation peak", "mem"), ("vs whole", "mrel")]) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        args.frames, args.overlaps, args.res, args.widths, args.repeats = [16], [2], 16, [32, 32], 1
    if args.threads:
        torch.set_num_threads(args.threads)
    sections, report = {}, []
    if not args.gpu_only:
        sections["cpu"] = run_section("cpu", args)
        report.append(table(sections["cpu"]))
    if not args.no_gpu:
        if torch.cuda.is_available():
            sections["cuda"] = run_section("cuda", args)
            report.append(table(sections["cuda"]))
        else:
            print("GPU section: skipped: no CUDA")
            report.append("### cuda\n\nskipped: no CUDA\n")
    print("\n" + "\n".join(report))
    name = args.out or ("ssr_multidiffusion_smoke.json" if args.smoke else "ssr_multidiffusion.json")
    print(f"wrote {write_json(name, sections)}")


if __name__ == "__main__":
    main()
