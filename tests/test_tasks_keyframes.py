"""lumiere.tasks.keyframes: keyframes to video. The (C, M) builder, the request and its program, the training
mask kind."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lumiere.conditioning import keyframes_condition
from lumiere.errors import InputError, InputTypeError
from lumiere.request import Keyframes, Options, keyframe_images
from lumiere.train import masks


@pytest.fixture()
def keyframes_pipe(tiny_pipe):
    return tiny_pipe


def _images(size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def test_keyframes_condition():
    images = {0: torch.rand(3, 8, 8) * 2 - 1, 3: torch.rand(3, 8, 8) * 2 - 1, -1: torch.rand(3, 8, 8) * 2 - 1}
    c, m = keyframes_condition(images, 6)
    assert c.shape == (3, 6, 8, 8) and m.shape == (1, 6, 8, 8)
    for frame, index in ((0, 0), (3, 3), (5, -1)):
        assert torch.equal(c[:, frame], images[index]) and (m[:, frame] == 1).all()
    for frame in (1, 2, 4):
        assert (c[:, frame] == 0).all() and (m[:, frame] == 0).all()
    image = torch.zeros(3, 8, 8)
    for bad in ({}, {6: image}, {-7: image}, {5: image, -1: image}, {0: image, 1: torch.zeros(3, 4, 4)}):
        with pytest.raises(InputError):
            keyframes_condition(bad, 6)


@pytest.mark.parametrize("super_resolve", [False, True])
def test_given_frames_are_exact(keyframes_pipe, super_resolve):
    pipe = keyframes_pipe
    _, height, width = pipe.output_resolution if super_resolve else pipe.base_resolution
    first, middle, last = _images(height, 3)
    options = Options(seed=0, super_resolve=super_resolve)
    video = pipe.generate(Keyframes((first, last), "a red circle moving right", options))
    assert video.shape == (pipe.base_resolution[0], height, width, 3)
    assert np.array_equal(video[0], first) and np.array_equal(video[-1], last)
    assert not np.array_equal(video[1], first)  # the frames between are generated

    video = pipe.generate(Keyframes(keyframe_images(first, last, {3: middle}), "a red circle", options))
    assert np.array_equal(video[0], first) and np.array_equal(video[3], middle) and np.array_equal(video[-1], last)


def test_requested_length_and_any_set_of_frames(keyframes_pipe):
    pipe = keyframes_pipe
    frames = 2 * pipe.base_resolution[0]
    _, height, width = pipe.base_resolution
    a, b = _images(height, 2, seed=1)
    video = pipe.generate(Keyframes({2: a, frames - 3: b}, "a blue square", Options(num_frames=frames, seed=1,
                                                                                    super_resolve=False)))
    assert video.shape == (frames, height, width, 3)
    assert np.array_equal(video[2], a) and np.array_equal(video[frames - 3], b)
    bigger = np.repeat(np.repeat(a, 3, axis=0), 3, axis=1)  # another size: resized like I2V's image
    video = pipe.generate(Keyframes((bigger, b), "a blue square", Options(seed=1, super_resolve=False)))
    assert np.array_equal(video[-1], b)


def test_bad_inputs_are_refused(keyframes_pipe):
    pipe = keyframes_pipe
    frames = pipe.base_resolution[0]
    image = _images(pipe.base_resolution[1], 1)[0]
    bad = [
        {frames: image},                      # out of range
        {-frames - 1: image},                 # out of range from the end
        {frames - 1: image, -1: image},       # the same frame twice
        {0: "not an image"},                  # wrong type
        {0: np.zeros((4, 4, 4, 4), np.uint8)},  # not an (H, W, 3) image
        {1.5: image},                         # not an integer index
        (image, image, image),                # not a pair
        {},                                   # nothing given
        "image.png",
    ]
    for images in bad:
        with pytest.raises(InputError):  # InputTypeError is an InputError too
            pipe.generate(Keyframes(images, "a red circle", Options(seed=0, super_resolve=False)))
    with pytest.raises(InputError):
        pipe.generate(Keyframes((image, image), "a red circle", Options(loop=True)))
    with pytest.raises(InputError):
        keyframe_images(image, None, {0: image})
    with pytest.raises(InputError):
        keyframe_images()
    assert set(keyframe_images(image, image, {4: image})) == {0, -1, 4}


def test_mask_probabilities_keep_the_old_proportions():
    assert masks.MASK_KINDS[-1] == "keyframes"
    assert sum(masks.MASK_PROBABILITIES) == pytest.approx(1.0)
    old = np.array([0.35, 0.2, 0.15, 0.15, 0.15])
    others = np.array(masks.MASK_PROBABILITIES[:-1])
    assert np.allclose(others / others.sum(), old)


def test_mask_shares_choose_the_kinds_drawn_and_bad_shares_are_refused():
    """``stages.conditional.mask_shares``: the listed kinds only, in the given ratio; the default without."""
    assert masks.mask_probabilities(None) == masks.mask_probabilities({}) == masks.MASK_PROBABILITIES
    old = masks.mask_probabilities({"first_frame": 0.35, "box": 0.2, "strokes": 0.15, "cinemagraph": 0.15,
                                    "outpaint": 0.15})
    assert old[-1] == 0 and np.allclose(old[:-1], [0.35, 0.2, 0.15, 0.15, 0.15])
    assert masks.mask_probabilities({"first_frame": 3, "keyframes": 1}) == (0.75, 0, 0, 0, 0, 0.25)
    rng = np.random.default_rng(0)
    video = torch.rand(3, 16, 8, 8) * 2 - 1
    kinds = [masks.random_condition(video, rng, probabilities=masks.mask_probabilities({"first_frame": 3, "box": 1})).kind
             for _ in range(200)]
    assert set(kinds) == {"first_frame", "box"} and 0.65 < kinds.count("first_frame") / 200 < 0.85
    for shares, message in (({"keyframe": 1}, "unknown mask kind 'keyframe'"), ({"box": -1}, r"mask_shares\.box must be"),
                            ({"box": "1"}, r"mask_shares\.box must be"), ({"box": 0}, "sum to 0")):
        with pytest.raises(InputError, match=message):
            masks.mask_probabilities(shares)


def test_keyframes_mask_kind_draws_valid_conditions():
    rng = np.random.default_rng(0)
    video = torch.rand(3, 16, 8, 8) * 2 - 1
    pairs = 0
    only_keyframes = masks.mask_probabilities({"keyframes": 1})
    for _ in range(60):
        draw = masks.random_condition(video, rng, probabilities=only_keyframes)
        assert draw.kind == "keyframes" and torch.equal(draw.target, video)
        given = [t for t in range(16) if draw.keep[0, t].any()]
        assert given[0] == 0 and 2 <= len(given) <= 3
        pairs += given == [0, 15]
        known = torch.zeros(16, dtype=torch.bool)
        known[given] = True
        assert set(draw.keep.unique().tolist()) == {0.0, 1.0}
        assert (draw.keep[0, known] == 1).all() and (draw.keep[0, ~known] == 0).all()
        assert torch.equal(draw.condition[:, known], video[:, known]) and (draw.condition[:, ~known] == 0).all()
    assert 0.4 < pairs / 60 < 0.8  # first + last with probability FIRST_LAST_PROBABILITY (0.6)
    assert masks.random_keyframes(1, rng) == [0]
    assert masks.random_keyframes(2, rng) == [0, 1]


def test_keyframes_to_video_wrapper_holds_first_and_last(keyframes_pipe):
    first, last = _images(16, 2)
    video = keyframes_pipe.keyframes_to_video(first, last, "a red circle moving right", seed=0, num_inference_steps=2,
                                              super_resolve=False)
    assert np.array_equal(video[0], first) and np.array_equal(video[-1], last)
    with pytest.raises(InputTypeError, match="unexpected option.*'loop'"):
        keyframes_pipe.keyframes_to_video(first, last, "x", loop=True)
