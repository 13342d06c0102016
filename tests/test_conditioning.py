"""lumiere.conditioning: the paper's (C, M) for each application (M = 1 keeps content), user-mask handling, the
training masks, and the cinemagraph's soft edges (a feathered region, motion faded in, faded back for a loop)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lumiere.conditioning import (CINEMAGRAPH_FADE_FRAMES, CINEMAGRAPH_FEATHER, cinemagraph_condition,
                                  image_to_video_condition, inpaint_condition, outpaint_mask)
from lumiere.preprocessing import mask_tensor
from lumiere.train.masks import MASK_KINDS, random_condition
from tests.conftest import bundled_model_available


def test_image_to_video_condition():
    image = torch.rand(3, 8, 8) * 2 - 1
    c, m = image_to_video_condition(image, 4)
    assert c.shape == (3, 4, 8, 8) and m.shape == (1, 4, 8, 8)
    assert torch.equal(c[:, 0], image) and (c[:, 1:] == 0).all()
    assert (m[:, 0] == 1).all() and (m[:, 1:] == 0).all()


def test_inpaint_condition_keeps_outside_the_hole():
    video = torch.rand(3, 4, 8, 8) * 2 - 1
    hole = torch.zeros(8, 8, dtype=torch.bool)
    hole[2:5, 2:5] = True
    c, m = inpaint_condition(video, hole)
    assert (m[0][:, hole] == 0).all() and (m[0][:, ~hole] == 1).all()
    assert (c[:, :, hole] == 0).all() and torch.equal(c[:, :, ~hole], video[:, :, ~hole])


def test_cinemagraph_condition():
    image = torch.rand(3, 8, 8) * 2 - 1
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[:, 4:] = True
    c, m = cinemagraph_condition(image, region, 5)
    assert all(torch.equal(c[:, t], image) for t in range(5))
    assert (m[:, 0] == 1).all()  # the whole first frame is known
    assert (m[0, 1:][:, region] == 0).all() and (m[0, 1:][:, ~region] == 1).all()


def test_outpaint_mask_is_a_border():
    mask = outpaint_mask(16, 16, 0.25)
    assert mask[0].all() and mask[:, 0].all() and not mask[4:12, 4:12].any()
    with pytest.raises(ValueError, match="border"):
        outpaint_mask(16, 16, 0.6)


def test_user_masks_resize_with_nearest_and_reject_empty():
    mask = np.zeros((64, 64), bool)
    mask[:32] = True
    resized = mask_tensor(mask, 4, 16, 16)
    assert resized.shape == (4, 16, 16) and resized.dtype == torch.bool
    assert resized[:, :8].all() and not resized[:, 8:].any()
    drawn = np.zeros((64, 64, 4), np.uint8)
    drawn[10:20, 10:20] = 255  # an RGBA brush layer
    assert mask_tensor(drawn, 2, 16, 16).any()
    with pytest.raises(ValueError, match="mask is empty"):
        mask_tensor(np.zeros((8, 8), bool), 4, 16, 16)


def test_training_masks_cover_every_kind_and_follow_the_convention():
    rng = np.random.default_rng(0)
    video = torch.zeros(3, 8, 16, 16)
    video[:, :, 4:8, :] = torch.linspace(-1, 1, 8)[None, :, None, None]  # something moves
    kinds = set()
    for _ in range(60):
        c, m, kind, target = random_condition(video, rng)
        kinds.add(kind)
        assert c.shape == (3, 8, 16, 16) and m.shape == (1, 8, 16, 16)
        if kind != "cinemagraph":  # the cinemagraph's C is the image on every frame (Sec. 4.2)
            assert torch.equal(c * m, c)  # unknown content (M = 0) is blank
            assert target is video
        if kind in ("first_frame", "cinemagraph"):
            assert (m[:, 0] == 1).all()
    assert kinds == set(MASK_KINDS)


def test_cinemagraph_training_targets_hold_the_still_region_on_frame_0():
    """A user-like cinemagraph region may cut through a moving object: the clip the model is trained to
    produce must then be frame 0 wherever M says "keep", and the clip itself inside the region."""
    rng = np.random.default_rng(1)
    video = torch.rand(3, 8, 16, 16) * 2 - 1  # everything moves, so any still region is a real change
    user_drawn = 0
    for _ in range(200):
        c, m, kind, target = random_condition(video, rng)
        if kind != "cinemagraph":
            continue
        keep = m[0].bool()
        assert torch.equal(target[:, keep], c[:, keep])  # what M keeps is exactly what the target shows
        region = ~keep[1]
        assert torch.equal(target[:, 1:, region], video[:, 1:, region])
        user_drawn += not torch.equal(target, video)
    assert user_drawn > 5


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
