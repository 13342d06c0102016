"""End-to-end tests of the Gradio app through gradio_client (the public API of API.md's "Web app" table).

The app runs on the bundled model (the tiny random pipeline from conftest when it is absent or LUMIERE_TEST_TINY=1).
Most calls use steps=1 and super_resolve=False to stay fast; one call runs the defaults (with SSR).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def test_inpaint_with_mask_image_and_outpaint(served, tmp_path):
    client, manager, _ = served
    video = handle_file(str(EXAMPLES / "green_square_sea.mp4"))
    mask = {"background": handle_file(mask_png(tmp_path, (32, 32, 96, 96), size=128)), "layers": [],
            "composite": None}
    path, seed = client.predict(video=video, mask=mask, prompt="a green square moving left", seed=2,
                                api_name="/inpaint", **FAST)
    assert seed == 2
    check_video(path, base_frames(manager))
    path, _ = client.predict(video=video, prompt="a green square moving left", outpaint=True, seed=2,
                             api_name="/inpaint", **FAST)
    check_video(path, base_frames(manager))


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
    expect_error(client, "maximum value 100", prompt="a red circle", steps=1000, super_resolve=False,
                 api_name="/text_to_video")
    expect_error(client, "not in the list of choices", prompt="a red circle", style="no such style", api_name="/stylize", **FAST)
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


def test_admin_actions_are_not_public(served):
    client, _, _ = served
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert names == {"/text_to_video", "/image_to_video", "/inpaint", "/cinemagraph", "/stylize", "/video_to_video"}


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
