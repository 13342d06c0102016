"""The procedural world, its analysis estimators and the training datasets."""
import csv
import json
import warnings

import cv2
import numpy as np
import pytest
import torch

from lumiere.data import analysis
from lumiere.data.datasets import (
    ProceduralImageDataset, ProceduralVideoDataset, RealVideoDataset, tensor_to_video, video_to_tensor,
)
from lumiere.data.world import (
    BACKGROUNDS, HELDOUT_COMBINATIONS, MOTIONS, STYLES, ClipSpec, ObjectSpec, caption, heldout_prompts,
    is_valid_object, parse_prompt, render_clip, sample_clip, sample_clip_spec, spec_from_prompt,
)
from lumiere.errors import InputError
from lumiere.io import write_video


def triples(spec):
    return [o.triple for o in spec.objects]


# ----------------------------------------------------------------------------- world
def test_same_seed_same_clip_and_caption():
    v1, c1, s1 = sample_clip(123)
    v2, c2, s2 = sample_clip(123)
    assert np.array_equal(v1, v2) and c1 == c2 and s1 == s2
    v3, _, _ = sample_clip(124)
    assert not np.array_equal(v1, v3)


def test_captions_parse_back_to_their_spec():
    for seed in range(300):
        spec = sample_clip_spec(seed)
        rng = np.random.default_rng(seed)
        for _ in range(3):
            text = caption(spec, rng)
            parsed = parse_prompt(text)
            assert triples(parsed) == triples(spec), text
            assert parsed.background in (None, spec.background), text


def test_captions_are_varied():
    spec = ClipSpec((ObjectSpec("red", "circle", "moving right"),), "sea", 0)
    rng = np.random.default_rng(0)
    assert len({caption(spec, rng) for _ in range(60)}) > 15


@pytest.mark.parametrize("prompt, expected, background", [
    ("a red ball bouncing", [("red", "circle", "bouncing")], None),
    ("two yellow triangles circling on a night sky", [("yellow", "triangle", "circling")] * 2, "night"),
    ("A blue square moving in a circle against a blue sky", [("blue", "square", "circling")], "sky"),
    ("a red circle moving left and a green square rising over the sea",
     [("red", "circle", "moving left"), ("green", "square", "moving up")], "sea"),
    ("a red circle and a white triangle spin", [("red", "circle", "rotating"), ("white", "triangle", "rotating")],
     None),
    ("something purple", [("purple", None, None)], None),
])
def test_parse_prompt(prompt, expected, background):
    parsed = parse_prompt(prompt)
    assert triples(parsed) == expected and parsed.background == background


def test_heldout_triples_never_sampled_for_training():
    seen = set()
    for seed in range(2000):
        spec = sample_clip_spec(seed)
        seen.update(triples(spec))
        for obj in spec.objects:
            assert is_valid_object(*obj.triple, spec.background)
    assert not seen & set(HELDOUT_COMBINATIONS)
    eval_seen = {t for seed in range(3000) for t in triples(sample_clip_spec(seed, holdout=False))}
    assert set(HELDOUT_COMBINATIONS) <= eval_seen  # they are renderable, just held out
    prompts = heldout_prompts()
    assert len(prompts) == len(HELDOUT_COMBINATIONS)
    assert [triples(parse_prompt(p))[0] for p in prompts] == list(HELDOUT_COMBINATIONS)


@pytest.mark.parametrize("frames, height, width", [(1, 8, 8), (7, 24, 40), (16, 33, 17), (24, 64, 64)])
def test_any_resolution_and_frame_count(frames, height, width):
    video = render_clip(sample_clip_spec(5), frames, height, width)
    assert video.shape == (frames, height, width, 3) and video.dtype == np.uint8


def test_styles_render_and_differ_from_plain():
    spec = sample_clip_spec(11)
    plain = render_clip(spec, 8, 32, 32).astype(int)
    outputs = {}
    for style in STYLES:
        styled = render_clip(spec, 8, 32, 32, style=style)
        assert styled.shape == plain.shape and styled.dtype == np.uint8
        outputs[style] = styled
    for style in ("line drawing", "watercolor"):
        assert np.abs(outputs[style].astype(int) - plain).mean() > 10, style
    pixel = outputs["pixel art"]
    assert (pixel != plain).any(-1).mean() > 0.05
    assert np.array_equal(pixel[:, ::2, ::2], pixel[:, 1::2, 1::2])  # 2x2 blocks at 32x32
    line = outputs["line drawing"]
    assert (line > 200).all(-1).mean() > 0.7  # mostly white paper
    assert (line < 120).all(-1).any()         # dark outlines
    with pytest.raises(ValueError, match="style"):
        render_clip(spec, 8, 32, 32, style="oil painting")


