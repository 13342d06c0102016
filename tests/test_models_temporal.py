"""lumiere.models.temporal: seamless-loop mode (``looping``). Inside it the temporal layers are circular in time,
so the STUNet and the SSR commute with a roll of the clip; the mode is left on exit, after an exception too."""
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
