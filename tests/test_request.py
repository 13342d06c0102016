"""lumiere.request: requests are the public API: a value per task, validated in one place (``check_values``),
replayable from its log line."""
import dataclasses
import logging

import numpy as np
import pytest
import torch

from lumiere.errors import InputError, InputTypeError
from lumiere.request import (Cinemagraph, ImageToVideo, Options, TextToVideo, VideoToVideo, check_values)

FAST = dict(num_inference_steps=2, super_resolve=False)
PROMPT = "a red circle moving right"


def test_generate_equals_the_named_method_and_replays_from_its_log_line(tiny_pipe, caplog):
    request = TextToVideo("a red circle", Options(seed=4, **FAST))
    assert np.array_equal(tiny_pipe.generate(request), tiny_pipe.text_to_video("a red circle", seed=4, **FAST))

    # A request without a seed draws one; the log line says which, and that seed replays the video.
    unseeded = TextToVideo("a blue square", Options(**FAST))
    with caplog.at_level(logging.INFO, logger="lumiere"):
        first = tiny_pipe.generate(unseeded)
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("text_to_video:")][-1]
    seed = int(line.split("seed=")[1].split()[0])
    assert "prompt='a blue square'" in line and "steps=2" in line
    replay = dataclasses.replace(unseeded, options=dataclasses.replace(unseeded.options, seed=seed))
    assert np.array_equal(tiny_pipe.generate(replay), first)


def test_requests_hold_values_only():
    """No generator or callback inside a request: those are per call (``generate(..., generator=, callback=)``)."""
    for cls in (TextToVideo, ImageToVideo, Cinemagraph, VideoToVideo, Options):
        names = {f.name for f in dataclasses.fields(cls)}
        assert not names & {"generator", "callback"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        TextToVideo("x").prompt = "y"


def test_the_input_and_the_options_change_the_output(tiny_pipe):
    image = np.zeros((16, 16, 3), np.uint8)
    image[4:12, 4:12] = 255
    base = tiny_pipe.generate(ImageToVideo(image, "a red circle", Options(seed=0, **FAST)))
    assert not np.array_equal(base, tiny_pipe.generate(ImageToVideo(255 - image, "a red circle", Options(seed=0, **FAST))))
    assert not np.array_equal(base, tiny_pipe.generate(ImageToVideo(image, "a red circle", Options(seed=1, **FAST))))
    video = np.repeat(image[None], 8, axis=0)
    low = tiny_pipe.generate(VideoToVideo(video, "a red circle", 0.2, Options(seed=0, **FAST)))
    high = tiny_pipe.generate(VideoToVideo(video, "a red circle", 0.9, Options(seed=0, **FAST)))
    assert np.abs(low.astype(float) - video).mean() < np.abs(high.astype(float) - video).mean()


def test_bad_requests_are_refused_before_any_work(tiny_pipe):
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(InputTypeError, match="image_to_video takes no option 'loop'"):
        tiny_pipe.generate(ImageToVideo(image, "x", Options(loop=True)))
    with pytest.raises(InputTypeError, match="unexpected option.*'loop'"):
        tiny_pipe.image_to_video(image, "x", loop=True)
    with pytest.raises(InputTypeError, match="unexpected option.*'stepz'"):
        tiny_pipe.text_to_video("x", stepz=3)
    with pytest.raises(InputTypeError, match="not a generation request"):
        tiny_pipe.generate(Options())
    with pytest.raises(InputError, match="strength must be between 0 and 1, got 2"):
        tiny_pipe.generate(VideoToVideo(np.zeros((8, 16, 16, 3), np.uint8), "x", 2.0))
    with pytest.raises(InputError, match="num_frames must be a multiple of 2"):
        tiny_pipe.generate(TextToVideo("x", Options(num_frames=7)))
    with pytest.raises(InputError, match="either seed or generator"):
        tiny_pipe.generate(TextToVideo("x", Options(seed=1)), generator=torch.Generator().manual_seed(1))


def test_model_free_checks_speak_the_front_ends_names():
    names = {"num_inference_steps": "--steps", "guidance_scale": "--guidance", "strength": "--strength"}
    with pytest.raises(InputError, match="--steps must be at least 1, got 0"):
        check_values("x", Options(num_inference_steps=0), names=names)
    with pytest.raises(InputError, match="--guidance must be between 0 and 20, got 50"):
        check_values("x", Options(guidance_scale=50), names=names)
    with pytest.raises(InputError, match="--strength must be between 0 and 1, got 2"):
        check_values("x", Options(), strength=2, names=names)
    with pytest.raises(InputError, match="prompt is too long"):
        check_values("x" * 501, Options())
    check_values("a red circle", Options(num_frames=7, seed=-1))  # the frame rule needs the model: not checked here


def test_num_videos_per_prompt_stacks_videos_whose_first_is_the_single_result(tiny_pipe):
    steps = []
    videos = tiny_pipe.text_to_video("a red circle", seed=3, num_videos_per_prompt=3,
                                     callback=lambda step, total: steps.append((step, total)), **FAST)
    single = tiny_pipe.text_to_video("a red circle", seed=3, **FAST)
    assert videos.shape == (3, *single.shape)
    assert np.array_equal(videos[0], single) and not np.array_equal(videos[1], videos[0])
    assert steps == [(k, 6) for k in range(1, 7)]  # one count over the three videos' 2 steps each
    with pytest.raises(InputError, match="num_videos_per_prompt must be at least 1"):
        tiny_pipe.text_to_video("a red circle", num_videos_per_prompt=0)


def test_loop_option_is_checked(tiny_pipe):
    from lumiere.errors import InputTypeError

    with pytest.raises(InputTypeError, match="loop"):
        tiny_pipe.text_to_video(PROMPT, loop="yes")
