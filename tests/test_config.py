"""lumiere.train.config and the model config tree (``build.ModelConfig``, ``options``, ``models.stunet``): every
section a frozen dataclass, parsed once; a wrong key, type or range is an InputError naming the key, its place and
the allowed keys, before anything is built or trained."""
import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from lumiere.build import ModelConfig, SSRConfig, T2IConfig, TextEncoderConfig, build_pipeline
from lumiere.errors import InputError
from lumiere.models.stunet import STUNet, TemporalConfig, inflate
from lumiere.options import GenerationDefaults, NoisePrior, PipelineConfig
from lumiere.sampling import scheduler_keys
from lumiere.train.config import STAGES, DataConfig, RunConfig, StageConfig
from lumiere.train.loop import TrainSettings

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "assets" / "lumiere-tiny"


def _tiny() -> dict:
    return json.loads((ROOT / "configs" / "tiny.json").read_text())


def _unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
                                attention_head_dim=4, norm_num_groups=4)


@pytest.mark.parametrize("edit, message", [
    # unknown keys, a number given as a string, negative step counts
    (lambda c: c["model"]["temporal"].update(head_dimm=16), r"unknown key 'head_dimm' in model\.temporal; allowed: .*"
                                                            r"\btemporal_head_dim\b"),
    (lambda c: c["model"]["scheduler"].update(prediction_typ="epsilon"),
     r"unknown key 'prediction_typ' in model\.scheduler; allowed: .*\bprediction_type\b.*\bsnr_shift\b"),
    (lambda c: c["train"].update(lr="1e-3"), r"train\.lr must be a number, got '1e-3'"),
    (lambda c: c["model"]["defaults"].update(num_inference_steps=-3),
     r"model\.defaults\.num_inference_steps must be >= 1, got -3"),
    (lambda c: c["model"]["ssr"].update(num_inference_steps=-3), r"model\.ssr\.num_inference_steps must be >= 1, got -3"),
    (lambda c: c["model"]["ssr"].update(window=0), r"model\.ssr\.window must be >= 1, got 0"),
    # types: ints are ints, booleans are booleans, strings are strings, sections are objects
    (lambda c: c["stages"]["temporal"].update(lr="0.01"), r"stages\.temporal\.lr must be a number, got '0\.01'"),
    (lambda c: c["stages"]["ssr"]["video"].update(batch_size=2.0), r"stages\.ssr\.video\.batch_size must be an integer"),
    (lambda c: c["stages"]["ssr"].update(crop=0), r"stages\.ssr\.crop must be >= 1, got 0"),
    (lambda c: c["model"]["temporal"].update(temporal_head_dim=32.0), r"model\.temporal\.temporal_head_dim must be an integer"),
    (lambda c: c["model"]["temporal"].update(motion_conditioning=1), r"model\.temporal\.motion_conditioning must be true or false"),
    (lambda c: c["model"]["temporal"].update(temporal_attention_depth=0), r"model\.temporal\.temporal_attention_depth must be >= 1"),
    (lambda c: c["model"]["temporal"].update(temporal_kernel_size=4), r"temporal_kernel_size must be odd"),
    (lambda c: c["model"]["temporal"].update(extra_input_channels=4), r"unknown key 'extra_input_channels' in model\.temporal"),
    (lambda c: c["model"]["text_encoder"].update(hidden_size="64"), r"model\.text_encoder\.hidden_size must be an integer or null, got '64'"),
    (lambda c: c["model"]["t2i"].update(unet=["not", "a", "dict"]), r"model\.t2i\.unet must be a JSON object or null"),
    (lambda c: c["model"].update(t2i={}), r"model\.t2i needs 'unet'"),
    (lambda c: c["model"].update(base_resolution=[16, "32", 32]), r"model\.base_resolution must be a list of 3 values"),
    (lambda c: c["model"].update(fps=0), r"model\.fps must be > 0"),
    (lambda c: c["model"]["scheduler"].update(snr_shift="2"), r"model\.scheduler: .*snr_shift must be a number > 0"),
    (lambda c: c["model"]["scheduler"].update(beta_schedule="wobbly"), r"model\.scheduler: diffusers cannot build"),
    (lambda c: c["model"]["ssr"].update(strength=1.5), r"ssr\.strength must be in \(0, 1\]"),
    (lambda c: c["model"]["ssr"].update(temporal={"spatial_kernel_size": 2}), r"spatial_kernel_size must be odd or 0"),
    (lambda c: c["model"]["ssr"].update(temporal={"temporal_resize": True}),
     r"unknown key 'temporal_resize' in model\.ssr\.temporal"),
    (lambda c: c["stages"]["conditional"].update(mask_shares={"keyframe": 1}),
     r"stages\.conditional\.mask_shares: unknown mask kind 'keyframe'"),
    (lambda c: c["stages"]["conditional"].update(mask_shares=[1, 2]), r"stages\.conditional\.mask_shares must be a mapping"),
    (lambda c: c["stages"]["temporal"].update(mask_shares={"box": 1}), r"unknown key 'mask_shares' in stages\.temporal"),
    (lambda c: c["stages"]["conditional"].update(known_weight=0), r"stages\.conditional\.known_weight must be > 0"),
    (lambda c: c["stages"]["ssr"].update(known_weight=2), r"unknown key 'known_weight' in stages\.ssr"),
    (lambda c: c["data"].update(length=-1), r"data\.length must be >= 1"),
    (lambda c: c["data"].update(seed="0"), r"data\.seed must be an integer, got '0'"),
    (lambda c: c.update(output_dir=3), r"output_dir must be a string or null, got 3"),
    # the merged settings of every stage are checked when the config is read
    (lambda c: c["stages"]["style"].update(validation_every=5), r"validation_prompts is empty"),
    # long training clips: the temporal stage only, on procedural clips rendered where the batch is
    (lambda c: c["stages"]["temporal"].update(long_clip_share=0.5), r"needs data\.type 'procedural' with data\.render_on_device"),
    (lambda c: (c["data"].update(render_on_device=True), c["train"].update(long_clip_share=0.5)),
     r"read by the temporal stage only, but the t2i stage's settings have 0\.5"),
    (lambda c: c["stages"]["temporal"].update(long_clip_share=1.5), r"long_clip_share must be in \[0, 1\]"),
    (lambda c: c["stages"]["temporal"].update(long_clip_multiple=1), r"long_clip_multiple >= 2"),
    (lambda c: (c["data"].update(render_on_device=True),
                c["stages"]["temporal"].update(long_clip_share=0.5, long_clip_motions=["jumping"])),
     r"long_clip_motions must be a list of some of"),
    (lambda c: (c["data"].update(render_on_device=True), c["stages"]["temporal"].update(long_clip_motions=["bouncing"])),
     r"long_clip_motions chooses the long clips of long_clip_share, which the temporal stage's settings leave at 0"),
    # motion weights: the procedural world's motions, weights >= 0, not all 0
    (lambda c: c["data"].update(motion_weights={"jumping": 2}), r"data\.motion_weights: unknown motions \['jumping'\]"),
    (lambda c: c["data"].update(motion_weights={"growing": -1}), r"data\.motion_weights: .*must be >= 0"),
    (lambda c: c["data"].update(motion_weights={"growing": "2"}), r"data\.motion_weights must be a JSON object"),
    (lambda c: c["data"].update(type="folder", root="videos", motion_weights={"growing": 2}),
     r"data\.motion_weights weighs the procedural world's motions; data\.type is 'folder'"),
])
def test_bad_values_are_refused_at_parse_time_naming_the_key_and_its_place(edit, message):
    config = _tiny()
    edit(config)
    with pytest.raises(InputError, match=message):
        RunConfig.from_dict(config)


