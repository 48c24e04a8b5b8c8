"""Input pipeline: a dataset split through grain, shuffled and sharded by JAX process, into global batches.

`make_dataset` serves any trained model: it takes the per-example transform (the video model's `Decode`
below, the outcome predictor's in training/outcome.py). For the video model a raw batch holds the stored
physical truth (no conditioning encoding):
  video uint8 [B,T,H,W,3], instance_ids uint8 [B,T,H,W], velocity_cam float32 [B,T,N,3],
  moving_at_start bool [B,N], text_ids int32 [B,L], text_lengths int32 [B];
training/curriculum.py turns it into the model's batch inside the jitted step. Where the datasets live and
how a config's dataset is generated when missing: datagen/datasets.py.
"""

from __future__ import annotations

import jax
import numpy as np

from datagen import datasets
from kinemask_jax.model import sharding as shd, text

RAW_KEYS = ("video", "instance_ids", "velocity_cam", "moving_at_start")


class Decode:
  """Dataset example -> raw video-model training example (caption tokenized)."""

  def __init__(self, tokenizer: text.Tokenizer):
    self.tokenizer = tokenizer

  def __call__(self, example):
    ids, length = self.tokenizer.encode(datasets.decode_text(example["caption"]))
    out = {k: np.asarray(example[k]) for k in RAW_KEYS}
    out["text_ids"] = ids
    out["text_lengths"] = np.int32(length)
    return out


def video_decode(config) -> Decode:
  """The video model's transform for a training config (its stored vocabulary's tokenizer)."""
  return Decode(text.Tokenizer.from_config(config.model.text))


def make_dataset(config, split: str, seed: int, transform, epochs: int | None = None):
  """Shuffled, repeated, process-sharded batches of `transform`ed examples (per-process batch) as a grain
  IterDataset.

  The shuffle is a global permutation over `epochs` repetitions of the split (enough for config.train.steps
  by default); process p takes every P-th element, so processes see disjoint examples.
  """
  import grain  # imported here: the in-memory path (kinemask_jax/express.py) runs without grain
  source = datasets.source(config, split)
  processes = jax.process_count()
  if config.batch_size % processes:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the {processes} processes")
  local_batch = config.batch_size // processes
  if epochs is None:
    epochs = config.train.steps * config.batch_size // max(len(source), 1) + 2
  ds = grain.MapDataset.source(source).repeat(epochs).shuffle(seed=seed)
  ds = ds[jax.process_index()::processes]
  ds = ds.map(transform).batch(local_batch, drop_remainder=True)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=config.data_threads, prefetch_buffer_size=4))


def first_examples(config, split: str, n: int, transform) -> dict:
  """The first `n` `transform`ed examples of `split` (fewer if it is smaller) as one batch of numpy arrays."""
  source = datasets.source(config, split)
  examples = [transform(source[i]) for i in range(min(n, len(source)))]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]} if examples else {}


def global_batch(local: dict, mesh, rules) -> dict:
  """One global array per key from each process's local batch, sharded over the mesh's batch axes."""
  out = {}
  for key, value in local.items():
    shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
    sharding = shd.batch_sharding(mesh, rules, shape)
    out[key] = jax.make_array_from_process_local_data(sharding, value, shape)
  return out


class GlobalBatches:
  """An iterator of global sharded batches over a grain iterator of local ones; its state (for checkpoints)
  is the grain iterator's."""

  def __init__(self, local_iter, mesh, rules):
    self._it, self._mesh, self._rules = local_iter, mesh, rules

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return global_batch(next(self._it), self._mesh, self._rules)

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state) -> None:
    self._it.set_state(state)
