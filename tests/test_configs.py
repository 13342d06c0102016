"""Configs are parsed once into dataclasses that reject unknown keys, naming the key and the allowed ones."""
import copy
import json
from pathlib import Path

import pytest

from lumiere.errors import InputError
from lumiere.options import PipelineConfig
from lumiere.train.config import STAGES, RunConfig
from lumiere.train.loop import TrainSettings

ROOT = Path(__file__).resolve().parent.parent


def _tiny() -> dict:
    return json.loads((ROOT / "configs" / "tiny.json").read_text())


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    config = RunConfig.from_dict(json.loads(path.read_text()))
    assert config.settings("temporal").steps > 0


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


@pytest.mark.parametrize("where, edit", [
    ("train", lambda c: c["train"].update(learning_rate=1)),
    ("stages.temporal", lambda c: c["stages"]["temporal"].update(stpes=1)),
    ("stages.ssr.video", lambda c: c["stages"]["ssr"]["video"].update(btach_size=1)),
    ("stages", lambda c: c["stages"].update(temporl={})),
    ("model.text_encoder", lambda c: c["model"]["text_encoder"].update(hidden=8)),
    (r"model\.ssr", lambda c: c["model"]["ssr"].update(windw=4)),
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


def test_a_typo_stops_training_before_it_starts(tmp_path, capsys):
    from lumiere.cli import main

    config = _tiny()
    config["stages"]["t2i"]["lr_scale"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["train", "--stage", "t2i", "--config", str(tmp_path / "config.json"),
                 "--output-dir", str(tmp_path / "out")]) == 2
    assert "unknown key 'lr_scale' in stages.t2i" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


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
