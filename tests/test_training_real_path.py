"""Issue 10, the real-model path: LR schedule under accumulation and resume, learned-variance sampling,
real-video temporal augmentation and small-dataset errors, stage skipping, gradient checkpointing."""
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lumiere.train.loop import TrainSettings, _lr_factor, train


# ----------------------------------------------------------------------------- item 3: LR schedule
class _Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, batch):
        return (self.linear(batch["x"]) - batch["y"]).pow(2).mean()


class _Points(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, index):
        x = torch.tensor([index % 5, index % 3, 1.0]) / 4
        return {"x": x, "y": x.sum(0, keepdim=True)}


def _saved_lr(output_dir, step):
    meta = json.loads((output_dir / "checkpoints" / f"checkpoint-{step:07d}" / "training_state.json").read_text())
    return meta["optimizer"]["param_groups"][0]["lr"]


def test_lr_schedule_counts_optimizer_steps_under_accumulation_and_resumes(tmp_path):
    """After k optimizer steps with grad_accum 4 the LR is the schedule's value at k, also across a resume."""
    settings = TrainSettings(steps=3, batch_size=2, lr=0.01, warmup_steps=5, grad_accum=4, ema_decay=None,
                             checkpoint_every=100, log_every=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = _Regression()
        loader = torch.utils.data.DataLoader(_Points(), batch_size=2, shuffle=True, drop_last=True)
        assert train(module, list(module.parameters()), loader, settings, tmp_path)["step"] == 3
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert _saved_lr(tmp_path, 3) == pytest.approx(0.01 * _lr_factor(3, settings))  # not factor(12): 4x early

    longer = TrainSettings(**{**settings.__dict__, "steps": 7})
    module = _Regression()
    loader = torch.utils.data.DataLoader(_Points(), batch_size=2, shuffle=True, drop_last=True)
    assert train(module, list(module.parameters()), loader, longer, tmp_path, resume=True)["step"] == 7
    assert _saved_lr(tmp_path, 7) == pytest.approx(0.01 * _lr_factor(7, longer))
    meta = json.loads((tmp_path / "checkpoints" / "checkpoint-0000007" / "training_state.json").read_text())
    assert meta["schedule"]["last_epoch"] == 7


# ----------------------------------------------------------------------------- item 7: learned variance
IF_LIKE_SCHEDULER = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                     "prediction_type": "epsilon", "variance_type": "learned_range", "clip_sample": False}


@pytest.fixture(scope="module")
def learned_variance_pipe():
    """A tiny pipeline whose T2I U-Net outputs 2C = 6 channels (mean, variance), as DeepFloyd IF's do."""
    import copy

    from lumiere.build import build_pipeline

    from tests.tiny import TINY_CONFIG, TINY_WORDS

    config = copy.deepcopy(TINY_CONFIG)
    config["t2i"]["unet"]["out_channels"] = 6
    torch.manual_seed(0)
    pipe = build_pipeline(config, words=TINY_WORDS, with_ssr=False)
    assert pipe.base.t2i.config.out_channels == 6 and pipe.base.t2i.config.in_channels == 3
    return pipe


@pytest.mark.parametrize("scheduler_config", [None, IF_LIKE_SCHEDULER], ids=["v-prediction", "if-like"])
@pytest.mark.parametrize("sampler", ["dpm++", "ddim", "ddpm", "euler", "unipc"])
def test_every_sampler_runs_on_a_learned_variance_unet(learned_variance_pipe, sampler, scheduler_config):
    from lumiere.options import SAMPLERS

    assert sampler in SAMPLERS
    pipe = learned_variance_pipe
    original = pipe.scheduler_config
    if scheduler_config is not None:
        pipe.scheduler_config = dict(scheduler_config)
    try:
        video = pipe.text_to_video("a red circle", sampler=sampler, seed=0, num_inference_steps=2, super_resolve=False)
        assert video.shape == (8, 16, 16, 3)
        clip = pipe.image_to_video(video[0], "a red circle", sampler=sampler, seed=0, num_inference_steps=2,
                                   super_resolve=False)
        assert clip.shape == (8, 16, 16, 3)
    finally:
        pipe.scheduler_config = original


