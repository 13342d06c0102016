"""lumiere.data.render_torch: the batched torch renderer reproduces world.render_clip (within float32 rounding) for
every scene element."""
import numpy as np
import pytest
import torch

from lumiere.data import world
from lumiere.data.render_torch import clip_parameters, parameters_to_tensors, render_clips, render_parameters
from lumiere.data.world import default_times
from lumiere.data.world import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, ClipSpec, ObjectSpec

# Tolerances against world.render_clip, in grey levels. float32 vs float64 can put a sub-sample that lies
# within rounding distance of an edge on the other side (one pixel moves by up to 255 / ss**2) and can
# round a value next to a quantisation step the other way (one level); both are rare, so a clip's mean
# error stays tiny.
MAX_CLIP_MEAN_ABS_ERROR = 0.05


def max_pixel_error(height: int, width: int) -> float:
    """One sub-sample flipping (255 / ss**2) plus one quantisation step."""
    return 255 / world._supersample_factor(height, width) ** 2 + 1


def object_spec(shape, motion, background, skip=0):
    """A valid ObjectSpec for (shape, motion) on background: the first contrasting colour after ``skip``."""
    colours = COLOURS[skip % len(COLOURS):] + COLOURS[:skip % len(COLOURS)]
    colour = next(c for c in colours if world.is_valid_object(c, shape, motion, background))
    return ObjectSpec(colour, shape, motion)


def every_shape_motion_background():
    specs = []
    for background in BACKGROUNDS:
        for shape in SHAPES:
            for motion in MOTIONS:
                if world.is_valid_object(None, shape, motion):
                    spec = ClipSpec((object_spec(shape, motion, background, len(specs)),), background, len(specs))
                    specs.append(spec)
    return specs


def two_object_specs():
    specs = []
    for i, background in enumerate(BACKGROUNDS):
        shape = SHAPES[i % 3]
        twin = object_spec(shape, MOTIONS[i % len(MOTIONS)], background)
        specs.append(ClipSpec((twin, twin), background, 100 + i))  # identical objects
        mover = object_spec(SHAPES[(i + 1) % 3], ("moving left", "moving right")[i % 2], background)
        in_place = object_spec(SHAPES[(i + 2) % 3], ("rotating", "growing", "shrinking")[i % 3], background, 3)
        if in_place.shape == "circle" and in_place.motion == "rotating":
            in_place = object_spec("square", "rotating", background, 3)
        specs.append(ClipSpec((mover, in_place), background, 200 + i))  # horizontal mover + in-place
    specs.append(ClipSpec((object_spec("triangle", "circling", "sky"),) * 2, "sky", 300))
    specs.append(ClipSpec((object_spec("circle", "bouncing", "night"), object_spec("square", "moving down", "night", 2)),
                          "night", 301))
    return specs


def assert_matches_numpy(specs, num_frames, height, width, style=None, times=None, device="cpu", span=1.0):
    """Render ``specs`` as one torch batch and compare every clip with world.render_clip."""
    frames = render_clips(specs, num_frames, height, width, style, times, device=device, span=span)
    assert frames.dtype == torch.uint8 and frames.device.type == torch.device(device).type
    frames = frames.cpu().numpy().astype(int)
    for spec, got in zip(specs, frames):
        want = world.render_clip(spec, num_frames, height, width, style, times, span).astype(int)
        assert got.shape == want.shape
        error = np.abs(got - want)
        assert error.mean() <= MAX_CLIP_MEAN_ABS_ERROR, (spec, error.mean())
        assert error.max() <= max_pixel_error(height, width), (spec, error.max())


def test_every_shape_motion_and_background_matches_render_clip():
    specs = every_shape_motion_background()
    assert {s.objects[0].shape for s in specs} == set(SHAPES)
    assert {s.objects[0].motion for s in specs} == set(MOTIONS)
    assert {s.background for s in specs} == set(BACKGROUNDS)
    assert_matches_numpy(specs, 16, 32, 32)


def test_two_objects_match_render_clip():
    assert_matches_numpy(two_object_specs(), 16, 32, 32)


def test_other_sizes_match_render_clip():
    specs = every_shape_motion_background()
    assert_matches_numpy(specs[::19], 3, 128, 128)   # ss = 2
    assert_matches_numpy(specs[5::11], 6, 24, 40)    # non-square, ss = 6
    assert_matches_numpy(two_object_specs()[::3], 4, 40, 24)
    assert_matches_numpy(specs[::40], 2, 4, 5)       # smallest size, ss = 8


def test_explicit_times_match_render_clip():
    rng = np.random.default_rng(0)
    specs = every_shape_motion_background()[::7] + two_object_specs()[::4]
    moment = np.array([int(rng.integers(16)) / 15])  # one instant, as the image dataset draws it
    assert_matches_numpy(specs, 1, 32, 32, times=moment)
    assert_matches_numpy(specs, 3, 32, 32, times=rng.uniform(0, 1, 3))


def test_long_clips_at_the_clips_pace_match_render_clip():
    """span > 1 (a clip several clips long at the clip's pace) moves each motion as render_clip does."""
    assert_matches_numpy(every_shape_motion_background()[::5] + two_object_specs()[-2:], 46, 32, 32, span=3.0)


@pytest.mark.parametrize("style", ["line drawing", "watercolor"])
def test_styles_match_render_clip(style):
    specs = every_shape_motion_background()[::6] + two_object_specs()[::3]
    assert {s.background for s in specs} == set(BACKGROUNDS)
    assert_matches_numpy(specs, 4, 32, 32, style)
    assert_matches_numpy(specs[::5], 2, 33, 36, style)  # odd blur sizes / non-square


