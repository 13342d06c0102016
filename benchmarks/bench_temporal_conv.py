"""Before/after of the temporal-conv kernel: PyTorch's Conv3d (k,1,1) vs the same weights as a (k,1) Conv2d.

Both paths run in the same process on the same models, interleaved (A, B, A, B, ...), best kept
(process CPU time with 1 thread, wall time otherwise; see _common.time_call2):
``conv3d`` = ``nn.Conv3d.forward`` (the original implementation), ``conv2d`` = ``TemporalConv.forward``
(lumiere/models/temporal.py). Also checks that both give the same output.

    PYTHONPATH=. python benchmarks/bench_temporal_conv.py            # STUNet + fixed-T, 32x32, T=16/32
    PYTHONPATH=. python benchmarks/bench_temporal_conv.py --smoke
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, markdown_table, time_call2, write_json  # noqa: E402
from models import TEXT_DIM, TEXT_TOKENS, build, forward_fn  # noqa: E402

from lumiere.models.temporal import TemporalConv  # noqa: E402


def set_kernel(model: nn.Module, kind: str) -> None:
    for module in model.modules():
        if isinstance(module, TemporalConv):
            module.forward = nn.Conv3d.forward.__get__(module) if kind == "conv3d" else TemporalConv.forward.__get__(module)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["stunet", "fixed"])
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.res, args.frames, args.repeats = 16, [8], 2
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = build(name)
        for frames in args.frames:
            x = torch.randn(1, 3, frames, args.res, args.res)
            text = torch.randn(1, TEXT_TOKENS, TEXT_DIM)
            fn = forward_fn(name, model, x, torch.full((1,), 500), text)
            times, outs = {"conv3d": [], "conv2d": []}, {}
            with torch.inference_mode():
                for kind in times:  # warm-up + outputs
                    set_kernel(model, kind)
                    outs[kind] = fn()
                for _ in range(args.repeats):
                    for kind in times:
                        set_kernel(model, kind)
                        times[kind].append(time_call2(fn, "cpu")[1 if torch.get_num_threads() == 1 else 0])
            set_kernel(model, "conv2d")
            row = {"model": name, "res": args.res, "frames": frames,
                   "conv3d_s": min(times["conv3d"]), "conv2d_s": min(times["conv2d"]),
                   "max_abs_diff": (outs["conv3d"] - outs["conv2d"]).abs().max().item()}
            row["speedup"] = row["conv3d_s"] / row["conv2d_s"]
            rows.append(row)
            print(f"{name:7s} {args.res}x{args.res}x{frames:3d}  conv3d {row['conv3d_s']:.3f} s  conv2d {row['conv2d_s']:.3f} s"
                  f"  speed-up {row['speedup']:.2f}x  max|diff| {row['max_abs_diff']:.1e}", flush=True)
    print()
    print(markdown_table([{**r, "cfg": f"{r['res']}² × {r['frames']}", "a": f"{r['conv3d_s'] * 1e3:.0f} ms",
                           "b": f"{r['conv2d_s'] * 1e3:.0f} ms", "s": f"{r['speedup']:.2f}×",
                           "d": f"{r['max_abs_diff']:.1e}"} for r in rows],
                         [("model", "model"), ("H² × T", "cfg"), ("Conv3d (before)", "a"), ("(k,1) Conv2d (after)", "b"),
                          ("speed-up", "s"), ("max |diff|", "d")]))
    name = "temporal_conv_smoke.json" if args.smoke else "temporal_conv.json"
    print(f"wrote {write_json(name, {'machine': machine_info('cpu'), 'repeats': args.repeats, 'rows': rows})}")


if __name__ == "__main__":
    main()
