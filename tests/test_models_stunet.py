"""lumiere.models.stunet: the paper's identity initialisation, block support, the frozen/trainable split, saving
and loading, and gradient checkpointing (the same gradients, a lower peak memory)."""
import pytest
import torch
from diffusers import UNet2DConditionModel

from lumiere import STUNet, inflate
from lumiere.models.temporal import TemporalDownsample, TemporalUpsample


def sd_unet(**overrides):
    kwargs = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32), layers_per_block=1,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8)
    kwargs.update(overrides)
    return UNet2DConditionModel(**kwargs)


def if_unet():
    """DeepFloyd-IF / Imagen-style: SimpleCrossAttn blocks, resnet resamplers, scale-shift, text in temb."""
    return UNet2DConditionModel(
        sample_size=16, in_channels=3, out_channels=6, block_out_channels=(16, 32, 32), layers_per_block=1,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", resnet_time_scale_shift="scale_shift",
        addition_embed_type="text", addition_embed_type_num_heads=2, encoder_hid_dim=20, cross_attention_dim=24,
        attention_head_dim=8, norm_num_groups=8)


def perturbed(unet, seed=0):
    """diffusers zero-inits some layers; random weights everywhere make the identity check meaningful."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return unet.eval()


@pytest.mark.parametrize("family", ["sd", "if"])
def test_identity_initialisation_every_nth_frame(family):
    unet = perturbed(sd_unet() if family == "sd" else if_unet())
    stunet = inflate(unet).eval()
    n = stunet.temporal_downsampling_factor
    assert n == 4  # two spatial down-samplers -> two temporal ones
    generator = torch.Generator().manual_seed(1)
    text_dim = 20 if family == "if" else 24
    video = torch.randn(2, 3, 8, 16, 16, generator=generator)
    text = torch.randn(2, 5, text_dim, generator=generator)
    timesteps = torch.tensor([10, 700])
    with torch.no_grad():
        out = stunet(video, timesteps, text)
        for k in range(0, 8, n):
            reference = unet(video[:, :, k], timesteps, text).sample
            assert (out[:, :, k] - reference).abs().max().item() <= 1e-4
        # in-between frames mix in neighbours (the temporal up-sampling duplicates), so they differ
        assert (out[:, :, 1] - unet(video[:, :, 1], timesteps, text).sample).abs().max().item() > 1e-3
    assert out.shape == (2, unet.config.out_channels, 8, 16, 16)


@pytest.mark.parametrize("family", ["sd", "if"])
def test_motion_conditioning_keeps_identity_at_init_and_acts_once_trained(family):
    """The text x clip-time path (per-frame FiLM, conditioned temporal attention) starts as the identity
    on frames 0, N, 2N, ... like the paper's blocks, and makes the output depend on the prompt once trained."""
    unet = perturbed(sd_unet() if family == "sd" else if_unet())
    stunet = inflate(unet, motion_conditioning=True).eval()
    text_dim = 20 if family == "if" else 24
    generator = torch.Generator().manual_seed(2)
    video = torch.randn(1, 3, 8, 16, 16, generator=generator)
    text_a, text_b = torch.randn(2, 1, 5, text_dim, generator=generator)
    with torch.no_grad():
        out = stunet(video, 500, text_a)
        for k in range(0, 8, stunet.temporal_downsampling_factor):
            assert (out[:, :, k] - unet(video[:, :, k], 500, text_a).sample).abs().max().item() <= 1e-4
        # Train-like perturbation of the zero-initialised outputs of the new sub-layers only.
        for name, p in stunet.named_parameters():
            if any(key in name for key in ("to_out_cross", "feed_forward.2", "modulation", "conv2")):
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
        changed = stunet(video, 500, text_a)
        assert (changed - out).abs().max().item() > 1e-2
        # the same noisy video under another prompt now moves differently: text reaches the temporal layers
        assert (stunet(video, 500, text_b) - changed)[:, :, 1].abs().max().item() > 1e-3
    config = stunet.config
    assert config["motion_conditioning"] is True
    assert STUNet.from_config(config).motion_conditioning
    # configs saved before the switch existed load as the paper's blocks
    assert not STUNet.from_config({k: v for k, v in config.items() if k != "motion_conditioning"}).motion_conditioning