def test_32_and_128_renderings_agree():
    for seed in range(5):
        spec = sample_clip_spec(seed)
        low = render_clip(spec, 8, 32, 32).astype(float)
        high = render_clip(spec, 8, 128, 128)
        down = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in high]).astype(float)
        assert np.abs(down - low).mean() < 3.0


def test_motions_are_visible_at_32x32():
    """Every motion moves the object's mask substantially within 16 frames."""
    for motion in MOTIONS:
        shape = "square" if motion == "rotating" else "triangle"
        video = render_clip(ClipSpec((ObjectSpec("yellow", shape, motion),), "black", 3), 16, 32, 32)
        mask = video.max(-1) > 100
        changed = np.logical_xor(mask[:-3], mask[3:]).sum((1, 2)).mean()  # pixels changed every 3 frames
        assert changed > 0.2 * mask.sum((1, 2)).mean(), motion


def test_spec_from_prompt_fills_unknowns():
    spec = spec_from_prompt("a red ball bouncing", seed=0)
    assert triples(spec) == [("red", "circle", "bouncing")] and spec.background in BACKGROUNDS
    assert render_clip(spec, 4, 16, 16).shape == (4, 16, 16, 3)


# ----------------------------------------------------------------------------- analysis
def test_analysis_recovers_rendered_attributes():
    n, hits = 100, {"colour": 0, "shape": 0, "motion": 0, "background": 0}
    for i in range(n):
        spec = sample_clip_spec(50_000 + i, num_objects=1)
        measured, background = analysis.analyse(render_clip(spec, 16, 32, 32))
        truth = spec.objects[0]
        hits["colour"] += measured.colour == truth.colour
        hits["shape"] += measured.shape == truth.shape
        hits["motion"] += measured.motion == truth.motion
        hits["background"] += background == spec.background
    accuracy = {k: v / n for k, v in hits.items()}
    assert accuracy["colour"] >= 0.95 and accuracy["motion"] >= 0.85, accuracy
    assert accuracy["shape"] >= 0.85 and accuracy["background"] >= 0.9, accuracy


def test_analysis_tolerates_noise():
    rng = np.random.default_rng(0)
    spec = ClipSpec((ObjectSpec("orange", "triangle", "moving down"),), "grass", 7)
    video = render_clip(spec, 16, 32, 32).astype(float)
    noisy = np.clip(video + rng.normal(0, 12, video.shape), 0, 255).astype(np.uint8)
    measured, _ = analysis.analyse(noisy)
    assert measured == spec.objects[0]


def test_coherence_measure_scores_world_renders_coherent_and_shuffled_frames_incoherent():
    bounds = analysis.world_coherence_bounds(16, 32, 32)
    coherent = shuffled = 0
    cases = [(c, s, m) for c, s, m in [("red", "square", "moving right"), ("blue", "circle", "moving up"),
                                       ("white", "triangle", "moving left"), ("yellow", "square", "circling"),
                                       ("orange", "circle", "bouncing")]]
    for i, (colour, shape, motion) in enumerate(cases):
        clip = render_clip(ClipSpec((ObjectSpec(colour, shape, motion),), "night" if i % 2 else "grass", 40 + i))
        coherent += analysis.is_coherent(analysis.coherence_measures(clip), motion, bounds)
        order = np.random.default_rng(i).permutation(len(clip))
        shuffled += analysis.is_coherent(analysis.coherence_measures(clip[order]), motion, bounds)
    assert coherent == len(cases) and shuffled == 0
    # an object that vanishes for a frame, or splits into two blobs, is not coherent either
    clip = render_clip(ClipSpec((ObjectSpec("red", "square", "moving right"),), "black", 3))
    gone = clip.copy()
    gone[7] = 0
    assert not analysis.coherence_measures(gone)["present_every_frame"]
    split = clip.copy()
    centre = int(np.nonzero(split[5].max(axis=(0, 2)))[0].mean())  # the object's middle column
    split[5, :, centre - 1: centre + 2] = 0
    assert not analysis.coherence_measures(split)["one_component"]
    # and the failure is named for what went wrong
    failures = {name: analysis.coherence_failures(analysis.coherence_measures(video), "moving right", bounds)
                for name, video in [("clip", clip), ("gone", gone), ("split", split),
                                    ("shuffled", clip[np.random.default_rng(0).permutation(len(clip))])]}
    assert failures["clip"] == [] and "absent_in_a_frame" in failures["gone"]
    assert "split_into_blobs" in failures["split"] and failures["shuffled"] == ["jumps"]