def test_pixel_art_matches_render_clip():
    # Posterising to 4 levels turns a rare one-level difference into a jump of 85: compare mismatches.
    specs = every_shape_motion_background()[::13] + two_object_specs()[::5]
    got = render_clips(specs, 3, 64, 48, "pixel art").numpy().astype(int)
    want = np.stack([world.render_clip(s, 3, 64, 48, "pixel art") for s in specs]).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 255 / 3 + 1
    assert np.mean(got != want) <= 0.002


def test_rng_draws_follow_render_clip_order():
    """Background and grain parameters are the values world's own draws produce from the same rng."""
    gx, gy = world._grid(24, 24, 2)
    for background in ("grass", "night", "sea"):
        spec = ClipSpec((object_spec("square", "rotating", background),), background, 7)
        params = clip_parameters(spec, default_times(4))
        rng = np.random.default_rng(spec.seed)
        world._placements(spec, rng)
        if background == "grass":
            waves = params["waves"]
            mine = sum(np.sin(2 * np.pi * (fx * gx + fy * gy) + ph) for fx, fy, ph in waves) / np.sqrt(3)
            np.testing.assert_allclose(mine, world._waves(gx, gy, rng, 6, 3.0), atol=1e-12)
        elif background == "night":
            image = world.render_background("night", gx, gy, 1.0, rng)
            stars = params["stars"][params["star_mask"]]
            assert 18 <= len(stars) <= 29
            inside = np.zeros(gx.shape, bool)
            for sx, sy, size in stars:
                inside |= np.hypot(gx - sx, gy - sy) < size
            np.testing.assert_array_equal(inside, (image == (235, 235, 255)).all(-1))
        else:
            assert params["sea_phase"] == rng.uniform(0, 6)
        grain = params["grain"]
        mine = sum(np.sin(2 * np.pi * (fx * gx + fy * gy) + ph) for fx, fy, ph in grain) / np.sqrt(6)
        np.testing.assert_allclose(mine, world._waves(gx, gy, np.random.default_rng(spec.seed + 1), 12, 9.0),
                                   atol=1e-12)


def test_deterministic_and_seed_dependent():
    spec = ClipSpec((object_spec("triangle", "circling", "grass"),), "grass", 11)
    first = render_clips([spec], 8, 32, 32)
    assert torch.equal(first, render_clips([spec], 8, 32, 32))
    other = render_clips([ClipSpec(spec.objects, spec.background, 12)], 8, 32, 32)
    assert not torch.equal(first, other)


def test_batch_equals_each_clip_alone():
    specs = every_shape_motion_background()[3::17] + two_object_specs()[::2]
    assert len({s.background for s in specs}) == len(BACKGROUNDS)
    batch = render_clips(specs, 5, 24, 32, "watercolor")
    for spec, clip in zip(specs, batch):
        assert torch.equal(clip, render_clips([spec], 5, 24, 32, "watercolor")[0])


def test_collated_parameters_and_chunking():
    specs = two_object_specs()[:5]
    times = default_times(6)
    items = [clip_parameters(s, times) for s in specs]
    assert all(items[0][k].shape == item[k].shape for item in items for k in items[0])
    whole = render_parameters(torch.utils.data.default_collate(items), 32, 32)
    tensors = torch.utils.data.default_collate([parameters_to_tensors(item) for item in items])
    assert torch.equal(whole, render_parameters(tensors, 32, 32))
    assert torch.equal(whole, render_clips(specs, 6, 32, 32))
    assert whole.shape == (5, 6, 32, 32, 3) and whole.dtype == torch.uint8
    per_sample_grid = (32 * 4) ** 2
    for chunk in (1, 4 * per_sample_grid, 13 * per_sample_grid):  # frame ranges of a clip; several clips
        assert torch.equal(whole, render_parameters(tensors, 32, 32, chunk_samples=chunk))


def test_later_object_is_drawn_on_top():
    # World lanes keep objects apart, so overlap is forced by editing the parameters: render_clip
    # composites objects in order, the second over the first.
    spec = ClipSpec((ObjectSpec("red", "square", "growing"), ObjectSpec("blue", "circle", "growing")), "black", 5)
    params = clip_parameters(spec, default_times(2))
    params["x"][:], params["y"][:] = 0.5, 0.5
    params["radius"][0], params["radius"][1] = 0.3, 0.08  # a big red square under a small blue circle
    frames = render_parameters(torch.utils.data.default_collate([params]), 32, 32)[0].numpy()
    assert (frames[:, 16, 16] == world.PALETTE["blue"]).all()
    assert (frames[:, 16, 16 + 5] == world.PALETTE["red"]).all()  # outside the circle, inside the square


def test_rejects_bad_arguments():
    spec = ClipSpec((object_spec("circle", "growing", "black"),), "black", 0)
    with pytest.raises(ValueError, match="style"):
        render_clips([spec], 2, 32, 32, "oil painting")
    with pytest.raises(ValueError):
        render_clips([spec], 2, 3, 32)
    with pytest.raises(ValueError, match="background"):
        clip_parameters(ClipSpec(spec.objects, "space", 0), default_times(2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_render_clip():
    specs = every_shape_motion_background()[::4] + two_object_specs()
    assert_matches_numpy(specs, 16, 32, 32, device="cuda")
    assert_matches_numpy(specs[::6], 4, 32, 32, "watercolor", device="cuda")
