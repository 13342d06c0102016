"""Pipeline level (docs/api.md) on a tiny random pipeline: shapes, seeds, masks, styles, SDEdit, checkpoints."""

import numpy as np
import pytest
import torch

from lumiere import LumierePipeline
from lumiere.hub import CheckpointError
from lumiere.sampling import make_scheduler, sdedit_timesteps


def test_shapes_and_resolutions(tiny_pipe):
    assert tiny_pipe.base_resolution == (8, 16, 16)
    assert tiny_pipe.output_resolution == (8, 32, 32)
    video = tiny_pipe.text_to_video("a red circle", seed=0)
    assert video.dtype == np.uint8 and video.shape == (8, 32, 32, 3)
    low = tiny_pipe.text_to_video("a red circle", seed=0, super_resolve=False)
    assert low.shape == (8, 16, 16, 3)
    assert tiny_pipe.text_to_video("a red circle", seed=0, num_frames=16, super_resolve=False).shape[0] == 16


def test_seeds_reproducible_and_independent(tiny_pipe):
    a = tiny_pipe.text_to_video("a blue square", seed=7, super_resolve=False)
    b = tiny_pipe.text_to_video("a blue square", seed=7, super_resolve=False)
    c = tiny_pipe.text_to_video("a blue square", seed=8, super_resolve=False)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # the library never touches the global RNG: drawing from it in between changes nothing
    torch.rand(100)
    assert np.array_equal(a, tiny_pipe.text_to_video("a blue square", seed=7, super_resolve=False))
    # a caller that needs to know the randomness passes a generator: the same draws as the seed
    generator = torch.Generator().manual_seed(7)
    assert np.array_equal(a, tiny_pipe.text_to_video("a blue square", generator=generator, super_resolve=False))
    assert not hasattr(tiny_pipe, "last_seed")  # no per-call state on the shared pipeline
    with pytest.raises(ValueError, match=r"seed must be at most 2\^63-1"):
        tiny_pipe.text_to_video("x", seed=2**63, super_resolve=False)
    with pytest.raises(ValueError, match="either seed or generator"):
        tiny_pipe.text_to_video("a blue square", seed=1, generator=torch.Generator())


def test_text_to_image_is_the_t2i_unet_alone(tiny_pipe):
    """One base-resolution image from the spatial weights only: seeded, and blind to the temporal layers."""
    image = tiny_pipe.text_to_image("a red circle", seed=3, num_inference_steps=4)
    assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
    assert np.array_equal(image, tiny_pipe.text_to_image("a red circle", seed=3, num_inference_steps=4))
    assert not np.array_equal(image, tiny_pipe.text_to_image("a red circle", seed=4, num_inference_steps=4))
    temporal = [p for n, p in tiny_pipe.base.named_parameters() if not n.startswith("t2i.")]
    saved = [p.detach().clone() for p in temporal]
    with torch.no_grad():
        for p in temporal:
            p.add_(torch.randn_like(p))
    try:
        assert np.array_equal(image, tiny_pipe.text_to_image("a red circle", seed=3, num_inference_steps=4))
    finally:
        with torch.no_grad():
            for p, value in zip(temporal, saved):
                p.copy_(value)
    with pytest.raises(ValueError, match="guidance"):
        tiny_pipe.text_to_image("a red circle", guidance_scale=-1)


def test_sampling_leaves_denormal_flushing_as_it_was(tiny_pipe):
    from lumiere.components import _flushing_denormals

    assert not _flushing_denormals()
    tiny_pipe.text_to_video("a blue square", seed=0, super_resolve=False)
    assert not _flushing_denormals()


def test_raw_conditional_output_is_public(tiny_pipe):
    from lumiere.conditioning import image_to_video_condition

    image = torch.zeros(3, 16, 16)
    condition, keep = image_to_video_condition(image, 8)
    raw = tiny_pipe.sample_conditional(condition, keep, "a red circle", seed=0, paste_known=False, super_resolve=False)
    pasted = tiny_pipe.sample_conditional(condition, keep, "a red circle", seed=0, super_resolve=False)
    assert raw.shape == pasted.shape == (8, 16, 16, 3)
    assert (pasted[0] == 128).all() and not (raw[0] == 128).all()


