"""From physics to an evaluated, exported model in one command, under a wall-clock budget, all in memory.

  python -m kinemask_jax.express --config=configs/stage2.py:small --out=DIR --minutes=8

What a short accelerator loan needs, with no dataset on disk and no TFDS, grain or TensorFlow: the data
engine generates the train and test splits in memory (physics and rendering batched on the accelerator),
stage 1 then stage 2 of the curriculum train for what is left of the budget, the model is evaluated against
the baselines on the test split (kinemask_jax/evaluation/score.py), and DIR receives at most 8 files:
report.md, run.json (config, timings, data-engine figures, loss curves, metrics), samples.gif, samples.png
and weights/ (config.json and bf16 npz shards, kinemask_jax/store/weights.py). The same command runs on a CPU at
tiny size in a minute (tests/test_express.py), so it is known to work before a loan comes.

Training runs the house's training loop (training/loop.py) in memory, under the budget. The learning rate
warms up and then stays constant (the number of steps a budget buys is not known when
the step compiles); the EMA of the parameters is what is evaluated and exported.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from datagen import cli
from kinemask_jax.model import sharding as shd, text
from kinemask_jax.sampling import media
from kinemask_jax.store import weights
from kinemask_jax.training import input_pipeline, loop, video


class Clock:
  """The run's wall-clock budget."""

  def __init__(self, minutes: float):
    self.start = time.perf_counter()
    self.budget_s = 60.0 * minutes

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def left(self) -> float:
    return self.budget_s - self.elapsed()


def log(clock: Clock, message: str) -> None:
  print(f"[{clock.elapsed():6.1f} s] {message}", flush=True)


def generate(data_cfg, split: str, num: int, backend: str | None, clock: Clock, max_seconds: float) -> list[dict]:
  """Up to `num` examples of `split` from the data engine, stopping at a batch boundary after max_seconds."""
  from datagen import engine
  out, start = [], time.perf_counter()
  for example in engine.generate_split(split, num, data_cfg, backend):
    out.append(example)
    if len(out) % data_cfg.batch_size == 0:
      log(clock, f"{split}: {len(out)}/{num} videos ({len(out) / (time.perf_counter() - start):.0f} videos/s)")
      if time.perf_counter() - start > max_seconds:
        break
  return out


def raw_arrays(examples: list[dict], tokenizer: text.Tokenizer) -> dict:
  """The raw training batch layout (training/input_pipeline.py) of a list of examples, as device arrays."""
  arrays = {k: np.stack([e[k] for e in examples]) for k in input_pipeline.RAW_KEYS}
  arrays["text_ids"], arrays["text_lengths"] = tokenizer.encode_batch([str(e["caption"]) for e in examples])
  return {k: jax.device_put(v) for k, v in arrays.items()}


class RandomBatches:
  """Batches of `batch` examples drawn at random (with replacement, seeded) from arrays held on the device."""

  def __init__(self, arrays: dict, batch: int, seed: int):
    self._arrays, self._batch = arrays, batch
    self._n = len(arrays["video"])
    self._rng = np.random.default_rng(seed)
    self._take = jax.jit(lambda a, idx: jax.tree.map(lambda x: x[idx], a))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return self._take(self._arrays, self._rng.integers(0, self._n, self._batch))


def train_stage(config, arrays: dict, seconds: float, init=None, clock: Clock | None = None) -> loop.Result:
  """Trains one curriculum stage for `seconds` of steps (compile excluded) on random batches of `arrays`,
  with the training loop (training/loop.py) in memory. init: (params, frozen, ema) to start from (stage 2
  from stage 1)."""
  mesh = shd.make_mesh(config.mesh.shape)
  stage_trainer = video.trainer(config, mesh, prepare=True)

  def initial(state):
    params, frozen, ema = jax.tree.map(jax.numpy.copy, init)  # copies: the train step donates its state
    return state.replace(params=params, frozen=frozen, ema=ema)
  return loop.fit(config, stage_trainer, RandomBatches(arrays, config.batch_size, config.seed + config.stage), None,
                  label=f"stage {config.stage}", initial=initial if init is not None else None, budget_s=seconds,
                  sync_every=25, log=lambda m: log(clock, m) if clock is not None else None)


