"""Estimated GPU memory of the temporal stage for configs/full_sd.json and configs/full_if.json (no GPU needed).

ESTIMATES, not GPU measurements. The real architectures are built with random weights from their published
U-Net configs (written out below: no download) and inflated with the run config's ``model.temporal`` options.

- Resident memory is counted exactly, as ``lumiere.train.loop`` holds it on each GPU: every weight in fp32
  (accelerate's bf16 mixed precision is autocast; it does not cast the weights), i.e. the frozen T2I U-Net,
  text encoder and VAE (``text_embedding_cache`` does not unload the encoder), plus for the trained temporal
  layers (``stages._video_parameters``: T2I frozen, as in the paper) fp32 gradients, AdamW's two fp32 moments
  and the fp32 EMA copy. The ZeRO-2 column divides gradients and AdamW moments by the GPU count.
- Activation memory of one forward + backward (bf16 autocast, batch 1, the STUNet alone: noisy input ->
  loss) is measured on CPU at a few small sizes, each in a fresh subprocess, as the high-water mark of
  torch's own allocations (``torch.profiler(profile_memory=True)``: tensors alive before the call -- weights,
  inputs, the gradients, allocated beforehand -- do not count; the peak RSS increase, sampled every 1 ms,
  is printed next to it as a cross-check that includes allocator slack). A line ``a + b x (frames x height x width)`` is fitted per model and mode and
  extrapolated to the config's training size (frames x latent/pixel size x batch).

Not included: the CUDA context and caching-allocator slack (add ~1-3 GiB per GPU), cuDNN workspaces, the
data loader, and the SD VAE's encode of the batch (no grad, before the STUNet's forward: a transient
``frames_per_call`` frames at a time, not added to the backward peak). CPU kernels can keep other
temporaries than CUDA ones; attention runs through ``scaled_dot_product_attention`` on both.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_train_memory.py [--models sd15 if_m] [--gpus 8]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 2 ** 30

# The published diffusers configs of the pretrained models configs/full_*.json name (non-default keys).
SD15_UNET = {  # stable-diffusion-v1-5/stable-diffusion-v1-5, unet/config.json (860 M parameters)
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
IF_M_UNET = {  # DeepFloyd/IF-I-M-v1.0, unet/config.json (the "400M" stage I; T5-XXL text states)
    "sample_size": 64, "in_channels": 3, "out_channels": 6, "layers_per_block": 3,
    "block_out_channels": [256, 512, 768, 1024], "attention_head_dim": 64, "cross_attention_dim": 1024,
    "encoder_hid_dim": 4096, "encoder_hid_dim_type": "text_proj", "addition_embed_type": "text",
    "addition_embed_type_num_heads": 64, "act_fn": "gelu", "time_embedding_act_fn": "gelu",
    "resnet_time_scale_shift": "scale_shift", "cross_attention_norm": "group_norm",
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
    "down_block_types": ["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
                         "SimpleCrossAttnDownBlock2D"],
    "up_block_types": ["SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
                       "ResnetUpsampleBlock2D"],
}
CLIP_L_TEXT = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
               "num_attention_heads": 12, "max_position_embeddings": 77, "projection_dim": 768}
T5_XXL_ENCODER = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24,
                  "num_heads": 64, "feed_forward_proj": "gated-gelu", "is_encoder_decoder": False}
SD_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
          "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
          "up_block_types": ["UpDecoderBlock2D"] * 4}

MODELS = {
    "sd15": {"config": "configs/full_sd.json", "unet": SD15_UNET, "text": ("clip", CLIP_L_TEXT), "vae": SD_VAE,
             "latent_factor": 8, "label": "SD-1.5 (full_sd.json)"},
    "if_m": {"config": "configs/full_if.json", "unet": IF_M_UNET, "text": ("t5", T5_XXL_ENCODER), "vae": None,
             "latent_factor": 1, "label": "IF-I-M (full_if.json)"},
}
TEXT_TOKENS = 77  # prompt length of both text encoders
# Measured sizes (frames, height, width of the STUNet's input: latents for SD, pixels for IF). Frames are a
# multiple of the temporal down-sampling factor (8 with 4 levels); three points to fit and check a line.
SIZES = ((8, 16, 16), (8, 24, 24), (16, 16, 16))

CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from benchmarks._common import _RssSampler
from benchmarks.bench_train_memory import TEXT_TOKENS, build_stunet, profiled_peak_bytes
name, frames, height, width, checkpointing = sys.argv[2], *map(int, sys.argv[3:6]), sys.argv[6] == "1"
torch.manual_seed(0)
model, text_dim = build_stunet(name)
if checkpointing:
    model.enable_gradient_checkpointing()
model.train()
for param in model.parameters():  # gradients are resident memory (counted apart): allocated before, accumulated into
    if param.requires_grad:
        param.grad = torch.zeros_like(param)
noisy = torch.randn(1, model.in_channels, frames, height, width)
states = torch.randn(1, TEXT_TOKENS, text_dim)
timestep = torch.tensor([500])

def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prediction = model(noisy, timestep, states)
    torch.nn.functional.mse_loss(prediction[:, :noisy.shape[1]].float(), noisy).backward()

with _RssSampler() as rss:
    peak = profiled_peak_bytes(step)
print(json.dumps({"peak_bytes": peak, "rss_peak_increase_bytes": rss.peak - rss.base}))
"""


