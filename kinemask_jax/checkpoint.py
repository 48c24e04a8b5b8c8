"""Orbax checkpoints of a training run: named items, asynchronous saves, exact resume.

Items per step, under WORKDIR/checkpoints/<step>/: `state` (step, trained and frozen parameters, optimizer
state, key), `ema` (the EMA parameters), `data` (the grain iterator's state) and `config` (the run's config
as JSON). Every process has read the same number of batches from its own slice, so process 0's iterator
state (what JsonSave writes) holds for all. Orbax writes each checkpoint under a temporary name and renames it when complete, so a run killed
mid-save resumes from the last complete one.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp

from kinemask_jax.step import TrainState

ITEMS = ("state", "ema", "data", "config")


def _split(state: TrainState):
  return state.replace(ema=None), state.ema


class Checkpoints:
  """The CheckpointManager of WORKDIR/checkpoints."""

  def __init__(self, workdir: str, keep: int = 3, save_every: int | None = None, read_only: bool = False):
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if read_only and not os.path.isdir(directory):
      raise FileNotFoundError(f"no checkpoints under {workdir} (expected {directory})")
    if read_only:
      options = ocp.CheckpointManagerOptions(max_to_keep=None, save_interval_steps=0, read_only=True,
                                             enable_async_checkpointing=False, create=False)
    else:
      options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self.directory = directory
    self.manager = ocp.CheckpointManager(directory, item_names=ITEMS, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState, data_state: dict, config_json: str) -> None:
    """Starts an asynchronous save of `state` at `step` (returns before the files are written)."""
    rest, ema = _split(state)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(rest), ema=ocp.args.StandardSave(ema),
        data=ocp.args.JsonSave(data_state), config=ocp.args.JsonSave(json.loads(config_json))))

  def restore(self, template: TrainState, step: int | None = None, items: tuple[str, ...] = ITEMS) -> dict:
    """Restores `items` of `step` (default: latest) shaped and sharded like `template` (a real or abstract state).

    Returns a dict item -> value; `state` comes back as a full TrainState with its EMA when both are asked.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    rest, ema = _split(abstract)
    args = dict(state=ocp.args.StandardRestore(rest), ema=ocp.args.StandardRestore(ema),
                data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore())
    restored = self.manager.restore(step, args=ocp.args.Composite(**{k: args[k] for k in items}))
    out = {k: restored[k] for k in items}
    if "state" in out and "ema" in out:
      out["state"] = out["state"].replace(ema=out.pop("ema"))
    out["step"] = step
    return out

  def restore_config(self, step: int | None = None) -> tuple[dict, int]:
    """The run's config (a dict, as saved) at `step` (default: latest), and that step."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
    restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return restored["config"], step

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
