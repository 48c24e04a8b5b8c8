"""The one-command loan run (scripts/gpu_run.sh -> kinemask_jax.express), on the CPU at tiny size in about a
minute, so that it is known to work before an accelerator is lent."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kinemask_jax import KineMaskPipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_run_script_end_to_end_at_tiny_size(tmp_path, default_xla_env):
  out = tmp_path / "out"
  env = dict(default_xla_env, OUT=str(out), SIZE="tiny", MINUTES="1.0", BENCH_S="0", DTYPE="float32", BATCH="8",
             ENGINE_BATCH="64", CAUSALITY="2",
             ANNEAL="20", NUM_TRAIN="64", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"),
             EXTRA="--num_test=6 --eval_minutes=0.35 --eval_batch=8 --precompile=on")
  proc = subprocess.run(["bash", "scripts/gpu_run.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=400)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
  assert len(files) <= 8 and {"report.md", "run.json", "samples.gif", "samples.png", "weights/config.json"} <= set(files)
  run = json.load(open(out / "run.json"))
  assert run["data"]["train"] == 64 and run["data"]["test"] == 6
  engine_record = run["data"]["train_engine"]  # where the training data's time went, for the loan's report
  assert engine_record["videos"] == 64 and engine_record["physics_s"] > 0 and engine_record["examples_s"] > 0
  assert run["train"]["stage1"]["steps"] > 1 and run["train"]["stage2"]["steps"] > 1
  # As on an accelerator: both steps and the evaluation's sampler compiled on the helper thread.
  assert run["train"]["stage1"]["compiled_ahead"] and run["train"]["stage2"]["compiled_ahead"]
  assert set(run["train"]["compiled_ahead_s"]) == {"stage 1 step", "stage 2 step", "sampler"}
  names = list(run["eval"]["results"])
  assert names[:2] == ["simulator (reference)", "KineMask"] and "stage 1 only" in names and "copy first frame" in names
  report = open(out / "report.md").read()
  assert "| KineMask |" in report and "| constant velocity |" in report
  assert "over 2 examples" in report  # the script's CAUSALITY reached the evaluation's speed sweep
  assert "## Data engine (c physics, batch 64)" in report and "64 videos in" in report
  # The exported weights load and sample.
  pipe = KineMaskPipeline.from_weights(str(out / "weights"))
  assert pipe.step == run["train"]["stage2"]["steps"]


@pytest.mark.parametrize("flag, match", [("--minutes=0", "--minutes"), ("--stage1_fraction=1.5", "--stage1_fraction"),
                                         ("--num_train=0", "--num_train"), ("--precompile=sometimes", "--precompile"),
                                         ("--causality_num=-1", "--causality_num")])
def test_express_refuses_bad_flags_before_any_work(tmp_path, flag, match):
  proc = subprocess.run([sys.executable, "-m", "kinemask_jax.express", "--config=configs/stage2.py:tiny",
                         f"--out={tmp_path}", flag], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and match in proc.stderr
  assert not os.listdir(tmp_path)


def test_a_stage_jits_its_step_when_the_one_compiled_ahead_refuses_the_batch(tiny_examples, capsys):
  # On a new jax (the loan machine's) a step compiled ahead might refuse what the run hands it; the stage must
  # then say so and train, not lose the loan.
  from configs import stage2
  from kinemask_jax import express
  from kinemask_jax.model import text
  s1, _ = express.stage_configs(stage2.get_config("tiny"))
  s1.batch_size = 4
  tokenizer = text.Tokenizer.from_config(s1.model.text)
  arrays = express.raw_arrays(list(tiny_examples[:8]), tokenizer)
  refusing = express.compile_stage(s1, express.batch_like(arrays, 2))  # another batch size
  result = express.train_stage(s1, arrays, 1.0, clock=express.Clock(1.0), prepared=refusing)
  assert result.ahead_refused and result.steps >= 1 and np.isfinite(result.losses[-1][1])
  assert "the step compiled ahead refused" in capsys.readouterr().out
  fine = express.train_stage(s1, arrays, 1.0, prepared=express.compile_stage(s1, express.batch_like(arrays, 4)))
  assert fine.ahead_refused is None and fine.steps >= 1


def test_a_compile_that_fails_ahead_is_said_and_left_to_first_use(capsys):
  from kinemask_jax import express
  ahead = express.Ahead(True)
  ahead.submit("x", lambda: 1 / 0)
  ahead.submit("y", lambda: 7)
  assert ahead.result("x") is None and "ZeroDivisionError" in ahead.errors["x"]
  assert ahead.result("y") == 7 and ahead.result("z") is None and set(ahead.seconds) == {"y"}
  assert "compiling x ahead failed (ZeroDivisionError" in capsys.readouterr().out
  ahead.close()
  off = express.Ahead(False)
  off.submit("y", lambda: 7)
  assert off.result("y") is None
