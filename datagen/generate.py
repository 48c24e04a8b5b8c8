"""Writes the TFDS dataset `kinemask_synth`.

  python -m datagen.generate --config=configs/data.py:tiny --out=DIR --num=N [--config.scene.max_objects=4]

N train examples, plus validation and test examples (config fractions); progress bars per split. The
dataset lands in DIR/kinemask_synth/<config>/<version>; TFDS writes it under a temporary name and renames
it when every split is complete, so an interrupted run never leaves a dataset that looks complete
(its leftover `incomplete.*` folder is removed by the next run).

A dataset knows what it is: the data config it was built from is stored with it (metadata.json). A rerun
on an existing dataset whose config or --num differs stops with an error naming the differing fields; it
never returns the old data as if it were the new. Only one generator writes a dataset at a time (a lock
file beside it); a second one on the same --out and size stops at once instead of deleting the first
one's unfinished work.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import socket
import time

from absl import flags
from absl import logging
from ml_collections import config_flags

from datagen import cli

# Data-config fields that change how a dataset is made (speed, which threads), not what it holds.
HOW_NOT_WHAT = ("batch_size", "physics.backend", "physics.threads", "physics.mjx_max_pairs",
                "physics.mjx_max_world_pairs", "physics.mjx_batch_pairs", "physics.mjx_max_contacts",
                "render.scenes_per_call")


class DatasetMismatch(ValueError):
  """An existing dataset differs from the one asked for; the message names the differing fields."""


class DatasetBusy(RuntimeError):
  """Another generator is writing the dataset."""


def flat_config(d: dict, prefix: str = "") -> dict:
  """A nested config dict as {"a.b.c": value}, tuples as lists (as JSON stores them)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flat_config(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = list(v) if isinstance(v, (list, tuple)) else v
  return out


def stored_config(path: str) -> dict | None:
  """The data config (a dict) a dataset folder was built from, or None when it does not store one."""
  meta = os.path.join(path, "metadata.json")
  if not os.path.exists(meta):
    return None
  with open(meta) as f:
    return json.load(f).get("data_config")


def config_differences(stored: dict, cfg) -> list[str]:
  """'field: dataset X, asked Y' for every content field (not HOW_NOT_WHAT) where they differ."""
  have, want = flat_config(stored), flat_config(json.loads(cfg.to_json()))
  out = []
  for key in sorted(set(have) | set(want)):
    if key in HOW_NOT_WHAT or have.get(key) == want.get(key):
      continue
    out.append(f"{key}: dataset {have.get(key, '(absent)')!r}, asked {want.get(key, '(absent)')!r}")
  return out


def check_dataset(path: str, cfg, num: int | None = None, asker: str = "this config") -> None:
  """Raises DatasetMismatch when the dataset at `path` was built from another data config than `cfg` (or,
  when `num` is given, with another number of train examples), naming the fields."""
  stored = stored_config(path)
  if stored is None:
    raise DatasetMismatch(f"{path} stores no data config (written by an older kinemask-jax), so it cannot be "
                          f"checked against {asker}: delete it or use another directory")
  diffs = config_differences(stored, cfg)
  if num is not None:
    with open(os.path.join(path, "dataset_info.json")) as f:
      splits = {s["name"]: s for s in json.load(f).get("splits", [])}
    have = sum(int(n) for n in splits.get("train", {}).get("shardLengths", []))
    if have != num:
      diffs.append(f"--num (train examples): dataset {have}, asked {num}")
  if diffs:
    raise DatasetMismatch(f"{path} holds another dataset than {asker} asks for ({'; '.join(diffs)}): use another "
                          "directory, delete it, or ask for what it holds")


@contextlib.contextmanager
def writing_lock(out: str, name: str):
  """Held while a generator writes DIR/kinemask_synth/NAME; raises DatasetBusy if another one holds it.
  (An advisory lock: it dies with its process, so a killed generator never blocks the next one.)"""
  folder = os.path.join(out, "kinemask_synth", name)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, ".generate.lock"), "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      raise DatasetBusy(f"{folder}: another generator ({f.read().strip() or 'unknown process'}) is writing this "
                        "dataset; wait for it to finish or use another --out") from None
    f.truncate(0)
    f.write(f"pid {os.getpid()} on {socket.gethostname()}")
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def dataset_dir(out: str, config_name: str) -> str:
  """Where generate() puts the finished dataset for builder_from_directory."""
  from datagen import kinemask_synth
  return os.path.join(out, "kinemask_synth", config_name, str(kinemask_synth.KinemaskSynth.VERSION))


def generate(cfg, out: str, num: int, backend: str | None = None) -> str:
  """Generates the dataset of `cfg` with `num` train examples (or finds it complete, after checking that it
  was built from the same config and --num); returns its directory. See the module docstring."""
  from datagen import kinemask_synth
  from datagen import scenes
  scenes.validate_config(cfg)  # before any work or any folder is made
  if num is None or num < 1:
    raise cli.UsageError(f"--num: the number of train examples must be >= 1, got {num}")
  if backend not in (None, "c", "mjx"):
    raise cli.UsageError(f"--backend: expected 'c' or 'mjx', got {backend!r}")
  target = dataset_dir(out, cfg.name)
  if os.path.exists(os.path.join(target, "dataset_info.json")):
    check_dataset(target, cfg, num, "--config/--num")
    print(f"dataset already complete (same config and --num): {target}")
    return target
  with writing_lock(out, cfg.name):
    if os.path.exists(os.path.join(target, "dataset_info.json")):  # finished while we waited for the lock
      check_dataset(target, cfg, num, "--config/--num")
      return target
    for stale in glob.glob(os.path.join(out, "kinemask_synth", cfg.name, "incomplete.*")):
      logging.warning("removing the leftover of an interrupted generation: %s", stale)
      shutil.rmtree(stale)
    builder = kinemask_synth.KinemaskSynth(config=kinemask_synth.KinemaskSynthConfig.of(cfg, num, backend),
                                           data_dir=out, file_format="array_record")
    start = time.time()
    builder.download_and_prepare()
    sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f"wrote {sizes} to {target} in {time.time() - start:.1f} s")
  return target


def main(argv):
  del argv
  generate(_CONFIG.value, _OUT.value, _NUM.value, _BACKEND.value)


def _define_flags():
  """Command-line flags (defined only when run as a program, so the module imports cleanly)."""
  global _CONFIG, _OUT, _NUM, _BACKEND
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/data.py:small", "Data config file:size.")
  _OUT = flags.DEFINE_string("out", None, "Directory to write the dataset into.", required=True)
  _NUM = flags.DEFINE_integer("num", None, "Number of train examples.", required=True)
  _BACKEND = flags.DEFINE_enum("backend", None, ["c", "mjx"], "Physics backend (default: config, auto).")


if __name__ == "__main__":
  cli.run(main, expected=(DatasetMismatch, DatasetBusy), define=_define_flags)
