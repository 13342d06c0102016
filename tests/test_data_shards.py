"""Issue 10, real data at scale: webdataset shards, WebVid's CSV columns, the text-embedding cache and
per-style image folders (all tiny and on CPU)."""
import copy
import csv
import io
import json
import tarfile
import warnings

import numpy as np
import pytest
import torch

from lumiere.errors import InputError


def _grey_clip(level: int, frames: int = 10, size: int = 16) -> np.ndarray:
    """A clip whose every pixel of frame k is level + 4k: its identity and its window show in any crop."""
    values = np.clip(level + 4 * np.arange(frames), 0, 255).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (frames, size, size, 3)).copy()


def _level(item) -> int:
    """The level of the clip an item came from (its first frame's grey, less the window's start)."""
    return int(round((item["video"][:, 0].mean().item() + 1) * 127.5))


def _micro_config(tmp_path, **data):
    """The CLI tests' micro config with a saved "pretrained" T2I (so no t2i stage has to run first)."""
    from diffusers import UNet2DConditionModel
    from tests.tiny import MICRO_CONFIG

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
    from lumiere.data.datasets import ImageFolderDataset
    from lumiere.pipeline_format import read_style
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
    a = read_style(styles / "red-paint").state()  # each style's difference to the base's spatial weights
    b = read_style(styles / "blue-paint").state()
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
        write_video(tmp_path / page_dir / f"{videoid}.mp4", _grey_clip(40 * (k + 1)), fps=8)
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


# ----------------------------------------------------------------------------- text-embedding cache
def _encoder(seed: int = 0, max_length: int = 12):
    from lumiere.models.text_encoder import TextEncoder

    torch.manual_seed(seed)
    return TextEncoder.from_vocabulary(["a", "red", "blue", "circle", "square", "moving", "left"], hidden_size=16,
                                       num_layers=1, num_heads=2, max_length=max_length).eval().requires_grad_(False)


def test_text_embedding_cache_gives_the_encoders_states(tmp_path):
    from lumiere.train.text_cache import CachedTextEncoder

    encoder = _encoder()
    cached = CachedTextEncoder(encoder, tmp_path)
    prompts = ["a red circle", "", "a blue square moving left", "a red circle"]  # "": caption dropout
    expected = encoder(prompts)
    first = cached(prompts)  # encodes the 3 distinct captions, writes them
    assert torch.allclose(first, expected, atol=1e-6) and cached.misses == 3
    assert len(list(cached.directory.rglob("*.safetensors"))) == 3
    again = CachedTextEncoder(encoder, tmp_path)(prompts)  # a new run: read back, not re-encoded
    assert torch.equal(again, first)
    reader = CachedTextEncoder(encoder, tmp_path)
    reader(prompts)
    assert (reader.hits, reader.misses) == (4, 0)
    assert cached.state_dict().keys() == encoder.state_dict().keys()  # checkpoints and saving unchanged
    assert cached.model is encoder.model  # the same weights, not a copy


def test_text_embedding_cache_is_keyed_by_the_encoder(tmp_path):
    from lumiere.train.text_cache import CachedTextEncoder

    CachedTextEncoder(_encoder(0), tmp_path)(["a red circle"])
    for other in (_encoder(1), _encoder(0, max_length=10)):  # other weights; other prompt length
        cached = CachedTextEncoder(other, tmp_path)
        assert torch.allclose(cached(["a red circle"]), other(["a red circle"]), atol=1e-6)
        assert (cached.hits, cached.misses) == (0, 1)
    assert len({p.name for p in tmp_path.iterdir()}) == 3


def test_text_embedding_cache_is_not_used_while_the_encoder_trains(tmp_path):
    from lumiere.train.stages import T2IModule
    from lumiere.train.text_cache import CachedTextEncoder

    cached = CachedTextEncoder(_encoder(), tmp_path)
    T2IModule(torch.nn.Conv2d(1, 1, 1), cached, None, train_text_encoder=True)  # what the t2i stage does
    states = cached(["a red circle"])
    assert states.requires_grad and not list(tmp_path.rglob("*.safetensors")) and cached.misses == 0


def test_text_embedding_cache_setting(tmp_path):
    from lumiere.train.stages import Workspace
    from lumiere.train.text_cache import CachedTextEncoder

    config = _micro_config(tmp_path)
    assert not isinstance(Workspace(config).text_encoder(), CachedTextEncoder)  # off by default
    config["train"]["text_embedding_cache"] = str(tmp_path / "cache")
    assert isinstance(Workspace(config).text_encoder(), CachedTextEncoder)
    config["stages"]["temporal"]["text_embedding_cache"] = str(tmp_path / "cache")
    with pytest.raises(InputError, match=r"stages\.temporal\.text_embedding_cache: set it in the config's train"):
        Workspace(config)


# ----------------------------------------------------------------------------- webdataset shards
@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """5 shards of 3 samples (key.mp4 + key.txt, or key.json with "caption" in the last shard), plus a
    member without a video. Sample s-k is a clip of level 20 (k + 1) + 60 s, its caption "clip s-k"."""
    from lumiere.io import write_video

    root = tmp_path_factory.mktemp("shards")
    videos = []
    for s in range(5):
        row = []
        for k in range(3):
            write_video(root / "v.mp4", _grey_clip(20 * (k + 1) + 60 * s, frames=12), fps=8)
            row.append((root / "v.mp4").read_bytes())
        videos.append(row)
    for s in range(5):
        with tarfile.open(root / f"train-{s:05d}.tar", "w") as tar:
            def add(name, data):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

            for k in range(3):
                key = f"{s:05d}{k:04d}"
                add(f"{key}.mp4", videos[s][k])
                caption = f"clip {s}-{k}"
                if s == 4:
                    add(f"{key}.json", json.dumps({"caption": caption, "videoid": key}).encode())
                else:
                    add(f"{key}.txt", caption.encode())
            add(f"{s:05d}9999.txt", b"a caption without its video")
    return root


