"""lumiere.data.shards: webdataset shards (tiny, on CPU). Every sample streams once per epoch, split across ranks
and loader workers, reshuffled and re-windowed each epoch reproducibly; every stage trains on them."""
import copy
import io
import json
import tarfile
import warnings

import pytest

from lumiere.errors import InputError
from tests.tiny import grey_clip, style_folder


def _level(item) -> int:
    """The level of the clip an item came from (its first frame's grey, less the window's start)."""
    return int(round((item["video"][:, 0].mean().item() + 1) * 127.5))


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
            write_video(root / "v.mp4", grey_clip(20 * (k + 1) + 60 * s, frames=12), fps=8)
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
    config["stages"]["style"]["styles"] = {"red": str(style_folder(tmp_path / "red", (200, 30, 30), ["a ball", "a box"]))}
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
