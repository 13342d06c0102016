"""Command line: ``python -m lumiere {generate,i2v,inpaint,cinemagraph,v2v,inflate,train,eval,compare,export}``.

Generation commands show a tqdm bar and write ``--out`` (default: ``outputs/<command>-<time>-seed<seed>.mp4``).
Input files are read by ``lumiere.io`` as the app reads uploads: refused by their headers before decoding,
videos decoded only as far as the model will look. The library's own errors (``lumiere.errors.LumiereError``:
a bad option, an unreadable or oversized input file, a missing or corrupt checkpoint, an unreachable Hub)
print one line and exit with status 2; anything else is a bug and keeps its traceback. Reference:
``docs/cli.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import InputError, LumiereError, MissingFileError
from .io import WRITABLE_SUFFIXES
from .options import (DEFAULT_STRENGTH, DEFAULT_STYLE_WEIGHT, MAX_FRAMES_FACTOR, MAX_GUIDANCE_SCALE, MAX_PROMPT_CHARS,
                      SAMPLERS)

DEFAULT_OUT_DIR = "outputs"  # git-ignored; generation commands write here when --out is left out
EXPORT_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}  # export --dtype -> torch dtype name


def _common(parser: argparse.ArgumentParser, needs_prompt: bool = True) -> None:
    if needs_prompt:
        parser.add_argument("--prompt", required=True, help="what the video shows")
    parser.add_argument("--out", default=None,
                        help=f"output file (.mp4, .gif or .webm; default: {DEFAULT_OUT_DIR}/<command>-<time>-seed<seed>.mp4)")
    parser.add_argument("--model", default=None, help="pipeline directory or Hub repo id (default: bundled model)")
    parser.add_argument("--frames", type=int, default=None,
                        help="number of frames: a multiple of the model's temporal down-sampling factor, at most "
                             f"{MAX_FRAMES_FACTOR} x its clip length (default: the clip length)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=None,
                        help=f"classifier-free guidance scale in [0, {MAX_GUIDANCE_SCALE:g}]")
    parser.add_argument("--negative-prompt", default=None, help=f"at most {MAX_PROMPT_CHARS} characters")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random; printed)")
    parser.add_argument("--sampler", default=None, choices=SAMPLERS, help="default: the model's")
    parser.add_argument("--no-ssr", action="store_true", help="skip spatial super-resolution")
    parser.add_argument("--style", default=None, help="style name (see the model's styles)")
    parser.add_argument("--style-weight", type=float, default=DEFAULT_STYLE_WEIGHT,
                        help="style interpolation alpha in [0, 1]")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")


LOOP_HELP = "a seamless loop: the last frame flows into the first (for GIFs / videos played on repeat)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lumiere", description="Lumiere text-to-video")
    sub = parser.add_subparsers(dest="command", required=True)

    generate = sub.add_parser("generate", help="text to video")
    _common(generate)
    generate.add_argument("--reference", action="store_true", help="reference-guided: T2I first frame, then animate")
    generate.add_argument("--loop", action="store_true", help=LOOP_HELP)

    i2v = sub.add_parser("i2v", help="image to video")
    i2v.add_argument("--image", required=True)
    _common(i2v)

    inpaint = sub.add_parser("inpaint", help="video inpainting (mask white = generate)")
    inpaint.add_argument("--video", required=True)
    inpaint.add_argument("--mask", required=True)
    _common(inpaint)

    cinemagraph = sub.add_parser("cinemagraph", help="animate the masked region of an image")
    cinemagraph.add_argument("--image", required=True)
    cinemagraph.add_argument("--mask", required=True)
    _common(cinemagraph)
    cinemagraph.add_argument("--loop", action="store_true", help=LOOP_HELP)

    v2v = sub.add_parser("v2v", help="SDEdit video-to-video")
    v2v.add_argument("--video", required=True)
    v2v.add_argument("--strength", type=float, default=DEFAULT_STRENGTH,
                     help="0 = keep the input, 1 = ignore it")
    _common(v2v)

    inflate = sub.add_parser("inflate", help="turn a diffusers T2I U-Net into a trainable STUNet checkpoint")
    inflate.add_argument("--t2i", required=True, help="diffusers UNet2DConditionModel directory or Hub repo id")
    inflate.add_argument("--subfolder", default=None, help="e.g. 'unet' for a full diffusers pipeline repo")
    inflate.add_argument("--out", required=True)
    inflate.add_argument("--fixed-temporal-resolution", action="store_true",
                         help="conventional inflation without temporal down/up-sampling")
    inflate.add_argument("--conditional", action="store_true", help="widen conv_in for the (J, C, M) input")
    inflate.add_argument("--config", default=None,
                         help="training config whose model.temporal options to inflate with (default: inflate's "
                              "defaults); use the config that will train it (stages.*.init_from checks they agree)")

    train = sub.add_parser("train", help="run a training stage (works under `accelerate launch`)")
    train.add_argument("--stage", required=True, choices=["t2i", "temporal", "conditional", "ssr", "style", "all"])
    train.add_argument("--config", required=True)
    train.add_argument("--output-dir", default=None)
    train.add_argument("--resume", action="store_true", help="continue from the stage's latest checkpoint")
    train.add_argument("--steps", type=int, default=None, help="override the stage's step count")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--export", default=None, help="after training, export the pipeline (fp16) here")
    train.add_argument("--budget", type=float, default=None,
                       help="seconds of training for the whole run: the config's per-stage time_budget shares, scaled")
    train.add_argument("--mixed-precision", default=None, choices=["no", "bf16", "fp16"],
                       help="override every stage's mixed precision")
    train.add_argument("--num-workers", type=int, default=None, help="override every stage's data loader workers")
    train.add_argument("--pack", default=None, metavar="DIR",
                       help="export the pipeline (fp16) and pack it as DIR/model.tar while training (every "
                            "--pack-every seconds and at the end), with the per-stage log DIR/train_stages.json")
    train.add_argument("--pack-every", type=float, default=60.0, help="seconds between packs (default 60)")

    export = sub.add_parser("export", help="export a trained pipeline directory (fp16 safetensors)")
    export.add_argument("--output-dir", required=True, help="the training run's output_dir")
    export.add_argument("--out", required=True)
    export.add_argument("--dtype", default="fp16", choices=sorted(EXPORT_DTYPES),
                        help="the weights' precision (default fp16; modules transformers keeps in fp32 stay fp32)")

    evaluate = sub.add_parser("eval", help="evaluate a pipeline on held-out prompts of the procedural world")
    evaluate.add_argument("--model", default=None)
    evaluate.add_argument("--out", default=None, help="write the metrics as JSON here")
    evaluate.add_argument("--samples", type=int, default=None, help="seeds per text-to-video prompt and clips per application metric (default: 6 seeds, 16 clips)")
    evaluate.add_argument("--steps", type=int, default=None)
    evaluate.add_argument("--quick", action="store_true", help="fewer samples and no SSR (smoke test)")
    evaluate.add_argument("--parts", default=None,
                          help="comma-separated subset of t2v, v2v, conditional, ssr, style (default: all the model has)")

    compare = sub.add_parser("compare", help="compare two models' eval metrics row by row (exit 1 if any row is "
                                             "worse or unmeasured)")
    compare.add_argument("--baseline", nargs="+", required=True, metavar="JSON",
                         help="the shipped model's metrics (e.g. assets/lumiere-tiny/eval.json); several files "
                              "from `eval --parts` runs are merged")
    compare.add_argument("--candidate", nargs="+", required=True, metavar="JSON", help="the candidate's metrics")
    return parser


GENERATION_COMMANDS = ("generate", "i2v", "inpaint", "cinemagraph", "v2v")


def _check_output_file(out: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Refuse an output path that could not be written, before any work is done."""
    path = Path(out)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise InputError(f"--out {out}: the file name must end in {', '.join(suffixes)} "
                         f"(e.g. --out {path.with_suffix('.mp4').name})")
    if path.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name inside it, e.g. {path / 'clip.mp4'}")
    parent = path.parent
    if not parent.is_dir():
        raise MissingFileError(f"--out {out}: the directory '{parent}' does not exist; create it first")


