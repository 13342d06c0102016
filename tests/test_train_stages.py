"""lumiere.train.stages: the training stages on tiny configs through ``lumiere train`` (each stage: 2 steps, a
loadable checkpoint, resume). A pretrained T2I is kept as it is unless fine-tuning it is asked for; the temporal,
SSR and conditional stages continue a saved model (``init_from``) and refuse the wrong kind; the bundled recipe's
switches and per-stage settings reach the models; a stage's missing input names its config key."""
import json

import numpy as np
import pytest
import torch

from lumiere.cli import main
from lumiere.data.analysis import COHERENCE_CRITERIA
from lumiere.data.world import HELDOUT_COMBINATIONS
from tests.tiny import MICRO_CONFIG


# ----------------------------------------------------------------------------- all five stages
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
    assert np.isfinite(metrics["v2v"]["v2v_psnr_db_at_0.05"])
    assert 0.0 <= metrics["v2v"]["v2v_structure_kept_at_0.6"] <= 1.0
    assert np.isfinite(metrics["conditional"]["i2v_first_frame_psnr_db"])
    assert 0.0 <= metrics["conditional"]["i2v_continues_object_app"] <= 1.0
    assert metrics["ssr"]["ssr_boundary_peak_no_overlap"] > 0
    assert metrics["ssr"]["ssr_seed_change"] > 0 and metrics["ssr"]["ssr_temporal_layers_change"] >= 0
    style = metrics["style"]["styles"]["line drawing"]
    assert set(style) == {"subject_at_0", "subject_at_0.8", "recognised_at_1", "recognised_at_0", "world_recognised",
                          "world_subject_at_1"}
    assert style["world_recognised"] == 1.0 and all(0.0 <= v <= 1.0 for v in style.values())
    assert metrics["style"]["samples"] == metrics["heldout"]["videos"]  # styled text to video, sampled as the t2v part


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


# ----------------------------------------------------------------------------- a pretrained T2I
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


# ----------------------------------------------------------------------------- continuing a saved model
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
    windows) and the image phase is skipped; a base model (it down-samples time) and an SSR saved with other
    temporal options than the config's are refused."""
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

    # the saved SSR is checked against the SSR's own temporal options (model.ssr.temporal over model.temporal)
    config["stages"]["ssr"]["init_from"] = str(root / "saved-ssr")
    config["model"]["ssr"] = {**config["model"]["ssr"], "temporal": {"spatial_kernel_size": 0}}
    with pytest.raises(InputError, match=r"spatial_kernel_size 3 \(config: 0\).* model\.ssr\.temporal match"):
        run_stage("ssr", config, steps=1)


def test_conditional_stage_continues_a_saved_conditional_model(trained_run, tmp_path, monkeypatch):
    """``stages.conditional.init_from``: the stage trains a saved conditional STUNet further (no base needed,
    its C and M inputs kept, not widened again); a STUNet without them is refused before any step.
    ``stages.conditional.mask_shares`` sets the kinds its draws take; ``known_weight`` weighs the known
    pixels' errors (here: it trains)."""
    from lumiere.errors import InputError
    from lumiere.hub import read_safetensors
    from lumiere.models.stunet import STUNet
    from lumiere.train import stages

    kinds = []

    def recorded(*args, **kwargs):
        draw = random_condition(*args, **kwargs)
        kinds.append(draw.kind)
        return draw

    random_condition = stages.random_condition
    monkeypatch.setattr(stages, "random_condition", recorded)
    weighed = []  # (weights, M) of every loss: the known pixels (M = 1) weigh known_weight, the rest 1
    loss = stages.DiffusionObjective.loss

    def recorded_loss(self, *args, **kwargs):
        weighed.append((kwargs["weights"], kwargs["noisy"][:, -1:]))
        return loss(self, *args, **kwargs)

    monkeypatch.setattr(stages.DiffusionObjective, "loss", recorded_loss)
    saved = trained_run / "out" / "pipeline" / "conditional"
    config = json.loads(json.dumps(MICRO_CONFIG))
    config["output_dir"] = str(tmp_path / "again")
    config["stages"]["conditional"].update(init_from=str(saved), mask_shares={"box": 1, "outpaint": 1}, known_weight=4)
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["train", "--stage", "conditional", "--config", str(tmp_path / "config.json")]) == 0
    assert kinds and set(kinds) <= {"box", "outpaint"}
    assert weighed and all(torch.equal(weights, 1 + 3 * keep) for weights, keep in weighed)
    assert all(keep.any() and not keep.all() for _, keep in weighed)
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


