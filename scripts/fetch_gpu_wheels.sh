#!/usr/bin/env bash
# Fetch, on a machine with network, the wheels scripts/train_on_gpu.sh installs on an offline GPU box whose
# image has torch, transformers, accelerate, safetensors, huggingface_hub, numpy, opencv and pillow but
# not diffusers. They go to .whl/ (git-ignored; a device tool carries it with the working tree).
#
#   bash scripts/fetch_gpu_wheels.sh [PYTHON_VERSION]     # default 3.12, the GPU image's Python
#
# diffusers is pure Python; of its requirements only importlib_metadata is missing there (filelock,
# huggingface-hub, numpy, pillow, regex, requests and safetensors are in the image). The app's packages
# (gradio, moviepy, imageio-ffmpeg) are not needed to train or evaluate.
set -euo pipefail
cd "$(dirname "$0")/.."
python_version=${1:-3.12}
diffusers_version=$(python -c "import diffusers; print(diffusers.__version__)" 2>/dev/null || echo "0.42.1")
rm -rf .whl && mkdir -p .whl
python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "diffusers==$diffusers_version" "importlib_metadata>=6"
ls -l .whl