@pytest.mark.parametrize("sampler", ["dpm++", "ddim", "euler", "ddpm", "unipc"])
def test_solvers_without_variance_use_the_first_channels(sampler):
    """A 2C-channel prediction samples exactly like its first C channels (guidance and x0 constraints
    included), except with DDPM's learned variance, which reads the other C."""
    from lumiere.build import DEFAULT_SCHEDULER
    from lumiere.denoisers import Constrained, Guided, Parametrisation, sample
    from lumiere.sampling import make_scheduler

    weights = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))

    def predict_2c(x, t, states):  # a stand-in model: mean and variance channels that depend on x and the text
        return torch.tanh(torch.einsum("oc,bchw->bohw", weights, x) * (1 + states.mean()) + 0.01 * t.float())

    def predict_other_variance(x, t, states):
        out = predict_2c(x, t, states)
        return torch.cat([out[:, :3], -out[:, 3:]], dim=1)

    def predict_c(x, t, states):
        return predict_2c(x, t, states)[:, :3]

    text, uncond = torch.ones(1, 2, 4), torch.zeros(1, 2, 4)
    for config in (DEFAULT_SCHEDULER, IF_LIKE_SCHEDULER):
        learned = sampler == "ddpm" and config is IF_LIKE_SCHEDULER
        results = []
        for predict in (predict_2c, predict_other_variance) + (() if learned else (predict_c,)):
            scheduler = make_scheduler(config, sampler)
            scheduler.set_timesteps(3)
            x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * scheduler.init_noise_sigma
            denoiser = Constrained(Guided(predict, text, uncond, 3.0, Parametrisation(scheduler)),
                                   lambda x0: x0.clamp(-1, 1))
            results.append(sample(denoiser, x, scheduler, scheduler.timesteps, torch.Generator().manual_seed(2)))
        assert results[0].shape == (1, 3, 8, 8) and torch.isfinite(results[0]).all()
        if learned:
            assert not torch.allclose(results[0], results[1])  # the learned variance is used
        else:
            assert all(torch.equal(results[0], other) for other in results[1:])


