"""lumiere.models.vae: latent (Stable-Diffusion-style) pipelines: a VAE component, every task on latents, training
end to end.

Tiny random models built here (a 2x AutoencoderKL, a 4-channel U-Net, a CLIP text encoder): seconds on a CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lumiere import LumierePipeline
from lumiere.build import ModelConfig, build_pipeline
from lumiere.errors import InputError

from tests.tiny import LATENT_MODEL, TINY_SSR, TINY_VAE, TINY_WORDS
from tests.test_pipeline import _away_from

ROOT = Path(__file__).resolve().parent.parent



def make_latent_pipeline(with_ssr: bool = False) -> LumierePipeline:
    """Random weights; the conditional model's zero-initialised input channels perturbed so it reads (C, M)."""
    torch.manual_seed(0)  # test-only
    model = dict(LATENT_MODEL, ssr=TINY_SSR) if with_ssr else LATENT_MODEL
    pipe = build_pipeline(model, words=TINY_WORDS)
    with torch.no_grad():
        pipe.conditional.t2i.conv_in.weight.add_(0.05 * torch.randn(pipe.conditional.t2i.conv_in.weight.shape))
    return pipe


@pytest.fixture(scope="module")
def latent_pipe():
    return make_latent_pipeline()


def _inputs():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    video = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    return image, video, mask


def test_every_task_runs_on_latents_and_keeps_the_users_pixels(latent_pipe):
    pipe = latent_pipe
    assert pipe.is_latent and pipe.model_sample_shape == (4, 8, 8)
    assert pipe.components_for("inpaint") == ["text_encoder", "conditional", "vae"]
    image, video, mask = _inputs()
    assert pipe.text_to_video("a red circle", seed=0).shape == (4, 16, 16, 3)
    assert pipe.text_to_video("a red circle", seed=0, super_resolve=True).shape == (4, 16, 16, 3)  # no SSR: no-op
    i2v = pipe.image_to_video(image, "a red circle", seed=0)
    assert i2v.shape == (4, 16, 16, 3) and np.array_equal(i2v[0], image)
    inpainted = pipe.inpaint(video, mask, "a red circle", seed=0)
    assert np.array_equal(inpainted[:, ~mask], video[:, ~mask]) and not np.array_equal(inpainted[:, mask], video[:, mask])
    cinemagraph = pipe.cinemagraph(image, mask, "a red circle", seed=0)
    assert np.array_equal(cinemagraph[0], image)
    assert np.array_equal(cinemagraph[:, ~mask], np.broadcast_to(image[~mask], cinemagraph[:, ~mask].shape))
    assert np.array_equal(pipe.video_to_video(video, "a red circle", strength=0.0, seed=0), video)
    edited = pipe.video_to_video(video, "a red circle", strength=0.5, seed=0)
    assert edited.shape == (4, 16, 16, 3) and not np.array_equal(edited, video)
    assert pipe.text_to_video("a red circle", seed=0, reference_image="t2i").shape == (4, 16, 16, 3)


def test_inpaint_keeps_user_pixels_at_output_resolution_after_ssr():
    """SSR runs on the decoded pixels; the known region is the user's own pixels at output resolution."""
    pipe = make_latent_pipeline(with_ssr=True)
    rng = np.random.default_rng(1)
    source = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    video = pipe.inpaint(source, mask, "a green triangle", seed=0)
    assert video.shape == (4, 32, 32, 3) and pipe.output_resolution == (4, 32, 32)
    far = _away_from(mask, pipe.ssr_scale)
    assert np.array_equal(video[:, far], source[:, far])
    assert pipe.text_to_video("a red circle", seed=0, super_resolve=False).shape == (4, 16, 16, 3)


def test_frame_batched_decode_equals_one_shot(latent_pipe):
    from lumiere.models.vae import decode_latents, encode_video

    latents = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    one_shot = decode_latents(latent_pipe.vae, latents, frames_per_call=None)
    assert one_shot.shape == (1, 3, 4, 16, 16)
    assert torch.allclose(decode_latents(latent_pipe.vae, latents, frames_per_call=1), one_shot, atol=1e-5)
    assert torch.allclose(encode_video(latent_pipe.vae, one_shot, 3), encode_video(latent_pipe.vae, one_shot, None),
                          atol=1e-5)
    latent_pipe.vae_frames_per_call = None
    try:
        whole = latent_pipe.text_to_video("a red circle", seed=2)
    finally:
        latent_pipe.vae_frames_per_call = 1
    try:
        batched = latent_pipe.text_to_video("a red circle", seed=2)
    finally:
        latent_pipe.vae_frames_per_call = 8
    assert np.abs(whole.astype(int) - batched.astype(int)).max() <= 1


