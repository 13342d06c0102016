"""The time-boxed GPU recipe (scripts/train_on_gpu.sh, configs/gpu.json), proven on the CPU: its smoke mode
trains every stage, packs a loadable pipeline within the hand-back limits and evaluates it; time budgets
stop a stage and anneal its learning rate; packs split, unpack and refuse what they should."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from lumiere.errors import InputError
from lumiere.train.loop import Progress, TrainSettings, _lr_factor, train
from lumiere.train.pack import check_output_folder, pack_directory, unpack

ROOT = Path(__file__).resolve().parent.parent
# What the GPU image lacks: the training and evaluation path must not import them.
ABSENT_ON_THE_GPU_IMAGE = ("gradio", "moviepy", "imageio_ffmpeg")


SMOKE_BUDGET = 12  # seconds of training over all stages (the script's own smoke default is 30)


def _smoke(root: Path, *flags: str) -> None:
    """``bash scripts/train_on_gpu.sh --smoke [flags] root/out`` with the GPU image's missing packages made
    unimportable."""
    blocker = root / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Absent:\n"
        f"    names = {ABSENT_ON_THE_GPU_IMAGE!r}\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in self.names:\n"
        "            raise ImportError(f'{name} is not on the GPU image')\n"
        "sys.meta_path.insert(0, _Absent())\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}", "LUMIERE_RUN_DIR": str(root / "run"),
           "PYTHON": sys.executable, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "train_on_gpu.sh"), "--smoke", *flags, str(root / "out"),
                             str(SMOKE_BUDGET)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_smoke")
    started = time.perf_counter()
    _smoke(root)
    return root, time.perf_counter() - started


@pytest.fixture(scope="module")
def refine_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_refine_smoke")
    _smoke(root, "--refine")
    return root


@pytest.mark.slow  # ~1 min: run before any GPU call (docs/training.md)
def test_smoke_run_trains_every_stage_within_its_budget(smoke_run):
    root, seconds = smoke_run
    log = json.loads((root / "out" / "train_stages.json").read_text())
    assert list(log["stages"]) == ["t2i", "temporal", "conditional", "ssr", "style"]
    stages = log["stages"]
    for name in ("t2i", "temporal", "conditional"):
        assert stages[name]["result"]["step"] >= 1
        assert stages[name]["result"]["clips_per_second"] > 0
    assert stages["ssr"]["result"]["image"]["step"] >= 1 and stages["ssr"]["result"]["video"]["step"] >= 1
    assert set(stages["style"]["result"]) == {"line drawing", "watercolor"}
    # The budget is what the stages trained (each stops at its share; one step of each of the 7 may overrun it).
    trained = sum(r["seconds"] for r in (stages["t2i"]["result"], stages["temporal"]["result"],
                                         stages["conditional"]["result"], *stages["ssr"]["result"].values(),
                                         *stages["style"]["result"].values()))
    assert trained < SMOKE_BUDGET * 1.3 + 3, trained
    assert log["packs"] >= 1


@pytest.mark.slow  # ~1 min: run before any GPU call (docs/training.md)
def test_smoke_run_output_obeys_the_hand_back_limits(smoke_run):
    root, _ = smoke_run
    out = root / "out"
    assert check_output_folder(out) == []
    assert {"model.tar", "eval.json", "train_stages.json", "train.log"} <= {p.name for p in out.iterdir()}


@pytest.mark.slow
def test_smoke_pack_unpacks_to_a_pipeline_that_loads_and_samples(smoke_run, tmp_path):
    from lumiere import LumierePipeline

    root, _ = smoke_run
    pipe = LumierePipeline.from_pretrained(unpack(root / "out" / "model.tar", tmp_path / "model"), device="cpu")
    assert {"base", "conditional", "ssr"} <= set(pipe.component_names)
    assert set(pipe.styles) == {"line drawing", "watercolor"}
    video = pipe.text_to_video("a red circle moving left", seed=0, num_inference_steps=2, super_resolve=False)
    assert video.shape == (16, 32, 32, 3) and video.dtype.name == "uint8"
    assert next(pipe.base.parameters()).dtype == torch.float32  # loaded fp32 from the fp16 pack


@pytest.mark.slow
def test_the_packed_model_records_the_recipe_that_made_it(smoke_run, tmp_path):
    """model_index.json names the training config (hash) and the code (commit), through packing, loading
    and saving again."""
    from lumiere import LumierePipeline
    from lumiere.train.stages import training_record

    root, _ = smoke_run
    pipe = LumierePipeline.from_pretrained(unpack(root / "out" / "model.tar", tmp_path / "model"), device="cpu")
    expected = training_record(json.loads((ROOT / "configs" / "gpu.json").read_text()))
    assert pipe.training["config_sha256"] == expected["config_sha256"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert pipe.training["commit"] == (head or None)
    pipe.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "model_index.json").read_text())["training"] == pipe.training
    # A config that differs only in a comment is the same recipe; any setting changes the hash.
    config = json.loads((ROOT / "configs" / "gpu.json").read_text())
    assert training_record({**config, "_comment": "other words"})["config_sha256"] == expected["config_sha256"]
    config["stages"]["temporal"]["lr"] = 0.001
    assert training_record(config)["config_sha256"] != expected["config_sha256"]


@pytest.mark.slow  # ~1 min: run before any GPU call (docs/training.md)
def test_smoke_eval_has_every_metric(smoke_run):
    root, _ = smoke_run
    # Standard JSON only: the ground truth's infinite PSNR to itself is written as null, not Infinity.
    metrics = json.loads((root / "out" / "eval.json").read_text(),
                         parse_constant=lambda name: pytest.fail(f"eval.json holds {name}, not standard JSON"))
    assert metrics["ssr"]["fidelity"]["ground_truth"]["psnr_db"] is None
    for split in ("heldout", "seen"):
        assert {"colour_accuracy", "shape_accuracy", "motion_accuracy", "coherence", "t2i_shape_accuracy",
                "motion_accuracy_per_class", "coherence_failures"} <= set(metrics[split])
    assert {"i2v_first_frame_psnr_db", "i2v_continues_object", "inpaint_kept_region_psnr_db",
            "cinemagraph_static_region_temporal_std"} <= set(metrics["conditional"])
    assert "psnr_db" in metrics["ssr"]["fidelity"]["ssr"]


# ----------------------------------------------------------------------------- time budgets
class _Slow(nn.Module):
    """A module whose step takes ``seconds`` (a stand-in for a real model's step)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))
        self.seconds = seconds

    def forward(self, batch):
        time.sleep(self.seconds)
        return (self.weight * batch["x"]).pow(2).mean()


def _data(n: int = 64):
    return DataLoader([{"x": torch.randn(4)} for _ in range(n)], batch_size=4, drop_last=True)


def test_a_time_budget_stops_the_stage_and_anneals_its_learning_rate(tmp_path):
    settings = TrainSettings(steps=1_000_000, batch_size=4, lr=0.01, warmup_steps=1, ema_decay=None,
                             time_budget=1.0, log_every=2, checkpoint_every=1_000_000, log_with="none")
    started = time.perf_counter()
    module = _Slow(0.02)
    result = train(module, list(module.parameters()), _data(), settings, tmp_path, description="budget")
    elapsed = time.perf_counter() - started
    assert 1.0 <= elapsed < 5.0, elapsed  # the budget, one step and the loop's set-up
    assert 10 <= result["step"] < 100
    meta = json.loads(next((tmp_path / "checkpoints").iterdir()).joinpath("training_state.json").read_text())
    assert meta["seconds"] >= 1.0  # a resumed run would count the time already spent
    # The schedule reached its end by the deadline, not after a million steps.
    assert _lr_factor(result["step"], settings, 1.0) == pytest.approx(0.1)


def test_progress_is_a_function_of_agreed_numbers():
    settings = TrainSettings(steps=1000, time_budget=10.0)
    a, b = Progress(settings), Progress(settings)
    for progress in (a, b):
        progress.sync(10, 2.0)  # 0.2 s per step
    assert a.fraction(20) == b.fraction(20) == pytest.approx(0.4)  # 4 s of 10 (extrapolated)
    assert not a.finished(40)  # the stop waits for a sync that reaches the budget
    a.sync(50, 10.5)
    assert a.finished(50)
    assert Progress(TrainSettings(steps=100)).fraction(50) == pytest.approx(0.5)  # no budget: steps alone


def test_budgets_must_cover_every_stage_and_budget_needs_them(tmp_path):
    from lumiere.cli import main
    from lumiere.train.config import RunConfig

    config = json.loads((ROOT / "configs" / "gpu.json").read_text())
    assert RunConfig.from_dict(config).time_budget() == pytest.approx(480)
    del config["stages"]["conditional"]["time_budget"]
    with pytest.raises(InputError, match="conditional"):
        RunConfig.from_dict(config).time_budget()
    (tmp_path / "tiny.json").write_text((ROOT / "configs" / "tiny.json").read_text())
    assert main(["train", "--stage", "all", "--config", str(tmp_path / "tiny.json"), "--budget", "60",
                 "--output-dir", str(tmp_path / "run")]) == 2


# ----------------------------------------------------------------------------- packs
def test_pack_splits_large_pipelines_and_unpacks_them(tmp_path):
    source = tmp_path / "pipeline"
    (source / "base").mkdir(parents=True)
    payload = os.urandom(50_000)
    (source / "base" / "weights.bin").write_bytes(payload)
    (source / "model_index.json").write_text("{}")
    parts = pack_directory(source, tmp_path / "out", max_bytes=20_000)
    assert [p.name for p in parts] == [f"model.tar.{i:03d}" for i in range(len(parts))] and len(parts) >= 3
    assert check_output_folder(tmp_path / "out", max_bytes=20_000) == []
    restored = unpack(tmp_path / "out", tmp_path / "restored")
    assert (restored / "base" / "weights.bin").read_bytes() == payload
    # A smaller pipeline later replaces the parts with one file (no stale parts left to mix in).
    (source / "base" / "weights.bin").write_bytes(b"small")
    assert [p.name for p in pack_directory(source, tmp_path / "out", max_bytes=20_000)] == ["model.tar"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.tar"]
    with pytest.raises(InputError, match="no packed model"):
        unpack(tmp_path / "nothing", tmp_path / "x")


def test_output_folder_limits_are_checked(tmp_path):
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "deep.txt").write_text("x")
    (tmp_path / "bad name.txt").write_text("x")
    (tmp_path / "big.bin").write_bytes(b"0" * 101)
    for i in range(8):
        (tmp_path / f"f{i}.txt").write_text("x")
    problems = "\n".join(check_output_folder(tmp_path, max_bytes=100))
    assert "deep.txt: more than 2 folders deep" in problems
    assert "bad name.txt: the name" in problems
    assert "big.bin: 101 bytes" in problems
    assert "11 files, over 8" in problems


# ----------------------------------------------------------------------------- device rendering
def test_device_rendered_batches_are_the_numpy_datasets_clips():
    """The same items (specs, captions) as the numpy path, rendered where the batch is."""
    from lumiere.data.datasets import ProceduralImageDataset, ProceduralVideoDataset
    tolerance = 0.05  # grey levels: the renderer's stated mean error (tests/test_data_render_torch.py)

    numpy_data = ProceduralVideoDataset(8, 16, 16, seed=3, return_lowres=(8, 8))
    device_data = ProceduralVideoDataset(8, 16, 16, seed=3, return_lowres=(8, 8), render_on_device=True)
    batch = device_data.render_batch(default_collate([device_data[i] for i in range(4)]))
    reference = default_collate([numpy_data[i] for i in range(4)])
    assert batch["caption"] == reference["caption"]
    for key in ("video", "lowres_video"):
        assert batch[key].shape == reference[key].shape
        assert (batch[key] - reference[key]).abs().mean() * 127.5 <= tolerance
    images = ProceduralImageDataset(16, 16, seed=3, render_on_device=True)
    image_batch = images.render_batch(default_collate([images[i] for i in range(4)]))
    reference = default_collate([ProceduralImageDataset(16, 16, seed=3)[i] for i in range(4)])
    assert image_batch["image"].shape == reference["image"].shape == (4, 3, 16, 16)
    assert (image_batch["image"] - reference["image"]).abs().mean() * 127.5 <= tolerance


def test_ssr_windows_render_only_their_frames_with_the_same_pixels():
    """RandomCrop over procedural clips renders just the window's frames: the same crops as cropping the whole
    clip, in every epoch (what keeps the SSR stage's data workers ahead of a GPU)."""
    from lumiere.data.datasets import ProceduralVideoDataset
    from lumiere.train.stages import RandomCrop, _EpochWrapper

    crops = RandomCrop(ProceduralVideoDataset(8, 32, 32, seed=5, return_lowres=(16, 16)), crop=16, scale=2, window=3,
                       seed=2)
    for epoch in (0, 1):
        crops.set_epoch(epoch)
        for index in range(4):
            fast, whole = crops[index], _EpochWrapper.__getitem__(crops, index)
            assert fast["caption"] == whole["caption"]
            for key in ("video", "lowres_video"):
                assert torch.equal(fast[key], whole[key]), (epoch, index, key)
    assert crops[0]["video"].shape == (3, 3, 16, 16) and crops[0]["lowres_video"].shape == (3, 3, 8, 8)


@pytest.mark.slow  # ~2 min: run before any GPU call (docs/training.md)
def test_refine_mode_continues_the_bundle_base_and_conditional_and_keeps_the_rest(refine_run, tmp_path):
    """--refine: both processes train, the hand-back holds one pack (their partial packs removed) and a
    log of both; the pack is the bundle with a new base and conditional model, every other file the
    bundle's, recording the refine config and what it continued."""
    from lumiere import LumierePipeline
    from lumiere.train.stages import training_record

    out = refine_run / "out"
    assert check_output_folder(out) == []
    assert {p.name for p in out.iterdir()} == {"model.tar", "train_stages.json", "train.log", "eval.json", "eval.log"}
    stages = json.loads((out / "train_stages.json").read_text())
    for stage in ("temporal", "conditional"):
        assert stages[stage]["stages"][stage]["result"]["step"] >= 1
    model = unpack(out / "model.tar", tmp_path / "model")
    bundle = ROOT / "assets" / "lumiere-tiny"
    pipe = LumierePipeline.from_pretrained(model, device="cpu")
    released = LumierePipeline.from_pretrained(bundle, device="cpu")
    for part, changed in (("base", True), ("conditional", True), ("ssr", False), ("text_encoder", False)):
        ours, theirs = pipe.get_component(part).state_dict(), released.get_component(part).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours) != changed, part
    styles = sorted(path.relative_to(bundle) for path in (bundle / "styles").rglob("*") if path.is_file())
    assert styles == sorted(path.relative_to(model) for path in (model / "styles").rglob("*") if path.is_file())
    assert all((model / path).read_bytes() == (bundle / path).read_bytes() for path in styles)
    record = training_record(json.loads((ROOT / "configs" / "gpu-refine.json").read_text()))
    assert pipe.training["config_sha256"] == record["config_sha256"]
    assert pipe.training["continued_from"] == released.training
    video = pipe.text_to_video("a red circle moving left", seed=0, num_inference_steps=2, super_resolve=False)
    assert video.shape == (16, 32, 32, 3)
