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


def _start(config, config_json: str, trainer: Trainer, batches, workdir: str | None, initial, log):
  """(the state to train from, the checkpoints, the metric writer): the latest checkpoint restored (with the
  iterator's state), else a fresh state with `initial` applied; checkpoints and writer are None without a
  workdir, and the caller closes them."""
  state = trainer.init(config.seed)
  ckpts, writer, latest = None, None, None
  if workdir is not None:
    os.makedirs(workdir, exist_ok=True)
    ckpts = checkpoints.Checkpoints(workdir, keep=config.train.keep_checkpoints)
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
    primary = jax.process_index() == 0
    writer = metric_writers.create_default_writer(workdir, just_logging=not primary)
    if latest is None and primary:
      parameter_overview.log_parameter_overview(state.params.to_pure_dict())
      writer.write_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                            for k, v in generate.flat_config(json.loads(config_json)).items()})
  return state, ckpts, writer


def _first_step(trainer: Trainer, train_step, state, batch, label: str, log):
  """Runs the first step: with the step compiled ahead when given (it checks its arguments before it runs,
  nothing is donated yet), else or when it refuses them (TypeError, ValueError) with the trainer's step
  jitted now. Returns (the step, state, metrics, why the compiled one was refused or None)."""
  if train_step is not None:
    try:
      state, metrics = train_step(state, batch)
      return train_step, state, metrics, None
    except (TypeError, ValueError) as e:
      refused = f"{type(e).__name__}: {str(e)[:300]}"
      log(f"{label}: the step compiled ahead refused this state or batch ({refused}); jitting it now")
  else:
    refused = None
  train_step = trainer.jit_step(state, batch)
  state, metrics = train_step(state, batch)
  return train_step, state, metrics, refused


class _Record:
  """The metrics of the steps run: fetched from the device in one transfer per sync, checked finite (a
  non-finite one raises TrainingError), kept as (step, loss), appended to losses.jsonl, shown on the progress
  bar (or a log line every 500 steps of a budgeted run) and written to the metric writer with the speed of
  the steps since the last write."""

  def __init__(self, workdir, ckpts, writer, *, label, start_step, steps, flops_per_step, log):
    # ckpts: for the finite check's "last good checkpoint"; writer: written to. Both are the caller's to close.
    primary = jax.process_index() == 0
    self.ckpts, self.writer, self.label, self.log, self.flops_per_step = ckpts, writer, label, log, flops_per_step
    self.losses, self.metrics, self.pending = [], {}, []
    self.losses_path = os.path.join(workdir, "losses.jsonl") if workdir is not None and primary else None
    self.progress = None
    if primary and steps is not None:
      from tqdm import tqdm
      self.progress = tqdm(total=steps, initial=start_step, desc=label, unit="step", dynamic_ncols=True)
    self.restart_window()

  def restart_window(self):
    """The speed counts the steps from now."""
    self.window_start, self.window_steps = time.perf_counter(), 0

  def add(self, step_done: int, metrics, timed: bool = True):
    """Step `step_done`'s metrics (on the device: fetched at the next sync); `timed`: it counts towards the
    speed (the first step, which compiles, does not)."""
    self.pending.append((step_done, metrics))
    self.window_steps += int(timed)

  def sync(self):
    """Fetches the pending steps' metrics (one transfer), checks them and records them."""
    for step_done, m in zip([p[0] for p in self.pending], jax.device_get([p[1] for p in self.pending])):
      m = {k: float(v) for k, v in m.items()}
      _check_finite(m, step_done, self.ckpts)
      self.losses.append((step_done, m["loss"]))
      if self.losses_path:
        with open(self.losses_path, "a") as f:
          f.write(json.dumps({"step": step_done, **{k: v for k, v in m.items() if k != "learning_rate"}}) + "\n")
      self.metrics = m
    self.pending = []

  def shown(self, done: int, budgeted: bool, write: bool):
    """After step `done` (its metrics synced or pending): the progress bar, and the writer when `write`."""
    if self.progress is not None:
      self.progress.update(1)
      if self.metrics:
        postfix = dict(loss=f"{self.metrics['loss']:.4f}")
        if "curriculum_k" in self.metrics:
          postfix["k"] = f"{self.metrics['curriculum_k']:.1f}"
        self.progress.set_postfix(postfix)
    elif budgeted and done % 500 == 0 and self.metrics:
      self.log(f"{self.label}: step {done}, loss {np.mean([l for _, l in self.losses[-25:]]):.4f}")
    if write and self.writer is not None and self.window_steps:
      elapsed = time.perf_counter() - self.window_start
      scalars = dict(self.metrics, steps_per_s=self.window_steps / elapsed)
      if self.flops_per_step:
        scalars["tflops_per_device"] = self.flops_per_step * self.window_steps / elapsed / 1e12 / jax.device_count()
      self.writer.write_scalars(done, scalars)
      self.restart_window()

  def finish(self):
    """Syncs the steps still pending and closes the progress bar."""
    self.sync()
    if self.progress is not None:
      self.progress.close()


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
  t = config.train
  steps = None if budget_s is not None else int(t.steps)
  config_json = config.to_json()
  state, ckpts, writer = _start(config, config_json, trainer, batches, workdir, initial, log)
  begin = time.perf_counter()
  start_step = int(jax.device_get(state.step))
  done = start_step
  record = _Record(workdir, ckpts, writer, label=label, start_step=start_step, steps=steps,
                   flops_per_step=flops_per_step, log=log)
  compile_s, clock, ahead_refused = 0.0, None, None
  while steps is None or done < steps:
    if clock is not None and budget_s is not None and time.perf_counter() - clock >= budget_s:
      break
    batch = next(batches)
    first = clock is None
    if first:  # the first step compiles: the budget and the speed count from its end
      train_step, state, metrics, ahead_refused = _first_step(trainer, train_step, state, batch, label, log)
      jax.block_until_ready(metrics["loss"])
      clock = time.perf_counter()
      compile_s = clock - begin
      record.restart_window()
    else:
      state, metrics = train_step(state, batch)
    done += 1
    record.add(done, metrics, timed=not first)
    last = steps is not None and done == steps
    log_now = done % t.log_every == 0 or last
    save_now = ckpts is not None and (done % t.checkpoint_every == 0 or last)
    if len(record.pending) >= sync_every or log_now or save_now:
      record.sync()
    record.shown(done, budget_s is not None, log_now)
    if save_now:
      ckpts.save(done, state, batches.get_state(), config_json)
    for hook in hooks:
      hook(done, state)
  record.finish()
  if ckpts is not None:
    ckpts.wait()
    ckpts.close()
  if writer is not None:
    writer.flush()
  ran = done - start_step
  per_step = (time.perf_counter() - clock) / max(ran - 1, 1) if clock is not None else float("nan")
  return Result(state, record.metrics, record.losses, ran, per_step, compile_s, ahead_refused)
