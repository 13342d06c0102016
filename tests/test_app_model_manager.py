"""Unit tests of app.model_manager and app.inputs with fake components and a fake memory budget (CPU only)."""
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from app import inputs
from app.model_manager import (PREVIEW_FRAMES, PREVIEW_HEIGHT, GenerationCancelled, ModelManager,
                               OutOfMemory, is_out_of_memory, parse_bytes, preview_strip)


class FakeComponent(nn.Module):
    """``nbytes`` bytes of float32 parameters; ``.to`` records where the manager put it."""

    def __init__(self, nbytes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(nbytes // 4))
        self.moves: list[str] = []

    def to(self, *args, **kwargs):
        self.moves.append(str(args[0] if args else kwargs.get("device")))
        return self


class FakePipeline:
    """The slice of LumierePipeline's component API the manager uses."""

    TASKS = {"t2v": ["text_encoder", "base"], "i2v": ["text_encoder", "conditional"]}

    def __init__(self, sizes: dict[str, int]):
        self.sizes = sizes
        self.loaded: dict[str, FakeComponent] = {}
        self.loads: list[str] = []
        self.device, self.dtype = torch.device("cpu"), torch.float32

    @property
    def component_names(self):
        return tuple(self.sizes)

    def components_for(self, task, super_resolve=True):
        return self.TASKS[task] + (["ssr"] if super_resolve and "ssr" in self.sizes else [])

    def is_loaded(self, name):
        return name in self.loaded

    def get_component(self, name):
        if name not in self.loaded:
            self.loads.append(name)
            self.loaded[name] = FakeComponent(self.sizes[name])
        return self.loaded[name]

    def unload_component(self, name):
        self.loaded.pop(name, None)


def manager(sizes, budget, **kwargs):
    pipe = FakePipeline(sizes)
    return ModelManager(pipeline=pipe, memory_budget=budget, **kwargs), pipe


SIZES = {"text_encoder": 100, "base": 400, "conditional": 400, "ssr": 200}


def test_loads_lazily_and_once():
    mm, pipe = manager(SIZES, None)
    assert pipe.loads == []
    mm.ensure(["text_encoder", "base"])
    mm.ensure(["text_encoder", "base"])
    assert pipe.loads == ["text_encoder", "base"] and mm.used_bytes == 500


def test_evicts_least_recently_used_when_over_budget():
    mm, pipe = manager(SIZES, 1000)
    mm.ensure(["text_encoder", "base", "ssr"])          # 700
    mm.ensure(["text_encoder"])                          # touch: base is now the LRU
    mm.ensure(["conditional"])                           # +400 > 1000: evict base (LRU), keep text_encoder, ssr
    assert set(mm._resident) == {"text_encoder", "ssr", "conditional"}
    assert not pipe.is_loaded("base") and mm.evictions == 1  # on the CPU eviction drops (reloads from disk)
    assert mm.used_bytes <= 1000
    mm.ensure(["base"])                                  # reload; evicts LRU ssr then text_encoder as needed
    assert pipe.loads.count("base") == 2 and mm.used_bytes <= 1000 and "base" in mm._resident


def test_never_evicts_components_the_task_needs():
    mm, pipe = manager(SIZES, 500)  # the task needs 900: over budget, but nothing it needs is dropped
    mm.ensure(["text_encoder", "base", "conditional"])
    assert set(mm._resident) == {"text_encoder", "base", "conditional"}


def test_gpu_eviction_offloads_to_cpu_instead_of_dropping():
    mm, pipe = manager(SIZES, 600, offload_to_cpu=True)
    mm.device = torch.device("cuda")  # placement only is faked; nothing runs
    mm.ensure(["text_encoder", "base"])
    mm.ensure(["conditional"])
    assert pipe.is_loaded("base") and pipe.loaded["base"].moves[-1] == "cpu"
    mm.ensure(["base"])  # comes back from the CPU instead of reloading from disk
    assert pipe.loads.count("base") == 1 and pipe.loaded["base"].moves[-1] == "cuda"


def test_oom_frees_unneeded_components_and_retries_once():
    mm, pipe = manager(SIZES, None)
    mm.ensure(["conditional", "ssr"])  # left over from an earlier image-to-video request
    calls = []

    def generate(p):
        calls.append(set(mm._resident))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return "video"

    assert mm.run("t2v", generate, super_resolve=False) == "video"
    assert len(calls) == 2 and mm.oom_recoveries == 1
    assert set(mm._resident) == {"text_encoder", "base"}  # everything not needed was evicted


def test_oom_twice_raises_clear_error_and_plain_errors_are_not_retried():
    mm, _ = manager(SIZES, None)
    attempts = []

    def always_oom(p):
        attempts.append(1)
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(OutOfMemory, match="fewer frames.*super-resolution"):
        mm.run("t2v", always_oom)
    assert len(attempts) == 2

    def bad_input(p):
        attempts.append(1)
        raise ValueError("num_frames must be a multiple of 8")

    attempts.clear()
    with pytest.raises(ValueError, match="multiple of 8"):
        mm.run("t2v", bad_input)
    assert len(attempts) == 1 and not mm.busy
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(RuntimeError("shape mismatch"))


def test_stop_cancels_a_running_generation_through_the_step_callback():
    mm, _ = manager(SIZES, None)
    steps = []

    def generate(p):
        callback = mm.step_callback(lambda step, total: steps.append(step))
        for step in range(1, 1000):
            callback(step, 999)
            time.sleep(0.005)
        return "finished"

    result = {}

    def worker():
        try:
            result["value"] = mm.run("t2v", generate, session="alice")
        except GenerationCancelled:
            result["value"] = "cancelled"

    thread = threading.Thread(target=worker)
    thread.start()
    while not steps:
        time.sleep(0.005)
    assert not mm.cancel("bob")  # another session's Stop does not touch alice's job
    assert mm.cancel("alice")
    thread.join(10)
    assert result["value"] == "cancelled" and len(steps) < 999 and not mm.busy
    assert mm.last_outcome == "cancelled"
    assert mm.run("t2v", lambda p: "next job runs") == "next job runs"  # the flag was reset


def test_a_sessions_page_sees_its_steps_previews_and_where_stop_stopped_it():
    mm, _ = manager(SIZES, None)
    clip = torch.linspace(-1, 1, 16).reshape(1, 1, 16, 1, 1).expand(1, 3, 16, 32, 32)  # frame k: grey level k
    started, go_on = threading.Event(), threading.Event()

    def generate(p):
        callback = mm.step_callback()
        for step in range(1, 101):
            callback(step, 100, clip)
            if step == 20:
                started.set()
                go_on.wait(10)
        return "finished"

    mm.expect("alice")
    job = mm.live("alice")
    assert job is not None and not job.ended and job.preview is None and mm.live("bob") is None
    thread = threading.Thread(target=lambda: pytest.raises(GenerationCancelled, mm.run, "t2v", generate,
                                                           session="alice"))
    thread.start()
    assert started.wait(10)
    mm.expect("alice")  # the page's notice arriving after the job started does not orphan it
    assert mm.live("alice") is job
    assert (job.step, job.total) == (20, 100) and job.preview_step == 20  # a preview every 10 of 100 steps
    strip = job.preview
    assert strip.dtype == np.uint8 and strip.shape == (PREVIEW_HEIGHT, PREVIEW_FRAMES * 64 + 2 * 7, 3)
    levels = [strip[0, k * 66, 0] for k in range(PREVIEW_FRAMES)]  # frames evenly spaced: first to last, in order
    assert levels[0] == 0 and levels[-1] == 255 and levels == sorted(levels)
    assert mm.cancel("alice")
    go_on.set()
    ended = mm.wait_ended("alice", 10)
    thread.join(10)
    assert ended is job and job.outcome == "cancelled" and job.step == 21  # stopped after step 21 of 100
    mm.run("t2v", lambda p: mm.step_callback()(1, 1), session="alice")  # the next job gets a fresh record
    assert mm.live("alice") is not job and mm.live("alice").outcome == "done"


def test_a_request_refused_before_it_runs_ends_its_live_job():
    mm, _ = manager(SIZES, None)
    mm.expect("carol")
    assert mm.wait_ended("carol", 0.01).outcome is None  # waits at most the timeout
    mm.end_job("carol", "error")
    assert mm.live("carol").ended and mm.wait_ended("carol", 10).outcome == "error"


def test_preview_decodes_latents_for_the_shown_frames_only():
    decoded = []

    class LatentPipe:
        is_latent, model_sample_shape = True, (4, 8, 8)

        def decode_frames(self, sample):
            decoded.append(tuple(sample.shape))
            return torch.zeros(1, 3, sample.shape[2], 64, 64)

    strip = preview_strip(LatentPipe(), torch.zeros(1, 4, 80, 8, 8))
    assert decoded == [(1, 4, PREVIEW_FRAMES, 8, 8)] and strip.shape[0] == PREVIEW_HEIGHT
    ssr_pixels = preview_strip(LatentPipe(), torch.zeros(1, 3, 16, 128, 128))  # pixels are not decoded
    assert len(decoded) == 1 and ssr_pixels.shape == (PREVIEW_HEIGHT, PREVIEW_FRAMES * 64 + 2 * 7, 3)
    image = preview_strip(LatentPipe(), torch.zeros(1, 3, 32, 32))  # reference-guided: the first frame's image
    assert image.shape == (PREVIEW_HEIGHT, 64, 3)


def test_generation_is_serialised():
    mm, _ = manager(SIZES, None)
    running, peak = [0], [0]
    lock = threading.Lock()

    def generate(p):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    threads = [threading.Thread(target=mm.run, args=("t2v", generate)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1


def test_status_and_budget_parsing():
    mm, _ = manager(SIZES, "1KB")
    assert mm.memory_budget == 1024 and parse_bytes("6GB") == 6 * 1024**3 and parse_bytes("auto") is None
    with pytest.raises(ValueError, match="6GB"):
        parse_bytes("lots")
    mm.ensure(["text_encoder"])
    status = mm.status()
    assert status["components"]["text_encoder"]["where"] == "cpu" and status["used_bytes"] == 100
    assert "Memory budget" in mm.status_markdown()
    assert mm.free_if_idle() and mm.used_bytes == 0


def test_model_that_cannot_load_is_reported_not_raised_at_build():
    def broken(model, **kwargs):
        raise FileNotFoundError("bundled model not found at assets/lumiere-tiny")

    mm = ModelManager("missing", loader=broken, device="cpu")
    assert mm.try_pipe() is None and "bundled model not found" in mm.status_markdown()


# ----------------------------------------------------------------------------- inputs
def test_input_validation_messages():
    assert inputs.seed_value(-1) is None and inputs.seed_value(5.0) == 5
    with pytest.raises(inputs.InputError, match="whole number"):
        inputs.seed_value(1.5)
    assert inputs.frames_value(16, base_frames=16, factor=8) == 16
    with pytest.raises(inputs.InputError, match="multiple of 8"):
        inputs.frames_value(12, base_frames=16, factor=8)
    with pytest.raises(inputs.InputError, match="between 8 and 160"):
        inputs.frames_value(168, base_frames=16, factor=8)
    assert inputs.frames_value(None, base_frames=16, factor=8) == 16  # blank: the model's clip
    # A tab on the user's video: blank or 0 = its own length (None), any other count as asked.
    assert inputs.frames_value(0, 16, 8, footage=True) is None and inputs.frames_value("", 16, 8, footage=True) is None
    assert inputs.frames_value(24, 16, 8, footage=True) == 24
    with pytest.raises(inputs.InputError, match="between 8 and 160"):
        inputs.frames_value(0, base_frames=16, factor=8)
    with pytest.raises(inputs.InputError, match="between 1 and 100"):
        inputs.steps_value(101, 25)
    with pytest.raises(inputs.InputError, match="prompt is empty"):
        inputs.prompt_text(" ")
    with pytest.raises(inputs.InputError, match="Upload a video"):
        inputs.load_video(None)


def test_masks_from_editor_values():
    layer = np.zeros((8, 8, 4), np.uint8)
    layer[2:4, 2:4] = (255, 51, 204, 255)
    frame = np.random.default_rng(0).integers(0, 255, (8, 8, 4), dtype=np.uint8)
    frame[..., 3] = 255
    mask = inputs.mask_from_editor({"background": frame, "layers": [layer], "composite": None}, (16, 16))
    assert mask.shape == (16, 16) and mask.sum() == 16  # 2x2 painted pixels, resized x2
    # No strokes on a real picture: nothing is marked (the UI's "brush something" case).
    assert inputs.mask_from_editor({"background": frame, "layers": [np.zeros_like(layer)]}) is None
    # An API client's black/white mask as the editor background.
    bw = np.zeros((8, 8, 3), np.uint8)
    bw[:4] = 255
    assert inputs.mask_from_editor({"background": bw, "layers": []}).sum() == 32
    assert inputs.mask_from_editor(np.zeros((8, 8), np.uint8)) is None


def test_upload_validation_rejects_long_huge_and_broken_videos(tmp_path):
    from lumiere.io import write_video

    ok = write_video(tmp_path / "ok.mp4", np.zeros((4, 16, 16, 3), np.uint8), 8)
    assert inputs.load_video(ok).shape == (4, 16, 16, 3)
    long = write_video(tmp_path / "long.mp4", np.zeros((42, 16, 16, 3), np.uint8), 2)  # 21 s
    with pytest.raises(inputs.InputError, match="at most 20 s"):
        inputs.load_video(long)
    wide = write_video(tmp_path / "wide.mp4", np.zeros((1, 16, 1936, 3), np.uint8), 8)
    with pytest.raises(inputs.InputError, match="at most 1920x1920"):
        inputs.load_video(wide)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 64)
    with pytest.raises(inputs.InputError, match="Could not read the uploaded video 'broken.mp4'"):
        inputs.load_video(str(broken))
    with pytest.raises(inputs.InputError, match="Upload an image"):
        inputs.image_array(None, "an image")
