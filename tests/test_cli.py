"""The contract every front end shares (issue 28): one bounded decoder, one-line CLI errors, one prompt
limit, one frame rule, outputs in the ignored outputs/ folder."""
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imageio_ffmpeg
import pytest

from lumiere.cli import main
from lumiere.errors import InputError
from lumiere.options import MAX_PROMPT_CHARS, frame_counts
from lumiere.request import GenerationSettings, check_num_frames

ROOT = Path(__file__).resolve().parent.parent

# Runs argv as a child and prints its exit status and the peak RSS (MiB) of the child and everything it
# waited for (ffmpeg included): RUSAGE_CHILDREN of a fresh wrapper holds this command only.
RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


def lavfi_clip(path: Path, source: str, vf: str | None = None) -> Path:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", source]
    cmd += ["-vf", vf] if vf else []
    subprocess.run(cmd + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def peak_rss_mb(argv: list[str]) -> int:
    result = subprocess.run([sys.executable, "-c", RSS_WRAPPER, sys.executable, "-m", "lumiere", *argv],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    code, peak = map(int, result.stdout.split())
    assert code == 0, result.stderr
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
    baseline = peak_rss_mb(["v2v", "--video", str(small), "--out", str(tmp_path / "small_out.mp4"), *common])
    peak = peak_rss_mb(["v2v", "--video", str(bomb), "--out", str(tmp_path / "bomb_out.mp4"), *common])
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
