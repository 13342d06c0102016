"""The tiny configs every test builds from, in one place: models that build in seconds on a CPU.

``TINY_CONFIG`` is the model of conftest's ``tiny_pipe`` / ``tiny_pipeline_dir``; ``MICRO_CONFIG`` a whole
training config (all five stages, two steps each); ``LATENT_MODEL`` (+ ``TINY_SSR``) a latent, SD-style model.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

TINY_WORDS = ["a", "an", "red", "green", "blue", "yellow", "circle", "square", "triangle", "moving", "left", "right",
              "bouncing", "on", "the", "grass", "sea", "sky", "night", "two"]

TINY_CONFIG = {
    "base_resolution": [8, 16, 16],
    "fps": 8,
    "text_encoder": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 12},
    "t2i": {"unet": {
        "sample_size": 16, "in_channels": 3, "out_channels": 3, "block_out_channels": [16, 32],
        "layers_per_block": 1, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8, "norm_num_groups": 8,
    }},
    "temporal": {"temporal_attention_depth": 2, "temporal_head_dim": 16},
    "ssr": {"scale": 2, "window": 4, "noise_level": 100, "num_inference_steps": 2, "unet": {
        "sample_size": 32, "block_out_channels": [16, 16], "layers_per_block": 1,
        "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"],
        "norm_num_groups": 8, "attention_head_dim": 8,
    }},
    "defaults": {"num_inference_steps": 2, "guidance_scale": 3.0},
}

MICRO_CONFIG = {
    "data": {"type": "procedural", "seed": 0},
    "model": {
        "base_resolution": [4, 16, 16], "fps": 8,
        "text_encoder": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 12},
        "t2i": {"unet": {"sample_size": 16, "in_channels": 3, "out_channels": 3, "block_out_channels": [8, 16],
                         "layers_per_block": 1, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                         "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8,
                         "norm_num_groups": 4}},
        "temporal": {"temporal_attention_depth": 2, "temporal_head_dim": 16},
        "ssr": {"scale": 2, "window": 2, "noise_level": 100, "num_inference_steps": 1,
                "unet": {"sample_size": 32, "block_out_channels": [8, 8], "layers_per_block": 1,
                         "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"],
                         "norm_num_groups": 4}},
        "defaults": {"num_inference_steps": 1},
    },
    "train": {"checkpoint_every": 1, "warmup_steps": 1, "log_every": 1},
    "stages": {"t2i": {"steps": 2, "batch_size": 2}, "temporal": {"steps": 2, "batch_size": 1},
               "conditional": {"steps": 2, "batch_size": 1},
               "ssr": {"crop": 16, "train_window": 2, "image": {"steps": 2, "batch_size": 2}, "video": {"steps": 2, "batch_size": 1}},
               "style": {"steps": 2, "batch_size": 2, "styles": ["line drawing"]}},
}

TINY_VAE = {"block_out_channels": [8, 8], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4, "norm_num_groups": 4,
            "layers_per_block": 1, "sample_size": 16}
LATENT_MODEL = {
    "base_resolution": [4, 16, 16], "fps": 8,  # pixels: the STUNet runs on 8x8 latents
    "text_encoder": {"architecture": "clip", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 12},
    "vae": {"autoencoder": TINY_VAE},
    "t2i": {"unet": {"sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": [8, 16],
                     "layers_per_block": 1, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                     "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8,
                     "norm_num_groups": 4}},
    "temporal": {"temporal_attention_depth": 1, "temporal_head_dim": 8},
    "defaults": {"num_inference_steps": 2, "guidance_scale": 3.0},
}
TINY_SSR = {"scale": 2, "window": 4, "noise_level": 100, "num_inference_steps": 1, "unet": {
    "sample_size": 32, "block_out_channels": [8, 8], "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 4}}


# ----------------------------------------------------------------------------- helpers the data and training tests share
def grey_clip(level: int, frames: int = 10, size: int = 16) -> np.ndarray:
    """A clip whose every pixel of frame k is level + 4k: its identity and its window show in any crop."""
    values = np.clip(level + 4 * np.arange(frames), 0, 255).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (frames, size, size, 3)).copy()


def micro_config(tmp_path, **data):
    """The CLI tests' micro config with a saved "pretrained" T2I (so no t2i stage has to run first)."""
    from diffusers import UNet2DConditionModel

    config = copy.deepcopy(MICRO_CONFIG)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config["model"]["t2i"]["unet"], cross_attention_dim=16)
    unet.save_pretrained(tmp_path / "t2i", safe_serialization=True)
    config["model"]["t2i"] = {"pretrained": str(tmp_path / "t2i")}
    config["output_dir"] = str(tmp_path / "out")
    if data:
        config["data"] = data
    return config


def style_folder(folder, colour, captions):
    from lumiere.io import write_image

    folder.mkdir(parents=True)
    for k, text in enumerate(captions):
        image = np.zeros((20, 24, 3), np.uint8)
        image[...] = colour
        image[k * 3:k * 3 + 6, 4:12] = 255 - np.array(colour, np.uint8)  # each image its own
        write_image(folder / f"img{k}.png", image)
        if text is not None:
            (folder / f"img{k}.txt").write_text(text)
    return folder


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, batch):
        return (self.linear(batch["x"]) - batch["y"]).pow(2).mean()
