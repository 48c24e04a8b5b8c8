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
from concurrent import futures

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


def generate(data_cfg, split: str, num: int, backend: str | None, clock: Clock, max_seconds: float,
             timings=None) -> list[dict]:
  """Up to `num` examples of `split` from the data engine; no batch starts after max_seconds (`timings`: an
  `engine.Timings` it fills in)."""
  from datagen import engine
  out, start = [], time.perf_counter()
  for example in engine.generate_split(split, num, data_cfg, backend, timings=timings, deadline=start + max_seconds):
    out.append(example)
    if len(out) % data_cfg.batch_size == 0:
      log(clock, f"{split}: {len(out)}/{num} videos ({len(out) / (time.perf_counter() - start):.0f} videos/s)")
  return out


def raw_arrays(examples: list[dict], tokenizer: text.Tokenizer) -> dict:
  """The raw training batch layout (training/input_pipeline.py) of a list of examples, as device arrays."""
  arrays = {k: np.stack([e[k] for e in examples]) for k in input_pipeline.RAW_KEYS}
  arrays["text_ids"], arrays["text_lengths"] = tokenizer.encode_batch([str(e["caption"]) for e in examples])
  return {k: jax.device_put(v) for k, v in arrays.items()}


def batch_like(arrays: dict, batch: int) -> dict:
  """The shapes and dtypes (jax.ShapeDtypeStruct) of a batch of `batch` examples of `raw_arrays`."""
  return {k: jax.ShapeDtypeStruct((batch,) + v.shape[1:], v.dtype) for k, v in arrays.items()}


class Ahead:
  """Compiles on one helper thread what the run needs next (each stage's train step, the evaluation's sampler)
  while the main thread generates data or trains; the accelerator's host is otherwise idle then. With
  enabled=False nothing runs ahead and `result` returns None (each compiles when first used)."""

  def __init__(self, enabled: bool):
    self._pool = futures.ThreadPoolExecutor(1, thread_name_prefix="ahead") if enabled else None
    self._jobs: dict[str, futures.Future] = {}
    self.seconds: dict[str, float] = {}  # name -> seconds the helper spent on it
    self.errors: dict[str, str] = {}  # name -> why it failed
    self.waited_s = 0.0  # seconds the caller spent waiting in `result`

  def submit(self, name: str, fn, *args) -> None:
    if self._pool is None:
      return
    def timed():
      start = time.perf_counter()
      value = fn(*args)
      self.seconds[name] = round(time.perf_counter() - start, 1)
      return value
    self._jobs[name] = self._pool.submit(timed)

  def result(self, name: str, clock: Clock | None = None):
    """The job's value once done; None when nothing ran ahead, or when the job failed (logged, kept in
    `errors`): the caller then compiles at first use, as without a helper, so a loan is not lost to it."""
    job = self._jobs.pop(name, None)
    if job is None:
      return None
    start = time.perf_counter()
    try:
      return job.result()
    except Exception as e:  # noqa: BLE001 - any failure falls back to compiling at first use, said aloud
      self.errors[name] = f"{type(e).__name__}: {str(e)[:300]}"
      message = f"compiling {name} ahead failed ({self.errors[name]}); it compiles at first use"
      if clock is not None:
        log(clock, message)
      else:
        print(message, flush=True)
      return None
    finally:
      self.waited_s += time.perf_counter() - start

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)


def make_trainer(config):
  """The video trainer of a stage config on its mesh, with the curriculum's batch preparation on the device."""
  return video.trainer(config, shd.make_mesh(config.mesh.shape), prepare=True)


def compile_stage(config, like: dict):
  """(trainer, its train step compiled for batches shaped like `like`) of a stage config."""
  trainer = make_trainer(config)
  return trainer, trainer.compile_step(trainer.abstract_state(config.seed), like)


class RandomBatches:
  """Batches of `batch` examples drawn at random (with replacement, seeded) from arrays held on the device,
  placed with `sharding` (a dict like the arrays of jax shardings, e.g. a trainer's batch_sharding)."""

  def __init__(self, arrays: dict, batch: int, seed: int, sharding: dict | None = None):
    self._arrays, self._batch = arrays, batch
    self._n = len(arrays["video"])
    self._rng = np.random.default_rng(seed)
    self._take = jax.jit(lambda a, idx: jax.tree.map(lambda x: x[idx], a), out_shardings=sharding)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return self._take(self._arrays, self._rng.integers(0, self._n, self._batch))