def test_object_count_counts_objects_and_split_blobs_not_specks():
    frame = np.zeros((32, 32), bool)
    frame[4:14, 4:14] = True  # a 100-pixel object
    assert analysis.object_count(frame) == 1
    frame[30:32, 30:32] = True  # a 4-pixel star
    assert analysis.object_count(frame) == 1
    frame[20:25, 20:25] = True  # a 25-pixel blob split off
    assert analysis.object_count(frame) == 2
    assert analysis.object_count(np.zeros((32, 32), bool)) == 0


def test_analysis_of_empty_video_returns_none():
    video = np.full((8, 32, 32, 3), 110, np.uint8)
    assert analysis.dominant_colour(video) is None and analysis.motion_direction(video) is None
    assert analysis.classify_shape(np.zeros((32, 32), bool)) is None


# ----------------------------------------------------------------------------- datasets
def test_procedural_video_dataset():
    data = ProceduralVideoDataset(num_frames=8, height=32, width=32, length=10, seed=3, return_lowres=(16, 16))
    item = data[4]
    assert item["video"].shape == (3, 8, 32, 32) and item["lowres_video"].shape == (3, 8, 16, 16)
    assert item["video"].dtype == torch.float32 and -1 <= item["video"].min() and item["video"].max() <= 1
    again = ProceduralVideoDataset(num_frames=8, height=32, width=32, length=10, seed=3)[4]
    assert torch.equal(item["video"], again["video"]) and item["caption"] == again["caption"]
    assert data[5]["caption"] != item["caption"] or not torch.equal(data[5]["video"], item["video"])
    high = tensor_to_video(item["video"])
    low = tensor_to_video(item["lowres_video"])
    down = np.stack([cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in high])
    assert np.abs(down.astype(int) - low).mean() < 4  # the pair shows the same clip
    batch = torch.utils.data.default_collate([data[0], data[1]])
    assert batch["video"].shape == (2, 3, 8, 32, 32) and len(batch["caption"]) == 2
    with pytest.raises(IndexError):
        data[10]


def test_long_clips_go_on_at_the_clips_pace_where_the_frame_allows():
    """A clip 3 clips long at the clip's pace (span 3): a repeating motion goes on (its first clip-length is the
    model's clip, and every clip-length of it shows the motion); one the frame bounds is spread over it (it
    starts and ends where the clip does, moving the same way, slower)."""
    bounce = ClipSpec((ObjectSpec("red", "circle", "bouncing"),), "black", 5)
    left = ClipSpec((ObjectSpec("red", "circle", "moving left"),), "black", 5)
    clip, long = render_clip(bounce, 16), render_clip(bounce, 46, span=3.0)
    assert np.abs(long[:16].astype(int) - clip).max() <= 1  # the same instants, up to float rounding
    assert [analysis.motion_direction(long[k:k + 16]) for k in (0, 15, 30)] == ["bouncing"] * 3
    assert analysis.motion_direction(render_clip(bounce, 46)[:16]) != "bouncing"  # span 1: a slow half-bounce
    clip, long = render_clip(left, 16), render_clip(left, 46, span=3.0)
    assert np.array_equal(long[0], clip[0]) and np.array_equal(long[-1], clip[-1])
    assert analysis.motion_direction(long) == "moving left" and not np.array_equal(long[15], clip[15])
    with pytest.raises(ValueError, match="span"):
        render_clip(left, 16, span=0.0)


