"""One contract for every Generate endpoint, over HTTP (gradio_client) against the app serving the tiny pipeline:
the same request with the same seed gives the same video, and each input the endpoint owns changes it.

"The same video" is the decoded frames of the two mp4s (the encoder is deterministic for the same frames);
"changes it" is a mean absolute difference of the decoded frames above ``MIN_CHANGE`` (of 255), well clear of
what lossy encoding alone would make.
"""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
FAST = {"steps": 1, "super_resolve": False}
MIN_CHANGE = 0.5
PROMPT, OTHER_PROMPT = "a red circle moving left on the grass", "two blue square bouncing right on the sea"


class File:
    """An upload: an example from assets/examples, or a mask this module writes (``mask_a``, ``mask_b``)."""

    def __init__(self, name: str, editor: bool = False):
        self.name, self.editor = name, editor

    def value(self, masks: Path):
        path = masks / f"{self.name}.png" if self.name.startswith("mask_") else EXAMPLES / self.name
        upload = handle_file(str(path))
        return {"background": upload, "layers": [], "composite": None} if self.editor else upload


# endpoint -> (its request, {input it owns: another value}). Uploaded clips are cut to the model's clip length
# (num_frames is filled in per model); video_to_video runs 2 steps so each strength runs a different number.
CONTRACT = {
    "/text_to_video": ({"prompt": PROMPT}, {"prompt": OTHER_PROMPT}),
    "/image_to_video": ({"image": File("red_circle_grass.png"), "prompt": PROMPT},
                        {"prompt": OTHER_PROMPT, "image": File("blue_square_sky.png")}),
    "/inpaint": ({"video": File("green_square_sea.mp4"), "mask": File("mask_a", editor=True), "prompt": PROMPT,
                  "num_frames": "clip"},
                 {"prompt": OTHER_PROMPT, "mask": File("mask_b", editor=True)}),
    "/cinemagraph": ({"image": File("yellow_circle_night.png", editor=True), "mask": File("mask_a"), "prompt": PROMPT},
                     {"prompt": OTHER_PROMPT, "image": File("red_circle_grass.png", editor=True),
                      "mask": File("mask_b")}),
    "/stylize": ({"prompt": PROMPT, "style": "first", "style_weight": 0.5},
                 {"prompt": OTHER_PROMPT, "style_weight": 1.0}),
    "/video_to_video": ({"video": File("red_triangle_sky.mp4"), "prompt": PROMPT, "strength": 0.5, "steps": 2,
                         "num_frames": "clip"},
                        {"prompt": OTHER_PROMPT, "strength": 1.0}),
}
CHANGES = [(endpoint, name) for endpoint, (_, changes) in CONTRACT.items() for name in changes]


@pytest.fixture(scope="module")
def app(app_server, tmp_path_factory):
    """(client, manager, mask folder, baselines): the served app, two disjoint masks, and each endpoint's
    output for its CONTRACT request (filled by the determinism test, or on first use)."""
    from PIL import Image

    url, manager = app_server
    masks = tmp_path_factory.mktemp("contract_masks")
    for name, (top, left, bottom, right) in (("mask_a", (8, 8, 64, 64)), ("mask_b", (64, 64, 120, 120))):
        mask = np.zeros((128, 128), np.uint8)
        mask[top:bottom, left:right] = 255
        Image.fromarray(mask).save(masks / f"{name}.png")
    return Client(url, verbose=False), manager, masks, {}


def generate(app, endpoint: str, **changed) -> np.ndarray:
    """The decoded frames of ``endpoint`` called with its CONTRACT request, ``changed`` replacing inputs."""
    from lumiere.io import read_video

    client, manager, masks, _ = app
    request = {**FAST, "seed": 3, **CONTRACT[endpoint][0], **changed}
    for name, value in request.items():
        if isinstance(value, File):
            request[name] = value.value(masks)
        elif value == "clip" and name == "num_frames":
            request[name] = manager.pipe.base_resolution[0]
        elif value == "first" and name == "style":
            request[name] = manager.pipe.styles[0]
    path, seed = client.predict(api_name=endpoint, **request)
    assert seed == 3
    return read_video(path)[0]


def baseline(app, endpoint: str) -> np.ndarray:
    baselines = app[3]
    if endpoint not in baselines:
        baselines[endpoint] = generate(app, endpoint)
    return baselines[endpoint]


@pytest.mark.parametrize("endpoint", list(CONTRACT))
def test_same_request_same_seed_gives_the_same_video(app, endpoint):
    first = baseline(app, endpoint)
    again = generate(app, endpoint)
    assert first.shape == again.shape and np.array_equal(first, again), (
        f"{endpoint}: two identical requests differ by {np.abs(first.astype(float) - again).mean():.3f}")


@pytest.mark.parametrize(("endpoint", "name"), CHANGES, ids=[f"{e.strip('/')}-{n}" for e, n in CHANGES])
def test_each_input_changes_the_video(app, endpoint, name):
    first = baseline(app, endpoint)
    changed = generate(app, endpoint, **{name: CONTRACT[endpoint][1][name]})
    assert changed.shape == first.shape, (endpoint, name, first.shape, changed.shape)
    difference = np.abs(changed.astype(float) - first).mean()
    assert difference > MIN_CHANGE, f"{endpoint}: changing {name} changed the video by only {difference:.3f}"
