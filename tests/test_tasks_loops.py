"""lumiere.tasks: seamless loops end to end. ``loop=True`` changes the video (the SSR taking wrapping windows when
its window is shorter than the clip), ``loop=False`` changes nothing."""
import numpy as np

from lumiere.models.temporal import TemporalAttentionBlock, TemporalConv

PROMPT = "a red circle moving right"


def circular_flags(model) -> list[bool]:
    return [model.circular] + [m.circular for m in model.modules() if isinstance(m, (TemporalConv, TemporalAttentionBlock))]


def test_loop_false_is_bit_identical_to_a_model_that_never_looped(tiny_pipe):
    """The mode never leaks: after a loop=True call and entering/leaving looping() by hand, loop=False (and
    the option left out) gives exactly the video computed before any of it, with SSR."""
    kwargs = dict(seed=3, num_inference_steps=2, super_resolve=True)
    before = tiny_pipe.text_to_video(PROMPT, **kwargs)
    looped = tiny_pipe.text_to_video(PROMPT, loop=True, **kwargs)
    for name in ("base", "ssr"):
        model = tiny_pipe.get_component(name)
        with model.looping():
            assert all(circular_flags(model))
        assert not any(circular_flags(model))
    assert np.array_equal(tiny_pipe.text_to_video(PROMPT, loop=False, **kwargs), before)
    assert np.array_equal(tiny_pipe.text_to_video(PROMPT, **kwargs), before)
    assert not np.array_equal(looped, before)  # the option does something


def test_loop_with_ssr_windows_runs_and_keeps_shape(tiny_pipe):
    """The tiny SSR's window (4) is shorter than the clip (8): loop=True takes the wrapping windows."""
    video = tiny_pipe.text_to_video(PROMPT, seed=1, num_inference_steps=1, loop=True)
    assert video.shape == (tiny_pipe.output_resolution[0], *tiny_pipe.output_resolution[1:], 3)
