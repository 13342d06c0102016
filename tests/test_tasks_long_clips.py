"""lumiere.tasks: clips longer than the model's. Text to video with FreeNoise-style shared noise
(``sampling.shared_window_noise``) over the base's windows (``tasks.common.base_windows``; measured in
docs/research/long-clips.md); a creator's footage keeps its duration through video-to-video and inpainting (one pass
up to 4x the clip, temporal MultiDiffusion windows beyond, memory bounded by the window)."""
import numpy as np
import pytest
import torch

from lumiere import options
from lumiere.errors import InputError
from lumiere.options import ONE_PASS_FRAMES_FACTOR, NoisePrior, frame_counts
from lumiere.tasks.common import base_windows, layout_windows
from lumiere.sampling import initial_noise, shared_window_noise

PROMPT = "a red circle moving right"


# ----------------------------------------------------------------------------- text to video: shared noise
def shared_noise(monkeypatch, window_clips: int = 1, stride_clips: float = 0.25, noise_clips: float = 0.25):
    """Long text-to-video with shared noise, in windows of ``window_clips`` clips; returns the recorded
    calls of ``shared_window_noise`` made by ``sample_video``."""
    from lumiere.tasks import common

    monkeypatch.setattr(options, "LONG_CLIP_SHARED_NOISE", True)
    monkeypatch.setattr(options, "ONE_PASS_FRAMES_FACTOR", window_clips)
    monkeypatch.setattr(options, "BASE_WINDOW_STRIDE_CLIPS", stride_clips)
    monkeypatch.setattr(options, "SHARED_NOISE_STRIDE_CLIPS", noise_clips)
    calls = []

    def recording(shape, *args, **kwargs):
        calls.append(shape)
        return shared_window_noise(shape, *args, **kwargs)

    monkeypatch.setattr(common, "shared_window_noise", recording)
    return calls


@pytest.mark.parametrize("prior", [None, NoisePrior("mixed", 1.0), NoisePrior("progressive", 1.0)])
@pytest.mark.parametrize("stride", [2, 4])
def test_every_window_starts_from_a_permutation_of_the_first_windows_noise(prior, stride):
    window, frames = 8, 24
    noise = shared_window_noise((1, 2, frames, 3, 3), torch.Generator().manual_seed(0), "cpu", torch.float32,
                                window, stride, prior)
    assert noise.shape == (1, 2, frames, 3, 3)
    first = noise[:, :, :window]
    key = lambda part: sorted(tuple(part[0, :, f].flatten().tolist()) for f in range(part.shape[2]))  # noqa: E731
    for start in range(0, frames - window + 1, stride):
        assert key(noise[:, :, start:start + window]) == key(first)
    # the first window is a clip's own noise, and later blocks are shuffled, not a plain repetition
    torch.testing.assert_close(first, initial_noise((1, 2, window, 3, 3), torch.Generator().manual_seed(0), "cpu",
                                                    torch.float32, prior), rtol=0, atol=0)
    assert not torch.equal(noise[:, :, window:2 * window], first)


def test_shared_noise_is_deterministic_per_seed_and_a_short_clip_keeps_its_noise():
    def draw(seed, frames=32):
        return shared_window_noise((1, 3, frames, 4, 4), torch.Generator().manual_seed(seed), "cpu", torch.float32, 8, 2)

    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    for frames in (4, 8):  # no longer than the window: exactly initial_noise's draw
        assert torch.equal(draw(1, frames), initial_noise((1, 3, frames, 4, 4), torch.Generator().manual_seed(1), "cpu",
                                                          torch.float32))
    # a tail block shorter than the stride is a permutation of the frames a window before it
    noise = shared_window_noise((1, 1, 11, 1, 1), torch.Generator().manual_seed(0), "cpu", torch.float32, 8, 2)
    assert sorted(noise[0, 0, 10:].flatten().tolist()) == sorted(noise[0, 0, 2:3].flatten().tolist())
    with pytest.raises(Exception, match="stride"):
        shared_window_noise((1, 1, 16, 1, 1), None, "cpu", torch.float32, 8, 9)