def test_long_clip_items_carry_the_clip_at_its_pace():
    """``long_frames``: each device-rendered item also carries its clip at that length at the clip's pace
    (``clip_parameters`` with span (long - 1) / (clip - 1)), with the same caption."""
    from lumiere.data.render_torch import clip_parameters

    data = ProceduralVideoDataset(num_frames=8, height=32, width=32, length=10, seed=3, render_on_device=True,
                                  long_frames=22)
    items = [data[i] for i in range(3)]
    for i, item in enumerate(items):
        expected = clip_parameters(data.spec_and_caption(i)[0], np.linspace(0, 1, 22), span=3.0)
        for key in ("x", "y", "radius", "angle"):
            assert np.allclose(item["world_long"][key].numpy(), expected[key])
    short = data.render_batch(torch.utils.data.default_collate(items))
    long = data.render_batch(torch.utils.data.default_collate(items), long=True)
    assert short["video"].shape == (3, 3, 8, 32, 32) and long["video"].shape == (3, 3, 22, 32, 32)
    assert long["caption"] == short["caption"] and "world_long" not in long and "world" not in short
    assert torch.equal(long["video"][:, :, 0], short["video"][:, :, 0])
    assert bool(long["long_ok"].all()) and "long_ok" not in short  # no long_motions: every clip may be long
    plain = ProceduralVideoDataset(8, 32, 32, render_on_device=True)
    with pytest.raises(ValueError, match="no long clips"):
        plain.render_batch(torch.utils.data.default_collate([plain[0]]), long=True)
    with pytest.raises(ValueError, match="needs render_on_device"):
        ProceduralVideoDataset(8, 32, 32, long_frames=24)


def test_motion_weights_shift_the_first_objects_motion_draw():
    """``motion_weights``: the first object's motion follows the weights (motions not named weigh 1, a weight of
    0 is never drawn), held-out triples stay out of training draws, and bad weights are refused."""
    from lumiere.data.world import motion_probabilities

    only_growing = {m: 0 for m in MOTIONS if m != "growing"}
    data = ProceduralVideoDataset(8, 16, 16, length=60, seed=1, motion_weights=only_growing)
    specs = [data.spec_and_caption(i)[0] for i in range(60)]
    assert all(spec.objects[0].motion == "growing" for spec in specs)
    assert not any(obj.triple in HELDOUT_COMBINATIONS for spec in specs for obj in spec.objects)
    rng = np.random.default_rng(0)
    sizes = motion_probabilities({"growing": 4, "shrinking": 4})  # 8 of 15
    weighted = [sample_clip_spec(rng, motion_probs=sizes).objects[0].motion for _ in range(1500)]
    uniform = [sample_clip_spec(rng).objects[0].motion for _ in range(1500)]
    share = lambda draws: np.mean([m in ("growing", "shrinking") for m in draws])  # noqa: E731
    assert abs(share(weighted) - 8 / 15) < 0.05 and abs(share(uniform) - 2 / 9) < 0.05
    with pytest.raises(ValueError, match="unknown motions"):
        ProceduralImageDataset(motion_weights={"jumping": 1})
    with pytest.raises(ValueError, match="not all 0"):
        ProceduralVideoDataset(motion_weights={m: 0 for m in MOTIONS})


def test_style_dataset_and_image_dataset():
    styled = ProceduralVideoDataset(num_frames=4, height=16, width=16, length=3, style="watercolor")[0]
    assert styled["caption"].endswith("in watercolor style")
    images = ProceduralImageDataset(height=32, width=32, length=5, seed=1)
    item = images[2]
    assert item["image"].shape == (3, 32, 32)
    assert not any(o.motion for o in parse_prompt(item["caption"]).objects)
    with pytest.raises(ValueError, match="style"):
        ProceduralVideoDataset(style="cubism")


