"""The GPU recipe's training step (configs/gpu.json): clips/s, achieved TFLOP/s and the share of the bf16 peak.

For the T2I and temporal stages at the recipe's batch sizes, one optimizer step (forward, backward,
AdamW; bf16 autocast on CUDA) of the stage's own module on a batch rendered on the device. FLOPs are
counted by torch's ``FlopCounterMode`` over one step (matmuls and convolutions, forward and backward);
the time is the mean of the timed steps after warm-up, device-synchronised. The peak it is compared to
is measured in the same run (an 8192^3 bf16 matmul), next to the vendor's datasheet figure.

    PYTHONPATH=. python benchmarks/bench_gpu_training.py --out gpu_step.json        # on the GPU
    PYTHONPATH=. python benchmarks/bench_gpu_training.py --batches 256 512 1024 --compile   # batch sweep, eager vs compiled
    PYTHONPATH=. python benchmarks/bench_gpu_training.py --smoke                    # CPU, batch 2, fp32 (checks it runs)

``--compile`` adds a row per batch with the stage's model under ``torch.compile`` (its first-call compile
time reported apart): whether compiling pays back inside a stage budget of one to three minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table  # noqa: E402

from lumiere.build import build_t2i_unet, build_text_encoder  # noqa: E402
from lumiere.data.datasets import ProceduralImageDataset, ProceduralVideoDataset  # noqa: E402
from lumiere.models.stunet import inflate  # noqa: E402
from lumiere.train.config import RunConfig  # noqa: E402
from lumiere.train.stages import DiffusionObjective, T2IModule, VideoModule, _video_parameters  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATASHEET_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def matmul_peak(device: str, size: int = 8192, repeats: int = 10) -> float | None:
    """Measured dense bf16 matmul TFLOP/s on ``device`` (None on a CPU: not a meaningful peak there)."""
    if not device.startswith("cuda"):
        return None
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def stage_step(config: RunConfig, stage: str, batch_size: int, device: str, bf16: bool, compile: bool = False):
    """A function running one optimizer step of ``stage``'s module on one fixed batch (``compile``: its
    U-Net / STUNet under ``torch.compile``)."""
    model = config.model
    frames, height, width = model.base_resolution
    text_encoder = build_text_encoder(model.text_encoder)
    unet = build_t2i_unet(model.t2i, text_encoder.hidden_size)
    objective = DiffusionObjective({"prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2",
                                    **model.scheduler})
    if stage == "t2i":
        data = ProceduralImageDataset(height, width, render_on_device=True, include_motion=True)
        module = T2IModule(unet, text_encoder, objective, train_text_encoder=True, render=data.render_batch)
        params = list(module.parameters())
    else:
        data = ProceduralVideoDataset(frames, height, width, render_on_device=True)
        base = inflate(unet, model.temporal)
        module = VideoModule(base, text_encoder, objective, render=data.render_batch)
        params = [p for group in _video_parameters(base, config.settings(stage)) for p in group["params"]]
    module.to(device)
    if compile:
        if stage == "t2i":
            module.unet = torch.compile(module.unet)
        else:
            module.model = torch.compile(module.model)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    collated = default_collate([data[i] for i in range(batch_size)])
    batch = {"world": {k: v.to(device) for k, v in collated["world"].items()}, "caption": collated["caption"]}

    def step():
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = module(dict(batch))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_stage(config, stage: str, batch_size: int, device: str, compiled: bool, args, peak, datasheet) -> dict:
    """One row: warm-up (the first call's time apart: compilation, cuDNN autotuning), FLOPs of one step,
    then the mean step time over the timed repeats."""
    step = stage_step(config, stage, batch_size, device, bf16=device == "cuda", compile=compiled)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    start = time.perf_counter()
    step()
    synchronize()
    first = time.perf_counter() - start
    for _ in range(0 if args.smoke else 2):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    repeats = 1 if args.smoke else args.repeats
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize()
    seconds = (time.perf_counter() - start) / repeats
    tflops = flops / seconds / 1e12
    return {"stage": stage, "batch": batch_size, "compiled": compiled, "first_step_s": round(first, 1),
            "ms_per_step": round(seconds * 1e3, 1), "items_per_s": round(batch_size / seconds, 1),
            "gflop_per_step": round(flops / 1e9, 1), "tflops": round(tflops, 2),
            "of_measured_peak": round(tflops / peak, 4) if peak else None,
            "of_datasheet_peak": round(tflops / datasheet, 4) if datasheet else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "gpu.json"))
    parser.add_argument("--stages", nargs="+", default=["t2i", "temporal"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="batch sizes to time (default: each stage's batch in the config)")
    parser.add_argument("--compile", action="store_true", help="also time each batch with torch.compile")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--smoke", action="store_true", help="CPU, batch 2, fp32, 1 repeat")
    args = parser.parse_args(argv)
    config = RunConfig.from_dict(json.loads(Path(args.config).read_text()))
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = matmul_peak(device)
    datasheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
    rows = []
    for stage in args.stages:
        batches = [2] if args.smoke else (args.batches or [config.settings(stage).batch_size])
        for batch_size in batches:
            for compiled in (False, True) if args.compile else (False,):
                rows.append(time_stage(config, stage, batch_size, device, compiled, args, peak, datasheet))
    print(f"### {name}: one optimizer step per stage ({'bf16 autocast' if device == 'cuda' else 'fp32'}); "
          f"measured bf16 matmul peak {peak and round(peak, 1)} TFLOP/s, datasheet {datasheet}")
    print(markdown_table(rows, [("stage", "stage"), ("batch", "batch"), ("compiled", "compiled"),
                                ("first step s", "first_step_s"), ("ms/step", "ms_per_step"),
                                ("items/s", "items_per_s"), ("GFLOP/step", "gflop_per_step"), ("TFLOP/s", "tflops"),
                                ("of measured peak", "of_measured_peak"), ("of datasheet", "of_datasheet_peak")]))
    if args.out:
        Path(args.out).write_text(json.dumps({"device": name, "torch": torch.__version__, "matmul_peak_tflops": peak,
                                              "datasheet_tflops": datasheet, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