def test_base_resolution_must_be_divisible_by_the_vae_factor(tmp_path):
    with pytest.raises(InputError, match=r"base_resolution 17x17 \(pixels\) must be divisible by the VAE's "
                                         r"down-sampling factor 2"):
        ModelConfig.from_dict(dict(LATENT_MODEL, base_resolution=[4, 17, 17]))
    with pytest.raises(InputError, match="in_channels \\(3\\) must equal model.vae.autoencoder.latent_channels \\(4\\)"):
        ModelConfig.from_dict(dict(LATENT_MODEL, t2i={"unet": dict(LATENT_MODEL["t2i"]["unet"], in_channels=3)}))
    from lumiere.build import build_latent_vae
    from lumiere.models.vae import build_vae

    build_vae({"autoencoder": TINY_VAE}).save_pretrained(tmp_path / "vae")  # a pretrained VAE: checked on load
    model = ModelConfig.from_dict(dict(LATENT_MODEL, base_resolution=[4, 17, 17], vae={"pretrained": str(tmp_path),
                                                                                       "subfolder": "vae"}))
    with pytest.raises(InputError, match="must be divisible by the VAE's down-sampling factor 2"):
        build_latent_vae(model)


def test_save_load_round_trip_with_a_vae(latent_pipe, tmp_path):
    image, _, _ = _inputs()
    expected = (latent_pipe.text_to_video("a red circle", seed=5), latent_pipe.image_to_video(image, "a", seed=5))
    latent_pipe.save_pretrained(tmp_path / "copy")
    index = json.loads((tmp_path / "copy" / "model_index.json").read_text())
    assert index["components"]["vae"] == "vae"
    assert (tmp_path / "copy" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list((tmp_path / "copy").rglob("*.bin")) and not list((tmp_path / "copy").rglob("*.pt"))
    loaded = LumierePipeline.from_pretrained(tmp_path / "copy", device="cpu")
    assert loaded.is_latent and not loaded.is_loaded("vae")
    assert np.array_equal(loaded.text_to_video("a red circle", seed=5), expected[0])
    assert np.array_equal(loaded.image_to_video(image, "a", seed=5), expected[1])
    # An SD-style VAE ("force_upcast") stays fp32 in an fp16 pipeline: its decoder overflows fp16.
    half = LumierePipeline.from_pretrained(tmp_path / "copy", device="cpu", dtype=torch.float16)
    assert half.vae.dtype == torch.float32 and half.base.dtype == torch.float16


def test_sd_layout_pretrained_components_build_a_latent_pipeline(latent_pipe, tmp_path):
    """configs/full_sd.json's code path on a local SD-layout folder: unet/, vae/, text_encoder/ + tokenizer/
    (a CLIPTextModel + CLIPTokenizer), loaded with from_pretrained (safetensors only)."""
    sd = tmp_path / "sd"
    latent_pipe.base.t2i.save_pretrained(sd / "unet")
    latent_pipe.vae.save_pretrained(sd / "vae")
    latent_pipe.text_encoder.save_pretrained(sd / "text_encoder", sd / "tokenizer")
    full_sd = json.loads((ROOT / "configs" / "full_sd.json").read_text())["model"]
    assert full_sd["base_resolution"][1] % 8 == 0 and full_sd["vae"]["subfolder"] == "vae"
    model = {**LATENT_MODEL, "text_encoder": {"pretrained": str(sd), "subfolder": "text_encoder",
                                              "tokenizer_subfolder": "tokenizer"},
             "vae": {"pretrained": str(sd), "subfolder": "vae"}, "t2i": {"pretrained": str(sd), "subfolder": "unet"}}
    pipe = build_pipeline(model)
    assert type(pipe.text_encoder.model).__name__ == "CLIPTextModel"
    assert type(pipe.text_encoder.tokenizer).__name__ == "CLIPTokenizer"
    assert not pipe.text_encoder.uses_attention_mask  # as SD was trained: CLIP states without a padding mask
    assert pipe.text_to_video("a red circle", seed=0).shape == (4, 16, 16, 3)


def test_latent_training_end_to_end_through_the_cli(tmp_path):
    """All stages (the SSR one skipped: no model.ssr), export, then `generate` writes the base frame count."""
    from lumiere.cli import main
    from lumiere.io import read_video

    config = {"output_dir": str(tmp_path / "run"), "data": {"type": "procedural", "seed": 0}, "model": LATENT_MODEL,
              "train": {"checkpoint_every": 2, "warmup_steps": 1, "log_every": 1},
              "stages": {"t2i": {"batch_size": 2}, "temporal": {"batch_size": 1}, "conditional": {"batch_size": 1},
                         "style": {"batch_size": 2, "styles": ["line drawing"]}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["train", "--stage", "all", "--config", str(tmp_path / "config.json"), "--steps", "2",
                 "--export", str(tmp_path / "export")]) == 0
    exported = LumierePipeline.from_pretrained(tmp_path / "export", device="cpu")
    assert set(exported.component_names) == {"text_encoder", "vae", "base", "conditional"}
    assert exported.styles == ["line drawing"]
    out = tmp_path / "clip.mp4"
    assert main(["generate", "--model", str(tmp_path / "export"), "--prompt", "a red circle", "--out", str(out),
                 "--seed", "0", "--steps", "2"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (4, 16, 16, 3) and fps == 8
    image, _, mask = _inputs()
    assert exported.cinemagraph(image, mask, "a red circle", seed=0).shape == (4, 16, 16, 3)


def test_pixel_pipelines_have_no_vae(tiny_pipe):
    assert not tiny_pipe.is_latent and tiny_pipe.model_sample_shape == (3, 16, 16)
    assert "vae" not in tiny_pipe.component_names and "vae" not in tiny_pipe.components_for("text_to_video")