def train_stage(config, arrays: dict, seconds: float, init=None, clock: Clock | None = None,
                prepared=None) -> loop.Result:
  """Trains one curriculum stage for `seconds` of steps (compile excluded) on random batches of `arrays`,
  with the training loop (training/loop.py) in memory. init: (params, frozen, ema) to start from (stage 2
  from stage 1). prepared: (trainer, compiled step) of `compile_stage`, else the step compiles at the start."""
  trainer, step = prepared if prepared is not None else (make_trainer(config), None)
  batches = RandomBatches(arrays, config.batch_size, config.seed + config.stage,
                          trainer.batch_sharding(batch_like(arrays, config.batch_size)))

  def initial(state):
    params, frozen, ema = jax.tree.map(jax.numpy.copy, init)  # copies: the train step donates its state
    return state.replace(params=params, frozen=frozen, ema=ema)
  return loop.fit(config, trainer, batches, None, label=f"stage {config.stage}",
                  initial=initial if init is not None else None, budget_s=seconds, sync_every=25,
                  log=lambda m: log(clock, m) if clock is not None else None, train_step=step)


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


def _stage_summary(clock: Clock, config, r: loop.Result, prepared, seconds: float) -> dict:
  """Logs a trained stage and returns its run.json entry."""
  ahead = prepared is not None and r.ahead_refused is None
  log(clock, f"stage {config.stage}: {r.steps} steps, {r.seconds_per_step * 1e3:.1f} ms/step (first step "
             f"{r.compile_s:.1f} s{', compiled ahead' if ahead else ''}), last loss {r.losses[-1][1]:.4f}")
  return dict(steps=r.steps, ms_per_step=round(r.seconds_per_step * 1e3, 2), batch=config.batch_size,
              seconds=round(seconds + r.compile_s, 1), first_step_s=round(r.compile_s, 1), compiled_ahead=ahead)