def _check_input_file(option: str, value: str) -> None:
    if not Path(value).is_file():
        raise MissingFileError(f"{option} {value}: no such file")


def default_out(command: str, seed: int) -> Path:
    """Where a generation command writes when ``--out`` is left out: the git-ignored ``outputs/`` folder
    (created), never the current directory itself."""
    folder = Path(DEFAULT_OUT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}.mp4"


def check_args(args) -> None:
    """Everything that can be checked without the model, so a mistake costs seconds rather than a whole
    generation (or evaluation) before it is reported. Raises InputError / MissingFileError."""
    if args.command in GENERATION_COMMANDS:
        from .request import check_values

        if args.out is not None:
            _check_output_file(args.out, WRITABLE_SUFFIXES)
        for option in ("image", "video", "mask"):
            if getattr(args, option, None) is not None:
                _check_input_file(f"--{option}", getattr(args, option))
        check_values(args.prompt, _options(args, args.seed), strength=getattr(args, "strength", None), names=FLAGS)
    elif args.command == "eval" and args.out:
        _check_output_file(args.out)
    elif args.command == "compare":
        for option in ("baseline", "candidate"):
            for value in getattr(args, option):
                _check_input_file(f"--{option}", value)
    elif args.command == "export":
        if not Path(args.output_dir).is_dir():
            raise MissingFileError(f"--output-dir {args.output_dir}: no such directory (the training run's output_dir)")
    elif args.command == "train":
        _check_input_file("--config", args.config)
        for option, value in (("--budget", args.budget), ("--pack-every", args.pack_every)):
            if value is not None and not value > 0:
                raise InputError(f"{option} must be a number of seconds > 0, got {value:g}")
        if args.num_workers is not None and args.num_workers < 0:
            raise InputError(f"--num-workers must be >= 0, got {args.num_workers}")


