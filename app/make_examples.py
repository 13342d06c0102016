"""Render the small example inputs in assets/examples from the procedural world, and the example
outputs the app shows as cached results (run once, committed).

    python -m app.make_examples            # the inputs
    python -m app.make_examples --outputs  # assets/examples/outputs/<tab>-<i>.mp4 with the bundled model
    python -m app.make_examples --mask-previews  # the pictures with their example masks blended in
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lumiere.data.world import render_clip, spec_from_prompt
from lumiere.io import write_video

OUT = Path(__file__).resolve().parent.parent / "assets" / "examples"
SIZE = 128
FRAMES = 16
FPS = 8


def clip(prompt: str, seed: int, frames: int = FRAMES) -> np.ndarray:
    return render_clip(spec_from_prompt(prompt, seed), frames, SIZE, SIZE)


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
    """Each tab's examples through the app's own request path (validation included), default settings,
    seed EXAMPLE_SEED, on the bundled model."""
    import time

    from app.examples import EXAMPLE_SEED, OUTPUTS_DIR, output_path
    from app.model_manager import ModelManager
    from app.ui import TABS, Advanced, Studio

    studio = Studio(ModelManager(None))
    OUTPUTS_DIR.mkdir(parents=True, exist_ok=True)
    for tab in (cls(studio) for cls in TABS):
        for index, row in enumerate(tab.example_rows()):
            started = time.perf_counter()
            settings = studio.settings(Advanced(seed=EXAMPLE_SEED))
            job = tab.prepare(settings, **row)
            video = job.call(studio.manager.pipe, **settings.pipeline_kwargs(EXAMPLE_SEED))
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
    Image.fromarray(clip("a yellow circle at night", 3, 1)[0]).save(OUT / "yellow_circle_night.png")
    sea = clip("a green square moving left over the sea", 4)
    write_video(OUT / "green_square_sea.mp4", sea, FPS)
    Image.fromarray(sea[0]).save(OUT / "green_square_sea_frame0.png")
    write_video(OUT / "red_triangle_sky.mp4", clip("a red triangle moving right in the sky", 5), FPS)
    brushed_layer((SIZE // 4, SIZE // 4, 3 * SIZE // 4, 3 * SIZE // 4)).save(OUT / "inpaint_mask_layer.png")
    brushed_layer((SIZE // 8, SIZE // 8, 7 * SIZE // 8, 7 * SIZE // 8)).save(OUT / "cinemagraph_mask_layer.png")
    mask_previews()
    for path in sorted(OUT.iterdir()):
        print(f"{path.name}: {path.stat().st_size / 1024:.1f} KB")


if __name__ == "__main__":
    main()
