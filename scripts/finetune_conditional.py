"""Fine-tune a trained conditional model further: the conditional stage of a config, started from the
conditional STUNet of an existing pipeline instead of from the run's base (issue 27, keyframes).

Why a script: ``stages.run_conditional`` always widens the run's base model (``pipeline/base``) into a new
conditional model, and ``stages.conditional`` has no ``init_from`` key. This script runs that same stage
code with one change: the model it starts from is ``<init-from>/conditional`` (already 7-channel, so it is
not widened again). The run's pipeline directory starts as a copy of ``<init-from>`` (its base, SSR, styles
and text encoder), so the stage trains with the bundle's text encoder and the run ends with a complete
pipeline whose conditional model is the fine-tuned one.

    python scripts/finetune_conditional.py --config configs/tiny-keyframes.json \\
        --init-from assets/lumiere-tiny --output-dir ~/lumiere-runs/keyframes/run [--resume]
    python -m lumiere export --output-dir ~/lumiere-runs/keyframes/run --out ~/lumiere-runs/keyframes/candidate
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import lumiere  # noqa: F401  (thread defaults before torch loads)
from lumiere.threads import configure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--init-from", required=True, help="a pipeline directory with a conditional model")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    configure()

    from lumiere.build import load_config
    from lumiere.models.stunet import STUNet
    from lumiere.train import stages

    init = Path(args.init_from).expanduser()
    root = Path(args.output_dir).expanduser()
    pipeline = root / "pipeline"
    if not (init / "conditional" / "config.json").is_file():
        raise SystemExit(f"--init-from {init}: no conditional model there")
    if not pipeline.is_dir():
        shutil.copytree(init, pipeline, ignore=shutil.ignore_patterns("README.md", "eval.json"))

    def load_stunet(ws, name: str) -> STUNet:
        if name != "base":
            return STUNet.from_pretrained(ws.pipeline / name)
        model = STUNet.from_pretrained(init / "conditional", dtype=__import__("torch").float32)
        model.expand_input_channels = lambda *_, **__: None  # already conditional: keep its conv_in as it is
        return model

    stages.Workspace.load_stunet = load_stunet
    config = load_config(args.config)
    result = stages.run_stage("conditional", config, root, resume=args.resume, steps=args.steps)
    print(f"conditional: {json.dumps(result, default=float)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