def _load_pipeline(args):
    from .pipeline import LumierePipeline

    try:
        pipe = LumierePipeline.from_pretrained(args.model, device=args.device)
    except MissingFileError as error:
        raise MissingFileError(f"--model {args.model or 'bundled'}: {error}") from None
    pipe.progress_bar = True
    return pipe


# The flag that sets each request field (for messages in the user's terms).
FLAGS = {"prompt": "--prompt", "negative_prompt": "--negative-prompt", "num_frames": "--frames",
         "num_inference_steps": "--steps", "guidance_scale": "--guidance", "sampler": "--sampler", "seed": "--seed",
         "style_weight": "--style-weight", "loop": "--loop", "strength": "--strength"}


def _options(args, seed: int | None):
    """The request options the flags give (``lumiere.request.Options``)."""
    from .request import Options

    return Options(num_frames=args.frames, num_inference_steps=args.steps, guidance_scale=args.guidance,
                   negative_prompt=args.negative_prompt, seed=seed, super_resolve=not args.no_ssr,
                   sampler=args.sampler, style=args.style or None, style_weight=args.style_weight,
                   loop=getattr(args, "loop", False))


def _request(args, seed: int, image, video, mask):
    """The library request of a generation command."""
    from . import request as requests

    options = _options(args, seed)
    if args.command == "generate":
        return requests.TextToVideo(args.prompt, options, "t2i" if args.reference else None)
    if args.command == "i2v":
        return requests.ImageToVideo(image, args.prompt, options)
    if args.command == "inpaint":
        return requests.Inpaint(video, mask, args.prompt, options)
    if args.command == "cinemagraph":
        return requests.Cinemagraph(image, mask, args.prompt, options)
    return requests.VideoToVideo(video, args.prompt, args.strength, options)


def _write(pipe, video, out, seed: int) -> None:
    from .io import write_video

    write_video(out, video, pipe.fps)
    print(f"wrote {out} ({video.shape[0]} frames, {video.shape[2]}x{video.shape[1]}, seed {seed})")


def _warn_unknown_words(pipe, prompt: str) -> None:
    """One warning line (not an error) for prompt words a closed-vocabulary model reads as unknown, with the
    words it knows; silent for open vocabularies (``LumierePipeline.unknown_words``)."""
    unknown = pipe.unknown_words(prompt)
    if unknown:
        known = pipe.known_words() or []
        print(f"warning: this model does not know {', '.join(repr(w) for w in unknown)} and ignores "
              f"{'it' if len(unknown) == 1 else 'them'}; it knows {len(known)} words: {' '.join(known)}",
              file=sys.stderr)