def test_fixed_temporal_resolution_is_identity_on_every_frame():
    unet = perturbed(sd_unet())
    stunet = inflate(unet, temporal_resize=False).eval()
    assert stunet.temporal_downsampling_factor == 1
    assert not any(isinstance(m, (TemporalDownsample, TemporalUpsample)) for m in stunet.modules())
    video, text = torch.randn(1, 3, 6, 16, 16), torch.randn(1, 4, 24)
    with torch.no_grad():
        out = stunet(video, 5, text)
        for k in range(6):
            assert torch.allclose(out[:, :, k], unet(video[:, :, k], 5, text).sample, atol=1e-4)


def test_frozen_spatial_and_trainable_temporal_split():
    unet = sd_unet()
    names_before = set(unet.state_dict())
    stunet = inflate(unet)
    assert all(not p.requires_grad for p in stunet.spatial_parameters())
    assert all(p.requires_grad for p in stunet.temporal_parameters())
    spatial, temporal = list(stunet.spatial_parameters()), list(stunet.temporal_parameters())
    assert len(spatial) + len(temporal) == len(list(stunet.parameters()))
    # T2I weights keep their diffusers names under one prefix: a T2I checkpoint maps 1:1.
    t2i_names = {k[len("t2i."):] for k in stunet.state_dict() if k.startswith("t2i.")}
    assert t2i_names == names_before
    assert stunet.t2i.load_state_dict(unet.state_dict()) is not None


def test_coarsest_level_uses_stacked_temporal_attention():
    stunet = inflate(sd_unet(), temporal_attention_depth=3)
    from lumiere.models.temporal import TemporalAttentionStack, TemporalConvBlock

    assert all(isinstance(b, TemporalAttentionStack) and len(b.blocks) == 3 for b in stunet.mid_temporal)
    assert all(isinstance(b, TemporalAttentionStack) for b in stunet.down_temporal[-1])
    assert all(isinstance(b, TemporalConvBlock) for b in stunet.down_temporal[0])


def test_conditional_input_expansion_equals_unconditional_at_init():
    import copy

    base = inflate(perturbed(sd_unet())).eval()
    conditional = copy.deepcopy(base)  # the conditional model starts from the base's weights
    conditional.expand_input_channels(4)
    assert conditional.in_channels == 7
    video, text = torch.randn(1, 3, 8, 16, 16), torch.randn(1, 4, 24)
    extra = torch.randn(1, 4, 8, 16, 16)
    with torch.no_grad():
        assert torch.allclose(conditional(torch.cat([video, extra], 1), 3, text), base(video, 3, text), atol=1e-5)


