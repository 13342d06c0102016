"""End-to-end tests of the Gradio app through gradio_client (the public API the app serves, see docs/api.md).

The app serves the tiny random pipeline from conftest (a request takes a fraction of a second). The few checks
that are about the bundled model (what the header and examples promise, the examples' masks at its resolution,
its pre-rendered example outputs) are marked ``bundled`` and read assets/ without serving it.
Most calls use steps=1 and super_resolve=False to stay fast; one call runs the defaults (with SSR).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

EXAMPLES = ROOT / "assets" / "examples"
FAST = {"steps": 1, "super_resolve": False}


@pytest.fixture(scope="module")
def served(app_server):
    """(client, manager, url) for one app launched for this module."""
    url, manager = app_server
    return Client(url, verbose=False), manager, url


def check_video(path, frames: int, resolution=None):
    """A decodable, browser-playable (H.264 yuv420p) mp4 with the expected frame count."""
    import imageio_ffmpeg

    from lumiere.io import read_video

    path = Path(path)
    assert path.suffix == ".mp4" and path.is_file()
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    reader.close()
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p"), meta
    video, fps = read_video(path)
    assert video.dtype == np.uint8 and video.shape[0] == frames
    if resolution is not None:
        assert video.shape[1:3] == tuple(resolution)
    return video


def base_frames(manager) -> int:
    return manager.pipe.base_resolution[0]


def upload_frames(manager, path) -> int:
    """The frames an uploaded clip gives at the model's fps (the video tabs keep the upload's duration)."""
    from lumiere.io import read_video

    return read_video(path, fps=manager.pipe.fps)[0].shape[0]


def bundled_config() -> dict:
    """The bundled model's pipeline config (assets/lumiere-tiny/model_index.json), read without loading it."""
    import json

    from lumiere.hub import BUNDLED_MODEL_DIR

    index = BUNDLED_MODEL_DIR / "model_index.json"
    if not index.is_file():
        pytest.skip("the bundled model is not in assets/")
    return json.loads(index.read_text())["config"]


def mask_png(tmp_path, box=(4, 4, 12, 12), size=16, name="mask.png") -> str:
    from PIL import Image

    mask = np.zeros((size, size), np.uint8)
    top, left, bottom, right = box
    mask[top:bottom, left:right] = 255
    path = tmp_path / name
    Image.fromarray(mask).save(path)
    return str(path)


# ----------------------------------------------------------------------------- valid requests
def test_text_to_video_defaults_returns_playable_mp4_and_seed(served):
    client, manager, _ = served
    path, seed = client.predict(prompt="a red circle bouncing", seed=0, api_name="/text_to_video")
    assert seed == 0
    t, h, w = manager.pipe.output_resolution
    check_video(path, t, (h, w))
    assert "seed0" in Path(path).name


def test_text_to_video_frames_seed_determinism_and_random_seed(served):
    client, manager, _ = served
    frames = 2 * base_frames(manager)
    a, seed_a = client.predict(prompt="a blue square moving right", seed=7, num_frames=frames,
                               api_name="/text_to_video", **FAST)
    b, _ = client.predict(prompt="a blue square moving right", seed=7, num_frames=frames,
                          api_name="/text_to_video", **FAST)
    assert seed_a == 7 and Path(a).name != Path(b).name  # unique names, same content
    assert np.array_equal(check_video(a, frames), check_video(b, frames))
    _, random_seed = client.predict(prompt="a blue square moving right", seed=-1, api_name="/text_to_video", **FAST)
    assert isinstance(random_seed, (int, float)) and random_seed >= 0


def test_reference_guided_text_to_video(served):
    client, manager, _ = served
    path, seed = client.predict(prompt="a green triangle rotating", reference_guided=True, seed=3,
                                api_name="/text_to_video", **FAST)
    assert seed == 3
    check_video(path, base_frames(manager))


