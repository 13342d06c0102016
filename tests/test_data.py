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


def test_style_dataset_and_image_dataset():
    styled = ProceduralVideoDataset(num_frames=4, height=16, width=16, length=3, style="watercolor")[0]
    assert styled["caption"].endswith("in watercolor style")
    images = ProceduralImageDataset(height=32, width=32, length=5, seed=1)
    item = images[2]
    assert item["image"].shape == (3, 32, 32)
    assert not any(o.motion for o in parse_prompt(item["caption"]).objects)
    with pytest.raises(ValueError, match="style"):
        ProceduralVideoDataset(style="cubism")


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
def test_real_video_dataset_skips_bad_files(video_folder, metadata):
    data = RealVideoDataset(video_folder, video_folder / metadata, num_frames=6, height=32, width=32, fps=8,
                            return_lowres=(16, 16))
    assert len(data) == 5
    item = data[0]
    assert item["video"].shape == (3, 6, 32, 32) and item["caption"] == "clip zero"
    assert item["lowres_video"].shape == (3, 6, 16, 16)
    for bad_index, name in [(1, "corrupt.mp4"), (3, "short.mp4")]:
        with pytest.warns(RuntimeWarning, match=name):
            item = data[bad_index]
        assert item["caption"].startswith("clip")  # another, good file was used
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known-bad files are skipped silently the second time
        assert data[1]["caption"].startswith("clip")


def test_real_video_dataset_frame_stride(video_folder):
    """24 fps source sampled at 8 fps takes every 3rd frame: the object moves 3x as far per frame."""
    dense = RealVideoDataset(video_folder, "meta.csv", num_frames=4, height=48, width=64, fps=24)
    sparse = RealVideoDataset(video_folder, "meta.csv", num_frames=4, height=48, width=64, fps=8)
    assert dense[0]["video"].shape == sparse[0]["video"].shape == (3, 4, 48, 64)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        RealVideoDataset(video_folder, video_folder / "missing.csv")