def test_applications_hold_the_known_pixels_at_every_denoising_step(tiny_pipe, monkeypatch):
    """With paste_known the sampler sees the user's pixels in its x0 estimate at every step (not only
    pasted at the end), so the frames it generates are denoised next to them: even with the final paste
    switched off the sample ends on the known pixels, and the generated frames differ from the raw model's."""
    import lumiere.tasks.common as common
    from lumiere.conditioning import image_to_video_condition

    image = torch.linspace(-1, 1, 16)[None, None].expand(3, 16, 16).contiguous()
    condition, keep = image_to_video_condition(image, 8)
    raw = tiny_pipe.sample_conditional(condition, keep, "a red circle", seed=0, paste_known=False, super_resolve=False)
    monkeypatch.setattr(common, "paste", lambda video, condition, keep: video)
    held = tiny_pipe.sample_conditional(condition, keep, "a red circle", seed=0, super_resolve=False)
    expected = np.round((image.permute(1, 2, 0).numpy() + 1) * 127.5)
    assert np.abs(held[0].astype(float) - expected).max() <= 1
    assert np.abs(raw[0].astype(float) - expected).max() > 10
    assert not np.array_equal(held[1:], raw[1:])


def test_two_pipelines_with_generators_do_not_interfere(tiny_pipeline_dir):
    one = LumierePipeline.from_pretrained(tiny_pipeline_dir, device="cpu")
    two = LumierePipeline.from_pretrained(tiny_pipeline_dir, device="cpu")
    first = one.text_to_video("a red circle", seed=3, super_resolve=False)
    two.text_to_video("a red circle", seed=99, super_resolve=False)
    assert np.array_equal(first, one.text_to_video("a red circle", seed=3, super_resolve=False))


def test_image_to_video_keeps_first_frame(tiny_pipe):
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :, 0] = 200  # a red image of another size and aspect: resized + centre-cropped
    video = tiny_pipe.image_to_video(image, "a red circle", seed=0, super_resolve=False)
    assert video.shape == (8, 16, 16, 3)
    assert np.abs(video[0].astype(int) - np.array([200, 0, 0])).max() <= 1


def test_inpaint_respects_mask(tiny_pipe):
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True  # True = generate
    video = tiny_pipe.inpaint(source, mask, "a green triangle", seed=0, super_resolve=False)
    assert np.array_equal(video[:, ~mask], source[:, ~mask])
    assert not np.array_equal(video[:, mask], source[:, mask])


def test_cinemagraph_only_region_moves(tiny_pipe):
    image = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    region = np.zeros((16, 16), bool)
    region[:, 8:] = True
    video = tiny_pipe.cinemagraph(image, region, "a yellow circle", seed=0, super_resolve=False)
    assert np.array_equal(video[0], image)
    assert (video[:, ~region].std(axis=0) == 0).all()
    assert video[1:, region].std(axis=0).mean() > 0



def _away_from(generate: np.ndarray, distance: int) -> np.ndarray:
    """Pixels farther than ``distance`` (chessboard) from every True pixel of ``generate``."""
    near = generate.copy()
    for dy in range(-distance, distance + 1):
        for dx in range(-distance, distance + 1):
            near |= np.roll(generate, (dy, dx), axis=(0, 1))
    return ~near


def test_user_pixels_are_kept_at_output_resolution(tiny_pipe):
    """After SSR the known region is the user's own full-resolution pixels, not a super-resolved copy of
    their down-sampled version; only a feathered band of ``feather`` output pixels next to the mask blends."""
    rng = np.random.default_rng(0)
    feather = tiny_pipe.ssr_scale  # the default soft edge: one base-resolution pixel
    source = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)  # given at the output resolution
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    far = _away_from(mask, feather)
    video = tiny_pipe.inpaint(source, mask, "a green triangle", seed=0)
    assert video.shape == (8, 32, 32, 3)
    assert np.array_equal(video[:, far], source[:, far])
    assert not np.array_equal(video[:, mask], source[:, mask])

    big = np.repeat(np.repeat(source, 2, axis=1), 2, axis=2)  # a larger video: resized to the output resolution
    assert np.array_equal(tiny_pipe.inpaint(big, mask, "a green triangle", seed=0)[:, far], source[:, far])

    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    region = np.zeros((32, 32), bool)
    region[:, 16:] = True
    video = tiny_pipe.cinemagraph(image, region, "a yellow circle", seed=0)
    assert np.array_equal(video[0], image)
    still = _away_from(region, feather)
    assert np.array_equal(video[:, still], np.broadcast_to(image[still], video[:, still].shape))
    assert video[1:, region].std(axis=0).mean() > 0

    video = tiny_pipe.image_to_video(image, "a red circle", seed=0)
    assert np.array_equal(video[0], image)
    assert np.array_equal(tiny_pipe.text_to_video("a red circle", seed=0, reference_image=image)[0], image)


