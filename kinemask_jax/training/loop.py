"""The training loop: every trained model of the house goes through `fit`.

`fit(config, trainer, batches, workdir)` runs a Trainer's jitted, sharded step (training/trainer.py: the
in-step finite guard leaves the state untouched on a non-finite loss or gradient, and the loop stops with
TrainingError) over an iterator of global batches, for `config.train.steps` steps or for a wall-clock
budget. With a workdir it checkpoints every `train.checkpoint_every` steps (state, EMA, the batches'
iterator state, the config: kinemask_jax/store/checkpoints.py), resumes exactly from the latest checkpoint,
appends each step's loss to losses.jsonl and writes metrics through clu; without one (the budgeted,
in-memory run of kinemask_jax/express.py) it keeps all that in memory. The video model's run is
training/video.py; the outcome predictor's is training/outcome.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from kinemask_jax.store import checkpoints
from kinemask_jax.training.trainer import Trainer, TrainState


class TrainingError(RuntimeError):
  """A run that cannot go on (a non-finite loss, an incompatible init_from)."""


@dataclasses.dataclass
class Result:
  """What `fit` returns: the final state, the last synced step's metrics, every (step, loss) of this call,
  the steps it ran, seconds per step (the first, compiling step excluded) and seconds to compile and run the
  first step (only to run it when fit was given a compiled train_step)."""
  state: TrainState
  metrics: dict
  losses: list
  steps: int
  seconds_per_step: float
  compile_s: float
  ahead_refused: str | None = None  # why a given compiled train_step was refused (the step then jitted), or None


def _check_finite(metrics: dict, step: int, ckpts) -> None:
  if metrics.pop("finite"):
    return
  last = None
  if ckpts is not None:
    ckpts.wait()
    last = ckpts.latest_step()
  where = f"step {last} in {ckpts.directory}" if last is not None else "none"
  raise TrainingError(f"step {step}: loss {metrics['loss']} or gradient norm {metrics['grad_norm']} is not finite; "
                      f"stopping. The state was not updated; last good checkpoint: {where}")


def fit(config, trainer: Trainer, batches, workdir: str | None, *, label: str,
        initial: Callable[[TrainState], TrainState] | None = None, hooks: Sequence[Callable] = (),
        budget_s: float | None = None, sync_every: int = 1, flops_per_step: float | None = None,
        log: Callable[[str], None] = print, train_step: Callable | None = None) -> Result:
  """Trains (or resumes) and returns a Result; see the module docstring.

  batches: an iterator of global batches (training/input_pipeline.GlobalBatches, or any iterator; with a
  workdir it must have get_state/set_state). initial: applied to a fresh state when no checkpoint is
  resumed (e.g. stage 2 starting from stage 1's weights). hooks: called as hook(step, state) after every
  step (e.g. sample GIFs). budget_s: run until this many seconds of steps have passed (the first step's
  compile excluded) instead of config.train.steps. sync_every: steps between fetches of the metrics from the
  device (the finite check happens at each fetch; a checkpoint or a log line always fetches first).
  flops_per_step: for the tflops_per_device metric. train_step: the trainer's step already compiled for this
  run's state and batches (Trainer.compile_step), used instead of jitting one at the first step; if it refuses
  the first step's state or batch (TypeError or ValueError: another shape or sharding), the loop logs why, jits
  the step as without it and says so in Result.ahead_refused.
  """
  primary = jax.process_index() == 0
  t = config.train
  steps = None if budget_s is not None else int(t.steps)
  state = trainer.init(config.seed)
  ckpts, writer, latest = None, None, None
  config_json = config.to_json()
  if workdir is not None:
    os.makedirs(workdir, exist_ok=True)
    ckpts = checkpoints.Checkpoints(workdir, keep=t.keep_checkpoints)
    latest = ckpts.latest_step()
  if latest is not None:
    restored = ckpts.restore(state)
    state = restored["state"]
    batches.set_state(restored["data"])
    log(f"resumed from {ckpts.directory} at step {latest}")
  elif initial is not None:
    state = initial(state)
  if workdir is not None:
    from clu import metric_writers, parameter_overview
    from datagen import generate
    writer = metric_writers.create_default_writer(workdir, just_logging=not primary)
    if latest is None and primary:
      parameter_overview.log_parameter_overview(state.params.to_pure_dict())
      writer.write_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                            for k, v in generate.flat_config(json.loads(config_json)).items()})

  begin = time.perf_counter()
  start_step = int(jax.device_get(state.step))
  done = start_step
  losses, metrics_host, pending = [], {}, []
  progress = None
  if primary and steps is not None:
    from tqdm import tqdm
    progress = tqdm(total=steps, initial=start_step, desc=label, unit="step", dynamic_ncols=True)
  losses_path = os.path.join(workdir, "losses.jsonl") if workdir is not None and primary else None
  window_start, window_steps = time.perf_counter(), 0
  compile_s, clock, ahead_refused = 0.0, None, None

  def sync():
    """Fetches the pending steps' metrics (one transfer), checks them and records them."""
    nonlocal metrics_host, pending
    for step_done, m in zip([p[0] for p in pending], jax.device_get([p[1] for p in pending])):
      m = {k: float(v) for k, v in m.items()}
      _check_finite(m, step_done, ckpts)
      losses.append((step_done, m["loss"]))
      if losses_path:
        with open(losses_path, "a") as f:
          f.write(json.dumps({"step": step_done, **{k: v for k, v in m.items() if k != "learning_rate"}}) + "\n")
      metrics_host = m
    pending = []

  while steps is None or done < steps:
    if clock is not None and budget_s is not None and time.perf_counter() - clock >= budget_s:
      break
    batch = next(batches)
    given_first = train_step is not None and clock is None  # the first step of a step compiled ahead
    if train_step is None:
      train_step = trainer.jit_step(state, batch)
    if given_first:
      try:  # a step compiled ahead checks its arguments before it runs (nothing is donated yet)
        state, metrics = train_step(state, batch)
      except (TypeError, ValueError) as e:
        ahead_refused = f"{type(e).__name__}: {str(e)[:300]}"
        log(f"{label}: the step compiled ahead refused this state or batch ({ahead_refused}); jitting it now")
        train_step = trainer.jit_step(state, batch)
        state, metrics = train_step(state, batch)
    else:
      state, metrics = train_step(state, batch)
    done += 1
    window_steps += 1
    if clock is None:  # the first step compiles: the budget and the speed count from its end
      jax.block_until_ready(metrics["loss"])
      clock = time.perf_counter()
      compile_s = clock - begin
      window_start, window_steps = clock, 0
    pending.append((done, metrics))
    last = steps is not None and done == steps
    log_now = done % t.log_every == 0 or last
    save_now = ckpts is not None and (done % t.checkpoint_every == 0 or last)
    if len(pending) >= sync_every or log_now or save_now:
      sync()
    if progress is not None:
      progress.update(1)
      if metrics_host:
        postfix = dict(loss=f"{metrics_host['loss']:.4f}")
        if "curriculum_k" in metrics_host:
          postfix["k"] = f"{metrics_host['curriculum_k']:.1f}"
        progress.set_postfix(postfix)
    elif budget_s is not None and done % 500 == 0 and metrics_host:
      log(f"{label}: step {done}, loss {np.mean([l for _, l in losses[-25:]]):.4f}")
    if log_now and writer is not None and window_steps:
      elapsed = time.perf_counter() - window_start
      scalars = dict(metrics_host, steps_per_s=window_steps / elapsed)
      if flops_per_step:
        scalars["tflops_per_device"] = flops_per_step * window_steps / elapsed / 1e12 / jax.device_count()
      writer.write_scalars(done, scalars)
      window_start, window_steps = time.perf_counter(), 0
    if save_now:
      ckpts.save(done, state, batches.get_state(), config_json)
    for hook in hooks:
      hook(done, state)
  sync()
  if progress is not None:
    progress.close()
  if ckpts is not None:
    ckpts.wait()
    ckpts.close()
  if writer is not None:
    writer.flush()
  ran = done - start_step
  per_step = (time.perf_counter() - clock) / max(ran - 1, 1) if clock is not None else float("nan")
  return Result(state, metrics_host, losses, ran, per_step, compile_s, ahead_refused)
