"""Orbax checkpoints of a training run: named items, asynchronous saves, exact resume, read-only opening.

Items per step, under WORKDIR/checkpoints/<step>/: `state` (step, trained and frozen parameters, optimizer
state, key), `ema` (the EMA parameters), `data` (the grain iterator's state) and `config` (the run's config
as JSON: everything that fixes the parameter shapes, the text vocabulary included). Every process has read the
same number of batches from its own slice, so process 0's iterator state (what JsonSave writes) holds for
all. Orbax writes each checkpoint under a temporary name and renames it when complete, so a run killed
mid-save resumes from the last complete one. Both trained models (the video model and the outcome predictor)
are stored this way; `open_run` is how every reader opens one.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp

ITEMS = ("state", "ema", "data", "config")


class CheckpointError(RuntimeError):
  """A workdir, weights folder or shipped name without a usable model of the kind asked for."""


def _split(state):
  return state.replace(ema=None), state.ema


class Checkpoints:
  """The CheckpointManager of WORKDIR/checkpoints. A state is any flax struct with an `ema` field (the
  training loop's TrainState)."""

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
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

  def save(self, step: int, state, data_state: dict, config_json: str) -> None:
    """Starts an asynchronous save of `state` at `step` (returns before the files are written)."""
    rest, ema = _split(state)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(rest), ema=ocp.args.StandardSave(ema),
        data=ocp.args.JsonSave(data_state), config=ocp.args.JsonSave(json.loads(config_json))))

  def _step(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
    return step

  def restore(self, template, step: int | None = None, items: tuple[str, ...] = ITEMS) -> dict:
    """Restores `items` of `step` (default: latest) shaped and sharded like `template` (a real or abstract state).

    Returns a dict item -> value; `state` comes back as a full state with its EMA when both are asked.
    """
    step = self._step(step)
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

  def restore_weights(self, template_ema, template_frozen, step: int | None = None) -> tuple:
    """(ema, frozen) of `step` (default: latest), shaped like the (abstract) templates, without the optimizer
    state: what inference needs."""
    step = self._step(step)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    placed = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None) or device)
    args = dict(ema=ocp.args.StandardRestore(jax.tree.map(placed, template_ema)))
    if jax.tree.leaves(template_frozen):
      frozen = {"frozen": jax.tree.map(placed, template_frozen)}
      args["state"] = ocp.args.PyTreeRestore(item=frozen, restore_args=ocp.checkpoint_utils.construct_restore_args(frozen),
                                             partial_restore=True)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return restored["ema"], restored["state"]["frozen"] if "state" in args else template_frozen

  def restore_config(self, step: int | None = None) -> tuple[dict, int]:
    """The run's config (a dict, as saved) at `step` (default: latest), and that step."""
    step = self._step(step)
    restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return restored["config"], step

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def open_run(workdir: str, what: str, step: int | None = None, label: str | None = None
             ) -> tuple[Checkpoints, dict, int]:
  """Opens a training workdir read-only: (Checkpoints, the stored config as a dict, its step), the latest
  complete checkpoint unless `step`. A missing or unreadable folder or checkpoint raises CheckpointError,
  "<label>: ... (expected <what>)" (label default: "workdir '<workdir>'")."""
  label = label or f"workdir {workdir!r}"
  if not os.path.isdir(workdir):
    raise CheckpointError(f"{label}: no such directory (expected {what})")
  try:
    ckpts = Checkpoints(workdir, read_only=True)
    stored, step = ckpts.restore_config(step)
  except FileNotFoundError as e:
    raise CheckpointError(f"{label}: {e} (expected {what})") from e
  except (ValueError, KeyError) as e:
    raise CheckpointError(f"{label}: cannot read the config of checkpoint {step}: {e}") from e
  return ckpts, stored, step