def _read_video(pipe, args):
    """``--video`` as the app reads an upload (``lumiere.io.read_video``): the whole clip at the model's fps
    (the first ``--frames`` frames when given), each frame scaled down while decoding to just cover the
    output size, so memory follows what the model uses, not what the file holds."""
    from .io import read_video

    from .options import frame_counts

    base_frames, height, width = pipe.base_resolution
    if not args.no_ssr and pipe.has_component("ssr"):
        _, height, width = pipe.output_resolution
    longest = frame_counts(base_frames, pipe.temporal_downsampling_factor)[-1]
    video = read_video(args.video, fps=pipe.fps, max_frames=args.frames or longest + 1, cover=(height, width),
                       name="--video")[0]
    if args.frames is None and len(video) > longest:  # the whole clip unless it is longer than the model takes
        raise InputError(f"--video: {args.video} is longer than this model takes ({longest} frames = "
                         f"{longest / pipe.fps:g} s at {pipe.fps:g} fps): trim it, or pass --frames to use its start")
    return video


def run(args) -> int:
    from .io import check_video, read_image, read_mask

    if args.command == "inflate":
        return _inflate(args)
    if args.command == "train":
        return _train(args)
    if args.command == "export":
        from .train import export_pipeline

        import torch

        dtype = getattr(torch, EXPORT_DTYPES[args.dtype])
        print(f"exported to {export_pipeline(args.output_dir, args.out, dtype=dtype)}")
        return 0
    if args.command == "eval":
        from .errors import InputError
        from .evaluation import EVAL_PARTS, evaluate_pipeline

        parts = tuple(p.strip() for p in args.parts.split(",") if p.strip()) if args.parts else EVAL_PARTS
        if set(parts) - set(EVAL_PARTS):
            raise InputError(f"unknown evaluation parts {args.parts!r}; choose from {', '.join(EVAL_PARTS)}")
        metrics = evaluate_pipeline(args.model, samples=args.samples, steps=args.steps, quick=args.quick, parts=parts)
        text = json.dumps(metrics, indent=2, allow_nan=False)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        return 0
    if args.command == "compare":
        return _compare(args)

    from .request import check_num_frames, random_seed

    # Input files are read, or a video's header checked, (and refused if unreadable or too large) before the
    # model loads; the video is decoded once the model says how much of it a generation uses.
    image = read_image(args.image, name="--image") if getattr(args, "image", None) else None
    mask = read_mask(args.mask, name="--mask") if getattr(args, "mask", None) else None
    if getattr(args, "video", None):
        check_video(args.video, name="--video")
    pipe = _load_pipeline(args)
    if args.frames is not None:
        check_num_frames(args.frames, pipe.base_resolution[0], pipe.temporal_downsampling_factor, "--frames")
    video = _read_video(pipe, args) if getattr(args, "video", None) else None
    _warn_unknown_words(pipe, args.prompt)  # once every input is accepted: a refusal stays one line
    # The CLI picks the seed when none is given, so it can print the one that reproduces the clip.
    seed = args.seed if args.seed is not None and args.seed >= 0 else random_seed()
    out = args.out if args.out is not None else default_out(args.command, seed)
    video = pipe.generate(_request(args, seed, image, video, mask))
    _write(pipe, video, out, seed)
    return 0


def _inflate(args) -> int:
    from .build import load_t2i_unet
    from .hub import resolve_folder
    from .models.stunet import TemporalConfig, inflate

    prefix = f"{args.subfolder.strip('/')}/" if args.subfolder else ""
    try:
        source = resolve_folder(args.t2i, [f"{prefix}config.json", f"{prefix}*.safetensors"], "diffusers U-Net")
    except MissingFileError as error:
        raise MissingFileError(f"--t2i {args.t2i}: {error}") from None
    try:
        unet = load_t2i_unet(source, args.subfolder)
    except OSError as error:  # diffusers' "not a directory / no such repo / no network": the caller can fix it
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MissingFileError(f"--t2i {args.t2i}: could not load a diffusers U-Net from it ({reason})") from None
    temporal = TemporalConfig()
    if args.config:
        from .build import load_config
        from .train.config import RunConfig

        temporal = RunConfig.from_dict(load_config(args.config)).model.temporal
    stunet = inflate(unet, temporal, temporal_resize=temporal.temporal_resize and not args.fixed_temporal_resolution,
                     extra_input_channels=unet.config.in_channels + 1 if args.conditional else 0)
    stunet.save_pretrained(args.out)
    trainable = sum(p.numel() for p in stunet.temporal_parameters())
    print(f"wrote STUNet to {args.out}: N={stunet.temporal_downsampling_factor}, "
          f"{trainable / 1e6:.2f}M temporal parameters to train")
    return 0