# ----------------------------------------------------------------------------- item 6: data
@pytest.fixture(scope="module")
def long_videos(tmp_path_factory):
    """Two 40-frame videos whose frames carry their own index (frame k is uniformly 6k grey)."""
    from lumiere.io import write_video

    root = tmp_path_factory.mktemp("videos")
    frames = np.repeat(np.repeat(np.repeat((np.arange(40) * 6).astype(np.uint8)[:, None, None, None], 16, 1), 16, 2), 3, 3)
    rows = ["path,caption"]
    for k in range(2):
        write_video(root / f"v{k}.mp4", frames, fps=8)
        rows.append(f"v{k}.mp4,clip {k}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root


def _first_frame_index(item) -> int:
    grey = (item["video"][:, 0].mean().item() + 1) * 127.5
    return int(round(grey / 6))


def test_real_videos_give_other_windows_each_epoch_reproducibly(long_videos):
    from lumiere.data.datasets import RealVideoDataset

    data = RealVideoDataset(long_videos, "meta.csv", num_frames=4, height=16, width=16, fps=8, seed=3)
    twin = RealVideoDataset(long_videos, "meta.csv", num_frames=4, height=16, width=16, fps=8, seed=3)
    starts = []
    for epoch in range(6):
        data.set_epoch(epoch)
        twin.set_epoch(epoch)
        item = data[0]
        assert torch.equal(item["video"], twin[0]["video"])  # reproducible from (seed, index, epoch)
        starts.append(_first_frame_index(item))
    assert len(set(starts)) >= 4, starts  # not the same window every epoch
    data.set_epoch(0)
    fresh = RealVideoDataset(long_videos, "meta.csv", num_frames=4, height=16, width=16, fps=8, seed=3)
    assert torch.equal(data[1]["video"], fresh[1]["video"])  # epoch 0: the window it always took


def test_the_loop_tells_the_data_each_epoch(long_videos, tmp_path):
    """set_epoch reaches the dataset through accelerate's loader and the stages' wrappers (frames, crops)."""
    from lumiere.data.datasets import RealVideoDataset
    from lumiere.train.stages import FramesAsImages, RandomCrop, _loader

    class Recorder(RealVideoDataset):
        def set_epoch(self, epoch):
            super().set_epoch(epoch)
            self.seen.append(epoch)

    class ImageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, batch):
            return (self.scale * batch["image"]).pow(2).mean()

    data = Recorder(long_videos, "meta.csv", num_frames=1, height=16, width=16, fps=8)
    data.seen = []
    settings = TrainSettings(steps=5, batch_size=2, ema_decay=None, checkpoint_every=100, log_every=100)
    module = ImageModel()
    train(module, list(module.parameters()), _loader(FramesAsImages(data), settings), settings, tmp_path)
    assert sorted(set(data.seen)) == [0, 1, 2, 3, 4]  # 2 clips, batch 2: one step per epoch
    crops = RandomCrop(Recorder(long_videos, "meta.csv", num_frames=4, height=16, width=16, fps=8,
                                return_lowres=(8, 8)), crop=8, scale=2, window=2)
    crops.dataset.seen = []
    crops.set_epoch(3)
    assert crops.dataset.seen == [3] and crops[0]["video"].shape == (3, 2, 8, 8)


@pytest.mark.timeout(120)
def test_fewer_clips_than_one_batch_per_process_is_a_clear_error(long_videos, tmp_path):
    from lumiere.data.datasets import RealVideoDataset
    from lumiere.errors import InputError
    from lumiere.train.stages import _loader

    data = RealVideoDataset(long_videos, "meta.csv", num_frames=4, height=16, width=16, fps=8)
    settings = TrainSettings(steps=2, batch_size=4, ema_decay=None)
    module = _Regression()
    with pytest.raises(InputError, match=r"2 item\(s\), fewer than one batch per process \(batch_size 4 x 1"):
        train(module, list(module.parameters()), _loader(data, settings), settings, tmp_path)


@pytest.mark.timeout(30)
def test_an_epoch_without_batches_is_an_error_not_a_hang():
    from lumiere.errors import InputError
    from lumiere.train.loop import infinite

    with pytest.raises(InputError, match="no batch in a whole epoch"):
        next(infinite([]))


# ----------------------------------------------------------------------------- item 8: stages
@pytest.fixture(scope="module")
def pretrained_t2i_config(tmp_path_factory):
    """The CLI tests' micro config with its T2I U-Net saved as a "pretrained" diffusers directory."""
    import copy

    from diffusers import UNet2DConditionModel
    from tests.tiny import MICRO_CONFIG

    root = tmp_path_factory.mktemp("pretrained")
    config = copy.deepcopy(MICRO_CONFIG)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config["model"]["t2i"]["unet"], cross_attention_dim=16)
    unet.save_pretrained(root / "t2i" / "unet", safe_serialization=True)
    config["model"]["t2i"] = {"pretrained": str(root / "t2i"), "subfolder": "unet"}
    config["output_dir"] = str(root / "out")
    return root, config


