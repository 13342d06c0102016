"""The app's examples: inputs per tab, and the outputs pre-rendered from them with the bundled model.

Kept free of Gradio so ``python -m app.make_examples --outputs`` can render the outputs without the UI.
Each output is ``assets/examples/outputs/<tab>-<index>.mp4`` rendered with the tab's defaults, the advanced
settings its row names (``num_frames`` for a longer clip) and ``EXAMPLE_SEED``; the app shows them as the
examples' results when it serves the bundled model, so a visitor sees what each tab does before waiting.
"""
from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
OUTPUTS_DIR = EXAMPLES_DIR / "outputs"
EXAMPLE_SEED = 0


def example_file(name: str) -> str:
    return str(EXAMPLES_DIR / name)


def editor_value(background: str, layer: str | None = None) -> dict:
    """An ImageEditor value: the picture, the brushed mask as a transparent layer, and as composite the
    picture with the mask blended in (what the example thumbnail shows)."""
    composite = background.replace(".png", "_masked.png") if layer else background
    return {"background": example_file(background), "layers": [example_file(layer)] if layer else [],
            "composite": example_file(composite)}


# tab -> list of {API parameter: value}, the tab's own inputs and any advanced setting (``app.ui.Advanced``) other
# than the seed; prompts are unique within a tab (they key the pre-rendered outputs).
EXAMPLES: dict[str, list[dict]] = {
    "text_to_video": [
        {"prompt": "a red circle bouncing on the grass"},
        {"prompt": "a blue square moving right in the sky"},
        {"prompt": "a yellow triangle rotating at night"},
        {"prompt": "a purple circle moving right at night"},
        {"prompt": "a white circle bouncing at night", "loop": True},  # a seamless loop
        {"prompt": "a red square rotating over the sea", "num_frames": 48},  # 3x the model's clip
    ],
    "image_to_video": [
        {"image": example_file("red_circle_grass.png"), "prompt": "a red circle moving right on the grass"},
        {"image": example_file("blue_square_sky.png"), "prompt": "a blue square rotating in the sky"},
        {"image": example_file("red_circle_grass_left.png"), "prompt": "a red circle sliding to the right on the grass",
         "last_image": example_file("red_circle_grass_right.png")},
    ],
    "inpaint": [
        {"video": example_file("green_square_sea.mp4"),
         "mask": editor_value("green_square_sea_frame0.png", "inpaint_mask_layer.png"),
         "prompt": "a green square moving left over the sea", "outpaint": False},
        {"video": example_file("green_square_sea.mp4"), "mask": editor_value("green_square_sea_frame0.png"),
         "prompt": "a green square over a wider sea", "outpaint": True},
    ],
    "cinemagraph": [
        {"image": editor_value("yellow_circle_night.png", "cinemagraph_mask_layer.png"),
         "prompt": "a yellow circle bouncing at night"},
    ],
    "stylize": [
        {"prompt": "an orange circle bouncing on the grass", "style_weight": 0.75},
        {"prompt": "a green triangle moving up in the sky", "style_weight": 1.0},
    ],
    "video_to_video": [
        {"video": example_file("green_square_sea.mp4"), "prompt": "a purple square moving left over the sea",
         "strength": 0.6},
        {"video": example_file("red_triangle_sky.mp4"), "prompt": "a white triangle moving down at night",
         "strength": 0.8},
    ],
}


def output_path(tab: str, index: int) -> Path:
    return OUTPUTS_DIR / f"{tab}-{index}.mp4"


def outputs_available(tab: str) -> bool:
    return all(output_path(tab, i).is_file() for i in range(len(EXAMPLES[tab])))
