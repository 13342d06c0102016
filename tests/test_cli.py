"""lumiere.cli: the command line, and the contract every front end shares. Commands write playable files (into the
ignored outputs/ folder by default); refusals are one line, without tracebacks or ffmpeg banners, and come before any
model is loaded; one prompt limit and one frame rule for the library, the app and the CLI; the decoder reads only
what the model uses."""
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from lumiere.cli import main
from lumiere.errors import InputError
from lumiere.io import read_video, write_video
from lumiere.options import MAX_PROMPT_CHARS, frame_counts
from lumiere.request import GenerationSettings, check_num_frames
from tests.tiny import MICRO_CONFIG

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red circle moving right"

# Runs argv as a child and prints its exit status and the peak RSS (MiB) of the child and everything it
# waited for (ffmpeg included): RUSAGE_CHILDREN of a fresh wrapper holds this command only.
RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


# ----------------------------------------------------------------------------- commands
def test_cli_generate_writes_h264(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert main(["generate", "--prompt", "a red circle", "--out", str(out), "--model", str(tiny_pipeline_dir),
                 "--seed", "3", "--steps", "1"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (8, 32, 32, 3) and fps == pytest.approx(8)
    assert "seed 3" in capsys.readouterr().out


def test_cli_applications(tiny_pipeline_dir, tmp_path):
    from PIL import Image

    image = tmp_path / "in.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(image)
    mask = tmp_path / "mask.png"
    Image.fromarray((np.arange(256).reshape(16, 16) % 16 > 8).astype(np.uint8) * 255).save(mask)
    video = tmp_path / "in.mp4"
    write_video(video, np.full((8, 16, 16, 3), 120, np.uint8), 8)
    model = ["--model", str(tiny_pipeline_dir), "--steps", "1", "--seed", "0", "--no-ssr"]
    for command in (["i2v", "--image", str(image)], ["inpaint", "--video", str(video), "--mask", str(mask)],
                    ["cinemagraph", "--image", str(image), "--mask", str(mask)], ["v2v", "--video", str(video)]):
        out = tmp_path / f"{command[0]}.gif"
        assert main(command + ["--prompt", "x", "--out", str(out)] + model) == 0
        assert read_video(out)[0].shape == (8, 16, 16, 3)


def test_cli_inflate_from_a_diffusers_directory(tmp_path):
    from diffusers import UNet2DConditionModel

    from lumiere import STUNet

    unet = UNet2DConditionModel(**{**MICRO_CONFIG["model"]["t2i"]["unet"], "cross_attention_dim": 16})
    unet.save_pretrained(tmp_path / "t2i")
    result = subprocess.run([sys.executable, "-m", "lumiere", "inflate", "--t2i", str(tmp_path / "t2i"),
                             "--out", str(tmp_path / "stunet")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "N=2" in result.stdout
    stunet = STUNet.from_pretrained(tmp_path / "stunet")
    assert torch.equal(stunet.t2i.conv_in.weight, unet.conv_in.weight)


def test_cli_loop_flag_reaches_the_pipeline(tiny_pipeline_dir, tmp_path, monkeypatch):
    from PIL import Image

    from lumiere.cli import main
    from lumiere.pipeline import LumierePipeline

    calls = []
    original = LumierePipeline.generate

    def spy(self, request, **kwargs):
        calls.append((request.task, request.options.loop))
        return original(self, request, **kwargs)

    monkeypatch.setattr(LumierePipeline, "generate", spy)
    common = ["--model", str(tiny_pipeline_dir), "--seed", "0", "--steps", "1", "--no-ssr", "--prompt", PROMPT]
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "image.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    picture = ["--image", str(tmp_path / "image.png"), "--mask", str(tmp_path / "mask.png")]
    assert main(["generate", *common, "--loop", "--out", str(tmp_path / "a.mp4")]) == 0
    assert main(["generate", *common, "--out", str(tmp_path / "b.mp4")]) == 0
    assert main(["cinemagraph", *common, *picture, "--loop", "--out", str(tmp_path / "c.mp4")]) == 0
    assert calls == [("text_to_video", True), ("text_to_video", False), ("cinemagraph", True)]


# ----------------------------------------------------------------------------- a bounded decoder
def lavfi_clip(path: Path, source: str, vf: str | None = None) -> Path:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", source]
    cmd += ["-vf", vf] if vf else []
    subprocess.run(cmd + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def start_peak_rss(argv: list[str]) -> subprocess.Popen:
    """``python -m lumiere *argv`` under a wrapper that prints its exit code and peak RSS (MB); started
    now and read by ``peak_rss_mb``, so independent measurements run side by side."""
    return subprocess.Popen([sys.executable, "-c", RSS_WRAPPER, sys.executable, "-m", "lumiere", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def peak_rss_mb(process: subprocess.Popen) -> int:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    code, peak = map(int, out.split())
    assert code == 0, err
    return peak


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_cli_v2v_on_a_60fps_memory_bomb_stays_near_the_small_clip_baseline(tiny_pipeline_dir, tmp_path):
    """A 1280x720 / 60 fps / 19 s clip of a few tens of KB passes the header limits (1.05 billion pixels) and
    would decode to 3.1 GB of RGB frames. The CLI must decode only what the model uses (here --frames 8 at
    8 fps, scaled to cover 16x16), like the app: its peak RSS stays within 300 MB of the same command on a tiny
    clip (measured: 486 vs 487 MB; before the fix, 6384 MB)."""
    bomb = lavfi_clip(tmp_path / "bomb.mp4", "color=c=blue:size=1280x720:rate=60:duration=19",
                      "drawbox=x='mod(t*600,1200)':y=300:w=80:h=80:color=red:t=fill")
    small = lavfi_clip(tmp_path / "small.mp4", "color=c=blue:size=64x64:rate=8:duration=1")
    assert bomb.stat().st_size < 300_000
    common = ["--prompt", "a red circle", "--model", str(tiny_pipeline_dir), "--steps", "1", "--no-ssr", "--seed", "0",
              "--frames", "8"]
    baseline = start_peak_rss(["v2v", "--video", str(small), "--out", str(tmp_path / "small_out.mp4"), *common])
    peak = start_peak_rss(["v2v", "--video", str(bomb), "--out", str(tmp_path / "bomb_out.mp4"), *common])
    baseline, peak = peak_rss_mb(baseline), peak_rss_mb(peak)
    assert (tmp_path / "bomb_out.mp4").is_file()
    assert peak < baseline + 300, f"v2v on the 60 fps clip peaked at {peak} MB (small clip: {baseline} MB)"


# ----------------------------------------------------------------------------- one-line errors
def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's first bytes; tiny on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"x" * 64)) + chunk(b"IEND", b"")


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "ffmpeg version" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_cli_refusals_are_one_line_without_tracebacks_or_ffmpeg_banners(tiny_pipeline_dir, tmp_path):
    """Real processes (stderr as a user sees it, ffmpeg's own output included), run side by side: a
    decompression-bomb image, a text file named .mp4, and inflate from the Hub while offline."""
    import os

    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header_only(20000, 20000))
    notes = tmp_path / "notes.mp4"
    notes.write_text("shopping list: eggs, milk\n" * 20)
    model = ["--model", str(tiny_pipeline_dir)]
    commands = {
        "bomb": (["i2v", "--image", str(huge), "--prompt", "x", "--out", str(tmp_path / "a.mp4"), *model], {}),
        "not a video": (["v2v", "--video", str(notes), "--prompt", "x", "--out", str(tmp_path / "b.mp4"), *model], {}),
        "offline": (["inflate", "--t2i", "nobody/not-cached-unet", "--out", str(tmp_path / "stunet")],
                    {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}),
    }
    running = {name: subprocess.Popen([sys.executable, "-m", "lumiere", *argv], cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env})
               for name, (argv, env) in commands.items()}
    results = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert_one_line_error(results["bomb"], "--image", "'huge.png'", "400 megapixels", "4096x4096")
    assert_one_line_error(results["not a video"], "--video 'notes.mp4'", "not a video file", "Invalid data")
    line = assert_one_line_error(results["offline"], "--t2i nobody/not-cached-unet", "the Hub could not be reached",
                                 "HF_HUB_OFFLINE", "pass a local")
    assert "config.json" not in line


def test_cli_errors_are_one_line(tiny_pipeline_dir, tmp_path, capsys):
    code = main(["generate", "--prompt", "x", "--out", str(tmp_path / "o.mp4"), "--model", str(tiny_pipeline_dir),
                 "--frames", "7"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --frames must be a multiple of 2 for this model, got 7 "
                                               "(try 6 or 8): this model takes multiples of 2 from 2 to 80"), err
    assert main(["i2v", "--image", str(tmp_path / "missing.png"), "--prompt", "x", "--out", "o.mp4",
                 "--model", str(tiny_pipeline_dir)]) == 2


@pytest.mark.parametrize("argv, message", [
    (["generate", "--prompt", "x", "--out", "clip.avi"], "error: --out clip.avi: the file name must end in .mp4, "
                                                         ".webm, .gif (e.g. --out clip.mp4)"),
    (["generate", "--prompt", "x", "--out", "{tmp}/no/clip.mp4"], "the directory '{tmp}/no' does not exist"),
    (["generate", "--prompt", "x", "--out", "{tmp}"], "--out {tmp}: the file name must end in"),
    (["generate", "--prompt", "x", "--out", "o.mp4", "--seed", str(2**63)], "--seed must be at most 2^63-1"),
    (["generate", "--prompt", "x", "--out", "o.mp4", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["generate", "--prompt", "x", "--out", "o.mp4", "--guidance", "50"], "--guidance must be between 0 and 20"),
    (["v2v", "--video", "assets/examples/red_triangle_sky.mp4", "--prompt", "x", "--out", "o.mp4", "--strength", "2"],
     "--strength must be between 0 and 1, got 2"),
    (["i2v", "--image", "{tmp}/missing.png", "--prompt", "x", "--out", "o.mp4"], "--image {tmp}/missing.png: no such file"),
    (["inpaint", "--video", "assets/examples/green_square_sea.mp4", "--mask", "{tmp}/notes.png", "--prompt", "x",
      "--out", "o.mp4"], "--mask: the file 'notes.png' is not an image file"),
    (["generate", "--prompt", "x" * 501, "--out", "o.mp4"], "--prompt is too long: 501 characters, the limit is 500"),
    (["generate", "--prompt", "x", "--negative-prompt", "y" * 100_000, "--out", "o.mp4"],
     "--negative-prompt is too long: 100000 characters, the limit is 500"),
    (["eval", "--out", "{tmp}/no/metrics.json"], "the directory '{tmp}/no' does not exist"),
    (["train", "--stage", "t2i", "--config", "{tmp}/missing.json"], "--config {tmp}/missing.json: no such file"),
    (["compare", "--baseline", "assets/lumiere-tiny/eval.json", "--candidate", "{tmp}/notes.png"],
     "--candidate {tmp}/notes.png: not a metrics JSON file"),
    (["compare", "--baseline", "{tmp}/missing.json", "--candidate", "assets/lumiere-tiny/eval.json"],
     "--baseline {tmp}/missing.json: no such file"),
])
def test_cli_refuses_bad_arguments_before_loading_a_model(argv, message, tmp_path, monkeypatch, capsys):
    """A wrong --out, out-of-range number or unreadable input costs no generation (or evaluation) time."""
    import lumiere.evaluation
    import lumiere.pipeline

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(lumiere.pipeline.LumierePipeline, "from_pretrained", no_work)
    monkeypatch.setattr(lumiere.evaluation, "evaluate_pipeline", no_work)
    monkeypatch.chdir(ROOT)
    (tmp_path / "notes.png").write_text("not a picture")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.replace("{tmp}", str(tmp_path)) in err[0], err


# ----------------------------------------------------------------------------- prompts
def test_over_long_prompts_are_refused_everywhere_not_cut(tiny_pipe, capsys, tmp_path):
    from app import inputs

    long = "y" * 100_000
    with pytest.raises(InputError, match=f"negative_prompt is too long: 100000 characters, the limit is "
                                         f"{MAX_PROMPT_CHARS}"):
        tiny_pipe.text_to_video("a red circle", negative_prompt=long, seed=0)
    with pytest.raises(InputError, match="prompt is too long: 501 characters"):
        tiny_pipe.text_to_video("x" * 501, seed=0)
    with pytest.raises(InputError, match="Negative prompt is too long: 100000 characters"):
        inputs.optional_text(long)
    with pytest.raises(InputError, match="Prompt is too long: 501 characters"):
        inputs.prompt_text("x" * 501)
    assert inputs.optional_text("  blurry  ") == "blurry" and len(inputs.prompt_text("x" * 500)) == 500
    assert main(["generate", "--prompt", "x", "--negative-prompt", long, "--out", str(tmp_path / "o.mp4")]) == 2
    assert "--negative-prompt is too long: 100000 characters, the limit is 500" in capsys.readouterr().err


# ----------------------------------------------------------------------------- frames
def test_one_frame_rule_for_the_library_the_app_and_the_cli():
    """Multiples of the temporal down-sampling factor up to 10 x the clip: the bundled model (16-frame clip,
    factor 4) takes 4 and 20 frames, not only multiples of 16; every front end agrees on every count."""
    from app import inputs
    from lumiere.options import GenerationDefaults

    assert list(frame_counts(16, 4)) == list(range(4, 161, 4))
    def accepts(check, *args, **kwargs) -> bool:
        try:
            check(*args, **kwargs)
            return True
        except InputError:
            return False

    for base, factor in ((16, 4), (8, 2)):
        accepted = set(frame_counts(base, factor))
        for frames in range(1, 10 * base + 8):
            verdicts = [accepts(check_num_frames, frames, base, factor, "--frames"),
                        accepts(inputs.frames_value, frames, base, factor),
                        accepts(GenerationSettings.create, "x", defaults=GenerationDefaults(), base_frames=base,
                                frame_multiple=factor, styles=[], ssr_steps=None, num_frames=frames)]
            assert verdicts == [frames in accepted] * 3, (base, factor, frames, verdicts)
    with pytest.raises(InputError, match=r"got 7 \(try 4 or 8\): this model takes multiples of 4 from 4 to 160"):
        check_num_frames(7, 16, 4)


def test_every_count_the_rule_allows_really_runs(tiny_pipe):
    """The rule is what the STUNet takes: counts that are not multiples of the 8-frame clip run too."""
    factor = tiny_pipe.temporal_downsampling_factor
    for frames in (factor, 3 * factor):
        video = tiny_pipe.text_to_video("a red circle", num_frames=frames, num_inference_steps=1, seed=0,
                                        super_resolve=False)
        assert video.shape[0] == frames and frames % tiny_pipe.base_resolution[0]


# ----------------------------------------------------------------------------- outputs
def test_cli_writes_to_the_ignored_outputs_folder_by_default(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--prompt", "a red circle", "--model", str(tiny_pipeline_dir), "--seed", "3",
                 "--steps", "1", "--no-ssr"]) == 0
    written = list(tmp_path.rglob("*.mp4"))
    assert len(written) == 1 and written[0].parent == tmp_path / "outputs", written
    assert written[0].name.startswith("generate-") and written[0].name.endswith("-seed3.mp4")
    assert f"wrote {Path('outputs') / written[0].name}" in capsys.readouterr().out
    ignored = subprocess.run(["git", "check-ignore", "-q", "outputs/generate-x.mp4"], cwd=ROOT)
    assert ignored.returncode == 0  # the repo's outputs/ folder is git-ignored


def test_cli_warns_about_words_the_model_does_not_know(tiny_pipeline_dir, tmp_path, capsys):
    """A closed-vocabulary model ignores unknown words: the CLI says which, and which words it knows, and
    still generates; a prompt of known words prints no warning."""
    common = ["--model", str(tiny_pipeline_dir), "--seed", "0", "--steps", "1", "--no-ssr"]
    assert main(["generate", "--prompt", "a red circle wobbling", "--out", str(tmp_path / "a.mp4"), *common]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]  # not tqdm's bars
    assert len(warnings) == 1 and warnings[0].startswith("warning: this model does not know 'wobbling'"), warnings
    assert "bouncing" in warnings[0] and (tmp_path / "a.mp4").is_file()
    assert main(["generate", "--prompt", "a red circle", "--out", str(tmp_path / "b.mp4"), *common]) == 0
    assert "warning" not in capsys.readouterr().err


def test_cli_compare_says_whether_a_candidate_beats_the_bundled_model_on_every_row(tmp_path, capsys):
    """The shipping rule as a command: exit 0 only when no row is worse or unmeasured; parts merge."""
    metrics = json.loads((ROOT / "assets/lumiere-tiny/eval.json").read_text())
    t2v = {split: metrics[split] for split in ("heldout", "seen")}
    rest = {part: value for part, value in metrics.items() if part not in t2v}
    (tmp_path / "t2v.json").write_text(json.dumps(t2v))
    (tmp_path / "rest.json").write_text(json.dumps(rest))
    release = ["--baseline", str(ROOT / "assets/lumiere-tiny/eval.json")]
    assert main(["compare", *release, "--candidate", str(tmp_path / "t2v.json"), str(tmp_path / "rest.json")]) == 0
    out = capsys.readouterr().out
    assert "0 worse, 0 not measured" in out and "is not worse on any row" in out
    assert main(["compare", *release, "--candidate", str(tmp_path / "t2v.json")]) == 1  # parts missing
    assert "cinemagraph still-region std, raw" in capsys.readouterr().out
    worse = json.loads(json.dumps(metrics))
    worse["conditional"]["cinemagraph_static_region_temporal_std"] += 1.0  # lower is better for this row
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    assert main(["compare", *release, "--candidate", str(tmp_path / "worse.json")]) == 1
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("cinemagraph"))
    assert line.endswith("worse")