def test_stage_all_keeps_a_pretrained_t2i_as_it_is(pretrained_t2i_config, capsys):
    from lumiere import LumierePipeline
    from lumiere.cli import main

    root, config = pretrained_t2i_config
    (root / "config.json").write_text(json.dumps(config))
    assert main(["train", "--stage", "all", "--config", str(root / "config.json")]) == 0
    out = capsys.readouterr().out
    assert "t2i: skipped: model.t2i.pretrained is set" in out and "stages.t2i.finetune_pretrained" in out
    assert not (root / "out" / "t2i").exists()  # nothing trained, nothing written
    pipe = LumierePipeline.from_pretrained(root / "out" / "pipeline", device="cpu")
    from diffusers import UNet2DConditionModel

    published = UNet2DConditionModel.from_pretrained(str(root / "t2i"), subfolder="unet")
    assert all(torch.equal(v, pipe.base.t2i.state_dict()[k]) for k, v in published.state_dict().items())


def test_finetuning_a_pretrained_t2i_is_an_opt_in(pretrained_t2i_config):
    from lumiere.cli import main

    root, config = pretrained_t2i_config
    config = json.loads(json.dumps(config))
    config["output_dir"] = str(root / "opt-in")
    config["stages"]["t2i"]["finetune_pretrained"] = True
    (root / "opt-in.json").write_text(json.dumps(config))
    assert main(["train", "--stage", "t2i", "--config", str(root / "opt-in.json")]) == 0
    assert (root / "opt-in" / "t2i" / "checkpoints" / "checkpoint-0000002").is_dir()


def _nudged_and_saved(model, directory):
    """Shift the temporal weights off their identity init, so "continued from this model" is observable."""
    with torch.no_grad():
        for parameter in model.temporal_parameters():
            parameter.add_(0.01)
    model.save_pretrained(directory)
    return model


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_temporal_stage_starts_from_a_cli_inflated_stunet(pretrained_t2i_config):
    """``stages.temporal.init_from``: the temporal stage continues the given STUNet (here the output of
    ``lumiere inflate``, with its temporal layers nudged so "continued" is observable) instead of
    re-inflating the T2I; a conditional STUNet is refused with the key named."""
    from lumiere.cli import main
    from lumiere.errors import InputError
    from lumiere.models.stunet import STUNet
    from lumiere.train import run_stage

    root, config = pretrained_t2i_config
    (root / "inflate-config.json").write_text(json.dumps(config))
    inflate_args = ["inflate", "--t2i", str(root / "t2i"), "--subfolder", "unet", "--config", str(root / "inflate-config.json")]
    assert main([*inflate_args, "--out", str(root / "inflated")]) == 0
    start = _nudged_and_saved(STUNet.from_pretrained(root / "inflated"), root / "inflated")
    assert start.temporal_head_dim == config["model"]["temporal"]["temporal_head_dim"]  # the config's, not the default

    config = json.loads(json.dumps(config))
    config["output_dir"] = str(root / "from-inflated")
    config["stages"]["temporal"] = {**config["stages"].get("temporal", {}), "init_from": str(root / "inflated"),
                                    "lr": 0.0}  # lr 0: the result is exactly the starting point
    run_stage("temporal", config, steps=1)
    trained = STUNet.from_pretrained(root / "from-inflated" / "pipeline" / "base")
    assert _same_weights(start, trained)

    assert main([*inflate_args, "--conditional", "--out", str(root / "conditional")]) == 0
    config["stages"]["temporal"]["init_from"] = str(root / "conditional")
    with pytest.raises(InputError, match="stages.temporal.init_from: .* conditional model"):
        run_stage("temporal", config, steps=1)
    # Inflated with other temporal options than the config's (inflate's defaults): refused, not kept silently.
    assert main(["inflate", "--t2i", str(root / "t2i"), "--subfolder", "unet", "--out", str(root / "default")]) == 0
    config["stages"]["temporal"]["init_from"] = str(root / "default")
    with pytest.raises(InputError, match="stages.temporal.init_from: .* temporal_head_dim 64 \\(config: 16\\)"):
        run_stage("temporal", config, steps=1)


