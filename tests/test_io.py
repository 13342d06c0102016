"""lumiere.io: browser-playable mp4, round trips, clear errors."""
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from lumiere.io import read_image, read_mask, read_video, write_image, write_video


def smooth_video(t=8, h=32, w=48):
    """Smooth content so lossy codecs reproduce it closely."""
    y, x = np.mgrid[0:h, 0:w]
    frames = [np.stack([(x * 5 + 10 * k) % 256, y * 6, np.full_like(x, 40 + 10 * k)], -1) for k in range(t)]
    return np.stack(frames).astype(np.uint8)


def ffmpeg_info(path):
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True)
    return proc.stderr


def test_mp4_is_h264_yuv420p_faststart_and_round_trips(tmp_path):
    video = smooth_video()
    path = tmp_path / "clip.mp4"
    write_video(path, video, fps=8)
    info = ffmpeg_info(path)
    assert re.search(r"Video: h264", info) and "yuv420p" in info
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # faststart: index before the media data
    frames, fps = read_video(path)
    assert frames.shape == video.shape and frames.dtype == np.uint8
    assert fps == pytest.approx(8.0)
    assert np.abs(frames.astype(int) - video).mean() < 6


def test_odd_size_is_padded_to_even(tmp_path):
    video = smooth_video(4, 33, 31)
    write_video(tmp_path / "odd.mp4", video, 10)
    frames, _ = read_video(tmp_path / "odd.mp4")
    assert frames.shape == (4, 34, 32, 3)
    assert np.abs(frames[:, :33, :31].astype(int) - video).mean() < 8


def test_gif_round_trip_loops(tmp_path):
    video = smooth_video(6, 24, 24)
    video[2] = video[1]  # identical consecutive frames must survive (no frame merging)
    path = tmp_path / "clip.gif"
    write_video(path, video, fps=10)
    with Image.open(path) as im:
        assert im.info.get("loop") == 0
    frames, fps = read_video(path)
    assert frames.shape == video.shape
    assert fps == pytest.approx(10.0, rel=0.1)
    assert np.abs(frames.astype(int) - video).mean() < 12


def test_webm_is_vp9(tmp_path):
    path = tmp_path / "clip.webm"
    write_video(path, smooth_video(4, 32, 32), fps=8)
    assert "Video: vp9" in ffmpeg_info(path)
    assert read_video(path)[0].shape == (4, 32, 32, 3)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8, 3), np.uint8), r"\(T, H, W, 3\)"),
    (np.zeros((2, 8, 8, 4), np.uint8), r"\(T, H, W, 3\)"),
])
def test_write_rejects_bad_frames(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "x.mp4", bad, 8)


def test_write_rejects_bad_fps_and_suffix(tmp_path):
    video = smooth_video(2, 8, 8)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "x.mp4", video, 0)
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "x.avi", video, 8)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"this is not a video" * 10)
    with pytest.raises(ValueError, match="corrupt.mp4"):
        read_video(corrupt)
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.png"):
        read_image(bad_image)
    with pytest.raises(FileNotFoundError, match="nomask.png"):
        read_mask(tmp_path / "nomask.png")


def test_image_and_mask(tmp_path):
    image = smooth_video(1, 10, 12)[0]
    write_image(tmp_path / "im.png", image)
    assert np.array_equal(read_image(tmp_path / "im.png"), image)

    grey = np.zeros((10, 12), np.uint8)
    grey[2:5, 3:7] = 255
    Image.fromarray(grey).save(tmp_path / "mask.png")
    mask = read_mask(tmp_path / "mask.png")
    assert mask.dtype == bool and mask.shape == (10, 12) and mask.sum() == 12

    rgba = np.zeros((10, 12, 4), np.uint8)  # a brushed layer: black paint, alpha marks the stroke
    rgba[5:8, 1:3, 3] = 200
    Image.fromarray(rgba).save(tmp_path / "brush.png")
    assert read_mask(tmp_path / "brush.png").sum() == 6


def test_read_video_resamples_stops_and_downscales_while_decoding(tmp_path):
    """Only the kept frames reach Python: 60 fps -> 8 fps, first 5 frames, scaled to just cover 24x24."""
    from lumiere.io import probe_video

    path = tmp_path / "fast.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=60:duration=2", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.frames) == (320, 180, 60.0, 120)
    frames, fps = read_video(path, fps=8, max_frames=5, cover=(24, 24))
    assert frames.shape == (5, 24, 43, 3) and fps == 8
    assert read_video(path, fps=8)[0].shape[0] == 16  # 2 s at 8 fps
    assert read_video(path, fps=120)[1] == 60.0  # never up-sampled


def test_read_gif_resamples_and_downscales(tmp_path):
    path = tmp_path / "clip.gif"
    write_video(path, smooth_video(12, 40, 60), fps=12)
    frames, fps = read_video(path, fps=4, max_frames=3, cover=(20, 20))
    assert frames.shape == (3, 20, 30, 3) and fps == pytest.approx(4)