@pytest.mark.parametrize("on_device", [False, True])
def test_paired_style_images_show_the_same_scene_unstyled(on_device):
    """``paired``: beside each styled image, the same scene rendered plain (what a slider style blends toward)."""
    paired = ProceduralImageDataset(height=32, width=32, length=4, seed=3, style="line drawing", paired=True,
                                    render_on_device=on_device)
    plain = ProceduralImageDataset(height=32, width=32, length=4, seed=3, render_on_device=on_device)
    if on_device:
        from torch.utils.data import default_collate

        pairs, plains = (d.render_batch(default_collate([d[i] for i in range(4)])) for d in (paired, plain))
    else:
        pairs, plains = ({k: [d[i][k] for i in range(4)] for k in d[0]} for d in (paired, plain))
        pairs = {k: torch.stack(v) if k != "caption" else v for k, v in pairs.items()}
        plains = {k: torch.stack(v) if k != "caption" else v for k, v in plains.items()}
    assert torch.equal(pairs["plain_image"], plains["image"])
    assert not torch.equal(pairs["image"], plains["image"])
    with pytest.raises(ValueError, match="need a style"):
        ProceduralImageDataset(paired=True)


def test_tensor_round_trip():
    video = render_clip(sample_clip_spec(1), 4, 16, 16)
    assert np.array_equal(tensor_to_video(video_to_tensor(video)), video)


