"""Training throughput of the bundled recipe's temporal stage: clips/s per precision and compile mode.

One process, the same batch and model for every variant, interleaved timings (best of the timed steps,
process CPU time with 1 thread, see _common.time_call2). Variants: fp32 (the default), bf16 autocast
(this CPU has AVX512-BF16), ``torch.compile`` of the model, channels_last. Each variant is one full
optimizer step (forward, backward, AdamW) of ``VideoModule`` on a batch of procedural clips.

    PYTHONPATH=. python benchmarks/bench_training_step.py                 # tiny.json recipe, batch 4
    PYTHONPATH=. python benchmarks/bench_training_step.py --smoke
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, markdown_table, time_call2, write_json  # noqa: E402

from lumiere.build import build_t2i_unet, build_text_encoder  # noqa: E402
from lumiere.models.stunet import inflate  # noqa: E402
from lumiere.train.loop import TrainSettings  # noqa: E402
from lumiere.train.stages import DiffusionObjective, VideoModule, _video_parameters, video_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def build_step(config: dict, variant: str, batch: dict, spatial_lr_scale: float):
    model_config = config["model"]
    text_encoder = build_text_encoder(model_config["text_encoder"])
    base = inflate(build_t2i_unet(model_config["t2i"], text_encoder.hidden_size), **model_config.get("temporal", {}))
    settings = TrainSettings(spatial_lr_scale=spatial_lr_scale)
    groups = _video_parameters(base, settings)
    optimizer = torch.optim.AdamW([{"params": g["params"]} for g in groups], lr=1e-4)
    module = VideoModule(base, text_encoder, DiffusionObjective(model_config.get("scheduler", {}) | {"num_train_timesteps": 1000}))
    if variant == "channels_last":
        base.t2i.to(memory_format=torch.channels_last)  # the 4D (spatial) convs; temporal convs are 5D
    if variant == "compile":
        module.model = torch.compile(base)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16 autocast"):
            loss = module(copy.copy(batch))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.json"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16 autocast", "channels_last", "compile"])
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    config = json.loads(Path(args.config).read_text())
    frames, height, width = config["model"]["base_resolution"]
    if args.smoke:
        args.batch, args.repeats, args.variants = 1, 1, ["fp32", "bf16 autocast"]
    data = video_dataset(config, frames, height, width)
    items = [data[i] for i in range(args.batch)]
    batch = {"video": torch.stack([it["video"] for it in items]), "caption": [it["caption"] for it in items]}

    rows = []
    for spatial in sorted({0.0, config["stages"]["temporal"].get("spatial_lr_scale", 0.0)}):
        steps = {v: build_step(config, v, batch, spatial) for v in args.variants}
        for fn in steps.values():  # warm-up (and compile)
            torch.manual_seed(0)
            fn()
        best = {v: float("inf") for v in steps}
        for _ in range(args.repeats):
            for variant, fn in steps.items():  # interleaved: contention hits every variant alike
                torch.manual_seed(0)
                wall, cpu = time_call2(fn, "cpu")
                best[variant] = min(best[variant], cpu if args.threads == 1 else wall)
        for variant, seconds in best.items():
            rows.append({"trains": f"temporal + spatial (x{spatial:g} lr)" if spatial else "temporal only",
                         "variant": variant, "s_per_step": round(seconds, 3),
                         "clips_per_s": round(args.batch / seconds, 2), "vs_fp32": f"{best['fp32'] / seconds:.2f}x"})
    table = markdown_table(rows, [("trains", "trains"), ("variant", "variant"), ("s/step", "s_per_step"),
                                  ("clips/s", "clips_per_s"), ("speed vs fp32", "vs_fp32")])
    header = (f"### cpu: training step of the temporal stage ({Path(args.config).name}, batch {args.batch}, "
              f"{frames}x{height}x{width}); time = process CPU time ({args.threads} thread), best of {args.repeats}")
    print(header)
    print(table)
    if not args.smoke:
        write_json("training_step.json", {"machine": machine_info("cpu"), "rows": rows, "batch": args.batch})


if __name__ == "__main__":
    main()