def _captions(dataset, epoch):
    dataset.set_epoch(epoch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the sample without a video
        return [item["caption"] for item in dataset]


def test_shards_stream_every_sample_once_per_epoch_across_ranks(shards):
    from lumiere.data.shards import ShardedVideoDataset, expand_shards

    pattern = str(shards / "train-{00000..00004}.tar")
    assert expand_shards(pattern) == [str(shards / f"train-{s:05d}.tar") for s in range(5)]
    assert expand_shards(["a-{0..1}.tar", "b-{x,y}.tar"]) == ["a-0.tar", "a-1.tar", "b-x.tar", "b-y.tar"]
    ranks = [ShardedVideoDataset(pattern, num_frames=2, height=8, width=8, fps=8, seed=1, rank=r, world_size=2)
             for r in range(2)]
    everything = {f"clip {s}-{k}" for s in range(5) for k in range(3)}
    orders = []
    for epoch in range(3):
        seen = [_captions(rank, epoch) for rank in ranks]
        assert not set(seen[0]) & set(seen[1])  # disjoint shares
        assert sorted(seen[0] + seen[1]) == sorted(everything)  # every sample once per epoch
        orders.append(seen[0] + seen[1])
        assert _captions(ranks[0], epoch) == seen[0]  # reproducible from (seed, epoch)
    assert len({tuple(order) for order in orders}) == 3  # shuffled anew each epoch
    with pytest.raises(InputError, match="5 shard.* for 6 processes; process 5 would get none"):
        ShardedVideoDataset(pattern, rank=5, world_size=6)
    with pytest.raises(InputError, match="1 of 2 shard files do not exist"):
        ShardedVideoDataset([pattern.replace("{00000..00004}", "00000"), str(shards / "nope.tar")], rank=0,
                            world_size=1)


def test_shards_split_across_dataloader_workers_with_per_epoch_windows(shards):
    from lumiere.data.shards import ShardedVideoDataset
    from lumiere.train.loop import TrainSettings, infinite
    from lumiere.train.stages import _loader

    data = ShardedVideoDataset(str(shards / "train-{00000..00004}.tar"), num_frames=2, height=8, width=8, fps=8,
                               seed=1, rank=0, world_size=1)
    loader = _loader(data, TrainSettings(batch_size=1, num_workers=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        captions = [c for batch in loader for c in batch["caption"]]
    assert sorted(captions) == sorted(f"clip {s}-{k}" for s in range(5) for k in range(3))
    # The same temporal augmentation as the folder dataset: another window of a clip each epoch, reproducible.
    one = ShardedVideoDataset(str(shards / "train-00000.tar"), num_frames=2, height=8, width=8, fps=8, seed=1,
                              rank=0, world_size=1)
    windows = []
    for epoch in (0, 1, 2, 3, 1):
        one.set_epoch(epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            windows.append({item["caption"]: _level(item) for item in one}["clip 0-0"])
    assert len(set(windows[:4])) >= 2 and windows[4] == windows[1], windows
    # Fewer samples than one batch: a clear error from the loop, not an endless wait (no len() to check).
    with pytest.warns(RuntimeWarning, match="skipped 1 sample.* without a video"):  # the .txt without its .mp4
        with pytest.raises(InputError, match="no batch in a whole epoch"):
            next(infinite(_loader(one, TrainSettings(batch_size=4))))


def test_every_stage_trains_on_shards_with_the_text_cache(shards, tmp_path):
    """``python -m lumiere train --stage all`` (2 steps each) on webdataset shards: the stages' wrappers
    (frames for t2i, crops for the SSR) over a stream, a style from its folder, text states cached."""
    from lumiere.cli import main
    from lumiere.train.text_cache import CachedTextEncoder
    from tests.tiny import MICRO_CONFIG

    config = copy.deepcopy(MICRO_CONFIG)
    config["data"] = {"type": "webdataset", "shards": str(shards / "train-{00000..00004}.tar")}
    config["output_dir"] = str(tmp_path / "out")
    config["train"]["text_embedding_cache"] = str(tmp_path / "text-cache")
    config["stages"]["style"]["styles"] = {"red": str(_style_folder(tmp_path / "red", (200, 30, 30), ["a ball", "a box"]))}
    (tmp_path / "config.json").write_text(json.dumps(config))
    encoded = []
    original = CachedTextEncoder._write
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore", RuntimeWarning)
        patch.setattr(CachedTextEncoder, "_write", lambda self, prompt, states: encoded.append(prompt) or
                      original(self, prompt, states))
        assert main(["train", "--stage", "all", "--config", str(tmp_path / "config.json")]) == 0
    for stage in ("t2i", "temporal", "conditional", "ssr/image", "ssr/video", "style/red"):
        assert (tmp_path / "out" / stage / "checkpoints" / "checkpoint-0000002").is_dir(), stage
    files = list((tmp_path / "text-cache").rglob("*.safetensors"))
    assert len(encoded) == len(set(encoded)) == len(files) > 0  # each caption encoded once, then read back


# ----------------------------------------------------------------------------- issue 26: a folder of videos
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
    write_video(tmp_path / "videos" / "day1" / "long.mp4", _grey_clip(60, frames=frames + 2), fps=8)
    (tmp_path / "videos" / "day1" / "long.txt").write_text("a long clip")
    write_video(tmp_path / "videos" / "short.mp4", _grey_clip(120, frames=frames - 1), fps=8)
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