def run_config(name: str) -> dict:
    return json.loads((ROOT / MODELS[name]["config"]).read_text())


def build_stunet(name: str, device: str = "cpu"):
    """The config's base STUNet around a random-weight copy of the pretrained U-Net; returns (stunet, text width)."""
    import torch
    from diffusers import UNet2DConditionModel

    from lumiere.models.stunet import inflate

    spec = MODELS[name]
    text_dim = spec["text"][1].get("d_model") or spec["text"][1]["hidden_size"]
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(spec["unet"])
        stunet = inflate(unet, **run_config(name)["model"].get("temporal", {}))
    return stunet, text_dim


def profiled_peak_bytes(fn) -> int:
    """High-water mark of the bytes torch allocates on CPU during ``fn()`` (see benchmarks/_common.py)."""
    from torch.profiler import ProfilerActivity, profile

    from benchmarks._common import _profiler_peak_bytes

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return _profiler_peak_bytes(prof)


def parameter_counts(name: str) -> dict:
    """Exact parameter counts, built on the meta device (no memory): T2I, temporal layers, text encoder, VAE."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    stunet, _ = build_stunet(name, device="meta")
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    kind, text_config = MODELS[name]["text"]
    with torch.device("meta"):
        text = CLIPTextModel(CLIPTextConfig(**text_config)) if kind == "clip" else T5EncoderModel(T5Config(**text_config))
        vae = AutoencoderKL(**MODELS[name]["vae"]) if MODELS[name]["vae"] else None
    return {"t2i": count(stunet.t2i), "temporal": count(stunet) - count(stunet.t2i), "text_encoder": count(text),
            "vae": count(vae) if vae is not None else 0}


def measure(name: str, size: tuple[int, int, int], checkpointing: bool) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), name, *map(str, size), str(int(checkpointing))],
                         env=env, check=True, capture_output=True, text=True).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "seconds": time.perf_counter() - start}


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares y = a + b x; returns (a, b, largest relative residual)."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    a = mean_y - b * mean_x
    return a, b, max(abs(a + b * x - y) / y for x, y in zip(xs, ys))


def training_size(name: str) -> tuple[int, int]:
    """(batch, frames x height x width of the STUNet input) of the config's temporal stage."""
    config = run_config(name)
    frames, height, width = config["model"]["base_resolution"]
    factor = MODELS[name]["latent_factor"]
    return int(config["stages"]["temporal"]["batch_size"]), frames * (height // factor) * (width // factor)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--gpus", type=int, default=8, help="GPU count for the ZeRO-2 column (default 8)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_memory.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    results = {}
    for name in args.models:
        counts = parameter_counts(name)
        frozen = 4 * (counts["t2i"] + counts["text_encoder"] + counts["vae"])
        trained = counts["temporal"]
        resident = {"frozen_weights": frozen, "temporal_weights": 4 * trained, "temporal_grads": 4 * trained,
                    "adamw_moments": 8 * trained, "ema": 4 * trained}
        batch, volume = training_size(name)
        entry = {"parameters": counts, "resident_bytes": resident, "training_volume": volume, "batch": batch,
                 "measurements": [], "activations": {}}
        for checkpointing in (False, True):
            points = []
            for size in SIZES:
                result = measure(name, size, checkpointing)
                entry["measurements"].append({"size": size, "checkpointing": checkpointing, **result})
                points.append((size[0] * size[1] * size[2], result["peak_bytes"]))
                print(f"{name} {size} checkpointing={checkpointing}: {result['peak_bytes'] / GIB:.3f} GiB "
                      f"(RSS +{result['rss_peak_increase_bytes'] / GIB:.3f} GiB) in {result['seconds']:.0f} s",
                      flush=True)
            a, b, residual = fit_line(*zip(*points))
            entry["activations"]["checkpointing" if checkpointing else "plain"] = {
                "intercept_bytes": a, "bytes_per_voxel": b, "max_relative_residual": residual,
                "at_training_size_bytes": a + b * volume * batch}
        results[name] = entry
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"gpus": args.gpus, "torch": torch.__version__, "models": results}, indent=2))
    print_tables(results, args.gpus)