def test_ssr_stage_continues_a_saved_ssr_without_its_image_phase(pretrained_t2i_config, capsys):
    """``stages.ssr.init_from``: the video phase trains the given SSR's temporal layers (e.g. on longer
    windows) and the image phase is skipped; a base model (it down-samples time) is refused."""
    from lumiere.build import build_ssr_unet
    from lumiere.errors import InputError
    from lumiere.models.stunet import STUNet, inflate
    from lumiere.train import run_stage

    root, config = pretrained_t2i_config
    torch.manual_seed(0)
    ssr = inflate(build_ssr_unet(config["model"]["ssr"], 16), temporal_resize=False, **config["model"]["temporal"])
    ssr = _nudged_and_saved(ssr, root / "saved-ssr")
    config = json.loads(json.dumps(config))
    config["output_dir"] = str(root / "ssr-continued")
    config["stages"]["ssr"] = {**config["stages"]["ssr"], "init_from": str(root / "saved-ssr"), "lr": 0.0}
    result = run_stage("ssr", config, steps=1)
    assert "skipped" in result["image"] and "ssr: image phase: continuing" in capsys.readouterr().out
    assert not (root / "ssr-continued" / "ssr" / "image").exists()
    continued = STUNet.from_pretrained(root / "ssr-continued" / "pipeline" / "ssr")
    assert _same_weights(ssr, continued)

    from diffusers import UNet2DConditionModel

    base = inflate(UNet2DConditionModel.from_pretrained(str(root / "t2i"), subfolder="unet"), **config["model"]["temporal"])
    base.save_pretrained(root / "a-base-stunet")
    config["stages"]["ssr"]["init_from"] = str(root / "a-base-stunet")
    with pytest.raises(InputError, match="stages.ssr.init_from: .* down-samples time"):
        run_stage("ssr", config, steps=1)


def test_no_styles_error_names_the_config_key_not_a_missing_flag(tmp_path, capsys):
    from lumiere.cli import main
    from tests.tiny import MICRO_CONFIG

    config = json.loads(json.dumps(MICRO_CONFIG))
    config["stages"]["style"]["styles"] = []
    config["output_dir"] = str(tmp_path / "out")
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["train", "--stage", "style", "--config", str(tmp_path / "config.json")]) == 2
    err = capsys.readouterr().err
    assert "stages.style.styles" in err and "--styles" not in err


# ----------------------------------------------------------------------------- item 5: gradient checkpointing
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


def test_gradient_checkpointing_train_setting(tmp_path, monkeypatch):
    """``gradient_checkpointing`` in a stage's settings switches it on for the stage's model."""
    from tests.tiny import MICRO_CONFIG

    from lumiere.models.stunet import STUNet
    from lumiere.train.stages import run_stage

    config = json.loads(json.dumps(MICRO_CONFIG))
    config["stages"]["temporal"]["gradient_checkpointing"] = True
    switched = []
    original = STUNet.enable_gradient_checkpointing
    monkeypatch.setattr(STUNet, "enable_gradient_checkpointing", lambda self: switched.append(self) or original(self))
    run_stage("t2i", config, tmp_path)
    assert run_stage("temporal", config, tmp_path)["step"] == 2
    assert len(switched) == 1 and switched[0].gradient_checkpointing