def test_image_to_video(served):
    client, manager, _ = served
    path, seed = client.predict(image=handle_file(str(EXAMPLES / "red_circle_grass.png")),
                                prompt="a red circle moving right", seed=1, api_name="/image_to_video", **FAST)
    assert seed == 1
    check_video(path, base_frames(manager))


def test_image_to_video_with_a_last_frame_ends_on_it(served, tmp_path):
    """First and last frame given (keyframes): the clip ends on the last image (up to H.264 rounding) and
    differs from the clip without it."""
    from PIL import Image

    from lumiere.io import read_video

    client, manager, _ = served
    last = np.zeros((64, 64, 3), np.uint8)
    last[8:40, 24:56] = (250, 220, 40)
    Image.fromarray(last).save(tmp_path / "last.png")
    first = handle_file(str(EXAMPLES / "red_circle_grass.png"))
    ending, _ = client.predict(image=first, prompt="a red circle moving right",
                               last_image=handle_file(str(tmp_path / "last.png")), seed=1,
                               api_name="/image_to_video", **FAST)
    plain, _ = client.predict(image=first, prompt="a red circle moving right", seed=1, api_name="/image_to_video",
                              **FAST)
    frames, plain_frames = read_video(ending)[0], read_video(plain)[0]
    height, width = frames.shape[1:3]
    expected = np.asarray(Image.fromarray(last).resize((width, height), Image.BICUBIC)).astype(float)
    assert np.abs(frames[-1].astype(float) - expected).mean() < 12
    assert np.abs(frames[-1].astype(float) - plain_frames[-1]).mean() > 12


def test_inpaint_with_mask_image_and_outpaint(served, tmp_path):
    client, manager, _ = served
    video = handle_file(str(EXAMPLES / "green_square_sea.mp4"))
    mask = {"background": handle_file(mask_png(tmp_path, (32, 32, 96, 96), size=128)), "layers": [],
            "composite": None}
    frames = upload_frames(manager, EXAMPLES / "green_square_sea.mp4")
    path, seed = client.predict(video=video, mask=mask, prompt="a green square moving left", seed=2,
                                api_name="/inpaint", **FAST)
    assert seed == 2
    check_video(path, frames)
    path, _ = client.predict(video=video, prompt="a green square moving left", outpaint=True, seed=2,
                             api_name="/inpaint", **FAST)
    check_video(path, frames)


def test_cinemagraph_with_brushed_layer_and_with_separate_mask(served, tmp_path):
    client, manager, _ = served
    editor = {"background": handle_file(str(EXAMPLES / "yellow_circle_night.png")),
              "layers": [handle_file(str(EXAMPLES / "cinemagraph_mask_layer.png"))], "composite": None}
    path, seed = client.predict(image=editor, prompt="a yellow circle bouncing", seed=4,
                                api_name="/cinemagraph", **FAST)
    assert seed == 4
    check_video(path, base_frames(manager))
    plain = {"background": handle_file(str(EXAMPLES / "yellow_circle_night.png")), "layers": [], "composite": None}
    path, _ = client.predict(image=plain, mask=handle_file(mask_png(tmp_path, (20, 20, 100, 100), size=128)),
                             prompt="a yellow circle bouncing", seed=4, api_name="/cinemagraph", **FAST)
    check_video(path, base_frames(manager))


def test_stylize(served):
    client, manager, _ = served
    style = manager.pipe.styles[0]
    path, seed = client.predict(prompt="an orange circle bouncing", style=style, style_weight=0.75, seed=5,
                                api_name="/stylize", **FAST)
    assert seed == 5
    check_video(path, base_frames(manager))


def test_video_to_video(served):
    client, manager, _ = served
    path, seed = client.predict(video=handle_file(str(EXAMPLES / "red_triangle_sky.mp4")),
                                prompt="a white triangle moving down", strength=0.6, seed=6,
                                api_name="/video_to_video", **FAST)
    assert seed == 6
    check_video(path, upload_frames(manager, EXAMPLES / "red_triangle_sky.mp4"))