def print_tables(results: dict, gpus: int) -> None:
    gib = lambda v: f"{v / GIB:.1f}"  # noqa: E731
    print("\nMeasured activation peak (CPU, bf16 autocast, batch 1; GiB; torch allocations, RSS increase in brackets)")
    print("| model | frames×h×w | plain | gradient checkpointing |\n|---|---|---|---|")
    for name, entry in results.items():
        for size in SIZES:
            row = {m["checkpointing"]: m for m in entry["measurements"] if tuple(m["size"]) == tuple(size)}
            cells = [f"{row[c]['peak_bytes'] / GIB:.3f} ({row[c]['rss_peak_increase_bytes'] / GIB:.3f})"
                     for c in (False, True)]
            print(f"| {name} | {'×'.join(map(str, size))} | {cells[0]} | {cells[1]} |")
    print(f"\nEstimated per-GPU memory of the temporal stage at the config's size (GiB; ZeRO-2 over {gpus} GPUs "
          "shards gradients + AdamW moments)")
    print("| model | T2I / text enc. / VAE params (M) | temporal params (M) | frozen weights | temporal weights + "
          "grads + AdamW + EMA | activations: plain / checkpointing | total, plain | total, checkpointing | "
          f"total, checkpointing, ZeRO-2 ×{gpus} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, entry in results.items():
        counts, resident, acts = entry["parameters"], entry["resident_bytes"], entry["activations"]
        fixed = sum(resident.values())
        sharded = fixed - (resident["temporal_grads"] + resident["adamw_moments"]) * (1 - 1 / gpus)
        plain, ckpt = acts["plain"]["at_training_size_bytes"], acts["checkpointing"]["at_training_size_bytes"]
        print(f"| {MODELS[name]['label']} | {counts['t2i'] / 1e6:.0f} / {counts['text_encoder'] / 1e6:.0f} / "
              f"{counts['vae'] / 1e6:.0f} | {counts['temporal'] / 1e6:.0f} | {gib(resident['frozen_weights'])} | "
              f"{gib(fixed - resident['frozen_weights'])} | {gib(plain)} / {gib(ckpt)} | {gib(fixed + plain)} | "
              f"{gib(fixed + ckpt)} | {gib(sharded + ckpt)} |")
    print("\nLine fits (activation bytes = a + b × frames×h×w), extrapolated to batch × frames×h×w:")
    for name, entry in results.items():
        for mode, fit in entry["activations"].items():
            print(f"- {name} {mode}: a = {fit['intercept_bytes'] / GIB:.3f} GiB, b = {fit['bytes_per_voxel'] / 1024:.1f} "
                  f"KiB per voxel, worst residual {100 * fit['max_relative_residual']:.1f} %, at "
                  f"{entry['batch']}×{entry['training_volume']} voxels: {gib(fit['at_training_size_bytes'])} GiB")


if __name__ == "__main__":
    main()