@pytest.mark.parametrize("window_clips", [1, 4])
def test_a_long_clip_with_shared_noise_has_the_requested_length_and_is_deterministic(tiny_pipe, monkeypatch,
                                                                                   window_clips):
    calls = shared_noise(monkeypatch, window_clips)
    frames = 3 * tiny_pipe.base_resolution[0]
    kwargs = dict(seed=4, num_frames=frames, num_inference_steps=2, super_resolve=False)
    video = tiny_pipe.text_to_video(PROMPT, **kwargs)
    assert video.shape[0] == frames and len(calls) == 1 and calls[0][2] == frames
    assert np.array_equal(tiny_pipe.text_to_video(PROMPT, **kwargs), video)
    assert not np.array_equal(tiny_pipe.text_to_video(PROMPT, **{**kwargs, "seed": 5}), video)


def test_clips_up_to_the_models_length_are_unchanged_by_the_long_clip_options(tiny_pipe, monkeypatch):
    clip = tiny_pipe.base_resolution[0]
    kwargs = dict(seed=3, num_inference_steps=2, super_resolve=True)
    before = [tiny_pipe.text_to_video(PROMPT, num_frames=frames, **kwargs) for frames in (clip // 2, clip)]
    calls = shared_noise(monkeypatch)
    after = [tiny_pipe.text_to_video(PROMPT, num_frames=frames, **kwargs) for frames in (clip // 2, clip)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after)) and calls == []


def test_loops_and_long_footage_keep_independent_noise(tiny_pipe, monkeypatch):
    """The shared noise is text to video's: a loop (circular windows) and video-to-video draw as before."""
    calls = shared_noise(monkeypatch)
    frames = 3 * tiny_pipe.base_resolution[0]
    looped = tiny_pipe.text_to_video(PROMPT, seed=0, num_frames=frames, loop=True, num_inference_steps=1,
                                     super_resolve=False)
    assert looped.shape[0] == frames
    tiny_pipe.video_to_video(looped, PROMPT, strength=0.5, seed=0, num_inference_steps=2, super_resolve=False)
    assert calls == []


def test_a_long_text_to_video_clip_is_laid_out_in_clip_windows_then_refined_whole(tiny_pipe, monkeypatch):
    """The default long text-to-video sampler: the noisiest LONG_CLIP_LAYOUT_SHARE of the steps see windows of
    the model's clip one noise block apart (every frame covered), the rest the whole clip; conditioned
    tasks and loops see the whole clip in every step."""
    monkeypatch.setattr(options, "LONG_CLIP_SHARED_NOISE", True)
    monkeypatch.setattr(options, "LONG_CLIP_LAYOUT_SHARE", 0.5)
    clip = tiny_pipe.base_resolution[0]
    frames = 3 * clip
    lengths = record_clip_lengths(tiny_pipe, monkeypatch)
    kwargs = dict(seed=0, num_frames=frames, num_inference_steps=2, super_resolve=False)
    video = tiny_pipe.text_to_video(PROMPT, **kwargs)
    windows = layout_windows(frames, clip)
    stride = options.shared_noise_stride(clip)
    assert [b[0] - a[0] for a, b in zip(windows, windows[1:])] == [stride] * (len(windows) - 1)
    assert windows[0] == (0, clip) and windows[-1] == (frames - clip, frames)
    assert lengths == [clip] * len(windows) + [frames]  # the first of 2 steps in windows, the second whole
    assert video.shape[0] == frames and np.array_equal(tiny_pipe.text_to_video(PROMPT, **kwargs), video)
    lengths.clear()
    monkeypatch.setattr(options, "LONG_CLIP_LAYOUT_SHARE", 0.0)  # shared noise alone: every step whole
    assert not np.array_equal(tiny_pipe.text_to_video(PROMPT, **kwargs), video)
    assert lengths == [frames] * 2
    monkeypatch.setattr(options, "LONG_CLIP_LAYOUT_SHARE", 0.5)
    lengths.clear()
    tiny_pipe.text_to_video(PROMPT, loop=True, **kwargs)
    tiny_pipe.image_to_video(video[0], PROMPT, **kwargs)
    assert lengths == [frames] * 4


def test_the_default_long_clip_setting_samples_every_frame(tiny_pipe, monkeypatch):
    """Whatever the defaults are, a 3x clip comes back whole, and windows of the trained length cover it."""
    clip = tiny_pipe.base_resolution[0]
    video = tiny_pipe.text_to_video(PROMPT, seed=0, num_frames=3 * clip, num_inference_steps=1, super_resolve=False)
    assert video.shape[0] == 3 * clip
    windows = base_windows(3 * clip, clip)
    assert windows[0][0] == 0 and windows[-1][1] == 3 * clip
    assert all(b[0] < a[1] for a, b in zip(windows, windows[1:]))


# ----------------------------------------------------------------------------- long footage: video to video and inpainting
def footage(frames: int, size: int = 16) -> np.ndarray:
    """A bright square sliding right over ``frames`` frames: each frame differs from its neighbours."""
    video = np.full((frames, size, size, 3), 40, np.uint8)
    for t in range(frames):
        left = int(t * (size - 4) / max(1, frames - 1))
        video[t, 6:10, left:left + 4] = 230
    return video


def record_clip_lengths(pipe, monkeypatch) -> list[int]:
    lengths = []
    for name in ("base", "conditional"):
        model = pipe.get_component(name)
        forward = model.forward

        def recording(x, *args, _forward=forward, **kwargs):
            lengths.append(x.shape[2])
            return _forward(x, *args, **kwargs)

        monkeypatch.setattr(model, "forward", recording)
    return lengths


@pytest.mark.parametrize("multiple", [3, 6])
def test_video_to_video_and_inpaint_keep_a_long_clips_duration(tiny_pipe, monkeypatch, multiple):
    base = tiny_pipe.base_resolution[0]
    frames = multiple * base
    lengths = record_clip_lengths(tiny_pipe, monkeypatch)
    video = footage(frames)
    out = tiny_pipe.video_to_video(video, "a red square", strength=0.5, seed=0, num_inference_steps=2,
                                   super_resolve=False)
    assert out.shape[0] == frames  # not squashed into the model's clip
    mask = np.zeros((16, 16), bool)
    mask[:, 8:] = True
    painted = tiny_pipe.inpaint(video, mask, "a red square", seed=0, num_inference_steps=1, super_resolve=False)
    assert painted.shape[0] == frames
    np.testing.assert_array_equal(painted[:, :, :8], video[:, :, :8])  # kept pixels, frame for frame
    window = ONE_PASS_FRAMES_FACTOR * base
    assert max(lengths) == min(frames, window)  # beyond 4x the clip: windows, never the whole clip at once
    if frames > window:
        assert len(base_windows(frames, base)) > 1 and set(lengths) == {window}


def test_footage_longer_than_the_model_takes_is_refused_before_any_work(tiny_pipe, monkeypatch):
    lengths = record_clip_lengths(tiny_pipe, monkeypatch)
    longest = frame_counts(tiny_pipe.base_resolution[0], tiny_pipe.temporal_downsampling_factor)[-1]
    with pytest.raises(InputError, match=f"takes at most {longest}"):
        tiny_pipe.video_to_video(footage(longest + 4), "a red square", seed=0, super_resolve=False)
    assert lengths == []
    # Asked for explicitly, a long clip is resampled to the frames requested, as documented.
    out = tiny_pipe.video_to_video(footage(longest + 4), "a red square", seed=0, num_frames=8,
                                   num_inference_steps=1, super_resolve=False)
    assert out.shape[0] == 8


def test_windows_cover_every_frame_and_overlap_by_a_clip():
    assert base_windows(64, 16) == [(0, 64)]
    windows = base_windows(160, 16)
    assert windows[0] == (0, 64) and windows[-1][1] == 160
    assert all(b[0] < a[1] and a[1] - b[0] >= 16 for a, b in zip(windows, windows[1:]))


def test_cli_video_to_video_keeps_the_files_duration(tiny_pipeline_dir, tmp_path):
    from lumiere.cli import main
    from lumiere.io import read_video, write_video

    base = 8  # the tiny model's clip at 8 fps: a 3 s file is 3 clips long
    source = tmp_path / "three_seconds.mp4"
    write_video(source, footage(3 * base), 8)
    out = tmp_path / "out.mp4"
    assert main(["v2v", "--video", str(source), "--prompt", "a red square", "--strength", "0.4", "--steps", "2",
                 "--no-ssr", "--seed", "0", "--model", str(tiny_pipeline_dir), "--out", str(out)]) == 0
    video, fps = read_video(out)
    assert video.shape[0] == 3 * base and video.shape[0] / fps == pytest.approx(3.0)