@pytest.mark.parametrize("family", ["sd", "if"])
def test_condition_at_every_level_starts_as_the_plain_conditional_model_and_reads_c_once_trained(tmp_path, family):
    """The per-level (C, M) path is zero at init (the widened model is unchanged), makes the output depend
    on C through every level once its convs are non-zero, and survives a save / load."""
    import copy

    base = inflate(perturbed(sd_unet() if family == "sd" else if_unet())).eval()
    plain, every_level = copy.deepcopy(base), copy.deepcopy(base)
    plain.expand_input_channels(4)
    every_level.expand_input_channels(4, condition_every_level=True)
    assert every_level.condition_injection is not None and plain.condition_injection is None
    generator = torch.Generator().manual_seed(3)
    text = torch.randn(1, 4, 20 if family == "if" else 24, generator=generator)
    video, extra = torch.randn(1, 3, 8, 16, 16, generator=generator), torch.randn(1, 4, 8, 16, 16, generator=generator)
    other_extra = torch.randn(1, 4, 8, 16, 16, generator=generator)
    with torch.no_grad():
        out = every_level(torch.cat([video, extra], 1), 500, text)
        assert torch.allclose(out, plain(torch.cat([video, extra], 1), 500, text), atol=1e-5)
        for p in every_level.condition_injection.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
        trained = every_level(torch.cat([video, extra], 1), 500, text)
        assert (trained - out).abs().max().item() > 1e-2
        assert (every_level(torch.cat([video, other_extra], 1), 500, text) - trained).abs().max().item() > 1e-2
    # trained in the conditional stage (not part of the frozen T2I), and saved with the model
    names = {id(p) for p in every_level.temporal_parameters()}
    assert all(id(p) in names for p in every_level.condition_injection.parameters())
    every_level.save_pretrained(tmp_path / "m")
    loaded = STUNet.from_pretrained(tmp_path / "m")
    assert loaded.condition_every_level and loaded.condition_injection is not None
    with torch.no_grad():
        assert torch.allclose(loaded(torch.cat([video, extra], 1), 500, text), trained, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    stunet = inflate(sd_unet())
    with pytest.raises(ValueError, match="multiple of the temporal down-sampling factor N=4"):
        stunet(torch.randn(1, 3, 6, 16, 16), 1, torch.randn(1, 4, 24))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        stunet(torch.randn(1, 3, 16, 16), 1, torch.randn(1, 4, 24))
    with pytest.raises(ValueError, match="3 input channels"):
        stunet(torch.randn(1, 4, 8, 16, 16), 1, torch.randn(1, 4, 24))


def test_unsupported_block_is_named():
    unet = UNet2DConditionModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                                layers_per_block=1, down_block_types=("AttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "AttnUpBlock2D"), cross_attention_dim=8,
                                norm_num_groups=8, attention_head_dim=8)
    with pytest.raises(ValueError, match="AttnDownBlock2D"):
        inflate(unet)
    with pytest.raises(TypeError, match="UNet2DConditionModel"):
        inflate(torch.nn.Linear(2, 2))


def test_save_load_roundtrip_and_corrupt_file(tmp_path):
    stunet = inflate(perturbed(sd_unet())).eval()
    with torch.no_grad():
        for p in stunet.temporal_parameters():
            p.add_(0.01)
    stunet.save_pretrained(tmp_path / "m")
    loaded = STUNet.from_pretrained(tmp_path / "m")
    video, text = torch.randn(1, 3, 8, 16, 16), torch.randn(1, 4, 24)
    with torch.no_grad():
        assert torch.equal(loaded(video, 5, text), stunet(video, 5, text))
    (tmp_path / "m" / "stunet.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt safetensors file .*stunet.safetensors"):
        STUNet.from_pretrained(tmp_path / "m")


def test_text_pooling_starts_as_the_mean_and_old_configs_load_as_they_were_built(tmp_path):
    stunet = inflate(perturbed(sd_unet())).eval()
    assert stunet.text_pooling == "attention" and stunet.spatial_kernel_size == 3
    tokens = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(0))
    tokens[:, 2, 0] += 10.0  # one clear winner on feature 0, so the hard pick below is not a near tie
    pool = stunet.temporal_text_pool
    mean_of_heads = pool.norm(tokens).mean(dim=1).repeat(1, pool.to_scores.out_features)
    with torch.no_grad():
        assert torch.allclose(pool(tokens), pool.proj(mean_of_heads), atol=1e-6)  # uniform weights at init
        pool.to_scores.weight.zero_()[0, 0] = 50.0  # head 0 now picks the token with the largest feature 0
        picked = pool.norm(tokens)[torch.arange(2), pool.norm(tokens)[..., 0].argmax(dim=1)]
        weights = pool.to_scores(pool.norm(tokens)).softmax(dim=1)
        assert torch.allclose(torch.einsum("blh,bld->bhd", weights, pool.norm(tokens))[:, 0], picked, atol=1e-3)

    # A checkpoint written before the factorized conv / attention pooling options: same modules as then.
    legacy = inflate(perturbed(sd_unet()), spatial_kernel_size=0, text_pooling="mean")
    legacy.save_pretrained(tmp_path / "old")
    config = (tmp_path / "old" / "config.json").read_text()
    import json

    stripped = {k: v for k, v in json.loads(config).items() if k not in ("spatial_kernel_size", "text_pooling")}
    (tmp_path / "old" / "config.json").write_text(json.dumps(stripped))
    loaded = STUNet.from_pretrained(tmp_path / "old")
    assert loaded.text_pooling == "mean" and loaded.spatial_kernel_size == 0
    assert not any(".spatial1." in name for name, _ in loaded.named_parameters())
    with pytest.raises(ValueError, match="text_pooling"):
        inflate(sd_unet(), text_pooling="max")