# ----------------------------------------------------------------------------- item 11: sharded checkpoints
class _SameBatch(torch.utils.data.Dataset):
    """Two points, read as one batch of 2: every step sees the same batch, so a resumed run's trajectory
    cannot differ from an uninterrupted one by data order, only by the state it restored."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        x = torch.tensor([index, 1.0 - index, 1.0])
        return {"x": x, "y": x.sum(0, keepdim=True) * 0.5}


def _train_regression(output_dir, steps, resume=False):
    torch.manual_seed(0)
    module = _Regression()
    # Warm-up longer than the run: the rate then does not depend on the run length (the cosine part does).
    settings = TrainSettings(steps=steps, batch_size=2, lr=0.05, warmup_steps=10, ema_decay=0.9, checkpoint_every=3,
                             log_every=100, log_with="none")
    loader = torch.utils.data.DataLoader(_SameBatch(), batch_size=2, shuffle=True, drop_last=True)
    train(module, list(module.parameters()), loader, settings, output_dir, resume=resume)
    return module.linear.weight.detach().clone()


def test_sharded_checkpoint_resumes_the_uninterrupted_trajectory(tmp_path, monkeypatch):
    """The DeepSpeed branch (accelerator.save_state / load_state + our EMA and schedule files), run in one process
    by forcing the branch: 3 steps + resume to 6 ends where 6 uninterrupted steps do (weights are the EMA's)."""
    import lumiere.train.loop as loop

    plain = _train_regression(tmp_path / "plain", 6)
    monkeypatch.setattr(loop, "shards_optimizer_state", lambda accelerator: True)
    uninterrupted = _train_regression(tmp_path / "uninterrupted", 6)
    _train_regression(tmp_path / "resumed", 3)
    checkpoint = tmp_path / "resumed" / "checkpoints" / "checkpoint-0000003"
    meta = json.loads((checkpoint / "training_state.json").read_text())
    assert meta["sharded"] == "sharded" and meta["schedule"]["last_epoch"] == 3 and "ema" in meta
    assert (checkpoint / "sharded" / "model.safetensors").is_file()
    resumed = _train_regression(tmp_path / "resumed", 6, resume=True)
    torch.testing.assert_close(resumed, uninterrupted, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(uninterrupted, plain, rtol=1e-6, atol=1e-7)
    # Without the optimizer state (fresh AdamW moments) the same resume ends elsewhere: the check has teeth.
    monkeypatch.setattr(loop, "load_sharded_training_state",
                        lambda accelerator, checkpoint, ema, schedule: schedule.load_state_dict(
                            json.loads((checkpoint / "training_state.json").read_text())["schedule"]))
    _train_regression(tmp_path / "no_optimizer", 3)
    assert not torch.allclose(_train_regression(tmp_path / "no_optimizer", 6, resume=True), uninterrupted)


def test_checkpoints_refuse_the_other_launcher(tmp_path, monkeypatch):
    """A DeepSpeed checkpoint is not resumed as a plain one (its optimizer state is in shards), nor the reverse."""
    import lumiere.train.loop as loop
    from lumiere.errors import InputError
    from lumiere.train.checkpoint import load_training_state

    _train_regression(tmp_path / "plain", 3)
    monkeypatch.setattr(loop, "shards_optimizer_state", lambda accelerator: True)
    with pytest.raises(InputError, match="without DeepSpeed"):
        _train_regression(tmp_path / "plain", 6, resume=True)
    _train_regression(tmp_path / "sharded", 3)
    module = _Regression()
    with pytest.raises(InputError, match="DeepSpeed ZeRO run"):
        load_training_state(tmp_path / "sharded" / "checkpoints" / "checkpoint-0000003", module,
                            torch.optim.AdamW(module.parameters()))


@pytest.mark.parametrize("kind, zero_stage, sharded, refused", [
    ("NO", None, False, None), ("MULTI_GPU", None, False, None), ("DEEPSPEED", 2, True, None),
    ("DEEPSPEED", 3, True, "ZeRO stage 3"), ("FSDP", None, False, "FSDP is not supported")])
def test_branch_selection_by_distributed_type(kind, zero_stage, sharded, refused):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from lumiere.errors import InputError
    from lumiere.train.checkpoint import shards_optimizer_state
    from lumiere.train.loop import refuse_sharded_parameters

    accelerator = SimpleNamespace(distributed_type=DistributedType[kind],
                                  state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=zero_stage)))
    assert shards_optimizer_state(accelerator) is sharded
    if refused:
        with pytest.raises(InputError, match=refused):
            refuse_sharded_parameters(accelerator)
    else:
        refuse_sharded_parameters(accelerator)
