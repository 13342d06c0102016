#!/usr/bin/env bash
# Train the whole bundled model (configs/gpu.json: T2I -> temporal -> conditional -> SSR -> styles) in one
# time-boxed run, evaluate it and pack it for hand-back. See docs/training.md.
#
#   bash scripts/train_on_gpu.sh OUT_DIR [BUDGET_SECONDS]   # one GPU; default budget 480 s of training
#   bash scripts/train_on_gpu.sh --smoke OUT_DIR            # the same path on the CPU in about a minute
#   bash scripts/train_on_gpu.sh --refine OUT_DIR [BUDGET]  # or: train the bundled model further
#
# --refine (configs/gpu-refine.json) continues assets/lumiere-tiny's base (temporal layers) and conditional
# model instead of starting from scratch: two processes at once on the one GPU, each for the whole budget
# (a step of this small model is bound by launching kernels, not by the GPU), then the bundle with both
# replaced is packed and evaluated. While they train, each packs its own pipeline into OUT_DIR/temporal and
# OUT_DIR/conditional (a run cut off still returns them); they are removed once model.tar is written.
#
# OUT_DIR receives at most 5 files, each well under 16 MiB: model.tar (the fp16 pipeline; repacked about
# every minute, so a run cut off still leaves its latest model), train_stages.json (per stage: steps,
# batch, clips/s, loss, wall time), eval.json (python -m lumiere eval), train.log, eval.log.
# Unpack with `tar xf OUT_DIR/model.tar -C DEST` (split parts: lumiere.train.pack.unpack(OUT_DIR, DEST)).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
smoke=0
refine=0
while [ "${1:-}" = "--smoke" ] || [ "${1:-}" = "--refine" ]; do
  if [ "$1" = "--smoke" ]; then smoke=1; else refine=1; fi
  shift
done
out=${1:?usage: bash scripts/train_on_gpu.sh [--smoke] [--refine] OUT_DIR [BUDGET_SECONDS]}
budget=${2:-$([ "$smoke" = 1 ] && echo 30 || echo 480)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$repo"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-15}  # progress bars: a line every 15 s in the log
python=${PYTHON:-python3}

# Offline dependencies: what the GPU image lacks travels as wheels in .whl/ (scripts/fetch_gpu_wheels.sh).
if ! "$python" -c "import diffusers" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "error: diffusers is not installed and .whl/ has no wheels: run scripts/fetch_gpu_wheels.sh on a machine with network" >&2
    exit 2
  fi
  site=${TMPDIR:-/tmp}/lumiere-site
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

run=${LUMIERE_RUN_DIR:-$(mktemp -d)/run}
if [ "$smoke" = 1 ]; then
  # CPU, a 30 s budget (or BUDGET_S), batches of 2, no workers, fp32: every stage runs, packs and is
  # evaluated in ~1.5 min.
  export CUDA_VISIBLE_DEVICES=""
  train_args=(--budget "$budget" --batch-size 2 --num-workers 0 --mixed-precision no --pack-every 10)
  eval_args=(--quick --steps 2)
else
  train_args=(--budget "$budget")
  eval_args=()
fi
"$python" -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu', torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$out/train.log"
if [ "$refine" = 0 ]; then
  "$python" -m lumiere train --stage all --config configs/gpu.json --output-dir "$run" --pack "$out" "${train_args[@]}" 2>&1 \
    | tr '\r' '\n' | grep -v -E '^\s*$' >> "$out/train.log" || { tail -n 30 "$out/train.log" >&2; exit 1; }
else
  bundle=assets/lumiere-tiny
  pids=()
  for stage in temporal conditional; do
    # Each process packs a loadable pipeline of its own: seeded with the bundle's base and text encoder.
    mkdir -p "$run/$stage/pipeline"
    cp -r "$bundle/base" "$bundle/text_encoder" "$bundle/tokenizer" "$run/$stage/pipeline/"
    "$python" -m lumiere train --stage "$stage" --config configs/gpu-refine.json --output-dir "$run/$stage" \
      --pack "$out/$stage" "${train_args[@]}" > "$run/$stage.log" 2>&1 &
    pids+=($!)
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  for stage in temporal conditional; do
    { echo "== $stage"; tr '\r' '\n' < "$run/$stage.log" | grep -v -E '^\s*$'; } >> "$out/train.log"
  done
  [ "$failed" = 0 ] || { tail -n 30 "$out/train.log" >&2; exit 1; }
  # The bundle with the two trained parts (each process's fp16 export) in place of its own, packed, and the two
  # processes' stage logs as one.
  "$python" - "$bundle" "$run" "$out" <<'PY'
import json, sys
from lumiere.build import load_config
from lumiere.train.pack import pack_directory
from lumiere.train.stages import continue_pipeline
bundle, run, out = sys.argv[1:]
continue_pipeline(bundle, {"base": f"{run}/temporal/export/base", "conditional": f"{run}/conditional/export/conditional"},
                  f"{run}/export", load_config("configs/gpu-refine.json"))
pack_directory(f"{run}/export", out)
stages = {stage: json.load(open(f"{out}/{stage}/train_stages.json")) for stage in ("temporal", "conditional")}
open(f"{run}/train_stages.json", "w").write(json.dumps(stages, indent=2))
PY
  rm -rf "$out/temporal" "$out/conditional" && mv "$run/train_stages.json" "$out/"
fi
tail -n 12 "$out/train.log"
# The evaluation of the exported pipeline (its time is capped by EVAL_TIMEOUT, seconds: the pack is already there).
timeout "${EVAL_TIMEOUT:-1800}" "$python" -m lumiere eval --model "$run/export" --out "$out/eval.json" "${eval_args[@]}" \
  > "$out/eval.log" 2>&1 || echo "warning: the evaluation did not finish (see $out/eval.log); model.tar is complete" >&2
ls -l "$out"