def test_low_res_projection_and_x0_constraint():
    from lumiere.pipeline import low_res_projection
    from lumiere.denoisers import Constrained, Guided, Parametrisation

    generator = torch.Generator().manual_seed(0)
    high = torch.randn(1, 3, 2, 8, 8, generator=generator)
    low = torch.randn(1, 3, 2, 2, 2, generator=generator)
    for gain in (1.0, 0.25):  # every output down-samples exactly to the low-res input
        down = torch.nn.functional.avg_pool3d(low_res_projection(high, low, 4, gain), (1, 4, 4))
        assert torch.allclose(down, low, atol=1e-5)
    smooth = low_res_projection(high, low, 4, 0.0)  # gain 0: the smooth up-sampled input, whatever the model said
    assert torch.allclose(smooth, low_res_projection(torch.zeros_like(high), low, 4, 0.0))
    full = low_res_projection(high, low, 4, 1.0)  # the gain scales the model's detail linearly
    assert torch.allclose(low_res_projection(high, low, 4, 0.25), smooth + 0.25 * (full - smooth), atol=1e-5)
    config = {"num_train_timesteps": 1000, "prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2"}
    scheduler = make_scheduler(config, "ddim")
    model = lambda x, t, states: torch.sin(x)  # noqa: E731
    denoiser = Guided(model, torch.zeros(1, 2, 4), None, 1.0, Parametrisation(scheduler))
    x, t = torch.randn(1, 3, 2, 8, 8, generator=generator), torch.tensor(500)
    assert torch.equal(denoiser(x, t).output, torch.sin(x))  # unconstrained: the model's output as it is
    assert torch.allclose(Constrained(denoiser, lambda x0: x0)(x, t).output, torch.sin(x), atol=1e-5)
    target = torch.zeros_like(x)
    constrained = Constrained(denoiser, lambda x0: target)(x, t)
    assert torch.equal(constrained.x0, target)
    v = constrained.output
    a = scheduler.alphas_cumprod[500].sqrt()
    assert torch.allclose(a * x - (1 - a**2).sqrt() * v, target, atol=1e-5)  # the implied x0 is the constrained one



@pytest.mark.parametrize("consistency", ["every_step", "final"])
def test_ssr_output_down_samples_to_its_input(tiny_pipe, consistency):
    y, x = np.mgrid[0:16, 0:16]
    t = np.arange(8)[:, None, None]
    low = (128 + 50 * np.sin(x / 3 + t / 4)[..., None] * np.cos(y / 4)[..., None] * [1, 0.5, -1]).astype(np.uint8)
    tiny_pipe.config["ssr"] = {**tiny_pipe.config["ssr"], "low_res_consistency": consistency, "detail_gain": 0.5}
    high = tiny_pipe.super_resolve(low, "a red circle", seed=0).astype(np.float64)
    blocks = high.reshape(8, 16, 2, 16, 2, 3)
    unclipped = ((blocks > 0) & (blocks < 255)).all(axis=(2, 4))  # a random model's detail can saturate
    assert unclipped.mean() > 0.5
    assert np.abs(blocks.mean(axis=(2, 4)) - low)[unclipped].max() <= 1.0  # uint8 rounding only
    tiny_pipe.config["ssr"]["low_res_consistency"] = "off"
    free = tiny_pipe.super_resolve(low, "a red circle", seed=0).astype(np.float64)
    assert np.abs(free.reshape(8, 16, 2, 16, 2, 3).mean(axis=(2, 4)) - low).max() > 5  # a random SSR does not


