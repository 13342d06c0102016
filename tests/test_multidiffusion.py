"""lumiere.multidiffusion: temporal MultiDiffusion (App. C): windows (circular ones for a loop), averaging,
single-pass equivalence, the no-overlap ablation."""
import numpy as np
import pytest
import torch

from lumiere.multidiffusion import temporal_windows, window_weights, windowed_prediction


@pytest.mark.parametrize("frames,window,overlap", [(16, 8, 2), (80, 16, 2), (17, 8, 2), (10, 4, 3), (16, 8, 0), (9, 9, 2)])
def test_windows_cover_every_frame_and_end_at_the_last(frames, window, overlap):
    windows = temporal_windows(frames, window, overlap)
    assert windows[0][0] == 0 and windows[-1][1] == frames
    assert all(end - start == min(window, frames) for start, end in windows)
    assert (window_weights(frames, windows) >= 1).all()
    for (s0, e0), (s1, _) in zip(windows, windows[1:]):
        assert e0 - s1 >= overlap  # neighbours share at least `overlap` frames (the tail may share more)


def test_window_examples():
    assert temporal_windows(16, 8, 2) == [(0, 8), (6, 14), (8, 16)]
    assert temporal_windows(16, 8, 0) == [(0, 8), (8, 16)]
    assert temporal_windows(8, 16, 2) == [(0, 8)]


def test_bad_window_arguments():
    with pytest.raises(ValueError, match="overlap must be in"):
        temporal_windows(16, 4, 4)
    with pytest.raises(ValueError, match="window must be >= 1"):
        temporal_windows(16, 0, 0)


def test_overlapping_predictions_are_averaged():
    x = torch.zeros(1, 1, 10, 1, 1)
    windows = temporal_windows(10, 4, 2)  # [0,4) [2,6) [4,8) [6,10)
    # each window predicts its own index: overlapping frames get the mean of the windows covering them
    out = windowed_prediction(lambda xw, s, e: torch.full_like(xw, float(s)), x, windows)
    expected = [0, 0, 1, 1, 3, 3, 5, 5, 6, 6]
    assert out.flatten().tolist() == expected


def test_single_window_equals_single_pass():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 4, 4)
    model = lambda xw, s, e: torch.sin(xw.cumsum(dim=2))  # noqa: E731 - depends on the whole window
    assert torch.equal(windowed_prediction(model, x, temporal_windows(8, 8, 2)), model(x, 0, 8))
    assert torch.equal(windowed_prediction(model, x, temporal_windows(8, 12, 2)), model(x, 0, 8))


def test_no_overlap_ablation_differs_from_multidiffusion(tiny_pipe):
    low = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    with_md = tiny_pipe.super_resolve(low, "a red circle", seed=0, window=4, overlap=2, multidiffusion=True)
    without = tiny_pipe.super_resolve(low, "a red circle", seed=0, window=4, multidiffusion=False)
    single = tiny_pipe.super_resolve(low, "a red circle", seed=0, window=8)
    assert with_md.shape == without.shape == (8, 32, 32, 3)
    assert not np.array_equal(with_md, without)
    # a window as long as the clip is one pass: overlap then changes nothing
    assert np.array_equal(single, tiny_pipe.super_resolve(low, "a red circle", seed=0, window=8, multidiffusion=False))


def test_ssr_memory_is_bounded_by_the_window(tiny_pipe):
    """Windows run one at a time: the model never sees more than `window` frames."""
    seen = []
    ssr = tiny_pipe.ssr
    original = ssr.forward

    def spy(sample, *args, **kwargs):
        seen.append(sample.shape[2])
        return original(sample, *args, **kwargs)

    ssr.forward = spy
    try:
        tiny_pipe.super_resolve(np.zeros((16, 16, 16, 3), np.uint8), "x", seed=0, window=4)
    finally:
        del ssr.forward
    assert max(seen) == 4


def test_circular_windows_wrap_and_average_exactly():
    from lumiere.multidiffusion import take_window, temporal_windows, window_weights, windowed_prediction

    assert temporal_windows(32, 16, 2) == temporal_windows(32, 16, 2, circular=False)  # unchanged without it
    assert temporal_windows(16, 16, 2, circular=True) == [(0, 16)]  # one window: the model itself wraps
    for frames, window, overlap in ((32, 16, 2), (8, 4, 2), (40, 16, 2), (48, 32, 16)):
        windows = temporal_windows(frames, window, overlap, circular=True)
        assert all(end - start == window for start, end in windows)
        assert any(end > frames for _, end in windows)  # one spans the end and the start
        for (s1, e1), (s2, _) in zip(windows, windows[1:] + [(windows[0][0] + frames, None)]):
            assert e1 - s2 >= overlap  # neighbours overlap, the last with the first too
        assert (window_weights(frames, windows) >= 1).all()
    x = torch.arange(8.0).view(1, 1, 8, 1, 1)
    assert take_window(x, 6, 10).flatten().tolist() == [6, 7, 0, 1]
    windows = temporal_windows(8, 4, 2, circular=True)
    assert torch.equal(windowed_prediction(lambda part, s, e: part, x, windows), x)
    # each frame's average over the windows that hold it, a window's output being its position in the window
    out = windowed_prediction(lambda part, s, e: torch.arange(4.0).view(1, 1, 4, 1, 1), x, windows)
    expected = [np.mean([(f - s) % 8 for s, e in windows if (f - s) % 8 < e - s]) for f in range(8)]
    assert np.allclose(out.flatten().numpy(), expected)
