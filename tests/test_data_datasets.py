"""lumiere.data.datasets: the training datasets on real files (tiny, on CPU). WebVid's CSV columns as published,
a folder of videos with sidecar captions (``data.type "folder"``), per-style image folders, another window of a
real video each epoch (the loop tells the data each epoch), and a clear error for fewer clips than one batch."""
import copy
import csv
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lumiere.errors import InputError
from lumiere.train.loop import TrainSettings, train
from tests.tiny import Regression, grey_clip, micro_config, style_folder


# ----------------------------------------------------------------------------- per-style image folders
def test_each_style_trains_on_its_own_folder(tmp_path, monkeypatch):
    from lumiere.data.datasets import ImageFolderDataset
    from lumiere.pipeline_format import read_style
    from lumiere.train.stages import Workspace, run_stage

    red = style_folder(tmp_path / "red", (200, 30, 30), ["a ball", "a box", "a cup"])
    blue = style_folder(tmp_path / "blue", (30, 30, 200), [None, None])
    (blue / "caption.txt").write_text("a blue thing\n")  # the folder's default caption
    config = micro_config(tmp_path, type="real", root=str(tmp_path), metadata="unused.csv")
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
    a = read_style(styles / "red-paint").state()  # each style's difference to the base's spatial weights
    b = read_style(styles / "blue-paint").state()
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # different images, different spatial weights


def test_style_folders_are_required_with_real_data(tmp_path):
    from lumiere.train.stages import run_stage

    config = micro_config(tmp_path, type="real", root=str(tmp_path), metadata="unused.csv")
    config["stages"]["style"]["styles"] = ["watercolor"]
    with pytest.raises(InputError, match=r"stages\.style\.styles: .*mapping style name -> image folder"):
        run_stage("style", config)
    captionless = style_folder(tmp_path / "bare", (0, 0, 0), [None])
    config["stages"]["style"]["styles"] = {"watercolor": str(captionless)}
    with pytest.raises(InputError, match=r"stages\.style\.styles\.watercolor: 1 image\(s\) .* no caption"):
        run_stage("style", config)


# ----------------------------------------------------------------------------- WebVid's CSV
def test_webvid_csv_columns_load_as_published(tmp_path):
    """WebVid's columns: caption from ``name``, file ``<root>/<page_dir>/<videoid>.mp4`` (or ``path`` when
    given); rows whose file was never downloaded are left out with one warning giving the count."""
    from lumiere.data.datasets import RealVideoDataset
    from lumiere.io import write_video

    rows = [("1001", "000001_000050", "Aerial view of a harbour"), ("1002", "000001_000050", "A dog, running"),
            ("1003", "000051_000100", "Clouds over hills"), ("1004", "000051_000100", "never downloaded")]
    for k, (videoid, page_dir, _) in enumerate(rows[:3]):
        (tmp_path / page_dir).mkdir(exist_ok=True)
        write_video(tmp_path / page_dir / f"{videoid}.mp4", grey_clip(40 * (k + 1)), fps=8)
    with open(tmp_path / "results_2M_val.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        writer.writerows([(v, f"https://example.invalid/{v}.mp4", "PT00H00M10S", d, n) for v, d, n in rows])
    with pytest.warns(RuntimeWarning) as caught:
        data = RealVideoDataset(tmp_path, "results_2M_val.csv", num_frames=2, height=8, width=8, fps=8)
    messages = [str(w.message) for w in caught if "missing" in str(w.message)]
    assert len(messages) == 1 and "skipping 1 of 4 rows" in messages[0] and "1004.mp4" in messages[0]
    assert len(data) == 3
    assert [data[k]["caption"] for k in range(3)] == [name for _, _, name in rows[:3]]

    (tmp_path / "none.csv").write_text("videoid,contentUrl,duration,page_dir,name\n9,u,PT1S,nowhere,gone\n")
    with pytest.raises(InputError, match="none of its 1 video files exist"):
        RealVideoDataset(tmp_path, "none.csv")


# ----------------------------------------------------------------------------- a folder of videos
def test_a_folder_config_trains_on_videos_with_sidecar_captions(tmp_path):
    """data.type "folder": data.root's videos (sub-folders too) captioned by the .txt next to each; the
    clip length comes from model.base_resolution at data.fps, too-short clips are left out when it is built."""
    from lumiere.io import write_video
    from lumiere.train.config import DataConfig, RunConfig
    from lumiere.train.stages import image_dataset, video_dataset

    from tests.tiny import MICRO_CONFIG

    config = {"model": copy.deepcopy(MICRO_CONFIG["model"]), "data": {"type": "folder", "root": str(tmp_path / "videos"),
                                                                     "fps": 8}}
    frames = config["model"]["base_resolution"][0]
    (tmp_path / "videos" / "day1").mkdir(parents=True)
    write_video(tmp_path / "videos" / "day1" / "long.mp4", grey_clip(60, frames=frames + 2), fps=8)
    (tmp_path / "videos" / "day1" / "long.txt").write_text("a long clip")
    write_video(tmp_path / "videos" / "short.mp4", grey_clip(120, frames=frames - 1), fps=8)
    (tmp_path / "videos" / "short.txt").write_text("a short clip")
    with pytest.warns(RuntimeWarning, match=rf"skipping 1 of 2 videos too short for {frames} frames at 8 fps "
                                            rf"\(needs ≥ {frames / 8:.2f} s at 8 fps\): 'short.mp4"):
        videos = video_dataset(config, frames, 16, 16)
    assert len(videos) == 1 and videos[0]["caption"] == "a long clip"
    assert videos[0]["video"].shape == (3, frames, 16, 16)
    images = image_dataset(RunConfig.from_dict(config), 16, 16)  # single frames: every clip is long enough
    assert len(images) == 2 and images[1]["image"].shape == (3, 16, 16)

    unchecked = dict(config, data=dict(config["data"], check_headers=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no header scan, no warning: files are dropped when they fail instead
        assert len(video_dataset(unchecked, frames, 16, 16)) == 2

    with pytest.raises(InputError, match="data.type 'folder' needs data.root"):
        DataConfig.from_dict({"type": "folder"})
    with pytest.raises(InputError, match="data.metadata is read by data.type 'real' only"):
        DataConfig.from_dict({"type": "folder", "root": "videos", "metadata": "meta.csv"})
    with pytest.raises(InputError, match="without a metadata file, data.type 'folder'"):
        DataConfig.from_dict({"type": "real", "root": "videos"})
    with pytest.raises(InputError, match="data.fps must be a positive number"):
        DataConfig.from_dict({"type": "folder", "root": "videos", "fps": 0})
    with pytest.raises(InputError, match=r"data.root: '.*nowhere' is not a folder"):
        video_dataset(dict(config, data={"type": "folder", "root": str(tmp_path / "nowhere")}), frames, 16, 16)


# ----------------------------------------------------------------------------- a window per epoch
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
    module = Regression()
    with pytest.raises(InputError, match=r"2 item\(s\), fewer than one batch per process \(batch_size 4 x 1"):
        train(module, list(module.parameters()), _loader(data, settings), settings, tmp_path)