@pytest.mark.parametrize("section, key, stage, message", [
    # used to parse, train the T2I stage, then die as a bare TypeError in STUNet
    (("model", "temporal"), "temporal_head_dimm", "all", "unknown key 'temporal_head_dimm' in model.temporal"),
    (("stages", "t2i"), "lr_scale", "t2i", "unknown key 'lr_scale' in stages.t2i"),
])
def test_a_typo_stops_the_run_before_any_training(section, key, stage, message, tmp_path, capsys):
    """Refused when the config is read, naming the key and its place; nothing is written."""
    from lumiere.cli import main

    config = _tiny()
    config[section[0]][section[1]][key] = 16 if stage == "all" else 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["train", "--stage", stage, "--config", str(tmp_path / "config.json"),
                 "--output-dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_scheduler_keys_come_from_the_supported_diffusers_classes():
    keys = scheduler_keys()
    assert {"num_train_timesteps", "beta_schedule", "prediction_type", "timestep_spacing", "clip_sample",
            "variance_type", "steps_offset", "beta_start", "beta_end", "rescale_betas_zero_snr", "snr_shift"} <= keys
    model = ModelConfig.from_dict({**_tiny()["model"], "scheduler": {
        "_class_name": "DDIMScheduler", "_diffusers_version": "0.30.0", "_comment": "why", "snr_shift": 2.0,
        "prediction_type": "v_prediction"}})
    assert model.scheduler["_class_name"] == "DDIMScheduler" and model.scheduler["snr_shift"] == 2.0
    saved = json.loads((BUNDLED / "scheduler" / "scheduler_config.json").read_text())
    assert ModelConfig.from_dict({**_tiny()["model"], "scheduler": saved}).scheduler == saved


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_config_parses_into_the_typed_tree(path):
    config = RunConfig.from_dict(json.loads(path.read_text()))
    assert config.settings("temporal").steps > 0
    model = config.model
    assert isinstance(model.t2i, T2IConfig) and isinstance(model.text_encoder, TextEncoderConfig)
    assert isinstance(model.temporal, TemporalConfig) and isinstance(model.defaults, GenerationDefaults)
    assert isinstance(model.noise_prior, NoisePrior) and isinstance(config.data, DataConfig)
    assert model.ssr is None or isinstance(model.ssr, SSRConfig)
    assert all(isinstance(stage, StageConfig) for stage in config.stages.values())
    for section in (model, model.t2i, model.temporal, config.data, config):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(section, dataclasses.fields(section)[0].name, None)


def test_every_component_config_of_the_bundled_model_loads():
    from lumiere.models.text_encoder import TextEncoder
    from lumiere.pipeline_format import read_pipeline_dir

    directory = read_pipeline_dir(BUNDLED)
    PipelineConfig.from_config(directory.config)
    ModelConfig.from_dict({**_tiny()["model"], "scheduler": directory.scheduler_config})
    TextEncoder.from_pretrained(BUNDLED / "text_encoder", BUNDLED / "tokenizer")
    for name in ("base", "conditional", "ssr"):
        saved = json.loads((BUNDLED / name / "config.json").read_text())
        model = STUNet.from_pretrained(BUNDLED / name)
        assert model.temporal_config == TemporalConfig.from_saved(saved)
        # saved again: the same keys and values (plus the options added since, at what it was built with)
        again = model.config
        assert {k: again[k] for k in saved if k != "t2i"} == {k: v for k, v in saved.items() if k != "t2i"}
        assert set(again) - set(saved) <= {f.name for f in dataclasses.fields(TemporalConfig)}


def test_the_bundled_models_recipe_configs_describe_its_stunets():
    """configs/tiny-motion*.json (the bundled base and conditional model's recipe) build the STUNets the bundle
    ships: the base's temporal options from model.temporal, the SSR's from model.ssr.temporal over them."""
    for name in ("tiny-motion", "tiny-motion-refine", "tiny-keyframes"):
        model = RunConfig.from_dict(json.loads((ROOT / "configs" / f"{name}.json").read_text())).model
        for component, wanted in (("base", model.temporal), ("conditional", model.temporal), ("ssr", model.ssr_temporal)):
            saved = TemporalConfig.from_saved(json.loads((BUNDLED / component / "config.json").read_text()))
            # extra_input_channels: set per model by the builder (the conditional model's C and M)
            assert dataclasses.replace(saved, extra_input_channels=0) == wanted, (name, component)


def test_a_saved_stunet_reloads_with_an_equal_temporal_config(tmp_path):
    temporal = TemporalConfig(temporal_attention_depth=1, temporal_head_dim=8, temporal_kernel_size=5,
                              motion_conditioning=True, spatial_kernel_size=0, text_pooling="mean",
                              condition_every_level=True)
    model = inflate(_unet(), temporal, extra_input_channels=4)
    assert model.temporal_config == dataclasses.replace(temporal, extra_input_channels=4)
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert set(saved) == {"_class_name", "t2i"} | {f.name for f in dataclasses.fields(TemporalConfig)}
    loaded = STUNet.from_pretrained(tmp_path / "m")
    assert loaded.temporal_config == model.temporal_config
    assert loaded.extra_input_channels == 4 and loaded.condition_injection is not None


def test_inflate_takes_the_options_as_a_config_a_dict_or_keywords_alike():
    made = []
    for args, kwargs in (((TemporalConfig(temporal_head_dim=8),), {}), (({"temporal_head_dim": 8},), {}),
                         ((), {"temporal_head_dim": 8})):
        torch.manual_seed(0)
        made.append(inflate(_unet(), *args, **kwargs))
    assert made[0].temporal_config == made[1].temporal_config == made[2].temporal_config
    for other in made[1:]:
        assert all(torch.equal(a, b) for a, b in zip(made[0].state_dict().values(), other.state_dict().values()))
    with pytest.raises(InputError, match=r"unknown key 'head_dim' in inflate\(\)"):
        inflate(_unet(), head_dim=8)


def test_a_saved_stunet_config_with_an_unknown_key_is_refused(tmp_path):
    model = inflate(_unet(), temporal_head_dim=8)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "temporal_head_dimm": 8}))
    with pytest.raises(InputError, match="unknown key 'temporal_head_dimm' in the STUNet config"):
        STUNet.from_pretrained(tmp_path / "m")