def test_temporal_refine_phase_trains_the_first_phase_further(trained_run, tmp_path):
    """``stages.temporal.refine``: a second phase in the same run starts from the first phase's weights
    (at lr 0 the base is exactly the first phase's), keeps its own checkpoints, resumes, and trains on."""
    import shutil

    from lumiere.models.stunet import STUNet
    from lumiere.train import run_stage

    def temporal_run(name: str, refine: dict | None, resume: bool = False):
        config = json.loads(json.dumps(MICRO_CONFIG))
        config["output_dir"] = str(tmp_path / name)
        if not (tmp_path / name).exists():  # the trained T2I and text encoder the stage inflates
            shutil.copytree(trained_run / "out", tmp_path / name, ignore=shutil.ignore_patterns("temporal"))
        if refine:
            config["stages"]["temporal"]["refine"] = refine
        result = run_stage("temporal", config, resume=resume)
        return result, STUNet.from_pretrained(tmp_path / name / "pipeline" / "base")

    _, first = temporal_run("one-phase", None)
    result, refined_at_zero = temporal_run("two-phase", {"steps": 2, "lr": 0.0})
    assert result["step"] == 2 and result["refine"]["step"] == 2
    assert _same_weights(first, refined_at_zero)
    assert (tmp_path / "two-phase" / "temporal" / "refine" / "checkpoints" / "checkpoint-0000002").is_dir()
    _, refined = temporal_run("trained", {"steps": 2, "lr": 1e-2})
    assert not _same_weights(first, refined)
    result, _ = temporal_run("trained", {"steps": 3, "lr": 1e-2}, resume=True)
    assert result["step"] == 2 and result["refine"]["step"] == 3


def test_long_clip_share_trains_that_share_of_steps_on_longer_clips(trained_run, tmp_path, monkeypatch):
    """``long_clip_share``: the drawn share of the temporal stage's steps sees clips ``long_clip_multiple`` x the
    model's clip, on 1/multiple of the batch (the same frames per step); the rest the model's clip, whole batch."""
    import shutil

    from lumiere.models.stunet import STUNet
    from lumiere.train import run_stage

    seen = []
    forward = STUNet.forward

    def recording(self, sample, *args, **kwargs):
        seen.append(tuple(sample.shape[:3]))
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(STUNet, "forward", recording)
    config = json.loads(json.dumps(MICRO_CONFIG))
    config["output_dir"] = str(tmp_path / "long")
    config["data"]["render_on_device"] = True
    config["stages"]["temporal"].update(steps=8, batch_size=3, long_clip_share=0.5, long_clip_multiple=3)
    shutil.copytree(trained_run / "out", tmp_path / "long", ignore=shutil.ignore_patterns("temporal"))
    assert run_stage("temporal", config)["step"] == 8
    frames = MICRO_CONFIG["model"]["base_resolution"][0]
    assert set(seen) == {(3, 3, frames), (1, 3, 3 * frames)}, seen
    assert 2 <= seen.count((1, 3, 3 * frames)) <= 6  # about half of 8 steps

    # long_clip_motions reaches the temporal stage's dataset, which marks the clips a long step may use
    from lumiere.data.datasets import ProceduralVideoDataset

    built = []
    init = ProceduralVideoDataset.__init__
    monkeypatch.setattr(ProceduralVideoDataset, "__init__",
                        lambda self, *a, **k: (built.append(k.get("long_motions")), init(self, *a, **k))[1])
    config["stages"]["temporal"].update(steps=1, long_clip_motions=["rotating"])
    config["output_dir"] = str(tmp_path / "long-rotating")
    shutil.copytree(trained_run / "out", tmp_path / "long-rotating", ignore=shutil.ignore_patterns("temporal"))
    assert run_stage("temporal", config)["step"] == 1
    assert ("rotating",) in built


def test_t2i_refine_phase_trains_the_unet_further_with_the_text_encoder_kept(tmp_path):
    """``stages.t2i.refine``: a second phase in the same run continues the first phase's U-Net (at lr 0 it
    is exactly the first phase's), keeps its own checkpoints, and leaves the text encoder as the first
    phase trained it."""
    from diffusers import UNet2DConditionModel

    from lumiere.models.text_encoder import TextEncoder
    from lumiere.train import run_stage

    def t2i_run(name: str, refine: dict | None):
        config = json.loads(json.dumps(MICRO_CONFIG))
        config["output_dir"] = str(tmp_path / name)
        if refine:
            config["stages"]["t2i"]["refine"] = refine
        result = run_stage("t2i", config)
        final = tmp_path / name / "t2i" / "final"
        return result, UNet2DConditionModel.from_pretrained(final / "unet"), TextEncoder.from_pretrained(
            final / "text_encoder", final / "tokenizer")

    _, unet, encoder = t2i_run("one-phase", None)
    result, unet_at_zero, _ = t2i_run("at-zero", {"steps": 2, "lr": 0.0})
    assert result["step"] == MICRO_CONFIG["stages"]["t2i"]["steps"] and result["refine"]["step"] == 2
    assert _same_weights(unet, unet_at_zero)
    assert (tmp_path / "at-zero" / "t2i" / "refine" / "checkpoints" / "checkpoint-0000002").is_dir()
    _, refined, refined_encoder = t2i_run("trained", {"steps": 2, "lr": 1e-2})
    assert not _same_weights(unet, refined)
    assert _same_weights(encoder, refined_encoder)