def test_mask_pictures_decode_the_same_from_a_file_an_image_or_an_array(tmp_path):
    """One decoder (io.mask_from_array) behind read_mask and the applications' mask argument."""
    from lumiere.preprocessing import mask_tensor

    rgba = np.zeros((16, 16, 4), np.uint8)  # a brushed layer: black paint, alpha marks the stroke
    rgba[4:12, 2:6, 3] = 200
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[4:12, 2:6] = 255  # white = generate
    rgb[0:2, 10:14] = (0, 0, 255)  # pure blue is dark (luma 29), so it is not part of the mask
    for picture in (rgba, rgb):
        Image.fromarray(picture).save(tmp_path / "mask.png")
        from_file = read_mask(tmp_path / "mask.png")
        assert from_file.sum() == 32
        for given in (picture, Image.open(tmp_path / "mask.png")):
            assert np.array_equal(mask_tensor(given, 1, 16, 16)[0].numpy(), from_file)


# ----------------------------------------------------------------------------- bounded reading
def lavfi_clip(path, source="testsrc2=size=320x180:rate=60:duration=2"):
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", source, "-c:v",
                    "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def png_header_only(path, width, height):
    """A PNG whose header claims width x height (a decompression bomb's first bytes; tiny on disk)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"x" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("limits, message", [
    (dict(max_video_seconds=1), "--video 'fast.mp4' is 2 s long; use a clip of at most 1 s."),
    (dict(max_video_side=100), "--video 'fast.mp4' is 320x180; use one at most 100x100 pixels."),
    (dict(max_decode_pixels=1_000_000), "--video 'fast.mp4' holds too many pixels to decode: 320x180 at 60 fps "
                                        "for 2 s is 0.0 billion pixels"),
])
def test_video_over_a_limit_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch, limits, message):
    import lumiere.io
    from lumiere.options import InputLimits

    path = lavfi_clip(tmp_path / "fast.mp4")
    monkeypatch.setattr(lumiere.io, "_read_ffmpeg", lambda *a, **k: pytest.fail("decoded a refused video"))
    with pytest.raises(ValueError) as info:
        read_video(path, fps=8, max_frames=4, limits=InputLimits(**limits), name="--video")
    assert message in str(info.value)


def test_a_lying_header_cannot_expand_the_read(tmp_path, monkeypatch):
    """The frame count is capped inside ffmpeg by the pixel budget at the kept size, not by the header; a
    header that under-counts still gets every frame it is allowed (the buffer grows)."""
    import lumiere.io
    from lumiere.options import InputLimits

    path = lavfi_clip(tmp_path / "fast.mp4")  # 120 frames
    monkeypatch.setattr(lumiere.io, "probe_video", lambda p: lumiere.io.VideoInfo(320, 180, 60.0, 1.0))
    assert read_video(path)[0].shape == (120, 180, 320, 3)
    frames, _ = read_video(path, limits=InputLimits(max_decode_pixels=320 * 180 * 70))
    assert frames.shape == (70, 180, 320, 3)


def test_unreadable_video_is_one_sentence_without_the_ffmpeg_banner(tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("shopping list: eggs, milk\n" * 20)
    with pytest.raises(ValueError) as info:
        read_video(notes, name="--video")
    message = str(info.value)
    assert "\n" not in message and "ffmpeg version" not in message and "configuration:" not in message
    assert message.startswith("Could not read --video 'notes.mp4': it is not a video file") and "Invalid data" in message


def test_images_are_refused_by_their_header_without_warnings(tmp_path):
    import warnings

    from lumiere.options import InputLimits

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would be a second stderr line
        with pytest.raises(ValueError, match=r"^--image: the picture 'huge.png' is far too large \(400 megapixels\); "
                                             r"use one at most 4096x4096 pixels.$"):
            read_image(png_header_only(tmp_path / "huge.png", 20000, 20000), name="--image")
        with pytest.raises(ValueError, match=r"^mask: the picture 'big.png' is 10000x9000; use one at most 4096x4096"):
            read_mask(png_header_only(tmp_path / "big.png", 10000, 9000))
    image = smooth_video(1, 30, 40)[0]
    write_image(tmp_path / "small.png", image)
    with pytest.raises(ValueError, match="is 40x30; use one at most 32x32"):
        read_image(tmp_path / "small.png", limits=InputLimits(max_image_side=32))
    assert np.array_equal(read_image(tmp_path / "small.png"), image)


def test_read_image_turns_photos_the_way_up_they_were_taken(tmp_path):
    image = smooth_video(1, 10, 20)[0]  # 20 wide, 10 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise to display
    Image.fromarray(image).save(tmp_path / "phone.png", exif=exif)
    shown = read_image(tmp_path / "phone.png")
    assert shown.shape == (20, 10, 3) and np.array_equal(shown, np.rot90(image, k=-1))


def test_a_bug_while_decoding_is_not_reported_as_a_damaged_file(tmp_path, monkeypatch):
    """Only what decoders raise for a bad file becomes "could not decode"; a fault in the code keeps its type
    and traceback (the front ends log it as a bug)."""
    import lumiere.io
    from lumiere.errors import InputError

    path = tmp_path / "clip.mp4"
    write_video(path, smooth_video(), 8)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(lumiere.io, "_read_ffmpeg", broken)
    with pytest.raises(ZeroDivisionError):
        read_video(path)

    def damaged(*args, **kwargs):
        raise ValueError("Invalid data found when processing input")

    monkeypatch.setattr(lumiere.io, "_read_ffmpeg", damaged)
    with pytest.raises(InputError, match="Could not decode video 'clip.mp4'"):
        read_video(path)
