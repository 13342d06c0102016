"""Seamless loops (issue 27): ``loop=True`` makes the model circular in time, ``loop=False`` changes nothing."""
import numpy as np
import pytest
import torch

from lumiere.models.temporal import TemporalAttentionBlock, TemporalConv

PROMPT = "a red circle moving right"


def circular_flags(model) -> list[bool]:
    return [model.circular] + [m.circular for m in model.modules() if isinstance(m, (TemporalConv, TemporalAttentionBlock))]


def perturbed_stunet(tiny_pipe, **options):
    """A STUNet inflated from the tiny T2I (a copy), its zero-initialised temporal outputs made non-zero."""
    from lumiere.models.stunet import inflate

    torch.manual_seed(0)
    model = inflate(tiny_pipe.base.t2i, copy=True, **options).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.temporal_parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


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


@pytest.mark.parametrize("options", [{}, {"motion_conditioning": True}], ids=["plain", "motion_conditioning"])
def test_looping_stunet_is_exactly_time_shift_equivariant(tiny_pipe, options):
    """Rolling the input clip by one temporal-down-sampling step rolls the output by the same: the STUNet
    (temporal convs, down/up-sampling, attention, clip-time features) has no first or last frame. Without
    the mode the edges are zero-padded and the same check fails."""
    model = perturbed_stunet(tiny_pipe, **options)
    n = model.temporal_downsampling_factor
    assert n > 1
    x = torch.randn(1, model.in_channels, 4 * n, 16, 16, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 6, model.t2i.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))

    def shift_error():
        with torch.no_grad():
            out, out_rolled = model(x, 400, text), model(torch.roll(x, n, dims=2), 400, text)
        return (torch.roll(out, n, dims=2) - out_rolled).abs().max().item(), out.abs().mean().item()

    plain_error, scale = shift_error()
    with model.looping():
        loop_error, _ = shift_error()
    assert loop_error < 1e-5 * max(scale, 1.0), loop_error
    assert plain_error > 1e-3 * scale, plain_error  # the check can fail: the plain model has edges


