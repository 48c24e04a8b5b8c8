#!/usr/bin/env bash
# One prepared GPU session for the model benchmark, run from the repo root on a GPU machine. Wheels in .whl/
# are installed first (there: ml_collections only; that machine's flax 0.12.10 matches its jax 0.11.2, while
# flax 0.12.8, our CPU pin, does not import under jax 0.11). Logs go to $OUT (or ./gpu_out).
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
rm -rf /tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:.
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
run() { echo "## $*"; timeout "${STEP_TIMEOUT:-240}" python3 -m benchmarks.model "$@" 2>&1 | grep -v "^W[0-9]" | tee -a "$OUT/model.txt"; }
run --sizes=base --batch=16 --dtype=bfloat16 --repeats=5
run --sizes=tiny,small --batch=64 --dtype=bfloat16 --repeats=5
run --sizes=base --batch=32 --dtype=bfloat16 --repeats=3
run --sizes=large --batch=8 --dtype=bfloat16 --repeats=3
