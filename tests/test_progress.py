"""The library pieces behind the app's live preview, its unknown-word warning and the cinemagraph's soft edges:
the step callback's x0 estimate (``progress.Progress``), the closed-vocabulary check
(``LumierePipeline.known_words`` / ``unknown_words``) and the feathered cinemagraph mask
(``conditioning.cinemagraph_condition(feather=, fade_frames=)``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lumiere.components import known_words, unknown_words
from lumiere.conditioning import CINEMAGRAPH_FADE_FRAMES, CINEMAGRAPH_FEATHER, cinemagraph_condition
from lumiere.progress import Progress
from tests.conftest import bundled_model_available
from tests.tiny import TINY_WORDS


# ----------------------------------------------------------------------------- the x0 estimate
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


# ----------------------------------------------------------------------------- the vocabulary
def test_tiny_models_closed_vocabulary_is_read_from_the_tokenizer_only(tiny_pipe):
    assert tiny_pipe.known_words() == sorted(TINY_WORDS)
    assert tiny_pipe.unknown_words("A Purple circle, zooming LEFT on the grass!") == ["Purple", "zooming"]
    assert tiny_pipe.unknown_words("a red circle moving left on the grass") == []
    assert not tiny_pipe.is_loaded("text_encoder")  # the encoder's weights were never read


def test_tokenizers_that_spell_any_word_are_never_warned_about(tmp_path):
    from transformers import BertTokenizer

    from lumiere.models.text_encoder import TextEncoder

    clip_bpe = TextEncoder.from_vocabulary(["red", "circle"], hidden_size=16, num_layers=1,
                                           architecture="clip").tokenizer
    assert known_words(clip_bpe) is None and unknown_words(clip_bpe, "a purple zooming blob") == []
    letters = list("abcdefghijklmnopqrstuvwxyz")  # a sub-word WordPiece vocabulary, as real BERTs have
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red"] + letters
                               + [f"##{c}" for c in letters]) + "\n")
    wordpiece = BertTokenizer(str(vocab))
    assert known_words(wordpiece) is None and unknown_words(wordpiece, "a purple zooming blob") == []
    assert known_words(None) is None and unknown_words(None, "anything") == []


@pytest.mark.bundled
def test_bundled_models_vocabulary():
    if not bundled_model_available():
        pytest.skip("the bundled model is not in assets/")
    from lumiere import LumierePipeline

    pipe = LumierePipeline.from_pretrained(None, device="cpu")
    words = pipe.known_words()
    assert 100 <= len(words) <= 140 and {"circle", "moving", "left", "night"} <= set(words)
    assert not {"[UNK]", "[PAD]"} & set(words)
    assert pipe.unknown_words("a red circle dancing happily on the grass") == ["dancing", "happily"]


# ----------------------------------------------------------------------------- the cinemagraph's soft edges
def test_feathered_cinemagraph_mask_keeps_the_still_part_exact_and_ramps_inside_the_region():
    image = torch.rand(3, 32, 32) * 2 - 1
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[8:24, 4:28] = True
    condition, keep = cinemagraph_condition(image, region, 8, feather=CINEMAGRAPH_FEATHER,
                                            fade_frames=CINEMAGRAPH_FADE_FRAMES)
    keep = keep[0]
    assert (keep[0] == 1).all() and (keep[:, ~region] == 1).all()  # frame 0 and the still part: exactly the image
    late = keep[CINEMAGRAPH_FADE_FRAMES + 1:]
    ramp = late[:, 16, 4:12]  # from the region's left edge inwards
    assert (ramp[:, :-1] >= ramp[:, 1:]).all() and (ramp[:, 0] < 1).all() and (ramp[:, 0] > 0).all()
    assert (late[:, 12:20, 12:20] == 0).all()  # deep inside: all generated
    centre = keep[:, 16, 16]  # the motion fades in over the first frames, without a jump
    assert centre[0] == 1 and (centre[:-1] >= centre[1:]).all() and centre[CINEMAGRAPH_FADE_FRAMES + 1] == 0
    assert (centre[:-1] - centre[1:]).max() < 0.5
    hard_condition, hard_keep = cinemagraph_condition(image, region, 8)  # the default stays the paper's binary M
    assert set(hard_keep.unique().tolist()) == {0.0, 1.0} and torch.equal(hard_condition, condition)


def seam_and_pop(video: np.ndarray, region: np.ndarray) -> tuple[float, float, float, float]:
    """(seam, pop inside, typical step inside, pop outside) of a cinemagraph, 0-255 levels: seam = the mean
    |difference| between neighbouring pixels across the region's border in frames 1.. minus the same in frame 0
    (the picture's own edges); pop = mean |frame 1 - frame 0|; typical = the median later frame-to-frame step."""
    v = video.astype(float)
    across = []
    for axis in (1, 2):
        a, b = np.swapaxes(region, 0, axis - 1), np.swapaxes(v, 1, axis)
        ys, xs = np.nonzero(a[:-1] != a[1:])
        across.append(np.abs(b[:, ys, xs] - b[:, ys + 1, xs]).mean(axis=(1, 2)))
    across = np.mean(across, axis=0)
    steps = np.abs(np.diff(v, axis=0)).mean(axis=-1)
    return (float(across[1:].mean() - across[0]), float(steps[0][region].mean()),
            float(np.median([s[region].mean() for s in steps[1:]])), float(steps[0][~region].mean()))


@pytest.mark.bundled
def test_bundled_cinemagraph_example_has_no_seam_and_no_frame_0_pop():
    if not bundled_model_available():
        pytest.skip("the bundled model is not in assets/")
    from PIL import Image

    from app.examples import example_file
    from lumiere import LumierePipeline

    pipe = LumierePipeline.from_pretrained(None, device="cpu")
    image = np.asarray(Image.open(example_file("yellow_circle_night.png")).convert("RGB"))
    region = np.asarray(Image.open(example_file("cinemagraph_mask_layer.png")).convert("RGBA"))[..., 3] > 0
    video = pipe.cinemagraph(image, region, "a yellow circle bouncing at night", seed=0, num_inference_steps=12)
    seam, pop, typical, outside = seam_and_pop(video, region)
    assert typical > 5  # the region moves
    assert abs(seam) < 1.5, seam  # hard-edged: 6.4 levels on the earlier example
    assert pop < 0.3 * typical, (pop, typical)  # hard-edged: 22 against 13
    assert outside < 0.1
    steps = [np.abs(np.diff(video.astype(float), axis=0)).mean(axis=-1)[k][region].mean() for k in range(6)]
    assert max(steps) < 1.5 * typical, steps  # the fade-in does not move the jump to a later frame
