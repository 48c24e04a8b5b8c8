#!/usr/bin/env bash
# One accelerator loan, one trained model (issue 12): from the repository root on the lent machine,
#   bash scripts/gpu_run.sh            (the device tool sets $OUT; elsewhere results go to ./gpu_out)
# 1. installs the carried wheels in .whl/ where MuJoCo is missing (see README "One GPU loan");
# 2. kinemask_jax.express: train and test data generated on the machine ($BACKEND physics: MuJoCo C on every
#    core by default, rendering on the accelerator), stage 1 then stage 2 of the $SIZE recipe for what is
#    left of $MINUTES minutes, evaluation against the baselines, bf16 weights (on the accelerator each stage's
#    step and the evaluation's sampler compile on a helper thread while data is made and the stage before trains);
# 3. with the $BENCH_S seconds kept for it: end-to-end `generate` of one $SIZE video at 25 steps
#    (benchmarks/sample.py, at most 40 s), then the data-engine benchmark with MJX physics at batch
#    $BENCH_BATCH (1,024, the training's engine batch, where the second loan measured 137 videos/s; the third
#    ran 4,096, 174.5 videos/s, which does not fit the time left here; the first loan 32 with MJX's own
#    collision, before datagen/mjx_collision.py: see the README): physics alone first, then, in what is left, the whole engine (the compile is cached by then),
#    appended to report.md; BENCH_ITERS (e.g. 8/8,4/4: solver/line-search iterations, one row each with its
#    distance from MuJoCo C's end positions; default the config's).
# $OUT receives report.md, run.json, samples.gif, samples.png, weights/ (at most 8 files).
# tests/test_express.py runs this script on the CPU at tiny size with a one-minute budget.
set -uo pipefail
START=$(date +%s)
OUT=${OUT:-gpu_out}
SIZE=${SIZE:-small}
MINUTES=${MINUTES:-8.6}
BACKEND=${BACKEND:-c}
ENGINE_BATCH=${ENGINE_BATCH:-1024}
BENCH_BATCH=${BENCH_BATCH:-1024}
BENCH_ITERS=${BENCH_ITERS:-}
BENCH_S=${BENCH_S:-130}
DTYPE=${DTYPE:-bfloat16}
BATCH=${BATCH:-64}
NUM_TRAIN=${NUM_TRAIN:-32768}
ANNEAL=${ANNEAL:-1500}
CAUSALITY=${CAUSALITY:-32}
EVAL_MINUTES=${EVAL_MINUTES:-1.3}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
if ! python3 -c "import mujoco.mjx, ml_collections" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  rm -rf /tmp/site
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:.
fi
export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/kinemask_jax_cache}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"

THREADS=$(python3 -c "import os; print(os.cpu_count())")
LEFT=$(python3 -c "print(round(($MINUTES * 60 - $BENCH_S - ($(date +%s) - $START)) / 60, 2))")
python3 -m kinemask_jax.express --config="configs/stage2.py:$SIZE" --out="$OUT" --minutes="$LEFT" \
  --backend="$BACKEND" --engine_batch="$ENGINE_BATCH" \
  --config.data.physics.threads="$THREADS" --config.model.dtype="$DTYPE" --config.batch_size="$BATCH" \
  --config.curriculum.anneal_steps="$ANNEAL" --num_train="$NUM_TRAIN" --eval_batch=64 --eval_minutes="$EVAL_MINUTES" --causality_num="$CAUSALITY" \
  --data_seconds=45 $EXTRA || exit 1

REMAINING=$(( ${MINUTES%.*} * 60 - ($(date +%s) - START) ))
CAP=$(( REMAINING < BENCH_S ? REMAINING : BENCH_S ))
if [ "$CAP" -gt 50 ]; then
  { echo; echo "## Sampling: one $SIZE video, 25 steps, end to end"; echo; } >> "$OUT/report.md"
  timeout 40 python3 -m benchmarks.sample --sizes="$SIZE" --steps=25 --batches=1 --dtype="$DTYPE" 2>&1 \
    | grep --line-buffered "^|\|^# machine" | tee -a "$OUT/report.md"
fi
REMAINING=$(( ${MINUTES%.*} * 60 - ($(date +%s) - START) ))
CAP=$(( REMAINING < BENCH_S ? REMAINING : BENCH_S ))
if [ "$CAP" -gt 20 ]; then
  { echo; echo "## Data-engine benchmark (MJX physics, capped at ${CAP} s)"; echo; } >> "$OUT/report.md"
  for PARTS in physics physics,engine; do
    LEFT_S=$(( ${MINUTES%.*} * 60 - ($(date +%s) - START) ))
    [ "$LEFT_S" -gt 20 ] || break
    timeout "$LEFT_S" python3 benchmarks/datagen.py --sizes="$SIZE" --backend=mjx --batch_size="$BENCH_BATCH" \
      --batches=1 --parts="$PARTS" --iterations="$BENCH_ITERS" 2>&1 | grep --line-buffered "^|\|^machine" | tee -a "$OUT/report.md"
  done
fi
exit 0
