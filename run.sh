#!/usr/bin/env bash
# From a fresh clone to the app in one command (Linux, macOS):
#
#   bash run.sh [app.py options]          e.g. bash run.sh --port 7861 --model path/to/pipeline-dir
#
# The first run creates .venv, installs torch (the pin in requirements.txt: the CPU build when there is no
# NVIDIA GPU, the CUDA build when `nvidia-smi` finds one), then this package with `pip install -e .` (its
# dependencies are requirements.txt's), and starts `python app.py`. Later runs skip every install while
# requirements.txt and pyproject.toml are unchanged (a hash of both is kept in .venv/.lumiere-setup) and torch
# imports, so they start in seconds.
#
#   bash run.sh --setup-only        set up (or check) .venv and stop, without starting the app
#   bash run.sh --reinstall         redo the installs even when nothing changed
#   PYTHON=python3.11 bash run.sh   the interpreter that creates .venv (default: python3; 3.10 or newer)
set -euo pipefail
cd "$(dirname "$0")"

CPU_INDEX="https://download.pytorch.org/whl/cpu"
VENV=".venv"
STAMP="$VENV/.lumiere-setup"
PYTHON="${PYTHON:-python3}"

setup_only=0
reinstall=0
app_args=()
for arg in "$@"; do
  case "$arg" in
    --setup-only) setup_only=1 ;;
    --reinstall) reinstall=1 ;;
    *) app_args+=("$arg") ;;
  esac
done

say() { echo "run.sh: $*" >&2; }

requirements_hash() {
  if command -v sha256sum >/dev/null 2>&1; then
    cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then
    cat requirements.txt pyproject.toml | shasum -a 256 | cut -d' ' -f1
  else
    cat requirements.txt pyproject.toml | cksum | tr ' ' '-'
  fi
}

has_nvidia_gpu() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

# 1. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    say "'$PYTHON' not found: install Python 3.10 or newer, or name one with PYTHON=/path/to/python3 bash run.sh"
    exit 1
  fi
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    say "$("$PYTHON" --version 2>&1) is too old: Lumiere needs Python 3.10 or newer (PYTHON=python3.11 bash run.sh)"
    exit 1
  fi
  say "creating $VENV with $PYTHON"
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    rm -rf "$VENV"
    say "could not create $VENV (on Debian/Ubuntu: sudo apt install python3-venv)"
    exit 1
  fi
fi
VPY="$VENV/bin/python"

# 2. The installs, unless the stamp says they are done and torch imports.
want="$(requirements_hash)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$reinstall" = 0 ] && [ "$want" = "$have" ] && "$VPY" -c 'import torch' >/dev/null 2>&1; then
  say "$VENV is up to date"
else
  rm -f "$STAMP"
  torch_pin="$(sed -n 's/^[[:space:]]*\(torch==[^[:space:]#;]*\).*/\1/p' requirements.txt | head -n 1)"
  if [ -z "$torch_pin" ]; then
    say "requirements.txt pins no torch==VERSION"
    exit 1
  fi
  if has_nvidia_gpu; then
    say "NVIDIA GPU found: installing $torch_pin (CUDA build) from the default index"
    "$VPY" -m pip install "$torch_pin"
  elif [ "$(uname -s)" = "Darwin" ]; then
    say "installing $torch_pin (macOS: the default wheel runs on the CPU and Apple GPUs)"
    "$VPY" -m pip install "$torch_pin"
  else
    say "no NVIDIA GPU: installing $torch_pin, CPU build, from $CPU_INDEX"
    if ! "$VPY" -m pip install --timeout 10 --retries 1 --index-url "$CPU_INDEX" "$torch_pin"; then
      say "$CPU_INDEX did not answer: installing $torch_pin from the default index instead"
      say "(on Linux that is the CUDA build, several GB; it runs on the CPU too)"
      "$VPY" -m pip install "$torch_pin"
    fi
  fi
  say "installing Lumiere and its requirements (pip install -e .)"
  "$VPY" -m pip install -e .
  echo "$want" > "$STAMP"
  say "set-up done"
fi

if [ "$setup_only" = 1 ]; then
  exit 0
fi
exec "$VPY" app.py ${app_args[@]+"${app_args[@]}"}