def stage_configs(config):
  """(stage-1 config, stage-2 config) of a stage config, for a budgeted run (constant learning rate)."""
  s2 = config.copy_and_resolve_references()
  s2.stage = 2
  s2.optim.decay_steps = 10**9
  s1 = video.stage1_config(s2)
  s1.optim.decay_steps = 10**9
  for c in (s1, s2):
    c.train.log_every = 25  # the loop fetches the losses every 25 steps (and keeps the host close to the device)
  return s1, s2


def run(config, out: str, minutes: float, num_train: int, num_test: int, stage1_fraction: float,
        backend: str | None, engine_batch: int, eval_minutes: float, data_seconds: float,
        attach: tuple[str, ...] = (), eval_batch: int = 16) -> dict:
  """The whole run; returns run.json's content (`attach`: text files copied into it, e.g. a benchmark log)."""
  from configs import evaluate as eval_configs
  from kinemask_jax.evaluation import report, score
  from kinemask_jax.sampling import api
  clock = Clock(minutes)
  os.makedirs(out, exist_ok=True)
  info = dict(machine=f"{platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} on "
                      f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
              size=config.size, budget_minutes=minutes, attached={})
  for path in attach:
    with open(path) as f:
      info["attached"][os.path.basename(path)] = f.read()
  log(clock, info["machine"])
  s1, s2 = stage_configs(config)

  data_cfg = config.data.copy_and_resolve_references()
  if engine_batch:
    data_cfg.batch_size = engine_batch
  train_cfg = data_cfg.copy_and_resolve_references()
  train_cfg.with_depth = False  # depth serves the constant-velocity baseline on the test split only
  t0 = time.perf_counter()
  test = generate(data_cfg, "test", num_test, backend, clock, float("inf"))
  train = generate(train_cfg, "train", num_train, backend, clock, data_seconds)
  info["data"] = dict(train=len(train), test=len(test), seconds=round(time.perf_counter() - t0, 1),
                      engine_batch=data_cfg.batch_size, backend=backend or "auto")
  log(clock, f"data: {len(train)} train, {len(test)} test videos in {info['data']['seconds']} s")

  tokenizer = text.Tokenizer.from_config(config.model.text)
  arrays = raw_arrays(train, tokenizer)
  del train
  reserve = 60.0 * eval_minutes
  train_s = max(clock.left() - reserve, 5.0)
  # Each stage also compiles its step (not counted in its seconds): leave room for that.
  compile_guess = 0.1 * train_s
  first_s = max((train_s - 2 * compile_guess) * stage1_fraction, 2.0)
  r1 = train_stage(s1, arrays, first_s, clock=clock)
  state1, losses1, steps1, sps1, compile1 = r1.state, r1.losses, r1.steps, r1.seconds_per_step, r1.compile_s
  log(clock, f"stage 1: {steps1} steps, {sps1 * 1e3:.1f} ms/step (compile {compile1:.0f} s), last loss "
             f"{losses1[-1][1]:.4f}")
  second_s = max(clock.left() - reserve - compile1, 2.0)
  r2 = train_stage(s2, arrays, second_s, init=(state1.params, state1.frozen, state1.ema), clock=clock)
  state2, losses2, steps2, sps2, compile2 = r2.state, r2.losses, r2.steps, r2.seconds_per_step, r2.compile_s
  log(clock, f"stage 2: {steps2} steps, {sps2 * 1e3:.1f} ms/step (compile {compile2:.0f} s), last loss "
             f"{losses2[-1][1]:.4f}")
  info["train"] = dict(stage1=dict(steps=steps1, ms_per_step=round(sps1 * 1e3, 2), batch=s1.batch_size,
                                   seconds=round(first_s + compile1, 1)),
                       stage2=dict(steps=steps2, ms_per_step=round(sps2 * 1e3, 2), batch=s2.batch_size,
                                   seconds=round(second_s + compile2, 1)),
                       losses1=losses1[::max(len(losses1) // 400, 1)], losses2=losses2[::max(len(losses2) // 400, 1)])
  del arrays

  files = weights.save(os.path.join(out, "weights"), s2, state2.ema, state2.frozen, steps2, dtype="bfloat16",
                       extra=dict(stage1_steps=steps1, stage2_steps=steps2, machine=info["machine"]))
  log(clock, f"exported {len(files)} weight files")

  pipe = api.KineMaskPipeline(s2, state2.ema, state2.frozen, steps2)
  stage1_pipe = api.KineMaskPipeline(s1, state1.ema, state1.frozen, steps1)
  eval_cfg = eval_configs.get_config()
  eval_cfg.ablations.stage1_only = ""
  eval_cfg.num_strips = 3
  eval_cfg.batch_size = eval_batch
  scratch = tempfile.mkdtemp()
  result = score.score(eval_cfg, pipe, test, scratch, f"express run ({config.size}, {minutes} min)",
                          extra={"stage 1 only": stage1_pipe})
  info["eval"] = result
  shutil.copy(os.path.join(scratch, "report.md"), os.path.join(out, "report.md"))
  shutil.copy(os.path.join(scratch, "eval", "samples.png"), os.path.join(out, "samples.png"))
  videos = pipe.generate(*[list(x) for x in zip(*[score.generation_inputs(e) for e in test[:4]])], prompt=None).video
  top = np.concatenate(list(videos), axis=2)
  bottom = np.concatenate([np.asarray(e["video"]) for e in test[:4]], axis=2)
  media.save_gif(os.path.join(out, "samples.gif"), np.concatenate([top, bottom], axis=1), config.data.fps,
                 target_height=256)
  info["seconds"] = round(clock.elapsed(), 1)
  with open(os.path.join(out, "run.json"), "w") as f:
    json.dump(info, f, indent=1, default=float)
  log(clock, f"done: {out}")
  print(report.table(result["results"]), flush=True)
  return info


def main(argv) -> None:
  del argv
  for name in ("minutes", "eval_minutes", "data_seconds"):
    if getattr(FLAGS, name) <= 0:
      raise cli.UsageError(f"--{name}: must be positive, got {getattr(FLAGS, name)}")
  for name in ("num_train", "num_test", "eval_batch"):
    if getattr(FLAGS, name) < 1:
      raise cli.UsageError(f"--{name}: must be at least 1, got {getattr(FLAGS, name)}")
  if FLAGS.engine_batch < 0:
    raise cli.UsageError(f"--engine_batch: must be >= 0 (0: the data config's), got {FLAGS.engine_batch}")
  if not 0 < FLAGS.stage1_fraction < 1:
    raise cli.UsageError(f"--stage1_fraction: must lie in (0, 1), got {FLAGS.stage1_fraction}")
  if FLAGS.eval_minutes >= FLAGS.minutes:
    raise cli.UsageError(f"--eval_minutes: must be less than --minutes={FLAGS.minutes}, got {FLAGS.eval_minutes}")
  video.validate_config(_CONFIG.value)
  run(_CONFIG.value, FLAGS.out, FLAGS.minutes, FLAGS.num_train, FLAGS.num_test, FLAGS.stage1_fraction,
      FLAGS.backend, FLAGS.engine_batch, FLAGS.eval_minutes, FLAGS.data_seconds, tuple(FLAGS.attach or ()),
      FLAGS.eval_batch)


FLAGS = flags.FLAGS


def _define_flags() -> None:
  global _CONFIG
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/stage2.py:small", "Stage config file:size.")
  flags.DEFINE_string("out", None, "Output folder (report, run.json, samples, weights).", required=True)
  flags.DEFINE_float("minutes", 8.0, "Wall-clock budget of the whole run, data and evaluation included.")
  flags.DEFINE_float("eval_minutes", 1.0, "Part of the budget kept for evaluation and export.")
  flags.DEFINE_float("data_seconds", 60.0, "Most seconds spent generating training videos.")
  flags.DEFINE_integer("num_train", 16384, "Training videos to generate (fewer if data_seconds runs out).")
  flags.DEFINE_integer("num_test", 205, "Test videos (the held-out split's first ones).")
  flags.DEFINE_float("stage1_fraction", 0.3, "Share of the training time spent in stage 1.")
  flags.DEFINE_enum("backend", None, ["c", "mjx"], "Physics backend (default: the config's, auto).")
  flags.DEFINE_integer("engine_batch", 0, "Scenes per data-engine batch (0: the data config's).")
  flags.DEFINE_integer("eval_batch", 16, "Videos generated together in the evaluation.")
  flags.DEFINE_multi_string("attach", [], "Text files to copy into run.json (e.g. a benchmark's log).")


if __name__ == "__main__":
  cli.run(main, define=_define_flags)