def test_a_long_upload_comes_back_as_long(served, tmp_path):
    """Video to video and inpainting keep the upload's duration by default (3 clips in, 3 clips out); a
    frame count given takes the video's first frames."""
    from lumiere.io import write_video

    client, manager, _ = served
    frames, fps = 3 * base_frames(manager), manager.pipe.fps
    video = np.full((frames, 32, 32, 3), 60, np.uint8)
    video[:, 10:20, :] = np.linspace(0, 255, frames, dtype=np.uint8)[:, None, None, None]
    write_video(tmp_path / "long.mp4", video, fps)
    upload = handle_file(str(tmp_path / "long.mp4"))
    path, _ = client.predict(video=upload, prompt="a white triangle", strength=0.3, seed=1,
                             api_name="/video_to_video", **FAST)
    check_video(path, frames)
    path, _ = client.predict(video=upload, prompt="a white triangle", outpaint=True, seed=1,
                             api_name="/inpaint", **FAST)
    check_video(path, frames)
    path, _ = client.predict(video=upload, prompt="a white triangle", strength=0.3, seed=1,
                             num_frames=base_frames(manager), api_name="/video_to_video", **FAST)
    check_video(path, base_frames(manager))


# ----------------------------------------------------------------------------- invalid requests
def expect_error(client, fragment: str, **kwargs):
    with pytest.raises(Exception) as info:
        client.predict(**kwargs)
    assert fragment.lower() in str(info.value).lower(), str(info.value)


def test_invalid_inputs_give_actionable_errors_and_app_keeps_serving(served, tmp_path):
    client, manager, _ = served
    expect_error(client, "prompt is empty", prompt="   ", seed=0, api_name="/text_to_video", **FAST)
    expect_error(client, "multiple of", prompt="a red circle", num_frames=base_frames(manager) + 1,
                 api_name="/text_to_video", **FAST)
    expect_error(client, "Denoising steps (steps) must be between 1 and 100, got 1000", prompt="a red circle",
                 steps=1000, super_resolve=False, api_name="/text_to_video")
    expect_error(client, "Style 'no such style' is not available: choose one of", prompt="a red circle",
                 style="no such style", api_name="/stylize", **FAST)
    empty = {"background": handle_file(str(EXAMPLES / "yellow_circle_night.png")), "layers": [], "composite": None}
    expect_error(client, "mask is empty", image=empty, prompt="a yellow circle bouncing", api_name="/cinemagraph",
                 **FAST)
    black = {"background": handle_file(mask_png(tmp_path, (0, 0, 0, 0), size=128, name="black.png")),
             "layers": [], "composite": None}
    expect_error(client, "mask is empty", video=handle_file(str(EXAMPLES / "green_square_sea.mp4")), mask=black,
                 prompt="a green square", api_name="/inpaint", **FAST)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    expect_error(client, "could not", video=handle_file(str(broken)), prompt="a red circle",
                 api_name="/video_to_video", **FAST)
    # Still serving after all of that.
    path, seed = client.predict(prompt="a red circle bouncing", seed=11, api_name="/text_to_video", **FAST)
    assert seed == 11
    check_video(path, base_frames(manager))


