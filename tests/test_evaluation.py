"""lumiere.evaluation: SSR fidelity, window-boundary and video-to-video structure metrics on rendered world
clips: no model needed."""
import numpy as np

from lumiere.data.world import ClipSpec, ObjectSpec, render_clip
from lumiere.evaluation import (StyleClassifier, _eval_clip, _reference_specs, _ssr_clip, bicubic_upsample, boundary_peak,
                                compare_metrics, ssr_fidelity, structure_kept)
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


def test_structure_kept_accepts_a_recolour_and_refuses_a_moved_or_doubled_object():
    clip, _ = _eval_clip(0, 16, 32, 32)  # a red triangle moving left on black
    assert structure_kept(clip, clip) == {"kept": True, "same_count": True, "present": True, "max_centroid_error": 0.0}
    recoloured = clip.copy()
    recoloured[..., [0, 2]] = clip[..., [2, 0]]  # red <-> blue: looks change, layout does not
    assert structure_kept(recoloured, clip)["kept"]
    moved = np.zeros_like(clip)
    moved[:, :, 6:] = clip[:, :, :-6]  # the object 6 px (0.19 of the frame) to the right, whole in every frame
    assert not structure_kept(moved, clip)["kept"] and structure_kept(moved, clip)["same_count"]
    two = render_clip(ClipSpec((ObjectSpec("red", "triangle", "moving left"), ObjectSpec("blue", "circle", "moving up")),
                               "black", 3), 16, 32, 32)
    assert not structure_kept(two, clip)["same_count"]
    blank = np.zeros_like(clip)
    assert not structure_kept(blank, clip)["present"]


def test_style_classifier_tells_the_worlds_looks_apart_on_unseen_clips():
    """Fitted on renders of seeds 500-502, it names the look of renders it never saw (other seeds)."""
    looks = (None, "line drawing", "watercolor")
    classify = StyleClassifier(looks, 16, 32, 32)
    for index, spec in enumerate(_reference_specs(1, 900)):
        for look in looks:
            assert classify(render_clip(spec, 16, 32, 32, style=look), index) == look


def test_compare_metrics_reads_each_rows_direction_and_dotted_keys():
    baseline = {"heldout": {"motion_accuracy": 0.5, "videos": 48}, "v2v": {"v2v_psnr_db_at_0.05": 30.0},
                "ssr": {"ssr_boundary_peak_multidiffusion": 0.9, "fidelity": {"ssr": {"psnr_db": 30.0}}},
                "style": {"styles": {"ink": {"subject_at_0.8": 0.5, "recognised_at_1": 1.0}}}}
    candidate = {"heldout": {"motion_accuracy": 0.75, "videos": 48}, "v2v": {"v2v_psnr_db_at_0.05": 29.0},
                 "ssr": {"ssr_boundary_peak_multidiffusion": 0.8, "fidelity": {"ssr": {"psnr_db": 30.0}}},
                 "style": {"styles": {"ink": {"subject_at_0.8": 0.25}}}}
    rows = {row["row"]: row for row in compare_metrics(baseline, candidate)}
    verdicts = {name: row["verdict"] for name, row in rows.items()}
    assert verdicts["heldout motion"] == "better"
    assert verdicts["video-to-video PSNR at strength 0.05 (dB)"] == "worse"
    assert verdicts["SSR window-boundary peak"] == "better"  # lower is better
    assert verdicts["SSR PSNR (dB)"] == "same"
    assert verdicts["ink: subject found at weight 0.8"] == "worse"
    assert verdicts["ink: recognised as the style at weight 1"] == "not measured"
    assert verdicts["seen colour"] == "not measured"
    # a share's difference over its standard error: (0.75 - 0.5) / sqrt((0.25 + 0.1875) / 48) = 2.62
    assert abs(rows["heldout motion"]["z"] - 2.619) < 1e-3
    assert rows["video-to-video PSNR at strength 0.05 (dB)"]["z"] is None  # no spread kept for dB rows


def test_compare_metrics_reads_the_long_clip_benchmarks_part():
    """``bench_long_clips.py --summary``'s part: more thirds as prompted is better, a higher seam peak worse."""
    baseline = {"long_clips": {"thirds": 96, "thirds_as_prompted": 39 / 96, "seam_peak": 1.67}}
    candidate = {"long_clips": {"thirds": 96, "thirds_as_prompted": 36 / 96, "seam_peak": 1.60}}
    rows = {row["row"]: row for row in compare_metrics(baseline, candidate)}
    assert rows["3x clip: thirds moving as prompted"]["verdict"] == "worse"
    assert -1 < rows["3x clip: thirds moving as prompted"]["z"] < 0  # 3 thirds in 96: within chance
    assert rows["3x clip: seam peak"]["verdict"] == "better"