@pytest.fixture()
def video_folder(tmp_path):
    good = [render_clip(sample_clip_spec(s), 24, 48, 64) for s in range(3)]
    for k, video in enumerate(good):
        write_video(tmp_path / f"good{k}.mp4", video, fps=24)
    write_video(tmp_path / "short.mp4", good[0][:3], fps=24)
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    rows = [{"path": "good0.mp4", "caption": "clip zero"}, {"path": "corrupt.mp4", "caption": "broken"},
            {"path": "good1.mp4", "caption": "clip one"}, {"path": "short.mp4", "caption": "too short"},
            {"path": "good2.mp4", "caption": "clip two"}]
    with open(tmp_path / "meta.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "meta.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path


@pytest.mark.parametrize("metadata", ["meta.csv", "meta.jsonl"])
def test_real_video_dataset_leaves_out_unreadable_and_short_files_up_front(video_folder, metadata):
    """Headers are read when the dataset is built: the corrupt and the too-short file never enter the index,
    each kind reported by one warning with its count, a name and the length needed."""
    with pytest.warns(RuntimeWarning) as caught:
        data = RealVideoDataset(video_folder, video_folder / metadata, num_frames=6, height=32, width=32, fps=8,
                                return_lowres=(16, 16))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "skipping 1 of 5 videos that cannot be opened" in messages[0] and "corrupt.mp4" in messages[0]
    # 6 frames at 8 fps from a 24 fps source: stride 3, 16 source frames, needs 0.75 s; short.mp4 has 3 frames.
    assert ("skipping 1 of 5 videos too short for 6 frames at 8 fps (needs ≥ 0.75 s at 8 fps)" in messages[1]
            and "short.mp4 (0.12 s, 3 frames at 24 fps)" in messages[1])
    assert len(data) == 3 and [row["path"] for row in data.rows] == ["good0.mp4", "good1.mp4", "good2.mp4"]
    item = data[0]
    assert item["video"].shape == (3, 6, 32, 32) and item["caption"] == "clip zero"
    assert item["lowres_video"].shape == (3, 6, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to warn about while training
        assert [data[k]["caption"] for k in range(3)] == ["clip zero", "clip one", "clip two"]


def test_without_the_header_check_bad_files_are_dropped_when_they_fail(video_folder):
    data = RealVideoDataset(video_folder, "meta.csv", num_frames=6, height=16, width=16, fps=8,
                            check_headers=False)
    assert len(data) == 5
    with pytest.warns(RuntimeWarning) as caught:
        for _ in range(2):
            for bad_index in (1, 3):
                assert data[bad_index]["caption"].startswith("clip")  # another, good file stands in
    dropped = sorted(str(w.message).split("'")[1] for w in caught if "for the rest of the run" in str(w.message))
    assert dropped == ["corrupt.mp4", "short.mp4"]  # one warning a file
    assert data.bad_paths == {"corrupt.mp4", "short.mp4"} and len(data) == 5


def test_no_clip_long_enough_is_an_input_error(video_folder):
    with pytest.raises(InputError, match=r"none of its 5 videos can give a clip of 80 frames at 16 fps "
                                         r"\(needs ≥ 5.00 s at 16 fps\); the longest is 1.00 s"):
        RealVideoDataset(video_folder, "meta.csv", num_frames=80, fps=16)


def _grey_video(path, frames: int, fps: float, level: int = 100, size: int = 16):
    """A uniformly grey clip (its level identifies it in any crop or window)."""
    write_video(path, np.full((frames, size, size, 3), level, np.uint8), fps=fps)


def _level(item) -> int:
    return int(round((item["video"].mean().item() + 1) * 127.5))


def test_data_fps_above_the_sources_is_warned_about_or_refused(tmp_path):
    _grey_video(tmp_path / "fast.mp4", 24, 24)
    _grey_video(tmp_path / "slow.mp4", 8, 8)
    (tmp_path / "meta.csv").write_text("path,caption\nfast.mp4,fast\nslow.mp4,slow\n")
    with pytest.warns(RuntimeWarning) as caught:
        data = RealVideoDataset(tmp_path, "meta.csv", num_frames=4, height=8, width=8, fps=16)
    (message,) = [str(w.message) for w in caught]
    assert ("data.fps 16 is above the frame rate of 1 of 2 videos" in message and "'slow.mp4' at 8 fps" in message
            and "2.0x faster than real time" in message)
    assert len(data) == 2  # kept: warned, not dropped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # at the sources' own rate: nothing to say
        RealVideoDataset(tmp_path, "meta.csv", num_frames=4, height=8, width=8, fps=8)
    (tmp_path / "slow.csv").write_text("path,caption\nslow.mp4,slow\n")
    with pytest.raises(InputError, match=r"data.fps 16 .* above the frame rate of every video \(the fastest is "
                                         r"8 fps\).* Set data.fps to at most 8"):
        RealVideoDataset(tmp_path, "slow.csv", num_frames=4, height=8, width=8, fps=16)


@pytest.fixture()
def grey_folder(tmp_path):
    """Eight 12-frame 8 fps clips of levels 20, 45, ..., listed in meta.csv (caption "clip k")."""
    rows = ["path,caption"]
    for k in range(8):
        _grey_video(tmp_path / f"c{k}.mp4", 12, 8, level=20 + 25 * k)
        rows.append(f"c{k}.mp4,clip {k}")
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _corrupt(path):
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)


def test_a_file_that_fails_to_decode_is_dropped_and_replaced_by_other_files(grey_folder):
    """It is tried once and warned about once; its index keeps the length (every rank's sampler counts the
    same items) and takes a replacement drawn from (seed, index, epoch): another file in other epochs, not
    one fixed neighbour, and the same whichever process already knew the file was bad."""
    data = RealVideoDataset(grey_folder, "meta.csv", num_frames=4, height=8, width=8, fps=8, seed=1)
    _corrupt(grey_folder / "c3.mp4")  # broken after the index was built (a disk error, a partial copy)
    with pytest.warns(RuntimeWarning, match="dropping video 'c3.mp4'") as caught:
        first = data[3]
    assert len(caught) == 1 and first["caption"] != "clip 3" and len(data) == 8
    assert data.bad_paths == {"c3.mp4"}
    loads = []
    original = data._load
    data._load = lambda index, rng: loads.append(index) or original(index, rng)
    replacements = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: never again
        for epoch in range(6):
            data.set_epoch(epoch)
            fresh = RealVideoDataset(grey_folder, "meta.csv", num_frames=4, height=8, width=8, fps=8, seed=1,
                                     check_headers=False)
            fresh.set_epoch(epoch)
            with pytest.warns(RuntimeWarning, match="dropping video 'c3.mp4'"):
                twin = fresh[3]  # a process that has not met the bad file yet
            item = data[3]
            assert torch.equal(item["video"], twin["video"]) and item["caption"] == twin["caption"]
            replacements.append(item["caption"])
            assert data[2]["caption"] == "clip 2"  # good files are themselves
    assert 3 not in loads  # the dropped file is not tried again
    assert "clip 3" not in replacements and len(set(replacements)) >= 3, replacements


def test_a_bad_file_found_by_a_loader_worker_is_known_to_the_next_epochs_workers(grey_folder):
    from torch.utils.data import DataLoader

    data = RealVideoDataset(grey_folder, "meta.csv", num_frames=4, height=8, width=8, fps=8)
    _corrupt(grey_folder / "c5.mp4")
    loader = DataLoader(data, batch_size=4, num_workers=1)
    batches = list(loader)
    assert sum(len(batch["caption"]) for batch in batches) == 8  # the epoch keeps its length
    assert "clip 5" not in [text for batch in batches for text in batch["caption"]]
    assert data.bad_paths == {"c5.mp4"}  # found in the worker, flagged in shared memory


def test_a_folder_of_videos_with_sidecar_captions(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    _grey_video(tmp_path / "b.mp4", 12, 8, level=40)
    (tmp_path / "b.txt").write_text("clip b\n")
    _grey_video(tmp_path / "a" / "deep" / "x.mp4", 12, 8, level=160)
    (tmp_path / "a" / "deep" / "x.txt").write_text("clip x")
    _grey_video(tmp_path / "a" / "no_caption.mp4", 12, 8)
    _grey_video(tmp_path / "a" / "empty.mp4", 12, 8)
    (tmp_path / "a" / "empty.txt").write_text("  \n")
    _grey_video(tmp_path / ".hidden" / "h.mp4", 12, 8)
    (tmp_path / ".hidden" / "h.txt").write_text("hidden")
    with pytest.warns(RuntimeWarning) as caught:
        data = RealVideoDataset(tmp_path, num_frames=4, height=8, width=8, fps=8)
    (message,) = [str(w.message) for w in caught]
    assert "skipping 2 of 4 videos without a caption file" in message
    assert "'a/empty.mp4'" in message and "'a/no_caption.mp4'" in message
    assert [row["path"] for row in data.rows] == ["a/deep/x.mp4", "b.mp4"]  # sorted, recursive
    assert [data[k]["caption"] for k in range(2)] == ["clip x", "clip b"]
    assert abs(_level(data[0]) - 160) <= 3 and abs(_level(data[1]) - 40) <= 3  # each caption with its video

    (tmp_path / "b.txt").unlink()
    (tmp_path / "a" / "deep" / "x.txt").unlink()
    with pytest.raises(InputError, match=r"data.root: none of the 4 videos in .* has a caption file next to it "
                                         r"\(e.g. 'a/deep/x.mp4' needs 'a/deep/x.txt'\)"):
        RealVideoDataset(tmp_path)
    with pytest.raises(InputError, match=r"data.root: no videos .* in '.*empty_dir'"):
        (tmp_path / "empty_dir").mkdir()
        RealVideoDataset(tmp_path / "empty_dir")
    with pytest.raises(InputError, match="data.root: '.*nowhere' is not a folder"):
        RealVideoDataset(tmp_path / "nowhere")


def test_real_video_dataset_frame_stride(video_folder):
    """24 fps source sampled at 8 fps takes every 3rd frame: the object moves 3x as far per frame."""
    dense = RealVideoDataset(video_folder, "meta.csv", num_frames=4, height=48, width=64, fps=24)
    sparse = RealVideoDataset(video_folder, "meta.csv", num_frames=4, height=48, width=64, fps=8)
    assert dense[0]["video"].shape == sparse[0]["video"].shape == (3, 4, 48, 64)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        RealVideoDataset(video_folder, video_folder / "missing.csv")


def test_long_motions_mark_the_clips_a_long_step_may_train_on():
    """``long_motions``: an item's "long_ok" holds exactly when every object of its clip moves one of those ways."""
    repeating = ("bouncing", "rotating", "circling")
    data = ProceduralVideoDataset(num_frames=8, height=16, width=16, length=200, seed=1, render_on_device=True,
                                  long_frames=24, long_motions=repeating)
    marks = [(bool(data[i]["long_ok"]), all(o.motion in repeating for o in data.spec_and_caption(i)[0].objects))
             for i in range(60)]
    assert all(mark == expected for mark, expected in marks)
    assert {mark for mark, _ in marks} == {True, False}
    for bad in ((), ("jumping",)):
        with pytest.raises(ValueError, match="long_motions needs long_frames"):
            ProceduralVideoDataset(8, 16, 16, render_on_device=True, long_frames=24, long_motions=bad)
    with pytest.raises(ValueError, match="long_motions needs long_frames"):
        ProceduralVideoDataset(8, 16, 16, render_on_device=True, long_motions=repeating)
