"""lumiere.evaluation: SSR fidelity and window-boundary metrics on rendered world clips: no model needed."""
import numpy as np

from lumiere.evaluation import _ssr_clip, bicubic_upsample, boundary_peak, ssr_fidelity
from lumiere.multidiffusion import temporal_windows


def test_fidelity_ranks_perfect_above_bicubic_above_noisy():
    low, truth, _ = _ssr_clip(0, 8, 8, 8, 4)  # sea background: texture to lose or to drown in grain
    noisy = np.clip(truth + np.random.default_rng(0).normal(0, 20, truth.shape), 0, 255).astype(np.uint8)
    perfect, bicubic, grainy = (ssr_fidelity(v, truth, low) for v in (truth, bicubic_upsample(low, 4), noisy))
    assert perfect["psnr_db"] > bicubic["psnr_db"] > grainy["psnr_db"]
    assert perfect["downsampled_psnr_db"] > bicubic["downsampled_psnr_db"] > grainy["downsampled_psnr_db"]
    assert perfect["background_frame_diff"] < bicubic["background_frame_diff"] < grainy["background_frame_diff"]
    # |Laplacian| relative to the truth: 1 for the truth, bicubic is blurry (< 1), noise is grain (> 1.5)
    assert perfect["laplacian_ratio"] == 1.0
    assert bicubic["laplacian_ratio"] < 0.7 and grainy["laplacian_ratio"] > 1.5


def test_boundary_peak_finds_an_injected_discontinuity():
    _, video, _ = _ssr_clip(0, 16, 8, 8, 4)  # an object moving smoothly left
    boundaries = [start - 1 for start, _ in temporal_windows(16, 8, 0)[1:]]
    assert boundaries == [7]
    assert 0.8 < boundary_peak(video, boundaries) < 1.25
    jumped = video.astype(np.int16)
    jumped[8:] += 12  # the second window comes out brighter: a jump between frames 7 and 8 only
    jumped = np.clip(jumped, 0, 255).astype(np.uint8)
    assert boundary_peak(jumped, boundaries) > 3
    assert boundary_peak(jumped, [3]) < 1  # the metric looks where it is told