def png_bytes(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header claims width x height (the pixel data may be missing: headers are checked first)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_bad_files_and_values_name_the_field_and_the_fix(served, tmp_path, capfd, caplog):
    """Each malformed request says what is wrong and what to do; none logs a traceback; the app keeps serving."""
    import logging

    client, manager, _ = served
    caplog.set_level(logging.INFO, logger="lumiere.app")
    text_as_png = tmp_path / "notes.png"
    text_as_png.write_text("shopping list: eggs, milk\n" * 20)
    random_png = tmp_path / "noise.png"
    random_png.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    good = (EXAMPLES / "red_circle_grass.png").read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[: len(good) // 2])
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_bytes(20000, 20000, b"x" * 64))
    image = EXAMPLES / "red_circle_grass.png"
    i2v = {"prompt": "a red circle moving right", "api_name": "/image_to_video", **FAST}
    expect_error(client, "Image: the file 'notes.png' is not an image file", image=handle_file(str(text_as_png)), **i2v)
    expect_error(client, "Image: the file 'noise.png' is not an image file", image=handle_file(str(random_png)), **i2v)
    expect_error(client, "Image: the file 'truncated.png' is truncated or damaged", image=handle_file(str(truncated)), **i2v)
    expect_error(client, "is far too large (400 megapixels); use one at most 4096x4096", image=handle_file(str(huge)), **i2v)
    plain = {"background": handle_file(str(EXAMPLES / "yellow_circle_night.png")), "layers": [], "composite": None}
    expect_error(client, "Mask: the file 'noise.png' is not an image file", image=plain, mask=handle_file(str(random_png)),
                 prompt="a yellow circle bouncing", api_name="/cinemagraph", **FAST)
    t2v = {"prompt": "a red circle", "api_name": "/text_to_video"}
    expect_error(client, "Denoising steps (steps) must be a whole number, got 'many'", steps="many", **t2v)
    expect_error(client, "Guidance scale must be a number between 0 and 20, got 'high'",
                 guidance_scale="high", **FAST, **t2v)
    expect_error(client, "Seed must be a whole number, got 'lucky'", seed="lucky", **FAST, **t2v)
    expect_error(client, "Seed must be a whole number, got 3.7", seed=3.7, **FAST, **t2v)
    expect_error(client, "Seed must be a whole number, got '3.7'", seed="3.7", **FAST, **t2v)
    expect_error(client, "Super-resolution (super_resolve) must be true or false, got 'yes'", super_resolve="yes",
                 steps=1, **t2v)
    expect_error(client, "Super-resolution (super_resolve) must be true or false, got 2", super_resolve=2, steps=1,
                 **t2v)
    expect_error(client, "Prompt must be text, got a list", prompt=["a red circle"], api_name="/text_to_video", **FAST)
    expect_error(client, "Frames (num_frames) must be a whole number, got 16.5", num_frames=16.5, **FAST, **t2v)
    expect_error(client, "Playback fps (fps) must be between 1 and 60, got 0", fps=0, **FAST, **t2v)
    expect_error(client, "Guidance scale must be between 0 and 20, got 50", guidance_scale=50, **FAST, **t2v)
    expect_error(client, "Strength must be between 0 and 1, got 2", video=handle_file(str(EXAMPLES / "red_triangle_sky.mp4")),
                 prompt="a red circle", strength=2, api_name="/video_to_video", **FAST)
    image_path = str(image)
    expect_error(client, "Image got", image=image_path, **i2v)  # a server path, not an upload
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    rejected = [r for r in caplog.records if r.name == "lumiere.app" and "rejected" in r.getMessage()]
    assert len(rejected) >= 15 and all("\n" not in r.getMessage() for r in rejected)
    path, seed = client.predict(prompt="a red circle bouncing", seed=12, api_name="/text_to_video", **FAST)
    assert seed == 12
    check_video(path, base_frames(manager))


def test_too_few_values_in_a_raw_api_call_is_explained(served):
    """Refused when posted (HTTP 422, Gradio's validation-error shape), naming every value the endpoint takes."""
    import httpx

    _, _, url = served
    response = httpx.post(url.rstrip("/") + "/gradio_api/call/text_to_video", json={"data": ["a red circle"]},
                          timeout=30)
    assert response.status_code == 422
    message = response.json()["detail"][0]["message"]
    assert "/text_to_video takes 11 values (prompt, negative_prompt, reference_guided, loop, seed" in message
    assert "the request sent 1. Send exactly these, in this order, or call it by name." in message


def test_seeds_are_exact_up_to_2_63_minus_1(served):
    client, manager, _ = served
    top = 2**63 - 1
    path, seed = client.predict(prompt="a blue square", seed=top, api_name="/text_to_video", **FAST)
    assert seed == top and f"seed{top}" in Path(path).name
    path, seed = client.predict(prompt="a blue square", seed=str(top), api_name="/text_to_video", **FAST)
    assert seed == top
    a, seed_a = client.predict(prompt="a blue square", seed=2**53, api_name="/text_to_video", **FAST)
    b, seed_b = client.predict(prompt="a blue square", seed=2**53 + 1, api_name="/text_to_video", **FAST)
    assert (seed_a, seed_b) == (2**53, 2**53 + 1)  # a float would make these the same seed
    assert f"seed{2**53 + 1}" in Path(b).name
    expect_error(client, "Seed must be at most 2^63-1", prompt="a blue square", seed=2**63,
                 api_name="/text_to_video", **FAST)
    _, random_seed = client.predict(prompt="a blue square", seed="", api_name="/text_to_video", **FAST)
    assert isinstance(random_seed, int) and 0 <= random_seed < 2**31


def test_one_client_cannot_fill_the_queue(served):
    """Per-visitor limit (2 jobs queued or running): the third is refused with a message; others still get in.
    Stop (server side, for that visitor's session only) ends each of its jobs with an error at once.

    Not ``Job.cancel()`` on the queued job: in gradio_client that closes the client's event stream, which
    leaves the client's other job unanswered (its result would only ever time out)."""
    import time

    from gradio_client.exceptions import ValidationError

    _, manager, url = served
    hog, other = Client(url, verbose=False), Client(url, verbose=False)
    slow = {"prompt": "a red circle bouncing", "steps": 100, "super_resolve": False, "api_name": "/text_to_video"}
    running = hog.submit(**slow)
    deadline = time.monotonic() + 60
    while not manager.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert manager.busy
    waiting = hog.submit(**slow)
    time.sleep(0.5)
    refused = hog.submit(**slow)
    with pytest.raises(ValidationError) as info:
        refused.result(timeout=30)
    assert "already have 2 generations waiting or running" in str(info.value)
    fair = other.submit(prompt="a green square", seed=1, api_name="/text_to_video", **FAST)
    for job in (running, waiting):  # each as it runs; the session scope keeps the other visitor's job safe
        deadline = time.monotonic() + 60
        while not job.done() and time.monotonic() < deadline:
            manager.cancel(hog.session_hash)
            time.sleep(0.1)
        with pytest.raises(Exception, match="stopped"):  # the stopped job's error type is gradio_client's choice
            job.result(timeout=30)
    path, seed = fair.result(timeout=120)
    assert seed == 1
    check_video(path, base_frames(manager))


def test_video_is_refused_by_its_header_before_decoding(monkeypatch, tmp_path):
    """A clip whose size x rate x length would decode to billions of pixels is refused without decoding it."""
    import lumiere.io
    from app import inputs

    clip = tmp_path / "bomb.mp4"
    clip.write_bytes(b"\x00" * 100)
    monkeypatch.setattr(lumiere.io, "probe_video", lambda path: lumiere.io.VideoInfo(1920, 1920, 60.0, 20.0))
    monkeypatch.setattr(lumiere.io, "read_video", lambda *a, **k: pytest.fail("decoded a refused video"))
    with pytest.raises(inputs.InputError, match=r"1920x1920 at 60 fps for 20 s is 4.4 billion pixels"):
        inputs.load_video(str(clip), 16, 8.0, (128, 128))


def test_uploaded_video_decodes_only_what_the_model_uses(tmp_path):
    """A 60 fps 720p clip: only num_frames frames at the model's fps, scaled down while decoding."""
    import subprocess

    import imageio_ffmpeg

    from app import inputs

    clip = tmp_path / "fast.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=1280x720:rate=60:duration=3", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    frames = inputs.load_video(str(clip), 16, 8.0, (128, 128))
    assert frames.shape == (16, 128, 228, 3)  # 16 frames of 2 s at 8 fps (not 180), 720p -> just covers 128
    short = inputs.load_video(str(clip), 64, 8.0, (128, 128))
    assert short.shape[0] == 24  # the whole 3 s clip at 8 fps; the pipeline stretches it


RSS_PROBE = """
import resource, sys
from app import inputs
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
frames = inputs.load_video(sys.argv[1], int(sys.argv[2]), 8.0, (128, 128))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(frames.shape[0], (after - before) // 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_small_high_fps_upload_keeps_peak_memory_bounded(tmp_path):
    """A 34 KB 1280x720 / 60 fps / 19 s clip passes the header checks (1.05 billion pixels) and would decode
    to 3.1 GB of RGB frames. Decoding what the longest request uses (64 frames at 8 fps, scaled to cover the
    128x128 output) must raise the app process's peak RSS by under 64 MB, with the ffmpeg decoder under
    256 MB (measured: +12 MB and 78 MB)."""
    import subprocess

    import imageio_ffmpeg

    clip = tmp_path / "bomb.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "color=c=blue:size=1280x720:rate=60:duration=19", "-vf",
                    "drawbox=x='mod(t*600,1200)':y=300:w=80:h=80:color=red:t=fill", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip)], check=True)
    assert clip.stat().st_size < 300_000
    probe = subprocess.run([sys.executable, "-c", RSS_PROBE, str(clip), "64"], capture_output=True, text=True,
                           cwd=ROOT, check=True)
    frames, python_growth_mb, decoder_peak_mb = map(int, probe.stdout.split())
    assert frames == 64
    assert python_growth_mb < 64, f"decoding raised the peak RSS by {python_growth_mb} MB"
    assert decoder_peak_mb < 256, f"the decoder peaked at {decoder_peak_mb} MB"


def test_app_has_its_own_gradio_cache_dir(monkeypatch, tmp_path):
    from app.ui import configure_cache_dir

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    monkeypatch.delenv("GRADIO_EXAMPLES_CACHE", raising=False)
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    directory = Path(configure_cache_dir())
    assert directory.parent == tmp_path and directory.name.startswith("lumiere-app")
    assert directory != Path("/tmp/gradio") and directory.is_dir()
    from gradio.utils import get_cache_folder, get_upload_folder

    assert Path(get_upload_folder()) == directory
    assert get_cache_folder().is_relative_to(directory)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "mine"))
    assert configure_cache_dir() == str(tmp_path / "mine")


def test_ffmpeg_probes_do_not_run_python_between_fork_and_exec(served):
    """The app probes uploads with imageio-ffmpeg, whose default preexec_fn can deadlock a forked child in a
    threaded server (observed: a probe hung and blocked the Generate queue); the app turns it off."""
    from imageio_ffmpeg._utils import _popen_kwargs

    assert _popen_kwargs(prevent_sigint=True)["preexec_fn"] is None


ADVANCED_PARAMS = ["seed", "num_frames", "steps", "guidance_scale", "super_resolve", "sampler", "fps"]
API = {  # the public contract (docs/api.md): each endpoint's parameters, in order
    "/text_to_video": ["prompt", "negative_prompt", "reference_guided", "loop"] + ADVANCED_PARAMS,
    "/image_to_video": ["image", "prompt", "last_image"] + ADVANCED_PARAMS,
    "/inpaint": ["video", "prompt", "mask", "outpaint", "outpaint_border"] + ADVANCED_PARAMS,
    "/cinemagraph": ["image", "prompt", "mask", "loop"] + ADVANCED_PARAMS,
    "/stylize": ["prompt", "style", "style_weight", "loop"] + ADVANCED_PARAMS,
    "/video_to_video": ["video", "prompt", "strength"] + ADVANCED_PARAMS,
}


def test_public_endpoints_and_their_parameters(served):
    """Only the six Generate endpoints are public (no admin actions), each with its documented parameters."""
    client, _, _ = served
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {name: [p["parameter_name"] for p in info["parameters"]] for name, info in endpoints.items()} == API


# ----------------------------------------------------------------------------- app.py
def test_app_flags_and_secure_defaults(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("lumiere_app_entry", ROOT / "app.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    for name in ("SPACE_ID", "PORT", "GRADIO_SERVER_PORT", "GRADIO_SERVER_NAME", "LUMIERE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    args = entry.parse_args([])
    assert (args.host, args.port, args.model, args.share) == ("127.0.0.1", 7860, None, False)
    monkeypatch.setenv("SPACE_ID", "user/lumiere")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    assert (entry.parse_args([]).host, entry.parse_args([]).port) == ("0.0.0.0", 7999)
    monkeypatch.setenv("PORT", "8080")
    args = entry.parse_args(["--host", "10.0.0.1", "--model", "some/repo", "--share"])
    assert (args.host, args.port, args.model, args.share) == ("10.0.0.1", 8080, "some/repo", True)
    assert entry.parse_args(["--port", "9000"]).port == 9000


def test_outputs_are_unique_files_in_gradio_temp_dir():
    from gradio.utils import get_upload_folder

    from app.outputs import save_outputs

    video = np.zeros((4, 16, 16, 3), np.uint8)
    a = save_outputs(video, 8, "text_to_video", 3)
    b = save_outputs(video, 8, "text_to_video", 3)
    assert a[0] != b[0] and all(Path(p).is_file() for p in a + b)
    assert all(Path(p).resolve().is_relative_to(Path(get_upload_folder()).resolve()) for p in a)
    assert a[1].endswith(".gif") and "seed3" in Path(a[0]).name


# ----------------------------------------------------------------------------- an honest app (the bundled model's)
@pytest.mark.bundled
def test_header_and_examples_promise_only_what_the_bundled_model_does():
    """Its model card measures growing / shrinking at 0 % and circling splitting into blobs; left, right, up,
    down work."""
    from app.examples import EXAMPLES
    from app.ui import ABOUT, BUNDLED_ABOUT

    header = " ".join((ABOUT + BUNDLED_ABOUT).split()).lower()
    prompts = [row["prompt"].lower() for rows in EXAMPLES.values() for row in rows]
    for motion in ("grow", "shrink", "circling"):
        assert motion not in header and not any(motion in prompt for prompt in prompts), motion
    assert "left, right, up or down" in header


def test_unknown_prompt_words_are_named_with_the_words_the_model_knows(served):
    from app.ui import unknown_words_note

    pipe = served[1].pipe
    note = unknown_words_note(pipe, "a red circle zooming on the grass")
    assert "“zooming”" in note and "ignore it" in note
    assert all(word in note for word in pipe.known_words())
    assert unknown_words_note(pipe, "a red circle moving left on the grass") is None


@pytest.mark.bundled
def test_inpaint_example_mask_covers_the_objects_path_in_every_frame():
    """The example regenerates the square: its mask must hold the square in every frame, at the brush's
    resolution and at the model's (the example's square used to poke out in frames 0-4 and 11-15)."""
    from PIL import Image

    from app.make_examples import INPAINT_CLIP, clip, object_path
    from lumiere.io import read_video
    from lumiere.preprocessing import mask_tensor

    video, _ = read_video(EXAMPLES / "green_square_sea.mp4")
    assert np.abs(video.astype(int) - clip(*INPAINT_CLIP).astype(int)).mean() < 3  # the clip the path is of
    layer = np.asarray(Image.open(EXAMPLES / "inpaint_mask_layer.png").convert("RGBA"))
    mask = inputs_mask(layer, video.shape[1:3])
    path = object_path(*INPAINT_CLIP)
    assert path.any(axis=(1, 2)).all()
    assert [int((frame & ~mask).sum()) for frame in path] == [0] * len(path)
    assert mask.mean() < 0.5  # still a region, not the whole frame
    _, height, width = bundled_config()["base_resolution"]  # 32 x 32
    assert video.shape[1] % height == 0 and video.shape[2] % width == 0
    cell_h, cell_w = video.shape[1] // height, video.shape[2] // width
    base = mask_tensor(mask, 1, height, width)[0].numpy()
    blocks = path.reshape(len(path), height, cell_h, width, cell_w).any(axis=(2, 4))
    assert not (blocks & ~base).any()


@pytest.mark.bundled
def test_prerendered_example_outputs_are_the_bundled_models_clips():
    """The app shows assets/examples/outputs as the bundled model's results: each is a playable clip at the
    bundled model's output size (base height and width times the SSR scale) and of the example's length (the
    frames it asks for, its video's, or the model's clip)."""
    from app.examples import EXAMPLES as TABS
    from app.examples import output_path, outputs_available
    from lumiere.io import read_video

    config = bundled_config()
    frames, height, width = config["base_resolution"]
    scale = config["ssr"]["scale"]
    rendered = [tab for tab in TABS if outputs_available(tab)]
    assert rendered, "no tab has its pre-rendered example outputs"
    for tab in rendered:
        for index, example in enumerate(TABS[tab]):
            length = (read_video(example["video"], fps=config["fps"])[0].shape[0] if "video" in example
                      else example.get("num_frames", frames))
            check_video(output_path(tab, index), length, (height * scale, width * scale))


def inputs_mask(layer: np.ndarray, shape) -> np.ndarray:
    """The mask the app makes of a brushed layer (``app.inputs.mask_from_editor``)."""
    from app import inputs

    background = np.zeros((*layer.shape[:2], 4), np.uint8)
    background[..., 3] = 255
    return np.asarray(inputs.mask_from_editor({"background": background, "layers": [layer], "composite": None},
                                              tuple(shape)))


def test_app_loop_checkbox_reaches_the_pipeline(tiny_pipeline_dir, monkeypatch):
    """The Loop checkbox of the Text to video, Cinemagraph and Stylized tabs is the endpoint parameter
    ``loop`` and arrives at the pipeline call; a non-boolean is refused."""
    from app.model_manager import ModelManager
    from app.ui import CinemagraphTab, StylizeTab, Studio, TextToVideoTab
    from lumiere import LumierePipeline

    pipe = LumierePipeline.from_pretrained(tiny_pipeline_dir, device="cpu")
    calls = []
    original = pipe.generate

    def spy(request, **kwargs):
        calls.append((request.task, request.options.loop, request.options.style))
        return original(request, **kwargs)

    monkeypatch.setattr(pipe, "generate", spy)
    studio = Studio(ModelManager(pipeline=pipe))
    fast = dict(seed=2, steps=1, super_resolve=False)
    TextToVideoTab(studio).endpoint("a red circle moving right", loop=True, **fast)
    TextToVideoTab(studio).endpoint("a red circle moving right", **fast)
    StylizeTab(studio).endpoint("a red circle moving right", style=pipe.styles[0], loop=True, **fast)
    image = np.full((16, 16, 3), 90, np.uint8)
    mask = np.zeros((16, 16, 4), np.uint8)
    mask[4:12, 4:12] = 255
    CinemagraphTab(studio).endpoint({"background": image, "layers": [mask], "composite": None}, "a red circle moving right", loop=True,
                                    **fast)
    assert calls == [("text_to_video", True, None), ("text_to_video", False, None),
                     ("text_to_video", True, pipe.styles[0]), ("cinemagraph", True, None)]
    import gradio as gr

    with pytest.raises(gr.Error, match="Loop"):
        TextToVideoTab(studio).endpoint("a red circle moving right", loop="yes", **fast)