def test_a_pipeline_whose_scheduler_config_has_a_typo_is_refused(tmp_path):
    from lumiere.pipeline_format import read_pipeline_dir

    folder = tmp_path / "pipe"
    shutil.copytree(BUNDLED, folder)
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "beta_schedul": "linear"}))
    with pytest.raises(InputError, match="unknown key 'beta_schedul' in .*scheduler_config.json"):
        read_pipeline_dir(folder)


def test_builders_read_the_parsed_tree_and_still_take_dicts():
    """build_pipeline from the typed tree and from the dict give the same weights under one seed."""
    from tests.tiny import TINY_CONFIG, TINY_WORDS

    pipes = []
    for config in (TINY_CONFIG, ModelConfig.from_dict(TINY_CONFIG)):
        torch.manual_seed(0)
        pipes.append(build_pipeline(config, words=TINY_WORDS, with_conditional=False))
    for name in ("base", "ssr"):
        a, b = (pipe.get_component(name) for pipe in pipes)
        assert a.temporal_config == b.temporal_config
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert pipes[0].get_component("ssr").temporal_resize is False


def test_the_ssr_takes_its_own_temporal_options_over_the_bases():
    """model.ssr.temporal: the SSR leaves out the base's motion machinery (fewer weights, less compute at
    its resolution); the base is built as model.temporal says; without the section the SSR has the base's."""
    from tests.tiny import TINY_CONFIG, TINY_WORDS

    lean = copy.deepcopy(TINY_CONFIG)
    lean["temporal"] = {**lean.get("temporal", {}), "motion_conditioning": True, "spatial_kernel_size": 3}
    lean["ssr"] = {**lean["ssr"], "temporal": {"motion_conditioning": False, "spatial_kernel_size": 0}}
    same = copy.deepcopy(lean)
    del same["ssr"]["temporal"]
    pipes = {name: build_pipeline(config, words=TINY_WORDS, with_conditional=False)
             for name, config in (("lean", lean), ("same", same))}
    for name, pipe in pipes.items():
        base, ssr = pipe.get_component("base").temporal_config, pipe.get_component("ssr").temporal_config
        assert base.motion_conditioning and base.spatial_kernel_size == 3 and base.temporal_resize
        assert ssr.temporal_resize is False
    assert pipes["same"].get_component("ssr").temporal_config.motion_conditioning
    lean_ssr = pipes["lean"].get_component("ssr")
    assert not lean_ssr.temporal_config.motion_conditioning and lean_ssr.temporal_config.spatial_kernel_size == 0
    assert ModelConfig.from_dict(lean).ssr_temporal == lean_ssr.temporal_config
    count = {name: sum(p.numel() for p in pipe.get_component("ssr").temporal_parameters()) for name, pipe in pipes.items()}
    assert count["lean"] < count["same"]


