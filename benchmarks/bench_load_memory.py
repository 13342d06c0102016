"""Peak memory of ``STUNet.from_pretrained`` on a STUNet of a few hundred MB built here (no download).

A ``UNet2DConditionModel`` at Stable Diffusion 1.5 width (320/640/640 channels, 768-wide text) with
fewer blocks, random weights, inflated and saved once; then each load runs in a fresh subprocess
that reports its resident memory after the imports, after the load and after reading every weight
(memory-mapped pages count once touched), and its peak (``ru_maxrss``): peak minus imports is what
loading costs.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_load_memory.py [--dir /tmp/stunet-bench] [--dtype float16] [--save-dtype float16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import resource, sys, time, torch
from lumiere.models.stunet import STUNet
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
before = rss_mb()
start = time.perf_counter()
model = STUNet.from_pretrained(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
seconds = time.perf_counter() - start
loaded = rss_mb()
with torch.no_grad():  # read every weight: memory-mapped pages count once touched
    total = sum(float(p.float().sum()) for p in model.state_dict().values())
print(seconds, before, loaded, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_mb())
"""


def build(directory: Path, dtype: str) -> None:
    import torch
    from diffusers import UNet2DConditionModel

    from lumiere.models.stunet import inflate

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=(320, 640, 640), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=768,
        attention_head_dim=8)
    inflate(unet).save_pretrained(directory, dtype=getattr(torch, dtype))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default="/tmp/stunet-bench")
    parser.add_argument("--dtype", default="float32", help="the dtype passed to from_pretrained")
    parser.add_argument("--save-dtype", default="float32", help="the checkpoint's dtype (an export: float16)")
    args = parser.parse_args()
    directory = Path(args.dir) / args.save_dtype
    if not (directory / "config.json").is_file():
        build(directory, args.save_dtype)
    from lumiere.models.stunet import STUNet

    weights = STUNet.weights_file(directory)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(directory), args.dtype], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    seconds, before, loaded, peak, after = (float(v) for v in out[-5:])
    print(json.dumps({"checkpoint_mb": round(weights.stat().st_size / 2**20), "dtype": args.dtype,
                      "rss_after_imports_mb": round(before), "rss_after_load_mb": round(loaded),
                      "rss_after_reading_every_weight_mb": round(after), "peak_rss_mb": round(peak),
                      "peak_minus_imports_mb": round(peak - before), "load_seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