def test_ssr_strength_runs_the_last_steps_from_the_bicubic_start(tiny_pipe):
    """ssr.strength < 1: fewer steps (progress counts them), still projected onto the input; bad values named."""
    low = np.random.default_rng(0).integers(40, 200, (8, 16, 16, 3)).astype(np.uint8)
    tiny_pipe.config["ssr"] = {**tiny_pipe.config["ssr"], "num_inference_steps": 8, "strength": 0.25,
                               "low_res_consistency": "every_step", "detail_gain": 0.5}
    calls = []
    high = tiny_pipe.super_resolve(low, "a red circle", seed=0, callback=lambda step, total: calls.append(total))
    assert calls == [2, 2]  # the last quarter of 8 steps
    assert np.abs(high.astype(np.float64).reshape(8, 16, 2, 16, 2, 3).mean(axis=(2, 4)) - low).mean() <= 1.0
    plan = []
    tiny_pipe.text_to_video("x", seed=0, num_inference_steps=2, callback=lambda step, total: plan.append(total))
    assert plan[0] == 2 + 2  # base steps + the SSR steps that run
    tiny_pipe.config["ssr"]["strength"] = 1.0  # the paper's start from pure noise: every step runs
    calls.clear()
    tiny_pipe.super_resolve(low, "a red circle", seed=0, callback=lambda step, total: calls.append(total))
    assert calls == [8] * 8
    tiny_pipe.config["ssr"]["strength"] = 0.0
    with pytest.raises(ValueError, match=r"ssr.strength must be in \(0, 1\]"):
        tiny_pipe.super_resolve(low, "a red circle", seed=0)


def test_empty_mask_and_bad_arguments_are_rejected(tiny_pipe):
    with pytest.raises(ValueError, match="mask is empty"):
        tiny_pipe.cinemagraph(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), bool), "x", seed=0)
    with pytest.raises(ValueError, match="num_frames must be a multiple of 2 for this model, got 7"):
        tiny_pipe.text_to_video("x", num_frames=7)
    with pytest.raises(ValueError, match="unknown style 'oil'.*line drawing"):
        tiny_pipe.text_to_video("x", style="oil")
    with pytest.raises(ValueError, match="style_weight must be between 0 and 1"):
        tiny_pipe.text_to_video("x", style="line drawing", style_weight=1.5)
    with pytest.raises(TypeError, match="prompt must be a string"):
        tiny_pipe.text_to_video(None)
    with pytest.raises(ValueError, match="image must be an RGB array"):
        tiny_pipe.image_to_video(np.zeros((4, 4, 4, 4), np.uint8), "x")
    with pytest.raises(ValueError, match="strength must be between 0 and 1"):
        tiny_pipe.video_to_video(np.zeros((8, 16, 16, 3), np.uint8), "x", strength=2)
    with pytest.raises(ValueError, match="unknown sampler"):
        tiny_pipe.text_to_video("x", sampler="magic")


def test_style_alpha_zero_is_exact_and_styles_are_non_destructive(tiny_pipe):
    before = {k: v.clone() for k, v in tiny_pipe.base.state_dict().items()}
    plain = tiny_pipe.text_to_video("a red circle", seed=4, super_resolve=False)
    alpha0 = tiny_pipe.text_to_video("a red circle", seed=4, super_resolve=False, style="line drawing", style_weight=0.0)
    styled = tiny_pipe.text_to_video("a red circle", seed=4, super_resolve=False, style="line drawing", style_weight=1.0)
    assert np.array_equal(plain, alpha0)
    assert not np.array_equal(plain, styled)
    after = tiny_pipe.base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_style_interpolates_spatial_weights_only(tiny_pipe):
    from lumiere.styles import styled

    style = tiny_pipe.style_state("line drawing")
    base = tiny_pipe.base
    name, param = next(iter(base.t2i.named_parameters()))
    temporal_before = [p.clone() for p in base.temporal_parameters()]
    with styled(base, style, 0.5):
        inside = dict(base.t2i.named_parameters())[name].detach().clone()
        assert all(torch.equal(a, b) for a, b in zip(temporal_before, base.temporal_parameters()))
    original = dict(base.t2i.named_parameters())[name]
    assert torch.allclose(inside, 0.5 * style[name] + 0.5 * original, atol=1e-6)


def test_one_sampler_list():
    from lumiere.options import SAMPLERS
    from lumiere.sampling import SCHEDULER_CLASSES

    assert set(SCHEDULER_CLASSES) == set(SAMPLERS)


def test_sdedit_strength_sets_start_timestep():
    config = {"num_train_timesteps": 1000, "prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2",
              "timestep_spacing": "trailing"}
    for sampler in ("ddim", "dpm++"):
        full, start_full = sdedit_timesteps(make_scheduler(config, sampler), 10, 1.0)
        half, start_half = sdedit_timesteps(make_scheduler(config, sampler), 10, 0.5)
        none, start_none = sdedit_timesteps(make_scheduler(config, sampler), 10, 0.0)
        assert len(full) == 10 and len(half) == 5 and len(none) == 0 and start_none is None
        assert int(start_full) == 999 and int(start_half) < int(start_full)
        assert torch.equal(half, full[5:])


