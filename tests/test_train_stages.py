"""Command line and training stages on tiny configs (each stage: 2 steps, a loadable checkpoint, resume)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lumiere.cli import main
from lumiere.data.analysis import COHERENCE_CRITERIA
from lumiere.data.world import HELDOUT_COMBINATIONS
from lumiere.io import read_video, write_video

from tests.tiny import MICRO_CONFIG

ROOT = Path(__file__).resolve().parent.parent



@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """All five stages, 2 steps each, through the CLI."""
    root = tmp_path_factory.mktemp("run")
    config = dict(MICRO_CONFIG, output_dir=str(root / "out"))
    (root / "config.json").write_text(json.dumps(config))
    assert main(["train", "--stage", "all", "--config", str(root / "config.json")]) == 0
    return root


def test_every_stage_saves_a_loadable_pipeline(trained_run):
    from lumiere import LumierePipeline

    pipe = LumierePipeline.from_pretrained(trained_run / "out" / "pipeline", device="cpu")
    assert set(pipe.component_names) == {"text_encoder", "base", "conditional", "ssr"}
    assert pipe.styles == ["line drawing"]
    assert pipe.text_to_video("a red circle", seed=0).shape == (4, 32, 32, 3)
    assert pipe.image_to_video(np.zeros((16, 16, 3), np.uint8), "a red circle", seed=0, super_resolve=False).shape == (4, 16, 16, 3)
    for stage in ("t2i", "temporal", "conditional", "ssr/image", "ssr/video", "style/line-drawing"):
        checkpoints = sorted((trained_run / "out" / stage / "checkpoints").glob("checkpoint-*"))
        assert checkpoints and checkpoints[-1].name == "checkpoint-0000002"
        assert not list((trained_run / "out" / stage).rglob("*.bin")) and not list((trained_run / "out" / stage).rglob("*.pt"))


def test_resume_continues_from_the_saved_step(trained_run):
    config = json.loads((trained_run / "config.json").read_text())
    config["stages"]["temporal"]["steps"] = 3
    (trained_run / "config3.json").write_text(json.dumps(config))
    assert main(["train", "--stage", "temporal", "--config", str(trained_run / "config3.json"), "--resume"]) == 0
    checkpoints = sorted((trained_run / "out" / "temporal" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints[-1].name == "checkpoint-0000003"
    meta = json.loads((checkpoints[-1] / "training_state.json").read_text())
    assert meta["step"] == 3


def test_resume_restores_optimizer_state(tmp_path):
    from lumiere.train.checkpoint import load_training_state, save_training_state

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_training_state(tmp_path, 7, model, optimizer)
    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    meta = load_training_state(tmp_path / "checkpoint-0000007", fresh, fresh_optimizer)
    assert meta["step"] == 7 and torch.equal(fresh.weight, model.weight)
    state, fresh_state = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg"], fresh_state[i]["exp_avg"]) for i in state)


def test_eval_runs_on_a_tiny_model(trained_run):
    from lumiere.evaluation import evaluate_pipeline

    metrics = evaluate_pipeline(str(trained_run / "out" / "pipeline"), quick=True, device="cpu")
    for key in ("colour_accuracy", "shape_accuracy", "motion_accuracy"):
        assert 0.0 <= metrics["heldout"][key] <= 1.0
    assert 0.0 <= metrics["heldout"]["t2i_shape_accuracy"] <= 1.0
    failures = metrics["heldout"]["coherence_failures"]
    incoherent = 1 - metrics["heldout"]["coherence"]  # every incoherent video fails at least one criterion
    assert set(failures) == set(COHERENCE_CRITERIA)
    assert max(failures.values()) <= incoherent + 1e-9 <= sum(failures.values()) + 2e-9
    assert set(metrics["heldout"]["shape_accuracy_per_class"]) == {shape for _, shape, _ in HELDOUT_COMBINATIONS[:2]}
    assert np.isfinite(metrics["conditional"]["i2v_first_frame_psnr_db"])
    assert 0.0 <= metrics["conditional"]["i2v_continues_object_app"] <= 1.0
    assert metrics["ssr"]["ssr_boundary_peak_no_overlap"] > 0
    assert metrics["ssr"]["ssr_seed_change"] > 0 and metrics["ssr"]["ssr_temporal_layers_change"] >= 0


def test_cli_generate_writes_h264(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert main(["generate", "--prompt", "a red circle", "--out", str(out), "--model", str(tiny_pipeline_dir),
                 "--seed", "3", "--steps", "1"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (8, 32, 32, 3) and fps == pytest.approx(8)
    assert "seed 3" in capsys.readouterr().out


def test_cli_applications(tiny_pipeline_dir, tmp_path):
    from PIL import Image

    image = tmp_path / "in.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(image)
    mask = tmp_path / "mask.png"
    Image.fromarray((np.arange(256).reshape(16, 16) % 16 > 8).astype(np.uint8) * 255).save(mask)
    video = tmp_path / "in.mp4"
    write_video(video, np.full((8, 16, 16, 3), 120, np.uint8), 8)
    model = ["--model", str(tiny_pipeline_dir), "--steps", "1", "--seed", "0", "--no-ssr"]
    for command in (["i2v", "--image", str(image)], ["inpaint", "--video", str(video), "--mask", str(mask)],
                    ["cinemagraph", "--image", str(image), "--mask", str(mask)], ["v2v", "--video", str(video)]):
        out = tmp_path / f"{command[0]}.gif"
        assert main(command + ["--prompt", "x", "--out", str(out)] + model) == 0
        assert read_video(out)[0].shape == (8, 16, 16, 3)


def test_cli_errors_are_one_line(tiny_pipeline_dir, tmp_path, capsys):
    code = main(["generate", "--prompt", "x", "--out", str(tmp_path / "o.mp4"), "--model", str(tiny_pipeline_dir),
                 "--frames", "7"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --frames must be a multiple of 2 for this model, got 7 "
                                               "(try 6 or 8): this model takes multiples of 2 from 2 to 80"), err
    assert main(["i2v", "--image", str(tmp_path / "missing.png"), "--prompt", "x", "--out", "o.mp4",
                 "--model", str(tiny_pipeline_dir)]) == 2


@pytest.mark.parametrize("argv, message", [
    (["generate", "--prompt", "x", "--out", "clip.avi"], "error: --out clip.avi: the file name must end in .mp4, "
                                                         ".webm, .gif (e.g. --out clip.mp4)"),
    (["generate", "--prompt", "x", "--out", "{tmp}/no/clip.mp4"], "the directory '{tmp}/no' does not exist"),
    (["generate", "--prompt", "x", "--out", "{tmp}"], "--out {tmp}: the file name must end in"),
    (["generate", "--prompt", "x", "--out", "o.mp4", "--seed", str(2**63)], "--seed must be at most 2^63-1"),
    (["generate", "--prompt", "x", "--out", "o.mp4", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["generate", "--prompt", "x", "--out", "o.mp4", "--guidance", "50"], "--guidance must be between 0 and 20"),
    (["v2v", "--video", "assets/examples/red_triangle_sky.mp4", "--prompt", "x", "--out", "o.mp4", "--strength", "2"],
     "--strength must be between 0 and 1, got 2"),
    (["i2v", "--image", "{tmp}/missing.png", "--prompt", "x", "--out", "o.mp4"], "--image {tmp}/missing.png: no such file"),
    (["inpaint", "--video", "assets/examples/green_square_sea.mp4", "--mask", "{tmp}/notes.png", "--prompt", "x",
      "--out", "o.mp4"], "--mask: the file 'notes.png' is not an image file"),
    (["generate", "--prompt", "x" * 501, "--out", "o.mp4"], "--prompt is too long: 501 characters, the limit is 500"),
    (["generate", "--prompt", "x", "--negative-prompt", "y" * 100_000, "--out", "o.mp4"],
     "--negative-prompt is too long: 100000 characters, the limit is 500"),
    (["eval", "--out", "{tmp}/no/metrics.json"], "the directory '{tmp}/no' does not exist"),
    (["train", "--stage", "t2i", "--config", "{tmp}/missing.json"], "--config {tmp}/missing.json: no such file"),
])
def test_cli_refuses_bad_arguments_before_loading_a_model(argv, message, tmp_path, monkeypatch, capsys):
    """A wrong --out, out-of-range number or unreadable input costs no generation (or evaluation) time."""
    import lumiere.evaluation
    import lumiere.pipeline

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(lumiere.pipeline.LumierePipeline, "from_pretrained", no_work)
    monkeypatch.setattr(lumiere.evaluation, "evaluate_pipeline", no_work)
    monkeypatch.chdir(ROOT)
    (tmp_path / "notes.png").write_text("not a picture")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.replace("{tmp}", str(tmp_path)) in err[0], err


def test_cli_inflate_from_a_diffusers_directory(tmp_path):
    from diffusers import UNet2DConditionModel

    from lumiere import STUNet

    unet = UNet2DConditionModel(**{**MICRO_CONFIG["model"]["t2i"]["unet"], "cross_attention_dim": 16})
    unet.save_pretrained(tmp_path / "t2i")
    result = subprocess.run([sys.executable, "-m", "lumiere", "inflate", "--t2i", str(tmp_path / "t2i"),
                             "--out", str(tmp_path / "stunet")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "N=2" in result.stdout
    stunet = STUNet.from_pretrained(tmp_path / "stunet")
    assert torch.equal(stunet.t2i.conv_in.weight, unet.conv_in.weight)


def test_motion_recipe_switches_train_and_load(tmp_path):
    """The bundled recipe's switches: motion-conditioned temporal layers, spatial weights trained at a lower
    rate (styles then start from them), high-noise timesteps and Min-SNR weighting."""
    from lumiere import LumierePipeline
    from lumiere.hub import read_safetensors

    config = json.loads(json.dumps(MICRO_CONFIG))
    config["output_dir"] = str(tmp_path / "out")
    config["model"]["temporal"]["motion_conditioning"] = True
    config["stages"]["temporal"].update({"spatial_lr_scale": 0.5, "timestep_sampling": "high_noise",
                                         "loss_weighting": "min_snr"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    for stage in ("t2i", "temporal", "style"):
        assert main(["train", "--stage", stage, "--config", str(tmp_path / "config.json")]) == 0
    t2i = read_safetensors(tmp_path / "out" / "t2i" / "final" / "unet" / "diffusion_pytorch_model.safetensors")
    pipe = LumierePipeline.from_pretrained(tmp_path / "out" / "pipeline", device="cpu", dtype=torch.float32)
    assert pipe.base.motion_conditioning
    base_spatial = pipe.base.t2i.state_dict()
    assert any(not torch.equal(base_spatial[name], t2i[name]) for name in t2i)  # the video stage trained them
    assert all(not p.requires_grad for p in pipe.base.spatial_parameters())
    assert pipe.text_to_video("a red circle moving left", seed=0, super_resolve=False).shape == (4, 16, 16, 3)
    # the style's W_orig is the base's spatial weights: a style fine-tune starts from them, and is stored as its
    # (low-rank) difference to them
    from lumiere.styles import StyleDelta

    style = pipe.style_state("line drawing")
    assert isinstance(style, StyleDelta) and set(style.factors) | set(style.dense) <= set(base_spatial)


def test_diffusion_objective_options():
    from lumiere.build import DEFAULT_SCHEDULER
    from lumiere.train.stages import DiffusionObjective

    uniform = DiffusionObjective(DEFAULT_SCHEDULER)
    high = DiffusionObjective(DEFAULT_SCHEDULER, timestep_sampling="high_noise", loss_weighting="min_snr")
    torch.manual_seed(0)
    assert high.sample_timesteps(4000, "cpu").float().mean() > uniform.sample_timesteps(4000, "cpu").float().mean() + 100
    prediction, target = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    timesteps = torch.tensor([10, 990])
    alphas = high.schedule.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    natural = snr + 1 if high.prediction_type == "v_prediction" else snr
    expected = (snr.clamp(max=5.0) / natural).mean()
    assert torch.allclose(high.loss(prediction, target, timesteps), expected)
    assert torch.allclose(uniform.loss(prediction, target, timesteps), torch.tensor(1.0))
    with pytest.raises(ValueError, match="timestep_sampling"):
        DiffusionObjective(DEFAULT_SCHEDULER, timestep_sampling="late")
    # terminal_fraction: that share of draws lands in the top 1% of the schedule, where the text alone
    # must choose the motion; uniform sampling puts ~1% there.
    terminal = DiffusionObjective(DEFAULT_SCHEDULER, terminal_fraction=0.25)
    share = (terminal.sample_timesteps(8000, "cpu") >= 990).float().mean()
    assert 0.23 < share < 0.28
    assert (uniform.sample_timesteps(8000, "cpu") >= 990).float().mean() < 0.02
    with pytest.raises(ValueError, match="terminal_fraction"):
        DiffusionObjective(DEFAULT_SCHEDULER, terminal_fraction=1.5)


def _neighbour_correlation(noise: torch.Tensor) -> float:
    """Mean correlation between consecutive frames of (B, C, F, H, W) noise."""
    return float((noise[:, :, 1:] * noise[:, :, :-1]).mean() / noise.pow(2).mean())


@pytest.mark.parametrize("kind", ["mixed", "progressive"])
def test_noise_prior_keeps_unit_variance_and_correlates_frames(kind):
    from lumiere.options import NoisePrior
    from lumiere.sampling import initial_noise

    shape = (4, 3, 8, 32, 32)
    independent = initial_noise(shape, torch.Generator().manual_seed(0), "cpu", torch.float32, NoisePrior())
    assert torch.equal(independent, torch.randn(shape, generator=torch.Generator().manual_seed(0)))  # same seeds, same videos
    for alpha in (1.0, 2.0):
        noise = initial_noise(shape, torch.Generator().manual_seed(1), "cpu", torch.float32, NoisePrior(kind, alpha))
        per_frame_variance = noise.transpose(0, 2).reshape(shape[2], -1).var(dim=1)
        assert torch.allclose(per_frame_variance, torch.ones(shape[2]), atol=0.05)  # a T2I's input statistics per frame
        expected = alpha**2 / (1 + alpha**2) if kind == "mixed" else alpha / math.sqrt(1 + alpha**2)
        assert abs(_neighbour_correlation(noise) - expected) < 0.03
    assert abs(_neighbour_correlation(independent)) < 0.03
    images = initial_noise((2, 3, 16, 16), torch.Generator().manual_seed(0), "cpu", torch.float32, NoisePrior(kind))
    assert torch.equal(images, torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(0)))  # no frames


def test_noise_prior_is_the_same_in_training_and_sampling(tmp_path):
    """The prior is part of the model: the video stages' objective noises with it, the pipeline it writes
    samples with it, the SSR (another model) keeps independent noise, and a bad prior is refused."""
    from tests.tiny import TINY_CONFIG, TINY_WORDS

    from lumiere import LumierePipeline
    from lumiere.build import ModelConfig, build_pipeline
    from lumiere.errors import InputError
    from lumiere.options import NoisePrior
    from lumiere.train.config import RunConfig
    from lumiere.train.stages import Workspace

    model = {**TINY_CONFIG, "noise_prior": {"kind": "mixed", "alpha": 1.0}}
    config = RunConfig.from_dict({"output_dir": str(tmp_path / "run"), "data": {"type": "procedural"}, "model": model})
    workspace = Workspace(config)
    settings = workspace.settings("temporal")
    objective = workspace.objective(settings, recipe=True)
    assert objective.noise_prior == NoisePrior("mixed", 1.0)
    assert workspace.objective(settings).noise_prior == NoisePrior()  # the SSR and image stages
    torch.manual_seed(0)
    noisy, _, _ = objective.noisy(torch.zeros(8, 3, 8, 16, 16), torch.full((8,), 999))
    assert abs(_neighbour_correlation(noisy) - 0.5) < 0.05

    torch.manual_seed(0)
    pipe = build_pipeline(model, words=TINY_WORDS)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = LumierePipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.settings.noise_prior == NoisePrior("mixed", 1.0)
    mixed = loaded.text_to_video("a red circle moving left", seed=3, super_resolve=False)
    loaded.config["noise_prior"] = {"kind": "independent", "alpha": 1.0}
    assert not np.array_equal(mixed, loaded.text_to_video("a red circle moving left", seed=3, super_resolve=False))
    with pytest.raises(InputError, match="noise_prior.kind"):
        ModelConfig.from_dict({**TINY_CONFIG, "noise_prior": {"kind": "pink"}})


def test_conditional_stage_continues_a_saved_conditional_model(trained_run, tmp_path):
    """``stages.conditional.init_from``: the stage trains a saved conditional STUNet further (no base needed,
    its C and M inputs kept, not widened again); a STUNet without them is refused before any step."""
    from lumiere.errors import InputError
    from lumiere.hub import read_safetensors
    from lumiere.models.stunet import STUNet

    saved = trained_run / "out" / "pipeline" / "conditional"
    config = json.loads(json.dumps(MICRO_CONFIG))
    config["output_dir"] = str(tmp_path / "again")
    config["stages"]["conditional"]["init_from"] = str(saved)
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["train", "--stage", "conditional", "--config", str(tmp_path / "config.json")]) == 0
    before, after = STUNet.from_pretrained(saved), STUNet.from_pretrained(tmp_path / "again" / "pipeline" / "conditional")
    assert after.in_channels == before.in_channels  # the 3 + 3 + 1 inputs as saved, not widened again
    start = read_safetensors(next(saved.glob("*.safetensors")))
    trained = after.state_dict()
    assert any(not torch.equal(start[k], trained[k]) for k in start)  # trained further
    config["stages"]["conditional"]["init_from"] = str(trained_run / "out" / "pipeline" / "base")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="no C and M input channels"):
        from lumiere.train.stages import run_stage

        run_stage("conditional", config, tmp_path / "base-run")