def test_stage_settings_layer_train_stage_phase_and_overrides():
    config = RunConfig.from_dict(_tiny())
    temporal = config.settings("temporal", steps=None, batch_size=2)
    assert (temporal.steps, temporal.batch_size, temporal.lr, temporal.caption_dropout) == (1700, 2, 0.001, 0.1)
    assert config.settings("ssr", "image").steps == 1000 and config.settings("ssr", "video").steps == 150
    assert config.stage("ssr").crop == 64 and config.stage("ssr").train_window == 4
    assert config.stage("style").styles == ("line drawing", "watercolor")
    assert config.settings("t2i").lr == 0.002


def test_train_settings_reject_an_unknown_key_and_allow_comments():
    assert TrainSettings.from_dict({"steps": 3, "_comment": "why three"}).steps == 3
    with pytest.raises(InputError, match=r"unknown key 'stpes' in train settings; allowed: .*\bsteps\b"):
        TrainSettings.from_dict({"stpes": 3})


def test_temporal_refine_phase_settings_and_budget():
    """``stages.temporal.refine`` is the temporal stage's second phase: its settings over the stage's (a
    time budget too), its time budget counted with the others'."""
    config = _tiny()
    config["stages"]["temporal"].update(terminal_fraction=0.4, lr=1e-3, refine={"steps": 7, "lr": 5e-4})
    run = RunConfig.from_dict(config)
    assert run.phases("temporal") == (None, "refine") and RunConfig.from_dict(_tiny()).phases("temporal") == (None,)
    refine = run.settings("temporal", "refine")
    assert (refine.steps, refine.lr, refine.terminal_fraction) == (7, 5e-4, 0.4)
    assert run.settings("temporal").lr == 1e-3
    for stage in STAGES:
        section = config["stages"].setdefault(stage, {})
        for part in ("image", "video") if stage == "ssr" else (None,):
            (section[part] if part else section)["time_budget"] = 10
    styles = len(config["stages"]["style"]["styles"])
    assert RunConfig.from_dict(config).time_budget() == pytest.approx(10 * (5 + styles) + 10)  # the stage's
    config["stages"]["temporal"]["refine"]["time_budget"] = 30
    assert RunConfig.from_dict(config).time_budget() == pytest.approx(10 * (5 + styles) + 30)


