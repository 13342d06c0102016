"""Issue 10, real data at scale: webdataset shards, WebVid's CSV columns, the text-embedding cache and
per-style image folders (all tiny and on CPU)."""
import copy

import numpy as np
import pytest
import torch

from lumiere.errors import InputError


def _micro_config(tmp_path, **data):
    """The CLI tests' micro config with a saved "pretrained" T2I (so no t2i stage has to run first)."""
    from diffusers import UNet2DConditionModel
    from test_cli_and_training import MICRO_CONFIG

    config = copy.deepcopy(MICRO_CONFIG)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config["model"]["t2i"]["unet"], cross_attention_dim=16)
    unet.save_pretrained(tmp_path / "t2i", safe_serialization=True)
    config["model"]["t2i"] = {"pretrained": str(tmp_path / "t2i")}
    config["output_dir"] = str(tmp_path / "out")
    if data:
        config["data"] = data
    return config


# ----------------------------------------------------------------------------- per-style image folders
def _style_folder(folder, colour, captions):
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


def test_each_style_trains_on_its_own_folder(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from lumiere.data.datasets import ImageFolderDataset
    from lumiere.pipeline_format import STYLE_WEIGHTS
    from lumiere.train.stages import Workspace, run_stage

    red = _style_folder(tmp_path / "red", (200, 30, 30), ["a ball", "a box", "a cup"])
    blue = _style_folder(tmp_path / "blue", (30, 30, 200), [None, None])
    (blue / "caption.txt").write_text("a blue thing\n")  # the folder's default caption
    config = _micro_config(tmp_path, type="real", root=str(tmp_path), metadata="unused.csv")
    config["stages"]["style"] = {"steps": 2, "batch_size": 2, "lr": 0.01,
                                 "styles": {"red paint": str(red), "blue paint": str(blue)}}
    seen = []
    original_getitem = ImageFolderDataset.__getitem__

    def record(self, index):
        item = original_getitem(self, index)
        seen.append((self.folder.name, self.items[index][0].parent.name, item["caption"]))
        return item

    monkeypatch.setattr(ImageFolderDataset, "__getitem__", record)
    ends, write_style = {}, Workspace.write_style  # how many images had been read when each style finished

    def record_end(self, style, state):
        ends[style] = len(seen)
        write_style(self, style, state)

    monkeypatch.setattr(Workspace, "write_style", record_end)
    run_stage("style", config)

    # Each style saw only its own images, captioned by their sidecar or the folder's caption.txt.
    red_end = ends["red paint"]
    assert {s[1] for s in seen[:red_end]} == {"red"} and {s[1] for s in seen[red_end:]} == {"blue"}
    assert {s[2] for s in seen[:red_end]} <= {"a ball", "a box", "a cup"}
    assert {s[2] for s in seen[red_end:]} == {"a blue thing"}
    styles = tmp_path / "out" / "pipeline" / "styles"
    a = load_file(str(styles / "red-paint" / STYLE_WEIGHTS))
    b = load_file(str(styles / "blue-paint" / STYLE_WEIGHTS))
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # different images, different spatial weights


def test_style_folders_are_required_with_real_data(tmp_path):
    from lumiere.train.stages import run_stage

    config = _micro_config(tmp_path, type="real", root=str(tmp_path), metadata="unused.csv")
    config["stages"]["style"]["styles"] = ["watercolor"]
    with pytest.raises(InputError, match=r"stages\.style\.styles: .*mapping style name -> image folder"):
        run_stage("style", config)
    captionless = _style_folder(tmp_path / "bare", (0, 0, 0), [None])
    config["stages"]["style"]["styles"] = {"watercolor": str(captionless)}
    with pytest.raises(InputError, match=r"stages\.style\.styles\.watercolor: 1 image\(s\) .* no caption"):
        run_stage("style", config)