def _read_metrics(option: str, paths: list[str]) -> dict:
    """The metrics of several ``eval --out`` files, merged by part (a later file's part replaces an earlier one)."""
    merged = {}
    for path in paths:
        try:
            metrics = json.loads(Path(path).read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise InputError(f"--{option} {path}: not a metrics JSON file ({error})") from None
        if not isinstance(metrics, dict):
            raise InputError(f"--{option} {path}: not a metrics JSON file (expected an object of parts)")
        merged.update(metrics)
    return merged


def _compare(args) -> int:
    """Print the compared rows and a verdict; 0 when the candidate is better or the same on every row."""
    from .evaluation import compare_metrics

    rows = compare_metrics(_read_metrics("baseline", args.baseline), _read_metrics("candidate", args.candidate))

    def show(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    width = max(len(row["row"]) for row in rows)
    print(f"{'row':{width}s}  {'baseline':>9s}  {'candidate':>9s}  {'z':>5s}  verdict")
    for row in rows:
        z = "" if row["z"] is None else f"{row['z']:+.1f}"
        print(f"{row['row']:{width}s}  {show(row['baseline']):>9s}  {show(row['candidate']):>9s}  {z:>5s}  "
              f"{row['verdict']}")
    counts = {verdict: sum(row["verdict"] == verdict for row in rows)
              for verdict in ("better", "same", "worse", "not measured")}
    beats = not counts["worse"] and not counts["not measured"]
    print(", ".join(f"{count} {verdict}" for verdict, count in counts.items()) + ": the candidate "
          + ("is not worse on any row" if beats else "does not beat the baseline on every row"))
    return 0 if beats else 1


def _train(args) -> int:
    from .build import load_config
    from .train import STAGES, export_pipeline, run_stage
    from .train.config import RunConfig
    from .train.pack import Packer
    from .train.processes import process_state
    from .train.stages import Workspace

    process_state()  # under torchrun / accelerate launch: join the process group before anything else
    config = load_config(args.config)
    run_config = RunConfig.from_dict(config)
    stages, skipped = run_config.plan(STAGES if args.stage == "all" else (args.stage,))
    for stage, reason in skipped.items():
        print(f"{stage}: skipped: {reason}")
    time_scale = 1.0
    if args.budget is not None:
        total = run_config.time_budget(stages)
        if not total:
            raise InputError(f"--budget: {args.config} gives its stages no time_budget to scale (see configs/gpu.json)")
        time_scale = args.budget / total
    root = Workspace(run_config, args.output_dir).root
    packer = Packer(root, args.pack, args.pack_every) if args.pack else None
    if args.pack:
        Path(args.pack).mkdir(parents=True, exist_ok=True)
    log = {"config": str(args.config), "budget_seconds": args.budget, "time_scale": time_scale, "stages": {}}
    started = time.perf_counter()

    def write_log(**extra) -> None:  # the per-stage log next to the pack, rewritten after every stage
        if packer is not None:
            log.update(wall_seconds=round(time.perf_counter() - started, 2), **extra)
            Path(args.pack, "train_stages.json").write_text(json.dumps(log, indent=2, default=float))

    for stage in stages:
        stage_start = time.perf_counter()
        result = run_stage(stage, config, args.output_dir, resume=args.resume, time_scale=time_scale, on_write=packer,
                           steps=args.steps, batch_size=args.batch_size, mixed_precision=args.mixed_precision,
                           num_workers=args.num_workers)
        print(f"{stage}: {json.dumps(result, default=float)}")
        log["stages"][stage] = {"result": result, "wall_seconds": round(time.perf_counter() - stage_start, 2)}
        write_log()
    if packer is not None:
        packer(force=True)
        write_log(packs=packer.packs)
        print(f"packed the pipeline into {Path(args.pack) / 'model.tar'} ({packer.packs} packs)")
    if args.export:
        print(f"exported to {export_pipeline(root, args.export)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        return run(args)
    except LumiereError as error:  # one line: the message may quote a multi-line upstream error
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
