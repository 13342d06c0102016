"""lumiere.styles: styles stored as their low-rank difference to the base's spatial weights
(``styles.StyleDelta``); old full-copy style folders still load, and both forms style alike."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lumiere import pipeline_format
from lumiere.styles import STYLE_RANK, StyleDelta, styled


def _weights(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(32, 16, 3, 3, generator=generator),  # a conv kernel: (32, 144)
            "proj.weight": torch.randn(64, 48, generator=generator),
            "small.weight": torch.randn(4, 4, generator=generator),          # rank 8 pair not smaller: dense
            "norm.weight": torch.randn(32, generator=generator),             # 1-D: exact
            "frozen.bias": torch.randn(8, generator=generator)}


def _style_of(original, seed=1, rank=6):
    """Fine-tune-like weights: a rank-``rank`` change of every matrix plus small full-rank noise, new 1-D values."""
    generator = torch.Generator().manual_seed(seed)
    style = {}
    for name, weight in original.items():
        if name == "frozen.bias":
            style[name] = weight.clone()  # unchanged by the fine-tune: not stored
        elif weight.ndim == 1:
            style[name] = weight + 0.1 * torch.randn(weight.shape, generator=generator)
        else:
            rows, columns = weight.shape[0], weight[0].numel()
            change = torch.randn(rows, rank, generator=generator) @ torch.randn(rank, columns, generator=generator)
            style[name] = weight + 0.01 * change.reshape(weight.shape) + 1e-4 * torch.randn(weight.shape, generator=generator)
    return style


def test_the_difference_is_exact_where_it_must_be_and_factored_where_it_pays():
    original = _weights()
    style = _style_of(original)
    delta = StyleDelta.between(style, original, rank=8)
    assert set(delta.factors) == {"conv.weight", "proj.weight"}
    assert set(delta.dense) == {"small.weight", "norm.weight"} and "frozen.bias" not in delta.dense
    up, down = delta.factors["conv.weight"]
    assert up.shape == (32, 8) and down.shape == (8, 144)
    for name in ("small.weight", "norm.weight"):
        assert torch.equal(delta.difference(name, original[name].shape), style[name] - original[name])
    assert delta.difference("frozen.bias", original["frozen.bias"].shape) is None
    for name in ("conv.weight", "proj.weight"):  # the rank-6 change is recovered up to the small noise
        error = delta.difference(name, original[name].shape) - (style[name] - original[name])
        assert error.abs().max() < 1e-3
    # a wrong shape (the conditional model's widened conv_in) is not styled
    assert delta.difference("conv.weight", torch.Size([32, 17, 3, 3])) is None


def test_truncation_is_the_best_rank_r_approximation():
    """Eckart-Young: the residual of the rank-r factor is the norm of the dropped singular values."""
    original = _weights()
    style = {k: v + torch.randn(v.shape) * 0.1 for k, v in original.items()}
    singular = torch.linalg.svdvals((style["proj.weight"] - original["proj.weight"]))
    for rank in (1, 4, 16):
        delta = StyleDelta.between(style, original, rank)
        residual = delta.difference("proj.weight", original["proj.weight"].shape) - (style["proj.weight"] - original["proj.weight"])
        assert torch.allclose(residual.norm(), singular[rank:].norm(), rtol=1e-3)
    with pytest.raises(ValueError, match="rank"):
        StyleDelta.between(style, original, 0)


def test_state_round_trip_and_bad_files():
    original = _weights()
    delta = StyleDelta.between(_style_of(original), original, rank=8)
    again = StyleDelta.from_state(delta.state(), 8)
    for name, weight in original.items():
        a, b = delta.difference(name, weight.shape), again.difference(name, weight.shape)
        assert (a is None and b is None) or torch.equal(a, b)
    with pytest.raises(ValueError, match="pair"):
        StyleDelta.from_state({"proj.weight.lora_up": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="none of"):
        StyleDelta.from_state({"proj.weight": torch.zeros(2, 2)})


def test_a_full_rank_difference_styles_as_the_full_copy(tiny_pipe):
    """W + alpha Delta at full rank is the lerp toward W_style (up to float rounding), the temporal layers
    untouched, the weights restored after the block, alpha 0 bit-identical."""
    base = tiny_pipe.base
    original = {k: v.clone() for k, v in base.t2i.state_dict().items()}
    full = tiny_pipe.style_state("line drawing")
    assert isinstance(full, dict)  # conftest's style, saved before low-rank styles: a full copy
    delta = StyleDelta.between(full, original, rank=10_000)
    temporal = [p.clone() for p in base.temporal_parameters()]
    for weight in (0.3, 1.0):
        with styled(base, full, weight):
            lerped = {k: v.clone() for k, v in base.t2i.state_dict().items()}
        with styled(base, delta, weight):
            added = {k: v.clone() for k, v in base.t2i.state_dict().items()}
            assert all(torch.equal(a, b) for a, b in zip(temporal, base.temporal_parameters()))
        assert all(torch.allclose(lerped[k], added[k], atol=1e-5) for k in lerped)
    assert all(torch.equal(original[k], v) for k, v in base.t2i.state_dict().items())
    with styled(base, delta, 0.0):
        assert all(torch.equal(original[k], v) for k, v in base.t2i.state_dict().items())


def test_the_writer_picks_the_low_rank_form_and_both_forms_load(tiny_pipe, tmp_path):
    from lumiere import LumierePipeline

    original = {k: v.clone() for k, v in tiny_pipe.base.t2i.state_dict().items()}
    full = {k: v.clone() for k, v in tiny_pipe.style_state("line drawing").items()}
    # default with the original weights: low rank; without them: a full copy (nothing to subtract)
    sub = pipeline_format.write_style(tmp_path, "ink wash", full, original=original, rank=4)
    folder = tmp_path / sub
    assert json.loads((folder / pipeline_format.STYLE_CONFIG).read_text()) == {"name": "ink wash", "format": "low_rank",
                                                                             "rank": 4}
    assert (folder / pipeline_format.STYLE_DELTA).is_file() and not (folder / pipeline_format.STYLE_WEIGHTS).exists()
    low = pipeline_format.read_style(folder)
    assert isinstance(low, StyleDelta) and low.rank == 4 and low.factors
    size_low = (folder / pipeline_format.STYLE_DELTA).stat().st_size
    # the option for a full copy (of the difference too: original + Delta), replacing the other file
    pipeline_format.write_style(tmp_path, "ink wash", low, original=original, full=True)
    assert not (folder / pipeline_format.STYLE_DELTA).exists()
    back = pipeline_format.read_style(folder)
    assert isinstance(back, dict) and (folder / pipeline_format.STYLE_WEIGHTS).stat().st_size > size_low
    assert all(torch.allclose(back[k], original[k] + low.difference(k, original[k].shape))
               for k in low.factors)
    with pytest.raises(ValueError, match="original"):
        pipeline_format.write_style(tmp_path, "x", full, full=False)
    assert isinstance(pipeline_format.read_style(tmp_path / pipeline_format.write_style(tmp_path, "y", full)), dict)

    # a pipeline with both forms: saved as they are, loaded as they were, the same videos
    tiny_pipe.add_style("ink wash", low)
    tiny_pipe.save_pretrained(tmp_path / "saved")
    saved = tmp_path / "saved" / "styles"
    assert (saved / "line-drawing" / pipeline_format.STYLE_WEIGHTS).is_file()
    assert (saved / "ink-wash" / pipeline_format.STYLE_DELTA).is_file()
    loaded = LumierePipeline.from_pretrained(tmp_path / "saved", device="cpu")
    assert isinstance(loaded.style_state("ink wash"), StyleDelta) and isinstance(loaded.style_state("line drawing"), dict)
    for style in ("ink wash", "line drawing"):
        a = tiny_pipe.text_to_video("a red circle", seed=1, super_resolve=False, style=style, style_weight=0.7)
        b = loaded.text_to_video("a red circle", seed=1, super_resolve=False, style=style, style_weight=0.7)
        assert np.array_equal(a, b)


def test_a_missing_low_rank_file_is_a_checkpoint_error(tiny_pipeline_dir, tmp_path):
    import shutil

    from lumiere.errors import CheckpointError

    root = tmp_path / "copy"
    shutil.copytree(tiny_pipeline_dir, root)
    style_json = root / "styles" / "line-drawing" / pipeline_format.STYLE_CONFIG
    style_json.write_text(json.dumps({"name": "line drawing", "format": "low_rank", "rank": 8}))
    with pytest.raises(CheckpointError, match=pipeline_format.STYLE_DELTA):
        pipeline_format.read_pipeline_dir(root)


def test_the_style_stage_writes_the_low_rank_difference(monkeypatch, tmp_path):
    """run_style hands the workspace the fine-tune's difference to W_orig (the base's spatial weights)."""
    from lumiere.train import stages

    written = {}
    monkeypatch.setattr(stages.Workspace, "write_style", lambda self, style, state: written.update({style: state}))
    monkeypatch.setattr(stages, "train", lambda module, params, *args, **kwargs:
                        [p.data.add_(0.01) for p in params] and {})
    from tests.tiny import MICRO_CONFIG

    config = json.loads(json.dumps(MICRO_CONFIG))
    config["output_dir"] = str(tmp_path / "out")
    ws = stages.Workspace(config)
    original = stages.build_t2i_unet(ws.model.t2i, 16)
    monkeypatch.setattr(stages.Workspace, "t2i_unet", lambda self: original)
    stages.run_style(ws, False)
    delta = written["line drawing"]
    assert isinstance(delta, StyleDelta) and delta.rank == STYLE_RANK
    assert set(delta.dense) | set(delta.factors) == set(original.state_dict())  # (micro: all too small to factor)
    weight = original.conv_in.weight
    assert torch.allclose(delta.difference("conv_in.weight", weight.shape), torch.full_like(weight, 0.01), atol=1e-5)


def test_a_slider_style_trains_only_its_difference_and_is_the_original_at_weight_zero(monkeypatch, tmp_path):
    """``stages.style.slider``: the stage trains Delta through W_orig + alpha Delta on the blend of one scene's
    plain and styled renders; the base's spatial weights get no gradient, and the written style is Delta."""
    from lumiere.train import stages
    from tests.tiny import MICRO_CONFIG

    config = json.loads(json.dumps(MICRO_CONFIG))
    config["output_dir"] = str(tmp_path / "out")
    config["stages"]["style"]["slider"] = True
    ws = stages.Workspace(config)
    original = stages.build_t2i_unet(ws.model.t2i, 16)
    before = {name: value.clone() for name, value in original.state_dict().items()}
    monkeypatch.setattr(stages.Workspace, "t2i_unet", lambda self: original)
    written, seen = {}, {}
    monkeypatch.setattr(stages.Workspace, "write_style", lambda self, style, state: written.update({style: state}))

    def one_step(module, params, loader, *args, **kwargs):
        assert isinstance(module, stages.StyleSliderModule)
        assert {id(p) for p in params} == {id(p) for p in module.delta.parameters()}
        with torch.no_grad():  # at weight 0 the slider is the base itself, whatever Delta holds
            for p in params:
                p.normal_()
            zero = module.weights(0.0)
        assert all(torch.equal(zero[name], value) for name, value in module.unet.named_parameters())
        batch = next(iter(loader))
        batch = module.render(batch) if module.render is not None else batch
        seen["pair"] = batch["plain_image"].shape == batch["image"].shape and not torch.equal(batch["plain_image"],
                                                                                              batch["image"])
        torch.manual_seed(1)  # alpha > 0 for this draw
        module(next(iter(loader))).backward()
        assert all(p.grad is None for p in module.unet.parameters())
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
        with torch.no_grad():
            for p in params:
                p.fill_(0.01)
        return {}

    monkeypatch.setattr(stages, "train", one_step)
    stages.run_style(ws, False)
    assert seen["pair"]  # every scene styled and plain
    assert all(torch.equal(before[name], value) for name, value in original.state_dict().items())
    weight = original.conv_in.weight
    assert torch.allclose(written["line drawing"].difference("conv_in.weight", weight.shape),
                          torch.full_like(weight, 0.01), atol=1e-5)


