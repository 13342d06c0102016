"""Text to video longer than the model's clip (issue 27, item 3): FreeNoise-style shared noise
(``sampling.shared_window_noise``) and the base's windows (``options.base_windows``); measured in
docs/research/long-clips.md."""
import numpy as np
import pytest
import torch

from lumiere import options
from lumiere.options import NoisePrior
from lumiere.sampling import initial_noise, shared_window_noise

PROMPT = "a red circle moving right"


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


def test_the_default_long_clip_setting_samples_every_frame(tiny_pipe, monkeypatch):
    """Whatever the defaults are, a 3x clip comes back whole, and windows of the trained length cover it."""
    clip = tiny_pipe.base_resolution[0]
    video = tiny_pipe.text_to_video(PROMPT, seed=0, num_frames=3 * clip, num_inference_steps=1, super_resolve=False)
    assert video.shape[0] == 3 * clip
    windows = options.base_windows(3 * clip, clip)
    assert windows[0][0] == 0 and windows[-1][1] == 3 * clip
    assert all(b[0] < a[1] for a, b in zip(windows, windows[1:]))