def _train(s1, s2, arrays: dict, clock: Clock, reserve: float, stage1_fraction: float, ahead: Ahead,
           eval_batch: int):
  """Stage 1 then stage 2 for what the clock leaves after `reserve` seconds (the steps compiled ahead when
  they were, waiting for them on the clock), the evaluation's sampler compiled behind stage 2. Returns
  (timings and loss curves, stage-2 state, (pipeline, stage-1 pipeline)); both pipelines pad the evaluation's
  batches to `eval_batch`."""
  from kinemask_jax.sampling import api
  prepared1 = ahead.result("stage 1 step", clock)
  train_s = max(clock.left() - reserve, 5.0)
  # A stage compiles its step at its start unless it was compiled ahead (not counted in its seconds).
  compile_guess = 0.0 if prepared1 is not None else 0.1 * train_s
  first_s = max((train_s - 2 * compile_guess) * stage1_fraction, 2.0)
  r1 = train_stage(s1, arrays, first_s, clock=clock, prepared=prepared1)
  stage1 = _stage_summary(clock, s1, r1, prepared1, first_s)
  stage1_pipe = api.KineMaskPipeline(s1, r1.state.ema, r1.state.frozen, r1.steps)
  stage1_pipe.batch_bucket = eval_batch  # every evaluation batch runs the sampler compiled here
  ahead.submit("sampler", stage1_pipe.warm, eval_batch)  # shared with stage 2's pipeline (same model graph)
  prepared2 = ahead.result("stage 2 step", clock)
  second_s = max(clock.left() - reserve - (r1.compile_s if prepared2 is None else 0.0), 2.0)
  r2 = train_stage(s2, arrays, second_s, init=(r1.state.params, r1.state.frozen, r1.state.ema), clock=clock,
                   prepared=prepared2)
  stage2 = _stage_summary(clock, s2, r2, prepared2, second_s)
  pipe = api.KineMaskPipeline(s2, r2.state.ema, r2.state.frozen, r2.steps)
  pipe.batch_bucket = eval_batch
  ahead.result("sampler", clock)
  train = dict(stage1=stage1, stage2=stage2, losses1=r1.losses[::max(len(r1.losses) // 400, 1)],
               losses2=r2.losses[::max(len(r2.losses) // 400, 1)], waited_for_compiles_s=round(ahead.waited_s, 1))
  return train, r2.state, (pipe, stage1_pipe)


def run(config, out: str, minutes: float, num_train: int, num_test: int, stage1_fraction: float,
        backend: str | None, engine_batch: int, eval_minutes: float, data_seconds: float,
        attach: tuple[str, ...] = (), eval_batch: int = 16, precompile: bool = True,
        causality_num: int = 0) -> dict:
  """The whole run; returns run.json's content (`attach`: text files copied into it, e.g. a benchmark log).
  precompile: compile each stage's step and the evaluation's sampler on a helper thread ahead of use.
  causality_num: test examples in the evaluation's speed sweep (0: the evaluation config's)."""
  from configs import evaluate as eval_configs
  from kinemask_jax.evaluation import report, score
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
  from datagen import engine
  test = generate(data_cfg, "test", num_test, backend, clock, float("inf"))
  tokenizer = text.Tokenizer.from_config(config.model.text)
  ahead = Ahead(precompile)
  try:
    like = batch_like(raw_arrays(test[:1], tokenizer), s1.batch_size)
    ahead.submit("stage 1 step", compile_stage, s1, like)  # behind the training data's generation
    ahead.submit("stage 2 step", compile_stage, s2, like)  # behind stage 1, if not done before
    timings = engine.Timings()
    train = generate(train_cfg, "train", num_train, backend, clock, data_seconds, timings)
    info["data"] = dict(train=len(train), test=len(test), seconds=round(time.perf_counter() - t0, 1),
                        engine_batch=data_cfg.batch_size, backend=backend or "auto", train_engine=timings.as_dict())
    log(clock, f"data: {len(train)} train, {len(test)} test videos in {info['data']['seconds']} s; train engine: "
               f"{timings.summary()}")
    arrays = raw_arrays(train, tokenizer)
    del train
    info["train"], state2, (pipe, stage1_pipe) = _train(s1, s2, arrays, clock, 60.0 * eval_minutes,
                                                        stage1_fraction, ahead, eval_batch)
    del arrays
    info["train"]["compiled_ahead_s"] = dict(ahead.seconds)
    info["train"]["ahead_errors"] = dict(ahead.errors)
  finally:
    ahead.close()
  steps1, steps2 = stage1_pipe.step, pipe.step

  files = weights.save(os.path.join(out, "weights"), s2, state2.ema, state2.frozen, steps2, dtype="bfloat16",
                       extra=dict(stage1_steps=steps1, stage2_steps=steps2, machine=info["machine"]))
  log(clock, f"exported {len(files)} weight files")

  eval_cfg = eval_configs.get_config()
  eval_cfg.ablations.stage1_only = ""
  eval_cfg.num_strips = 3
  eval_cfg.batch_size = eval_batch
  if causality_num:
    eval_cfg.causality.num = causality_num
  scratch = tempfile.mkdtemp()
  t = time.perf_counter()
  result = score.score(eval_cfg, pipe, test, scratch, f"express run ({config.size}, {minutes} min)",
                       extra={"stage 1 only": stage1_pipe})
  info["eval"] = result
  info["eval_seconds"] = round(time.perf_counter() - t, 1)
  log(clock, f"evaluation: {info['eval_seconds']} s")
  shutil.copy(os.path.join(scratch, "report.md"), os.path.join(out, "report.md"))
  with open(os.path.join(out, "report.md"), "a") as f:
    f.write(f"\n## Data engine ({info['data']['backend']} physics, batch {data_cfg.batch_size})\n\ntrain split: "
            f"{timings.summary()}\n")
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
  if FLAGS.causality_num < 0:
    raise cli.UsageError(f"--causality_num: must be >= 0 (0: the evaluation config's), got {FLAGS.causality_num}")
  if FLAGS.engine_batch < 0:
    raise cli.UsageError(f"--engine_batch: must be >= 0 (0: the data config's), got {FLAGS.engine_batch}")
  if not 0 < FLAGS.stage1_fraction < 1:
    raise cli.UsageError(f"--stage1_fraction: must lie in (0, 1), got {FLAGS.stage1_fraction}")
  if FLAGS.eval_minutes >= FLAGS.minutes:
    raise cli.UsageError(f"--eval_minutes: must be less than --minutes={FLAGS.minutes}, got {FLAGS.eval_minutes}")
  video.validate_config(_CONFIG.value)
  precompile = FLAGS.precompile == "on" or (FLAGS.precompile == "auto" and jax.default_backend() != "cpu")
  run(_CONFIG.value, FLAGS.out, FLAGS.minutes, FLAGS.num_train, FLAGS.num_test, FLAGS.stage1_fraction,
      FLAGS.backend, FLAGS.engine_batch, FLAGS.eval_minutes, FLAGS.data_seconds, tuple(FLAGS.attach or ()),
      FLAGS.eval_batch, precompile, FLAGS.causality_num)


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
  flags.DEFINE_integer("causality_num", 0, "Test examples in the evaluation's speed sweep, each generated at "
                       "every speed (0: the evaluation config's, 8); its rank correlation is noisy over few.")
  flags.DEFINE_enum("precompile", "auto", ["auto", "on", "off"], "Compile each stage's step and the "
                    "evaluation's sampler on a helper thread while data is generated and the stage before trains "
                    "(auto: on an accelerator, whose host is idle then; off on a CPU backend, where it competes "
                    "with the steps for the cores).")
  flags.DEFINE_multi_string("attach", [], "Text files to copy into run.json (e.g. a benchmark's log).")


if __name__ == "__main__":
  cli.run(main, define=_define_flags)