def test_style_stage_trains_each_style_with_its_own_settings(trained_run, tmp_path):
    """``stages.style.per_style``: one style's steps differ from the stage's, the other's do not."""
    import shutil

    from lumiere.train import run_stage

    shutil.copytree(trained_run / "out", tmp_path / "out", ignore=shutil.ignore_patterns("style", "styles"))
    config = json.loads(json.dumps(MICRO_CONFIG))
    config["output_dir"] = str(tmp_path / "out")
    config["stages"]["style"].update(styles=["line drawing", "watercolor"], per_style={"watercolor": {"steps": 3}})
    result = run_stage("style", config)
    assert result["line drawing"]["step"] == config["stages"]["style"]["steps"] and result["watercolor"]["step"] == 3


# ----------------------------------------------------------------------------- stage settings and inputs
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


def test_continue_pipeline_replaces_the_named_models_and_keeps_the_rest(tiny_pipeline_dir, tmp_path):
    """The GPU refine's last step: a saved pipeline with its base swapped for a continued one; the other
    models, the styles and the inference config are the start's, and the record names both recipes."""
    from lumiere import LumierePipeline
    from lumiere.errors import InputError
    from lumiere.train.stages import continue_pipeline, training_record
    from tests.conftest import make_tiny_pipeline

    continued_base = make_tiny_pipeline(seed=1).base
    continued_base.save_pretrained(tmp_path / "base")
    recipe = {"stages": {"temporal": {"lr": 0.001}}}
    out = continue_pipeline(tiny_pipeline_dir, {"base": tmp_path / "base"}, tmp_path / "out", recipe,
                            dtype=torch.float32)
    start = LumierePipeline.from_pretrained(tiny_pipeline_dir, device="cpu")
    pipe = LumierePipeline.from_pretrained(out, device="cpu")

    def same(a, b) -> bool:
        a, b = a.state_dict(), b.state_dict()
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert same(pipe.base, continued_base) and not same(pipe.base, start.base)
    for name in set(start.component_names) - {"base"}:
        assert same(pipe.get_component(name), start.get_component(name)), name
    assert pipe.styles == start.styles and pipe.config == start.config
    assert pipe.training["config_sha256"] == training_record(recipe)["config_sha256"]
    assert pipe.training["continued_from"] == start.training
    with pytest.raises(InputError, match="no vae to replace"):
        continue_pipeline(tiny_pipeline_dir, {"vae": tmp_path / "base"}, tmp_path / "bad", recipe)


def test_data_motion_weights_reach_the_stages_procedural_datasets():
    """``data.motion_weights`` is what every stage's procedural data draws from: with every weight but
    shrinking's 0, the video stages' and the T2I stage's captions all say an object shrinks."""
    from lumiere.data.world import MOTIONS, parse_prompt
    from lumiere.train.config import RunConfig
    from lumiere.train.stages import image_dataset, video_dataset

    config = json.loads(json.dumps(MICRO_CONFIG))
    config["data"]["motion_weights"] = {m: 0 for m in MOTIONS if m != "shrinking"}
    run = RunConfig.from_dict(config)
    for data in (video_dataset(run, 4, 16, 16), image_dataset(run, 16, 16)):
        motions = {parse_prompt(data[i]["caption"]).objects[0].motion for i in range(12)}
        assert motions == {"shrinking"}, (type(data).__name__, motions)


def test_a_long_step_trains_only_on_the_clips_its_motions_allow():
    """``long_clip_motions``: a long step keeps 1/multiple of the batch from the clips marked "long_ok" (the
    first ones), and gives way to an ordinary step (None) when no clip of the batch is marked."""
    from lumiere.train.stages import _long_clips

    batch = {"video": torch.arange(6).view(6, 1), "caption": [f"clip {i}" for i in range(6)],
             "long_ok": torch.tensor([False, True, False, True, True, False])}
    kept = _long_clips(dict(batch), 3)
    assert kept["caption"] == ["clip 1", "clip 3"] and kept["video"].flatten().tolist() == [1, 3]
    assert "long_ok" not in kept
    assert _long_clips({**batch, "long_ok": torch.zeros(6, dtype=torch.bool)}, 3) is None
    unmarked = _long_clips({key: value for key, value in batch.items() if key != "long_ok"}, 3)
    assert unmarked["caption"] == ["clip 0", "clip 1"]  # no marks: the first clips, as before the option
