"""lumiere.progress: the step callback. Two-argument callbacks are called as before; a three-argument one also
gets each stage's x0 estimate (the app's live preview), which closes in on the stage's result."""
import pytest
import torch

from lumiere.progress import Progress
from tests.conftest import bundled_model_available


def test_two_argument_callbacks_are_called_as_before():
    calls, forwarded = [], []
    progress = Progress(2, lambda step, total: calls.append((step, total)))
    progress.step(torch.zeros(1))
    forwarded_progress = Progress(1, lambda *args: forwarded.append(args))  # *args may forward to a 2-arg one
    forwarded_progress.step(torch.zeros(1))
    assert calls == [(1, 2)] and forwarded == [(1, 1)]
    assert not progress.wants_estimate and not forwarded_progress.wants_estimate


def test_callback_gets_an_x0_estimate_of_each_stage_that_approaches_the_result(tiny_pipe):
    frames, height, width = tiny_pipe.base_resolution
    estimates = []
    video = tiny_pipe.text_to_video("a red circle moving right", seed=0, num_inference_steps=6,
                                    callback=lambda step, total, x0: estimates.append((step, total, x0.clone())))
    ssr_steps = tiny_pipe.ssr_options.steps_run(tiny_pipe.ssr_options.num_inference_steps)
    assert [s for s, _, _ in estimates] == list(range(1, 7 + ssr_steps))
    base, ssr = estimates[:6], estimates[6:]
    assert all(x0.shape == (1, 3, frames, height, width) for _, _, x0 in base)
    scale = tiny_pipe.ssr_scale
    assert all(x0.shape == (1, 3, frames, height * scale, width * scale) for _, _, x0 in ssr)
    # The base stage's estimates close in on what it produced: the last one is the base clip itself.
    low = tiny_pipe.text_to_video("a red circle moving right", seed=0, num_inference_steps=6, super_resolve=False)
    final = torch.from_numpy(low).permute(3, 0, 1, 2).float() / 127.5 - 1
    errors = [float((x0[0].clamp(-1, 1) - final).abs().mean()) for _, _, x0 in base]
    assert errors[-1] < 0.01 and errors[-1] < 0.2 * errors[0], errors
    assert video.shape == (frames, height * scale, width * scale, 3)


@pytest.mark.bundled
def test_bundled_models_estimate_converges_on_its_clip():
    if not bundled_model_available():
        pytest.skip("the bundled model is not in assets/")
    from lumiere import LumierePipeline

    pipe = LumierePipeline.from_pretrained(None, device="cpu")
    estimates = []
    video = pipe.text_to_video("a purple circle moving right at night", seed=0, super_resolve=False,
                               callback=lambda step, total, x0: estimates.append(x0[0].clamp(-1, 1).clone()))
    final = torch.from_numpy(video).permute(3, 0, 1, 2).float() / 127.5 - 1
    errors = [float((x0 - final).abs().mean()) for x0 in estimates]
    assert errors[-1] < 0.01
    assert errors[len(errors) // 4] > errors[len(errors) // 2] > errors[3 * len(errors) // 4] > errors[-1], errors