def test_a_slider_list_trains_only_the_styles_it_names(monkeypatch, tmp_path):
    """``stages.style.slider`` as a list: those styles train as sliders (on paired renders), the others as plain
    fine-tunes of the whole copy; a name that is not one of the stage's styles is refused when the config is read."""
    from lumiere.errors import InputError
    from lumiere.train import stages
    from tests.tiny import MICRO_CONFIG

    config = json.loads(json.dumps(MICRO_CONFIG))
    config["output_dir"] = str(tmp_path / "out")
    config["stages"]["style"].update(styles=["line drawing", "watercolor"], slider=["watercolor"])
    ws = stages.Workspace(config)
    original = stages.build_t2i_unet(ws.model.t2i, 16)
    monkeypatch.setattr(stages.Workspace, "t2i_unet", lambda self: original)
    monkeypatch.setattr(stages.Workspace, "write_style", lambda self, style, state: None)
    kinds = {}

    def record(module, params, loader, settings, root, resume, name):
        batch = next(iter(loader))
        kinds[name] = (type(module).__name__, "plain_image" in (module.render(batch) if module.render else batch))
        return {}

    monkeypatch.setattr(stages, "train", record)
    stages.run_style(ws, False)
    assert kinds == {"style:line drawing": ("T2IModule", False), "style:watercolor": ("StyleSliderModule", True)}
    config["stages"]["style"]["slider"] = ["oil paint"]
    with pytest.raises(InputError, match=r"stages\.style\.slider names 'oil paint', which is not in stages\.style\.styles"):
        stages.Workspace(config)


def test_a_slider_style_needs_the_worlds_plain_renders(tmp_path):
    """A folder of a style's images has no unstyled twin to blend toward: refused when the config is read."""
    from lumiere.errors import InputError
    from lumiere.train.stages import run_stage
    from tests.tiny import micro_config, style_folder

    config = micro_config(tmp_path, type="real", root=str(tmp_path), metadata="unused.csv")
    folder = style_folder(tmp_path / "red", (200, 30, 30), ["a ball"])
    config["stages"]["style"] = {"steps": 2, "batch_size": 1, "styles": {"red paint": str(folder)}, "slider": True}
    with pytest.raises(InputError, match=r"stages\.style\.slider: style 'red paint' comes from a folder"):
        run_stage("style", config)