def test_t2i_refine_phase_settings():
    """``stages.t2i.refine``: the T2I stage's second phase, its settings over the stage's; a bad key is named."""
    config = _tiny()
    config["stages"]["t2i"].update(lr=2e-3, refine={"steps": 6, "lr": 1e-3})
    run = RunConfig.from_dict(config)
    assert run.phases("t2i") == (None, "refine") and RunConfig.from_dict(_tiny()).phases("t2i") == (None,)
    assert (run.settings("t2i", "refine").steps, run.settings("t2i", "refine").lr, run.settings("t2i").lr) == (6, 1e-3, 2e-3)
    config["stages"]["t2i"]["refine"] = {"stepz": 1}
    with pytest.raises(InputError, match=r"stages\.t2i\.refine"):
        RunConfig.from_dict(config)


def test_per_style_settings_override_the_style_stage_for_that_style_only():
    config = _tiny()
    config["stages"]["style"].update(styles=["line drawing", "watercolor"], steps=120,
                                     per_style={"watercolor": {"steps": 480}})
    run = RunConfig.from_dict(config)
    assert run.phases("style") == ("line drawing", "watercolor")
    assert run.settings("style", "watercolor").steps == 480 and run.settings("style", "line drawing").steps == 120
    config["stages"]["style"]["per_style"] = {"pixel art": {"steps": 1}}  # not one of the styles
    with pytest.raises(InputError, match=r"unknown key 'pixel art' in stages\.style\.per_style"):
        RunConfig.from_dict(config)
    config["stages"]["style"]["per_style"] = {"watercolor": {"setps": 1}}
    with pytest.raises(InputError, match=r"unknown key 'setps' in stages\.style\.per_style\.watercolor"):
        RunConfig.from_dict(config)


