"""The datasets a run reads: where a config's dataset lives, generating it when missing, opening a split.

A run's config names its dataset by `data_dir` and its data section (`data.name` is the size: the folder
is DATA_DIR/kinemask_synth/<name>/<version>, datagen/generate.py). The video model's training, the outcome
predictor's and the evaluation all open their data here, so they agree on what a config's dataset is: one
built from that data config (datagen.generate.check_dataset), whatever its number of train examples.
"""

from __future__ import annotations

import os
import time

import jax
from absl import logging

from datagen import cli, generate, scenes


def dataset_path(config) -> str:
  """Directory of the dataset a run config reads (builder_from_directory reads it)."""
  return generate.dataset_dir(config.data_dir, config.data.name)


def validate_config(config) -> None:
  """Raises cli.ConfigError naming the first field of what a run config reads data with (its `data` section,
  num_train, data_backend, data_threads, batch_size) out of its range."""
  require = cli.require
  scenes.validate_config(config.data, "config.data.")
  require(config.batch_size >= 1, "batch_size", f"must be >= 1, got {config.batch_size!r}")
  require(config.batch_size % jax.process_count() == 0, "batch_size",
          f"must be divisible by the {jax.process_count()} processes, got {config.batch_size}")
  require(config.num_train >= 1, "num_train", f"must be >= 1, got {config.num_train!r}")
  require(config.data_backend in ("", "c", "mjx"), "data_backend", f"must be '', 'c' or 'mjx', got {config.data_backend!r}")
  require(config.data_threads >= 1, "data_threads", f"must be >= 1, got {config.data_threads!r}")


def exists(config) -> bool:
  """Whether the config's dataset is complete on disk."""
  return os.path.exists(os.path.join(dataset_path(config), "dataset_info.json"))


def ensure_dataset(config, wait_s: float = 3600.0, asker: str = "the training config") -> str:
  """The dataset's directory; generated first (process 0, with progress bars, saying so) when it does not exist.

  An existing dataset must have been built from `config.data` (content fields; datagen.generate.HOW_NOT_WHAT
  aside), else DatasetMismatch names the differing fields; its number of train examples may differ from
  config.num_train (it is used as it is, and log_dataset prints it). Other processes wait for process 0.
  """
  path = dataset_path(config)
  done = os.path.join(path, "dataset_info.json")
  if os.path.exists(done):
    generate.check_dataset(path, config.data, asker=asker)
    return path
  if jax.process_index() == 0:
    print(f"dataset {path} not found: generating {config.num_train} {config.data.name} train examples first",
          flush=True)
    generate.generate(config.data, config.data_dir, config.num_train, config.data_backend or None)
  else:
    start = time.time()
    while not os.path.exists(done):
      if time.time() - start > wait_s:
        raise TimeoutError(f"process {jax.process_index()}: no dataset at {path} after {wait_s:.0f} s")
      time.sleep(2.0)
  return path


def source(config, split: str, asker: str = "the training config"):
  """The split of the config's dataset as a random-access TFDS data source (generated first if missing)."""
  import tensorflow_datasets as tfds
  return tfds.builder_from_directory(ensure_dataset(config, asker=asker)).as_data_source(split)


def log_dataset(path: str) -> None:
  import tensorflow_datasets as tfds
  splits = {k: v.num_examples for k, v in tfds.builder_from_directory(path).info.splits.items()}
  logging.info("dataset %s: %s", path, splits)


def decode_text(value) -> str:
  """A stored text feature (bytes from TFDS, str from the data engine) as a str."""
  return value.decode() if isinstance(value, bytes) else str(value)
