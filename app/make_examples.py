"""Render the small example inputs in assets/examples from the procedural world, and the example
outputs the app shows as cached results (run once, committed).

    python -m app.make_examples            # the inputs
    python -m app.make_examples --outputs  # assets/examples/outputs/<tab>-<i>.mp4 with the bundled model
    python -m app.make_examples --mask-previews  # the pictures with their example masks blended in

The example masks are computed from the rendered objects, not typed in: the inpainting mask is the box around
the square's whole path (every frame, edges included, aligned to the 32x32 base grid), the cinemagraph's the
band the circle bounces in.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from lumiere.data.world import COLOURS, render_clip, spec_from_prompt
from lumiere.io import write_video

OUT = Path(__file__).resolve().parent.parent / "assets" / "examples"
SIZE = 128
FRAMES = 16
FPS = 8
BASE_CELL = 4  # output pixels per base-resolution pixel (128 / 32): mask boxes are aligned to it
# The inpainting example: the object whose whole path the mask covers, in every frame.
INPAINT_CLIP = ("a green square moving left over the sea", 4)
INPAINT_MARGIN = 6  # pixels of sea around the path inside the mask
# The cinemagraph example: the band the yellow circle bounces in (what a user would brush for "bouncing").
CINEMAGRAPH_CLIP = ("a yellow circle at night", 3)
CINEMAGRAPH_MARGIN = 8


def clip(prompt: str, seed: int, frames: int = FRAMES) -> np.ndarray:
    return render_clip(spec_from_prompt(prompt, seed), frames, SIZE, SIZE)


def object_path(prompt: str, seed: int, frames: int = FRAMES) -> np.ndarray:
    """Where the clip's objects are, per frame: bool (T, H, W), True on every pixel an object touches (edges
    included). The clip rendered again with other colours differs from it exactly there."""
    spec = spec_from_prompt(prompt, seed)
    path = np.zeros((frames, SIZE, SIZE), bool)
    for shift in (1, 2):  # two other colours: a pixel an object barely touches differs in at least one
        others = tuple(replace(o, colour=COLOURS[(COLOURS.index(o.colour) + shift) % len(COLOURS)])
                       for o in spec.objects)
        path |= (render_clip(spec, frames, SIZE, SIZE) != render_clip(replace(spec, objects=others), frames,
                                                                       SIZE, SIZE)).any(-1)
    return path


def covering_box(path: np.ndarray, margin: int, cell: int = BASE_CELL) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a box around every True pixel of ``path`` in every frame, ``margin`` pixels
    wider on each side and aligned outward to ``cell`` (so the box covers the path at base resolution too)."""
    ys, xs = np.nonzero(path.any(axis=0))
    top, left = (max(0, (v - margin) // cell * cell) for v in (ys.min(), xs.min()))
    bottom, right = (min(SIZE, -(-(v + 1 + margin) // cell) * cell) for v in (ys.max(), xs.max()))
    return int(top), int(left), int(bottom), int(right)


def bounce_band(prompt: str, seed: int, margin: int) -> tuple[int, int, int, int]:
    """The cinemagraph's region: the object's columns (plus ``margin``) over the full height it may bounce in."""
    top, left, bottom, right = covering_box(object_path(prompt, seed, 1), margin)
    return BASE_CELL, left, SIZE - BASE_CELL, right


def brushed_layer(box: tuple[int, int, int, int]) -> Image.Image:
    """A transparent RGBA layer with a painted rectangle (what a brush stroke on the editor produces)."""
    layer = np.zeros((SIZE, SIZE, 4), np.uint8)
    top, left, bottom, right = box
    layer[top:bottom, left:right] = (255, 51, 204, 255)
    return Image.fromarray(layer)


def mask_previews() -> None:
    """Each example picture with its brushed layer blended in: the editor's composite, so the example
    thumbnails and the editor show where the mask is."""
    for background, layer in (("green_square_sea_frame0.png", "inpaint_mask_layer.png"),
                              ("yellow_circle_night.png", "cinemagraph_mask_layer.png")):
        picture = Image.open(OUT / background).convert("RGBA")
        stroke = np.asarray(Image.open(OUT / layer).convert("RGBA")).copy()
        stroke[..., 3] = stroke[..., 3] // 2
        Image.alpha_composite(picture, Image.fromarray(stroke)).convert("RGB").save(
            OUT / background.replace(".png", "_masked.png"))


def render_outputs() -> None:
    """Each tab's examples through the app's own request path (validation included), default settings but
    for those the row names, seed EXAMPLE_SEED, on the bundled model."""
    import time

    from app.examples import EXAMPLE_SEED, OUTPUTS_DIR, output_path
    from app.model_manager import ModelManager
    from app.ui import TABS, Advanced, Studio

    studio = Studio(ModelManager(None))
    OUTPUTS_DIR.mkdir(parents=True, exist_ok=True)
    for tab in (cls(studio) for cls in TABS):
        for index, row in enumerate(tab.example_rows()):
            started = time.perf_counter()
            advanced = {k: v for k, v in row.items() if k in Advanced._fields}  # e.g. a longer duration
            settings = studio.settings(Advanced(**{**advanced, "seed": EXAMPLE_SEED}))
            job = tab.prepare(settings, **{k: v for k, v in row.items() if k not in advanced})
            video = studio.manager.pipe.generate(job.with_settings(settings, EXAMPLE_SEED))
            write_video(output_path(tab.name, index), video, settings.fps)
            print(f"{output_path(tab.name, index).name}: {video.shape}, {time.perf_counter() - started:.1f} s, "
                  f"{output_path(tab.name, index).stat().st_size / 1024:.1f} KB")


def main() -> None:
    import sys

    if "--outputs" in sys.argv[1:]:
        render_outputs()
        return
    if "--mask-previews" in sys.argv[1:]:
        mask_previews()
        return
    OUT.mkdir(parents=True, exist_ok=True)
    Image.fromarray(clip("a red circle on the grass", 1, 1)[0]).save(OUT / "red_circle_grass.png")
    Image.fromarray(clip("a blue square in the sky", 2, 1)[0]).save(OUT / "blue_square_sky.png")
    Image.fromarray(clip(*CINEMAGRAPH_CLIP, 1)[0]).save(OUT / "yellow_circle_night.png")
    travel = clip("a red circle moving right on the grass", 0)  # the keyframes example: its first and last frame
    Image.fromarray(travel[0]).save(OUT / "red_circle_grass_left.png")
    Image.fromarray(travel[-1]).save(OUT / "red_circle_grass_right.png")
    sea = clip(*INPAINT_CLIP)
    write_video(OUT / "green_square_sea.mp4", sea, FPS)
    Image.fromarray(sea[0]).save(OUT / "green_square_sea_frame0.png")
    write_video(OUT / "red_triangle_sky.mp4", clip("a red triangle moving right in the sky", 5), FPS)
    brushed_layer(covering_box(object_path(*INPAINT_CLIP), INPAINT_MARGIN)).save(OUT / "inpaint_mask_layer.png")
    brushed_layer(bounce_band(*CINEMAGRAPH_CLIP, CINEMAGRAPH_MARGIN)).save(OUT / "cinemagraph_mask_layer.png")
    mask_previews()
    for path in sorted(OUT.iterdir()):
        print(f"{path.name}: {path.stat().st_size / 1024:.1f} KB")


if __name__ == "__main__":
    main()