@pytest.mark.parametrize("where, edit", [
    ("train", lambda c: c["train"].update(learning_rate=1)),
    ("stages.temporal", lambda c: c["stages"]["temporal"].update(stpes=1)),
    ("stages.ssr.video", lambda c: c["stages"]["ssr"]["video"].update(btach_size=1)),
    ("stages.temporal.refine", lambda c: c["stages"]["temporal"].update(refine={"stepz": 1})),
    ("stages", lambda c: c["stages"].update(temporl={})),
    ("model.text_encoder", lambda c: c["model"]["text_encoder"].update(hidden=8)),
    (r"model\.ssr", lambda c: c["model"]["ssr"].update(windw=4)),
    (r"model\.ssr\.temporal", lambda c: c["model"]["ssr"].update(temporal={"head_dimm": 4})),
    (r"model\.defaults", lambda c: c["model"]["defaults"].update(steps=4)),
    (r"model\.temporal", lambda c: c["model"]["temporal"].update(head_dimm=4)),
    (r"model\.scheduler", lambda c: c["model"]["scheduler"].update(beta_schedul="linear")),
    (r"model\.t2i", lambda c: c["model"]["t2i"].update(unet_config={})),
    (r"stages\.ssr", lambda c: c["stages"]["ssr"].update(windw=4)),
    ("data", lambda c: c["data"].update(sed=1)),
    ("the config", lambda c: c.update(ouput_dir="x")),
])
def test_run_config_rejects_unknown_keys_where_they_are(where, edit):
    config = _tiny()
    edit(config)
    with pytest.raises(InputError, match=rf"unknown key '\w+' in {where}; allowed: "):
        RunConfig.from_dict(config)


def test_pipeline_config_rejects_unknown_keys():
    index = json.loads((ROOT / "assets" / "lumiere-tiny" / "model_index.json").read_text())
    parsed = PipelineConfig.from_config(index["config"])
    assert parsed.base_resolution == tuple(index["config"]["base_resolution"])
    with pytest.raises(InputError, match="unknown key 'frame_rate' in the pipeline config"):
        PipelineConfig.from_config({**index["config"], "frame_rate": 8})
    with pytest.raises(InputError, match="unknown key 'windw' in ssr"):
        PipelineConfig.from_config({**index["config"], "ssr": {"windw": 4}})


def test_the_bundled_models_index_config_is_what_its_training_config_gives():
    from lumiere.build import ModelConfig, pipeline_config

    index = json.loads((ROOT / "assets" / "lumiere-tiny" / "model_index.json").read_text())
    model = _tiny()["model"]
    assert pipeline_config(model, 4) == index["config"]
    assert pipeline_config(ModelConfig.from_dict(model), 4) == index["config"]
    with pytest.raises(InputError, match="unknown key 'temporl' in model; allowed: "):
        ModelConfig.from_dict({**model, "temporl": {}})


def test_every_stage_input_is_checked_before_the_first_step(tmp_path):
    """configs/full_if.json ships without styles: `--stage all` skips the style stage up front instead of
    training every other stage and then dying; asked for alone it is refused, as are missing inputs."""
    config = json.loads((ROOT / "configs" / "full_if.json").read_text())
    with pytest.raises(InputError, match="data.root: .* does not exist"):  # the videos are not here
        RunConfig.from_dict(config).plan(STAGES)
    (tmp_path / "videos.csv").write_text("path,caption\n")
    config["data"].update(root=str(tmp_path), metadata=str(tmp_path / "videos.csv"))
    run, skipped = RunConfig.from_dict(config).plan(STAGES)
    assert "style" not in run and "stages.style.styles is empty" in skipped["style"]
    with pytest.raises(InputError, match="--stage style: nothing to train"):
        RunConfig.from_dict(config).plan(("style",))
    missing = copy.deepcopy(config)
    missing["stages"]["temporal"]["init_from"] = str(tmp_path / "nowhere")
    with pytest.raises(InputError, match="stages.temporal.init_from: no STUNet config.json"):
        RunConfig.from_dict(missing).plan(STAGES)
    folders = copy.deepcopy(config)
    folders["stages"]["style"]["styles"] = {"ink": str(tmp_path / "no-ink")}
    with pytest.raises(InputError, match="stages.style.styles.ink"):
        RunConfig.from_dict(folders).plan(STAGES)