def test_video_to_video_strength_extremes(tiny_pipe):
    source = np.random.default_rng(2).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    kept = tiny_pipe.video_to_video(source, "x", strength=0.0, seed=0, super_resolve=False)
    assert np.abs(kept.astype(int) - source.astype(int)).max() <= 1
    full = tiny_pipe.video_to_video(source, "x", strength=1.0, seed=0, super_resolve=False)
    generated = tiny_pipe.text_to_video("x", seed=0, super_resolve=False)
    assert np.abs(full.astype(int) - generated.astype(int)).mean() < np.abs(full.astype(int) - source.astype(int)).mean()


def test_callback_progress_and_cancel(tiny_pipe):
    calls = []
    tiny_pipe.text_to_video("x", seed=0, callback=lambda step, total: calls.append((step, total)))
    total = calls[0][1]
    assert calls == [(i, total) for i in range(1, total + 1)]
    assert total == 2 + 2  # base steps + SSR steps (tiny config)

    class Stop(Exception):
        pass

    def cancel(step, total):
        if step == 1:
            raise Stop

    with pytest.raises(Stop):
        tiny_pipe.text_to_video("x", seed=0, callback=cancel)
    assert tiny_pipe.text_to_video("x", seed=0, super_resolve=False).shape == (8, 16, 16, 3)  # still usable


def test_reference_guided_text_to_video(tiny_pipe):
    calls = []
    video = tiny_pipe.text_to_video("a red circle", seed=0, reference_image="t2i", super_resolve=False,
                                    callback=lambda s, t: calls.append(t))
    assert video.shape == (8, 16, 16, 3)
    assert calls[-1] == 4  # T2I image steps + conditional video steps


def test_save_load_identical_output(tiny_pipe, tmp_path):
    expected = tiny_pipe.text_to_video("a red circle", seed=5)
    tiny_pipe.save_pretrained(tmp_path / "copy")
    for name in ("model_index.json", "base/config.json", "base/stunet.safetensors",
                 "text_encoder/model.safetensors", "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json"):
        assert (tmp_path / "copy" / name).is_file(), name
    assert not list((tmp_path / "copy").rglob("*.bin")) and not list((tmp_path / "copy").rglob("*.pt"))
    loaded = LumierePipeline.from_pretrained(tmp_path / "copy", device="cpu")
    assert loaded.styles == ["line drawing"]
    assert np.array_equal(loaded.text_to_video("a red circle", seed=5), expected)


def test_missing_and_corrupt_checkpoints_name_the_file(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "ssr" / "stunet.safetensors").write_bytes(b"\x00" * 64)
    pipe = LumierePipeline.from_pretrained(tmp_path / "p", device="cpu")
    with pytest.raises(CheckpointError, match="ssr/stunet.safetensors"):
        pipe.text_to_video("x", seed=0)
    (tmp_path / "p" / "base" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="base/config.json"):
        LumierePipeline.from_pretrained(tmp_path / "p")
    (tmp_path / "p" / "model_index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON in .*model_index.json"):
        LumierePipeline.from_pretrained(tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="no pipeline directory"):
        LumierePipeline.from_pretrained(tmp_path / "does-not-exist")


def test_hub_repo_id_resolves_through_snapshot_download(tiny_pipe, tmp_path, monkeypatch):
    """A repo id goes through huggingface_hub (offline here: served from a local cache we fake)."""
    import huggingface_hub

    tiny_pipe.save_pretrained(tmp_path / "snapshot")
    seen = {}

    def fake_snapshot_download(repo_id, **kwargs):
        seen["repo_id"] = repo_id
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    pipe = LumierePipeline.from_pretrained("someone/lumiere-tiny", device="cpu")
    assert seen["repo_id"] == "someone/lumiere-tiny" and pipe.base_resolution == (8, 16, 16)


def test_hub_offline_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="could not be fetched from the Hugging Face Hub"):
        LumierePipeline.from_pretrained("nobody/not-cached-model")


def test_components_for_tasks(tiny_pipe):
    assert tiny_pipe.components_for("text_to_video") == ["text_encoder", "base", "ssr"]
    assert tiny_pipe.components_for("inpaint", super_resolve=False) == ["text_encoder", "conditional"]
    tiny_pipe.get_component("base")
    assert tiny_pipe.is_loaded("base")
    tiny_pipe.unload_component("base")
    assert not tiny_pipe.is_loaded("base")
    assert tiny_pipe.text_to_video("x", seed=0, super_resolve=False).shape == (8, 16, 16, 3)
