"""run.sh, the one-command set-up: run in a scratch folder with fake python3 / pip / nvidia-smi / uname on PATH.

The fakes log every call to a file and lay out a venv (bin/python), so the tests see what run.sh would install,
from which index, in which order, and when it skips the installs; nothing is downloaded or installed.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(sys.platform == "win32" or shutil.which("bash") is None, reason="run.sh needs bash")

# The interpreter run.sh starts from (PYTHON or python3): logs, and `-m venv DIR` lays out DIR/bin/python.
FAKE_PYTHON3 = """#!/bin/sh
echo "python3 $*" >> "$FAKE_LOG"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && cp "$FAKE_BIN/venv-python" "$3/bin/python" && chmod +x "$3/bin/python"
fi
exit 0
"""

# The venv's python: `-m pip ...` is logged as "pip ...", fails for the CPU index when FAKE_CPU_INDEX_FAILS is
# set, and marks torch installed; `-c 'import torch'` succeeds once torch is; anything else is the app.
FAKE_VENV_PYTHON = """#!/bin/sh
venv="$(dirname "$0")/.."
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  shift 2
  echo "pip $*" >> "$FAKE_LOG"
  case "$*" in *download.pytorch.org*) [ -n "$FAKE_CPU_INDEX_FAILS" ] && exit 1 ;; esac
  case "$*" in *torch==*) touch "$venv/fake-torch" ;; esac
  exit 0
fi
if [ "$1" = "-c" ]; then
  case "$2" in *"import torch"*) [ -f "$venv/fake-torch" ]; exit $? ;; esac
  exit 0
