"""A creator's footage keeps its duration: video-to-video and inpainting on clips longer than the model's
(one pass up to 4x its clip, temporal MultiDiffusion windows beyond, memory bounded by the window)."""
import numpy as np
import pytest

from lumiere.errors import InputError
from lumiere.options import ONE_PASS_FRAMES_FACTOR, base_windows, frame_counts


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