def test_looping_ssr_model_wraps_frame_by_frame(tiny_pipe):
    """The SSR (no temporal resampling) in looping mode commutes with a roll by a single frame."""
    ssr = tiny_pipe.ssr
    frames = 6
    x = torch.randn(1, ssr.in_channels, frames, 32, 32, generator=torch.Generator().manual_seed(2))
    text = torch.randn(1, 6, ssr.t2i.config.cross_attention_dim, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([100])
    with torch.no_grad(), ssr.looping():
        out = ssr(x, 300, text, class_labels=labels)
        rolled = ssr(torch.roll(x, 1, dims=2), 300, text, class_labels=labels)
    assert (torch.roll(out, 1, dims=2) - rolled).abs().max() < 1e-5


def test_looping_mode_is_restored_after_an_exception(tiny_pipe):
    model = tiny_pipe.base
    with pytest.raises(RuntimeError, match="boom"):
        with model.looping():
            with model.looping():  # nested: the inner exit keeps the outer mode
                pass
            assert all(circular_flags(model))
            raise RuntimeError("boom")
    assert not any(circular_flags(model))

    def cancel(step, total):
        raise KeyboardInterrupt  # a callback's exception cancels the call mid-way (inside looping)

    with pytest.raises(KeyboardInterrupt):
        tiny_pipe.text_to_video(PROMPT, seed=0, loop=True, super_resolve=False, callback=cancel)
    assert not any(circular_flags(tiny_pipe.base))


def test_circular_windows_wrap_and_average_exactly():
    from lumiere.multidiffusion import take_window, temporal_windows, window_weights, windowed_prediction

    assert temporal_windows(32, 16, 2) == temporal_windows(32, 16, 2, circular=False)  # unchanged without it
    assert temporal_windows(16, 16, 2, circular=True) == [(0, 16)]  # one window: the model itself wraps
    for frames, window, overlap in ((32, 16, 2), (8, 4, 2), (40, 16, 2), (48, 32, 16)):
        windows = temporal_windows(frames, window, overlap, circular=True)
        assert all(end - start == window for start, end in windows)
        assert any(end > frames for _, end in windows)  # one spans the end and the start
        for (s1, e1), (s2, _) in zip(windows, windows[1:] + [(windows[0][0] + frames, None)]):
            assert e1 - s2 >= overlap  # neighbours overlap, the last with the first too
        assert (window_weights(frames, windows) >= 1).all()
    x = torch.arange(8.0).view(1, 1, 8, 1, 1)
    assert take_window(x, 6, 10).flatten().tolist() == [6, 7, 0, 1]
    windows = temporal_windows(8, 4, 2, circular=True)
    assert torch.equal(windowed_prediction(lambda part, s, e: part, x, windows), x)
    # each frame's average over the windows that hold it, a window's output being its position in the window
    out = windowed_prediction(lambda part, s, e: torch.arange(4.0).view(1, 1, 4, 1, 1), x, windows)
    expected = [np.mean([(f - s) % 8 for s, e in windows if (f - s) % 8 < e - s]) for f in range(8)]
    assert np.allclose(out.flatten().numpy(), expected)


def test_loop_with_ssr_windows_runs_and_keeps_shape(tiny_pipe):
    """The tiny SSR's window (4) is shorter than the clip (8): loop=True takes the wrapping windows."""
    video = tiny_pipe.text_to_video(PROMPT, seed=1, num_inference_steps=1, loop=True)
    assert video.shape == (tiny_pipe.output_resolution[0], *tiny_pipe.output_resolution[1:], 3)


def test_circular_progressive_noise_prior_has_no_seam():
    """The AR(1) chain correlates neighbours but not frame F-1 with frame 0; its circular form (loop=True)
    correlates frames by their distance around the loop; independent noise is the same with or without it."""
    from lumiere.options import NoisePrior
    from lumiere.sampling import initial_noise

    shape = (1, 4, 8, 32, 32)

    def correlations(**kwargs):
        noise = initial_noise(shape, torch.Generator().manual_seed(0), "cpu", torch.float32, **kwargs)
        frames = noise[0].transpose(0, 1).reshape(8, -1)
        return torch.corrcoef(frames), frames.std(dim=1)

    progressive = NoisePrior(kind="progressive", alpha=1.0)
    chain, _ = correlations(prior=progressive)
    loop, std = correlations(prior=progressive, circular=True)
    neighbours = [loop[t, t + 1].item() for t in range(7)]
    assert chain[7, 0] < 0.2 < chain[0, 1] - 0.3  # the chain: a seam
    assert abs(loop[7, 0].item() - np.mean(neighbours)) < 0.05 and min(neighbours) > 0.6
    assert torch.allclose(std, torch.ones(8), atol=0.05)  # still unit variance
    for prior in (None, NoisePrior()):
        a = initial_noise(shape, torch.Generator().manual_seed(0), "cpu", torch.float32, prior)
        b = initial_noise(shape, torch.Generator().manual_seed(0), "cpu", torch.float32, prior, circular=True)
        assert torch.equal(a, b)


def test_cinemagraph_loop_fades_back_into_frame_zero():
    from lumiere.conditioning import cinemagraph_condition

    image = torch.zeros(3, 8, 8)
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[2:6, 2:6] = True
    _, plain = cinemagraph_condition(image, region, 8, fade_frames=2)
    _, looped = cinemagraph_condition(image, region, 8, fade_frames=2, loop=True)
    inside = plain[0, :, 3, 3]  # a pixel of the region, per frame
    assert inside[-1] == 0 and inside[1] > 0 and looped[0, -1, 3, 3] == inside[1]
    mirrored = [(-k) % 8 for k in range(8)]
    assert torch.equal(looped[:, mirrored], looped)  # frame 8-k is held like frame k: symmetric about frame 0
    assert torch.equal(looped[:, :6], plain[:, :6])


def test_loop_option_is_checked(tiny_pipe):
    from lumiere.errors import InputTypeError

    with pytest.raises(InputTypeError, match="loop"):
        tiny_pipe.text_to_video(PROMPT, loop="yes")


def test_cli_loop_flag_reaches_the_pipeline(tiny_pipeline_dir, tmp_path, monkeypatch):
    from PIL import Image

    from lumiere.cli import main
    from lumiere.pipeline import LumierePipeline

    calls = []
    original = LumierePipeline.generate

    def spy(self, request, **kwargs):
        calls.append((request.task, request.options.loop))
        return original(self, request, **kwargs)

    monkeypatch.setattr(LumierePipeline, "generate", spy)
    common = ["--model", str(tiny_pipeline_dir), "--seed", "0", "--steps", "1", "--no-ssr", "--prompt", PROMPT]
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "image.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    picture = ["--image", str(tmp_path / "image.png"), "--mask", str(tmp_path / "mask.png")]
    assert main(["generate", *common, "--loop", "--out", str(tmp_path / "a.mp4")]) == 0
    assert main(["generate", *common, "--out", str(tmp_path / "b.mp4")]) == 0
    assert main(["cinemagraph", *common, *picture, "--loop", "--out", str(tmp_path / "c.mp4")]) == 0
    assert calls == [("text_to_video", True), ("text_to_video", False), ("cinemagraph", True)]


def test_app_loop_checkbox_reaches_the_pipeline(tiny_pipeline_dir, monkeypatch):
    """The Loop checkbox of the Text to video, Cinemagraph and Stylized tabs is the endpoint parameter
    ``loop`` and arrives at the pipeline call; a non-boolean is refused."""
    gr = pytest.importorskip("gradio")
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
    TextToVideoTab(studio).endpoint(PROMPT, loop=True, **fast)
    TextToVideoTab(studio).endpoint(PROMPT, **fast)
    StylizeTab(studio).endpoint(PROMPT, style=pipe.styles[0], loop=True, **fast)
    image = np.full((16, 16, 3), 90, np.uint8)
    mask = np.zeros((16, 16, 4), np.uint8)
    mask[4:12, 4:12] = 255
    CinemagraphTab(studio).endpoint({"background": image, "layers": [mask], "composite": None}, PROMPT, loop=True,
                                    **fast)
    assert calls == [("text_to_video", True, None), ("text_to_video", False, None),
                     ("text_to_video", True, pipe.styles[0]), ("cinemagraph", True, None)]
    with pytest.raises(gr.Error, match="Loop"):
        TextToVideoTab(studio).endpoint(PROMPT, loop="yes", **fast)