fi
echo "app $*" >> "$FAKE_LOG"
"""


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def project(tmp_path):
    """A scratch checkout: run.sh, requirements.txt and pyproject.toml copied from the repository."""
    work = tmp_path / "lumiere"
    work.mkdir()
    for name in ("run.sh", "requirements.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, work / name)
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    _script(fake_bin / "python3", FAKE_PYTHON3)
    _script(fake_bin / "venv-python", FAKE_VENV_PYTHON)
    _script(fake_bin / "uname", "#!/bin/sh\necho \"${FAKE_UNAME:-Linux}\"\n")
    return work


def run(work: Path, *args: str, gpu: bool = False, cpu_index_fails: bool = False, uname: str = "Linux",
        extra_env: dict | None = None, check: bool = True) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run run.sh in `work`; return the process and the fakes' log (one line per call) of this run only."""
    fake_bin = work.parent / "fakebin"
    # An nvidia-smi that answers (a GPU) or fails (a driverless machine, or a real one outside PATH below).
    _script(fake_bin / "nvidia-smi", "#!/bin/sh\necho 'GPU 0: NVIDIA H100'\n" if gpu else "#!/bin/sh\nexit 9\n")
    log = work.parent / "calls.log"
    log.write_text("")
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(work.parent), "FAKE_LOG": str(log),
           "FAKE_BIN": str(fake_bin), "FAKE_UNAME": uname}
    if cpu_index_fails:
        env["FAKE_CPU_INDEX_FAILS"] = "1"
    env.update(extra_env or {})
    proc = subprocess.run(["bash", str(work / "run.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc, log.read_text().splitlines()


def torch_pin() -> str:
    pins = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip().startswith("torch==")]
    assert len(pins) == 1
    return pins[0]


def pip_calls(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("pip ")]


def test_first_run_without_gpu_makes_venv_installs_cpu_torch_then_package_then_starts_app(project):
    proc, calls = run(project, "--port", "7861")
    pins = pip_calls(calls)
    assert len(pins) == 2, calls
    torch_call, package_call = pins
    assert torch_call.startswith("pip install") and torch_call.split()[-1] == torch_pin()
    assert f"--index-url {CPU_INDEX}" in torch_call
    # A short socket timeout and at most one retry: an unreachable index must not stall the set-up for minutes.
    assert "--timeout 10" in torch_call and "--retries 1" in torch_call
    assert package_call == "pip install -e ."
    order = [next(i for i, c in enumerate(calls) if c.startswith(prefix))
             for prefix in ("python3 -m venv .venv", "pip install", "pip install -e .", "app app.py")]
    assert order == sorted(order), calls
    assert calls[-1] == "app app.py --port 7861"
    assert (project / ".venv" / ".lumiere-setup").read_text().strip()


def test_with_a_gpu_torch_comes_from_the_default_index(project):
    _, calls = run(project, "--setup-only", gpu=True)
    torch_call = pip_calls(calls)[0]
    assert torch_call == f"pip install {torch_pin()}"
    assert "download.pytorch.org" not in " ".join(calls)
    assert not any(c.startswith("app") for c in calls)  # --setup-only does not start the app


def test_on_macos_torch_comes_from_the_default_index(project):
    _, calls = run(project, "--setup-only", uname="Darwin")
    assert pip_calls(calls) == [f"pip install {torch_pin()}", "pip install -e ."]


def test_cpu_index_unreachable_falls_back_to_the_default_index(project):
    proc, calls = run(project, "--setup-only", cpu_index_fails=True)
    assert pip_calls(calls) == [
        f"pip install --timeout 10 --retries 1 --index-url {CPU_INDEX} {torch_pin()}",
        f"pip install {torch_pin()}",
        "pip install -e .",
    ]
    assert "did not answer" in proc.stderr


def test_second_run_with_unchanged_requirements_installs_nothing(project):
    run(project, "--setup-only")
    proc, calls = run(project, "--host", "0.0.0.0")
    assert pip_calls(calls) == []
    assert not any(c.startswith("python3") for c in calls)  # the venv is kept, not re-created
    assert calls[-1] == "app app.py --host 0.0.0.0"
    assert "up to date" in proc.stderr


def test_changed_requirements_or_missing_torch_redo_the_installs(project):
    run(project, "--setup-only")
    with open(project / "requirements.txt", "a") as f:
        f.write("einops>=0.8\n")
    _, calls = run(project, "--setup-only")
    assert pip_calls(calls)[-1] == "pip install -e ."
    assert len(pip_calls(calls)) == 2

    _, calls = run(project, "--setup-only")
    assert pip_calls(calls) == []  # the new stamp holds

    (project / ".venv" / "fake-torch").unlink()  # stamp matches but torch no longer imports
    _, calls = run(project, "--setup-only")
    assert len(pip_calls(calls)) == 2

    _, calls = run(project, "--setup-only", "--reinstall")
    assert len(pip_calls(calls)) == 2


def test_python_can_be_overridden_and_a_failed_venv_is_reported(project):
    fake_bin = project.parent / "fakebin"
    _script(fake_bin / "python3.12", FAKE_PYTHON3.replace("python3 $*", "python3.12 $*"))
    _script(fake_bin / "python3", "#!/bin/sh\necho \"python3 $*\" >> \"$FAKE_LOG\"\n[ \"$1\" = -c ] && exit 0\nexit 1\n")
    proc, calls = run(project, "--setup-only", check=False)
    assert proc.returncode != 0 and "could not create .venv" in proc.stderr
    assert not (project / ".venv").exists() and pip_calls(calls) == []

    _, calls = run(project, "--setup-only", extra_env={"PYTHON": "python3.12"})
    assert calls[1] == "python3.12 -m venv .venv" and not any(c.startswith("python3 ") for c in calls)
    assert len(pip_calls(calls)) == 2


def test_too_old_python_is_refused(project):
    _script(project.parent / "fakebin" / "python3", "#!/bin/sh\n[ \"$1\" = -c ] && exit 1\necho 'Python 3.8.10'\n")
    proc, calls = run(project, check=False)
    assert proc.returncode == 1 and "Python 3.8.10 is too old" in proc.stderr
    assert calls == [] and not (project / ".venv").exists()


# --- Hugging Face Space files -------------------------------------------------------------------------------------

def _requirement_lines(path: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def test_space_pre_requirements_install_cpu_torch_of_the_pinned_version():
    """A Space installs pre-requirements.txt before requirements.txt: CPU torch, the very version pinned."""
    lines = _requirement_lines(ROOT / "pre-requirements.txt")
    run_sh_index = next(line.split('"')[1] for line in (ROOT / "run.sh").read_text().splitlines()
                        if line.startswith("CPU_INDEX="))
    assert f"--extra-index-url {CPU_INDEX}" in lines and run_sh_index == CPU_INDEX
    torch_lines = [line for line in lines if line.startswith("torch")]
    assert torch_lines == [torch_pin() + "+cpu"]
    specifiers = pytest.importorskip("packaging.specifiers")
    # requirements.txt's pin accepts the CPU build, so the later `pip install -r requirements.txt` keeps it.
    pinned = specifiers.SpecifierSet(torch_pin().removeprefix("torch"))
    assert pinned.contains(torch_lines[0].removeprefix("torch=="))
    assert not pinned.contains(torch_pin().removeprefix("torch==") + "1")


def test_ci_and_local_installs_do_not_use_the_pytorch_index():
    """CI installs requirements-dev.txt (which includes requirements.txt); neither may name another index."""
    seen, todo = set(), ["requirements-dev.txt"]
    while todo:
        name = todo.pop()
        seen.add(name)
        for line in _requirement_lines(ROOT / name):
            assert "download.pytorch.org" not in line and "index-url" not in line, (name, line)
            if line.startswith("-r "):
                todo.append(line[3:].strip())
    assert seen == {"requirements-dev.txt", "requirements.txt"}
    assert "pre-requirements" not in (ROOT / ".ci" / "run").read_text()


def test_readme_front_matter_configures_a_gradio_space():
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and (ROOT / meta["app_file"]).is_file()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "bash run.sh" in quick_start and "git clone" in quick_start


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_binary_assets_are_marked_for_the_hub_and_stored_as_real_files():
    """.gitattributes sends binaries to the Hub's LFS/Xet storage; without git-lfs the checkout has the real bytes."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = [f for f in _git("ls-files", "assets").splitlines()
             if f.rsplit(".", 1)[-1] in {"safetensors", "mp4", "png", "gif"}]
    assert any(f.endswith(".safetensors") for f in files) and any(f.endswith(".mp4") for f in files)
    attrs = _git("check-attr", "filter", "--", *files).splitlines()
    assert attrs == [f"{f}: filter: lfs" for f in files]
    for f in files:
        head = (ROOT / f).read_bytes()[:100]
        assert not head.startswith(b"version https://git-lfs"), f"{f} is an LFS pointer, not the file"
    weights = ROOT / "assets" / "lumiere-tiny" / "base" / "diffusion_pytorch_model.safetensors"
    header_len = int.from_bytes(weights.read_bytes()[:8], "little")  # safetensors: u64 header size, then JSON
    assert 8 + header_len < weights.stat().st_size and weights.read_bytes()[8:9] == b"{"