def test_factorized_conv_blocks_mix_space_once_trained():
    """The (2+1)D blocks: a change at one pixel of one frame reaches its spatial neighbours through the
    temporal blocks alone; the 1D-only blocks change other pixels only through the norm statistics,
    as much far away as next door."""
    from lumiere.models.temporal import TemporalConvBlock

    torch.manual_seed(0)
    x = torch.randn(4, 8, 8, 8)
    for spatial_kernel_size in (3, 0):
        block = TemporalConvBlock(8, 3, spatial_kernel_size=spatial_kernel_size).eval()
        assert torch.equal(block(x.clone(), 4), x)  # identity at init
        with torch.no_grad():
            torch.nn.init.normal_(block.conv2.weight, std=0.1)
            poked = x.clone()
            poked[1, :, 4, 4] += 3.0
            change = (block(poked, 4) - block(x, 4) - (poked - x)).abs().sum(dim=1)
        neighbour_over_far = float(change[1, 4, 5] / change[1, 0, 0])
        if spatial_kernel_size:
            assert neighbour_over_far > 10
        else:
            assert neighbour_over_far < 3


@pytest.mark.parametrize("family", ["sd", "if"])
def test_from_pretrained_loads_the_exact_weights_with_nothing_left_on_meta(tmp_path, family):
    """Built on the meta device and given the file's tensors: the same weights, buffers (the non-persistent
    ones built as a fresh model builds them), frozen / trainable split, outputs; dtype honoured."""
    from lumiere.errors import CheckpointError

    unet = perturbed(sd_unet() if family == "sd" else if_unet())
    stunet = inflate(unet, extra_input_channels=4).eval()
    with torch.no_grad():
        for p in stunet.temporal_parameters():
            p.add_(0.01)
    stunet.save_pretrained(tmp_path / "m")
    loaded = STUNet.from_pretrained(tmp_path / "m")
    assert not [n for n, t in (*loaded.named_parameters(), *loaded.named_buffers()) if t.is_meta]
    expected = stunet.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(t, expected[k]) for k, t in loaded.state_dict().items())
    fresh = dict(STUNet.from_config(stunet.config).named_buffers())  # incl. non-persistent buffers
    assert all(torch.equal(t, fresh[k]) for k, t in loaded.named_buffers())
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in stunet.named_parameters() if p.requires_grad}
    video, text = torch.randn(1, 7, 8, 16, 16), torch.randn(1, 4, 24 if family == "sd" else 20)
    with torch.no_grad():
        assert torch.equal(loaded(video, 5, text), stunet(video, 5, text))

    half = STUNet.from_pretrained(tmp_path / "m", dtype=torch.float16)
    assert {t.dtype for t in half.state_dict().values() if t.is_floating_point()} == {torch.float16}
    assert all(torch.equal(t, expected[k].half()) for k, t in half.state_dict().items())
    stunet.save_pretrained(tmp_path / "fp16", dtype=torch.float16)  # an export, read back as float32
    upcast = STUNet.from_pretrained(tmp_path / "fp16")
    assert all(torch.equal(t, expected[k].half().float()) for k, t in upcast.state_dict().items())

    from safetensors.torch import load_file, save_file

    weights = tmp_path / "m" / "stunet.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if not k.startswith("down_temporal.0.")}, str(weights))
    with pytest.raises(CheckpointError, match=r"does not match its config: missing \['down_temporal\.0\."):
        STUNet.from_pretrained(tmp_path / "m")


def test_inflate_shares_the_unet_unless_copy():
    unet = sd_unet()
    conv_in = unet.conv_in
    copied = inflate(unet, extra_input_channels=4, copy=True)
    assert unet.conv_in is conv_in and unet.conv_in.in_channels == 3
    assert all(p.requires_grad for p in unet.parameters())
    assert copied.t2i is not unet and copied.in_channels == 7
    assert torch.equal(copied.t2i.conv_in.weight[:, :3], conv_in.weight)
    shared = inflate(unet, extra_input_channels=4)  # the default: the caller's U-Net is the STUNet's
    assert shared.t2i is unet and unet.conv_in.in_channels == 7
    assert not any(p.requires_grad for p in unet.parameters())


