"""Render the README's sample GIFs with the bundled model: `python scripts/make_samples.py [NAME ...]` (all, or
the named ones).

Each row of a sample strip is one application; GIFs are written at output resolution (after SSR).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lumiere import LumierePipeline
from lumiere.data.world import ClipSpec, ObjectSpec, render_clip
from lumiere.io import write_video

OUT = Path(__file__).resolve().parent.parent / "assets" / "samples"


def main() -> None:
    pipe = LumierePipeline.from_pretrained(device="cpu")
    OUT.mkdir(parents=True, exist_ok=True)
    frames, height, width = pipe.base_resolution
    still = render_clip(ClipSpec((ObjectSpec("yellow", "triangle", "rotating"),), "night", 11), frames, height, width)
    travel = render_clip(ClipSpec((ObjectSpec("red", "circle", "moving right"),), "grass", 0), frames, height, width)
    region = np.zeros((height, width), bool)
    region[4:28, 4:28] = True
    samples = {
        "t2v_red_circle_right": lambda: pipe.text_to_video("a red circle moving to the right over the sea", seed=1),
        "t2v_blue_square_bouncing": lambda: pipe.text_to_video("a blue square bouncing on the grass", seed=2),
        "t2v_two_yellow_triangles": lambda: pipe.text_to_video("two yellow triangles circling on a night sky", seed=3),
        "t2v_loop_yellow_circle": lambda: pipe.text_to_video("a yellow circle bouncing at night", seed=0, loop=True),
        "t2v_long_red_square_rotating": lambda: pipe.text_to_video("a red square rotating over the sea", seed=0,
                                                                   num_frames=3 * frames),  # 3x the clip
        "i2v_yellow_triangle": lambda: pipe.image_to_video(still[0], "a yellow triangle moving down at night", seed=4),
        "keyframes_red_circle": lambda: pipe.keyframes_to_video(travel[0], travel[-1], "a red circle moving right on the grass",
                                                                seed=6),
        "cinemagraph_triangle": lambda: pipe.cinemagraph(still[0], region, "a yellow triangle rotating at night", seed=5),
        **{f"style_{name.replace(' ', '_')}": (lambda name=name: pipe.text_to_video(
            "a red circle moving to the right over the sea", seed=1, style=name, style_weight=0.8)) for name in pipe.styles},
    }
    wanted = set(sys.argv[1:]) or set(samples)
    unknown = wanted - set(samples)
    if unknown:
        raise SystemExit(f"unknown samples {sorted(unknown)}; choose from {sorted(samples)}")
    for name, make in samples.items():
        if name not in wanted:
            continue
        video = make()
        write_video(OUT / f"{name}.gif", video, pipe.fps)
        print(f"{name}: {video.shape}")  # each sample's seed is in its call above


if __name__ == "__main__":
    main()
