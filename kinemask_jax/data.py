"""Input pipeline: the TFDS dataset through grain, sharded by JAX process, into global sharded batches.

A raw batch holds the stored physical truth (no conditioning encoding):
  video uint8 [B,T,H,W,3], instance_ids uint8 [B,T,H,W], velocity_cam float32 [B,T,N,3],
  moving_at_start bool [B,N], text_ids int32 [B,L], text_lengths int32 [B].
`model_batch` (run inside the jitted train step) turns it into the model's batch: the curriculum's cut and
the guidance dropout (kinemask_jax/curriculum.py) on the Condition of kinemask_jax/conditioning.py.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from kinemask_jax import conditioning, curriculum, sharding as shd, text

RAW_KEYS = ("video", "instance_ids", "velocity_cam", "moving_at_start")


def dataset_path(config) -> str:
  """Directory of the dataset the config trains on (builder_from_directory reads it)."""
  from datagen import generate
  return generate.dataset_dir(config.data_dir, config.data.name)


def validate_config(config) -> None:
  """Raises cli.ConfigError naming the first field of what a config reads data with (its `data` section,
  num_train, data_backend, data_threads, batch_size) out of its range: the part the video model's and the
  outcome predictor's configs share."""
  from datagen import cli, scenes
  require = cli.require
  scenes.validate_config(config.data, "config.data.")
  require(config.batch_size >= 1, "batch_size", f"must be >= 1, got {config.batch_size!r}")
  require(config.batch_size % jax.process_count() == 0, "batch_size",
          f"must be divisible by the {jax.process_count()} processes, got {config.batch_size}")
  require(config.num_train >= 1, "num_train", f"must be >= 1, got {config.num_train!r}")
  require(config.data_backend in ("", "c", "mjx"), "data_backend", f"must be '', 'c' or 'mjx', got {config.data_backend!r}")
  require(config.data_threads >= 1, "data_threads", f"must be >= 1, got {config.data_threads!r}")


def ensure_dataset(config, wait_s: float = 3600.0, asker: str = "the training config") -> str:
  """The dataset's directory; generated first (process 0, with progress bars, saying so) when it does not exist.

  An existing dataset must have been built from `config.data` (content fields; datagen.generate.HOW_NOT_WHAT
  aside), else DatasetMismatch names the differing fields; its number of train examples may differ from
  config.num_train (it is used as it is, and log_dataset prints it). Other processes wait for process 0.
  """
  from datagen import generate
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


class _Decode:
  """TFDS example -> raw training example (caption tokenized)."""

  def __init__(self, tokenizer: text.Tokenizer):
    self.tokenizer = tokenizer

  def __call__(self, example):
    caption = example["caption"]
    ids, length = self.tokenizer.encode(caption.decode() if isinstance(caption, bytes) else str(caption))
    out = {k: np.asarray(example[k]) for k in RAW_KEYS}
    out["text_ids"] = ids
    out["text_lengths"] = np.int32(length)
    return out


def _source(config, split: str):
  import tensorflow_datasets as tfds
  return tfds.builder_from_directory(ensure_dataset(config)).as_data_source(split)


def make_dataset(config, split: str, seed: int, epochs: int | None = None):
  """Shuffled, repeated, process-sharded batches of raw examples (per-process batch) as a grain IterDataset.

  The shuffle is a global permutation over `epochs` repetitions of the split (enough for the run by default);
  process p takes every P-th element, so processes see disjoint examples.
  """
  import grain  # imported here: the in-memory path (kinemask_jax/express.py) runs without grain
  source = _source(config, split)
  processes = jax.process_count()
  if config.batch_size % processes:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the {processes} processes")
  local_batch = config.batch_size // processes
  if epochs is None:
    epochs = config.train.steps * config.batch_size // max(len(source), 1) + 2
  ds = grain.MapDataset.source(source).repeat(epochs).shuffle(seed=seed)
  ds = ds[jax.process_index()::processes]
  ds = ds.map(_Decode(text.Tokenizer.from_config(config.model.text))).batch(local_batch, drop_remainder=True)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=config.data_threads, prefetch_buffer_size=4))


def first_examples(config, split: str, n: int) -> dict:
  """The first `n` examples of `split` (fewer if it is smaller) as one raw batch of numpy arrays."""
  source = _source(config, split)
  decode = _Decode(text.Tokenizer.from_config(config.model.text))
  examples = [decode(source[i]) for i in range(min(n, len(source)))]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]} if examples else {}


def global_batch(local: dict, mesh, rules) -> dict:
  """One global array per key from each process's local batch, sharded over the mesh's batch axes."""
  out = {}
  for key, value in local.items():
    shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
    sharding = shd.batch_sharding(mesh, rules, shape)
    out[key] = jax.make_array_from_process_local_data(sharding, value, shape)
  return out


def model_batch(raw: dict, step, rng: jax.Array, config) -> tuple[dict, dict]:
  """The train step's batch {"video": float [B,T,H,W,3] in [-1, 1], "cond": Condition} from a raw batch:
  the curriculum's k (kinemask_jax/curriculum.py), the Condition (kinemask_jax/conditioning.py) and the
  guidance dropout; and the curriculum's metrics (mean k, fraction of k = 1)."""
  b, t = raw["video"].shape[:2]
  rng_k, rng_drop = jax.random.split(rng)
  cur = config.curriculum
  k = curriculum.sample_k(step, rng_k, b, t, config.stage, cur.anneal_steps, cur.floor_prob)
  cond = conditioning.from_truth(raw, k, config.conditioning.v_max_mps)
  drop_text, drop_mask = curriculum.guidance_dropout(rng_drop, b, cur.drop_text_prob, cur.drop_mask_prob)
  batch = dict(video=conditioning.to_model_space(raw["video"]), cond=cond.drop(text=drop_text, mask=drop_mask))
  return batch, dict(curriculum_k=jnp.mean(k.astype(jnp.float32)), k1_fraction=jnp.mean(k == 1))


def log_dataset(path: str) -> None:
  import tensorflow_datasets as tfds
  splits = {k: v.num_examples for k, v in tfds.builder_from_directory(path).info.splits.items()}
  logging.info("dataset %s: %s", path, splits)