def test_sdxl_is_refused_with_what_to_use_instead():
    unet = sd_unet(addition_embed_type="text_time", addition_time_embed_dim=8,
                   projection_class_embeddings_input_dim=24 + 6 * 8)
    with pytest.raises(ValueError, match=r"SDXL.*text_time.*time ids.*Stable Diffusion 1\.x / 2\.x or DeepFloyd IF"):
        inflate(unet)


def test_from_pretrained_builds_non_persistent_buffers_as_a_fresh_model_does(tmp_path, monkeypatch):
    """Buffers left out of the file (persistent=False, e.g. a position table) are built, not left on meta."""
    from lumiere.models import temporal

    original = temporal.TemporalConvBlock.__init__

    def with_table(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.register_buffer("table", torch.arange(4.0) * 0.5, persistent=False)
        self.register_buffer("kept", torch.ones(2))

    monkeypatch.setattr(temporal.TemporalConvBlock, "__init__", with_table)
    stunet = inflate(sd_unet())
    with torch.no_grad():
        stunet.down_temporal[0][0].kept.fill_(3.0)
    stunet.save_pretrained(tmp_path / "m")
    loaded = STUNet.from_pretrained(tmp_path / "m", dtype=torch.float16)
    block = loaded.down_temporal[0][0]
    assert torch.equal(block.table, torch.arange(4.0, dtype=torch.float16) * 0.5)  # built, then cast with the model
    assert torch.equal(block.kept, torch.full((2,), 3.0, dtype=torch.float16))  # persistent: from the file


# ----------------------------------------------------------------------------- gradient checkpointing
def _small_stunet(**options):
    from diffusers import UNet2DConditionModel

    from lumiere.models.stunet import inflate

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=[32, 64],
                                layers_per_block=2, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                                up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], attention_head_dim=8,
                                norm_num_groups=8, cross_attention_dim=32)
    model = inflate(unet, temporal_attention_depth=2, temporal_head_dim=16, **options)
    with torch.no_grad():  # temporal blocks start as exact no-ops: perturb so their gradients are non-trivial
        for param in model.temporal_parameters():
            param.add_(0.02 * torch.randn(param.shape))
    return model


def _peak_cpu_bytes(fn) -> int:
    """Peak of the running total of CPU tensor memory (allocations - frees, in op order) during ``fn()``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    total = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        total += event.self_cpu_memory_usage
        peak = max(peak, total)
    return peak


@pytest.mark.parametrize("options", [{}, {"motion_conditioning": True, "extra_input_channels": 4}],
                         ids=["paper", "motion-conditioned"])
def test_gradient_checkpointing_gives_the_same_gradients(options):
    model = _small_stunet(**options)
    model.t2i.requires_grad_(True)  # spatial_lr_scale > 0 trains them too: their gradients must match as well
    x = torch.randn(2, model.in_channels, 8, 16, 16)
    t, text = torch.tensor([10, 700]), torch.randn(2, 6, 32)
    grads = []
    for on in (False, True):
        model.enable_gradient_checkpointing() if on else model.disable_gradient_checkpointing()
        model.zero_grad(set_to_none=True)
        out = model(x, t, text)
        out.pow(2).mean().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(model.parameters()))
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-5, atol=1e-7), name
    with torch.no_grad():  # no autograd: the switch changes nothing (sampling)
        assert torch.equal(model(x, t, text), model.disable_gradient_checkpointing() or model(x, t, text))


def test_gradient_checkpointing_lowers_peak_memory():
    model = _small_stunet()  # the paper's setting: T2I frozen, temporal layers trained
    x, t, text = torch.randn(1, 3, 8, 32, 32), torch.tensor([500]), torch.randn(1, 8, 32)

    def step():
        model(x, t, text).pow(2).mean().backward()

    peaks = []
    for on in (False, True):
        model.gradient_checkpointing = on
        step()  # warm-up: gradient buffers exist before the measured step
        peaks.append(_peak_cpu_bytes(step))
        model.zero_grad(set_to_none=True)
    assert peaks[1] < 0.5 * peaks[0], peaks  # measured ~0.2x (158 -> 33 MiB)
