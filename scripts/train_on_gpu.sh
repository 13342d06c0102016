#!/usr/bin/env bash
# Train the whole bundled model (configs/gpu.json: T2I -> temporal -> conditional -> SSR -> styles) in one
# time-boxed run, evaluate it and pack it for hand-back. See docs/training.md.
#
#   bash scripts/train_on_gpu.sh OUT_DIR [BUDGET_SECONDS]   # one GPU; default budget 480 s of training
#   bash scripts/train_on_gpu.sh --smoke OUT_DIR            # the same path on the CPU in about a minute
#
# OUT_DIR receives at most 5 files, each well under 16 MiB: model.tar (the fp16 pipeline; repacked about
# every minute, so a run cut off still leaves its latest model), train_stages.json (per stage: steps,
# batch, clips/s, loss, wall time), eval.json (python -m lumiere eval), train.log, eval.log.
# Unpack with `tar xf OUT_DIR/model.tar -C DEST` (split parts: lumiere.train.pack.unpack(OUT_DIR, DEST)).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
out=${1:?usage: bash scripts/train_on_gpu.sh [--smoke] OUT_DIR [BUDGET_SECONDS]}
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
"$python" -m lumiere train --stage all --config configs/gpu.json --output-dir "$run" --pack "$out" "${train_args[@]}" 2>&1 \
  | tr '\r' '\n' | grep -v -E '^\s*$' >> "$out/train.log" || { tail -n 30 "$out/train.log" >&2; exit 1; }
tail -n 12 "$out/train.log"
# The evaluation of the exported pipeline (its time is capped by EVAL_TIMEOUT, seconds: the pack is already there).
timeout "${EVAL_TIMEOUT:-1800}" "$python" -m lumiere eval --model "$run/export" --out "$out/eval.json" "${eval_args[@]}" \
  > "$out/eval.log" 2>&1 || echo "warning: the evaluation did not finish (see $out/eval.log); model.tar is complete" >&2
ls -l "$out"
