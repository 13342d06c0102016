"""The paper's (C, M) for each application (M = 1 keeps content), and user-mask handling."""
import numpy as np
import pytest
import torch

from lumiere.conditioning import cinemagraph_condition, image_to_video_condition, inpaint_condition, outpaint_mask
from lumiere.preprocessing import mask_tensor
from lumiere.train.masks import MASK_KINDS, random_condition


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
