"""Finding and loading a trained video model: shipped weights, a weights folder, or a training workdir.

Whatever the source, a model comes back as a `Stored` (config, EMA weights, frozen weights, step): the
config is the one stored with the weights, so everything that fixes the parameter shapes (the model
section, the video size, the text vocabulary) is read from there, never from the current code's defaults.
A config this version cannot read (an older conditioning layout, no stored vocabulary) is refused with the
reason; a stored vocabulary that differs from the current caption grammar (datagen/captions.py) loads, with
a warning that names the words on either side (the model keeps reading prompts with its own words).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import jax
import ml_collections

from datagen import captions
from kinemask_jax import model as model_lib
from kinemask_jax.model import text
from kinemask_jax.store import weights
from kinemask_jax.store.checkpoints import CheckpointError, open_run

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained")
# Model fields a checkpoint must have to be read by this version, and why each one came.
LAYOUT_FIELDS = {
    "first_frame": "the first frame enters every frame's input",
    "output": "the network predicts the change from the first frame",
    "mask0_all": "frame 0's velocity mask enters every frame's input",
    "push_geometry": "every frame gets its position along and across the push",
}


@dataclasses.dataclass(frozen=True)
class Stored:
  """A trained video model as stored: its config, the graph its weights merge into (nnx.GraphDef), EMA
  weights, frozen weights and training step."""
  config: ml_collections.ConfigDict
  graphdef: Any
  ema: Any
  frozen: Any
  step: int | None


def config_from_json(d: dict) -> ml_collections.ConfigDict:
  """A stored config (JSON turned its tuples into lists) as a ConfigDict with tuples again."""
  def tuples(x):
    if isinstance(x, dict):
      return {k: tuples(v) for k, v in x.items()}
    if isinstance(x, list):
      return tuple(tuples(v) for v in x)
    return x
  return ml_collections.ConfigDict(tuples(d))


def pretrained_names() -> list[str]:
  """Names of the weights shipped in kinemask_jax/pretrained/."""
  if not os.path.isdir(PRETRAINED_DIR):
    return []
  return sorted(d for d in os.listdir(PRETRAINED_DIR) if os.path.exists(os.path.join(PRETRAINED_DIR, d, "config.json")))


def pretrained_dir(name: str) -> str:
  available = pretrained_names()
  if name not in available:
    raise CheckpointError(f"pretrained {name!r}: no such weights; shipped: {available}")
  return os.path.join(PRETRAINED_DIR, name)


def grammar_vocabulary() -> tuple[str, ...]:
  """The vocabulary a new model gets from the current caption grammar (configs/model.py)."""
  return text.vocabulary(captions.phrases())


def vocabulary_differences(vocabulary) -> tuple[list[str], list[str]]:
  """(words of the current caption grammar the vocabulary lacks, words of it the grammar no longer has)."""
  ours, theirs = set(grammar_vocabulary()), set(vocabulary)
  return sorted(ours - theirs), sorted(theirs - ours)


def check_model_config(stored: dict, where: str) -> None:
  """Refuses (CheckpointError) a stored config (a dict) this version cannot read, saying why: another
  conditioning layout, or no stored vocabulary. Warns when its vocabulary differs from the caption grammar."""
  model = stored.get("model", {})
  missing = [k for k in LAYOUT_FIELDS if k not in model]
  if missing:
    raise CheckpointError(
        f"{where}: written by an older kinemask-jax whose model has another conditioning layout (no "
        f"{', '.join('model.' + k for k in missing)}: now {'; '.join(LAYOUT_FIELDS[k] for k in missing)}; frame "
        f"0 is given, not generated). Its weights do not fit this model: retrain it with this version.")
  vocabulary = model.get("text", {}).get("vocabulary")
  if not vocabulary:
    raise CheckpointError(f"{where}: its config does not store the text vocabulary (model.text.vocabulary), so "
                          "its embedding rows cannot be matched to words: retrain it with this version.")
  lacks, extra = vocabulary_differences(vocabulary)
  if lacks or extra:
    warnings.warn(f"{where}: its vocabulary ({len(vocabulary)} tokens) differs from the current caption grammar's: "
                  f"it lacks {lacks or 'nothing'} (read as <unk>) and has {extra or 'nothing'} that captions no longer "
                  "say. It loads and reads prompts with its own vocabulary.", stacklevel=3)


def _weights_config(directory: str) -> tuple[ml_collections.ConfigDict, dict]:
  """(config, metadata) of a weights folder (store/weights.py), checked."""
  try:
    meta = weights.read_config(directory)
  except weights.WeightsError as e:
    raise CheckpointError(str(e)) from e
  check_model_config(meta["config"], directory)
  return config_from_json(meta["config"]), meta


def _run_config(workdir: str, step: int | None):
  """(config, Checkpoints, step) of a training workdir's latest (or given) checkpoint, checked to be a video
  model this version reads."""
  ckpts, stored, step = open_run(workdir, "a kinemask_jax.train workdir", step)
  missing = [k for k in ("model", "data", "diffusion", "conditioning") if k not in stored]
  if missing or "control" not in stored.get("model", {}):
    raise CheckpointError(f"workdir {workdir!r}: not a KineMask video-model checkpoint (its config lacks "
                          f"{missing or ['model.control']})")
  check_model_config(stored, f"workdir {workdir!r}")
  return config_from_json(stored), ckpts, step


def model_config(pretrained: str | None = None, workdir: str | None = None, step: int | None = None):
  """The config of shipped weights (`pretrained`) or of a workdir's checkpoint, read without the weights:
  what a command checks its inputs against (sampling.units.Units(config)) before loading anything heavy."""
  if pretrained is not None:
    return _weights_config(pretrained_dir(pretrained))[0]
  return _run_config(workdir, step)[0]


def _for_this_machine(config) -> ml_collections.ConfigDict:
  if jax.default_backend() == "cpu":  # bf16 matrix products are slow on a CPU: compute in float32 there
    config.model.dtype = "float32"
  return config


def load_weights(directory: str) -> Stored:
  """A weights folder written by store/weights.save (config.json and EMA shards)."""
  config, meta = _weights_config(directory)
  config = _for_this_machine(config)
  graphdef, params, frozen = model_lib.abstract_weights(config.model)
  try:
    ema, frozen = weights.load(directory, params, frozen)
  except weights.WeightsError as e:
    raise CheckpointError(str(e)) from e
  return Stored(config, graphdef, ema, frozen, meta["step"])


def load_pretrained(name: str) -> Stored:
  """The weights shipped in kinemask_jax/pretrained/NAME."""
  return load_weights(pretrained_dir(name))


def load_run(workdir: str, step: int | None = None) -> Stored:
  """The EMA weights of a training workdir's latest (or given) checkpoint."""
  config, ckpts, step = _run_config(workdir, step)
  graphdef, params, frozen = model_lib.abstract_weights(config.model)
  try:
    ema, frozen = ckpts.restore_weights(params, frozen, step)
  except Exception as e:  # orbax reports shape and structure mismatches with several exception types
    raise CheckpointError(f"workdir {workdir!r}: checkpoint {step} does not match the model its config "
                          f"describes: {type(e).__name__}: {e}") from e
  return Stored(config, graphdef, ema, frozen, step)


def export_run(workdir: str, out: str, step: int | None = None, dtype: str = "float32") -> list[str]:
  """Writes the EMA weights of a training workdir's latest (or given) checkpoint as a weights folder."""
  stored = load_run(workdir, step)
  config = stored.config.copy_and_resolve_references()
  # Paths of the machine that trained it mean nothing elsewhere; the source is kept as a note.
  config.init_from, config.data_dir = "", "data"
  return weights.save(out, config, stored.ema, stored.frozen, stored.step, dtype=dtype,
                      extra=dict(source=os.path.abspath(workdir), source_init_from=stored.config.get("init_from", "")))
