"""Text-to-video (or image-to-video) at default settings for several pipelines, interleaved in one process.

Compares what a model change costs at inference (e.g. the motion architecture's conditioned temporal
layers against the previous bundled model), base resolution alone and with SSR:

    PYTHONPATH=. python benchmarks/bench_t2v_models.py --models assets/lumiere-tiny /path/to/other --threads 2
    PYTHONPATH=. python benchmarks/bench_t2v_models.py --task image_to_video --models ...   # the conditional model

The best of ``--repeats`` is kept (wall and process CPU time); ratios are against the first model.
"""
from __future__ import annotations

import argparse
import time

import torch

from lumiere import LumierePipeline
from lumiere.data.world import render_clip, spec_from_prompt

PROMPT = "a red circle moving to the right over the sea"
TASKS = ("text_to_video", "image_to_video")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="pipeline directories (the first is the reference)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--task", choices=TASKS, default="text_to_video",
                        help="image_to_video animates the first frame of the world's render of the prompt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipes = {path: LumierePipeline.from_pretrained(path, device="cpu") for path in args.models}
    runs = [(path, ssr) for path in args.models for ssr in (False, True)]
    best = {run: (float("inf"), float("inf")) for run in runs}

    # image_to_video's input, rendered once per model (outside the timed calls)
    images = {path: render_clip(spec_from_prompt(PROMPT, 0), 1, *pipe.base_resolution[1:])[0] for path, pipe in pipes.items()}

    def generate(path: str, ssr: bool):
        if args.task == "image_to_video":
            return pipes[path].image_to_video(images[path], PROMPT, seed=0, super_resolve=ssr)
        return pipes[path].text_to_video(PROMPT, seed=0, super_resolve=ssr)

    for path in pipes:
        generate(path, False)  # warm-up
    for _ in range(args.repeats):
        for path, ssr in runs:
            wall, cpu = time.perf_counter(), time.process_time()
            generate(path, ssr)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[path, ssr] = (min(best[path, ssr][0], wall), min(best[path, ssr][1], cpu))
    print(f"### {args.task} at default settings, {args.threads} thread(s), best of {args.repeats}\n")
    print("| model | SSR | wall | CPU time | wall vs first model |")
    print("|---|---|---|---|---|")
    for path, ssr in runs:
        wall, cpu = best[path, ssr]
        reference = best[args.models[0], ssr][0]
        print(f"| {path} | {'yes' if ssr else 'no'} | {wall:.2f} s | {cpu:.2f} s | {wall / reference:.2f}x |")


if __name__ == "__main__":
    main()
