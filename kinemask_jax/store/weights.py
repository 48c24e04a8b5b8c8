"""Exported weights: a trained model's EMA parameters and config in a folder, for shipping and loading.

A weights folder holds `config.json` (the run's whole config, vocabulary included) and `ema-NNNNN.npz`
shards (each at most `shard_mib` MiB, so a file fits size-limited transfers), one array per parameter named
by its path in the model (`blocks/0/attn/qkv/kernel`), stored as float32 or bfloat16 (as uint16 bits).
`KineMaskPipeline.from_pretrained("tiny")` loads the folder kinemask_jax/pretrained/tiny this module wrote;
`python -m kinemask_jax.export --workdir=W --out=DIR` exports a training run (store/models.export_run), which
`KineMaskPipeline.from_weights(DIR)` loads.

Loading checks the folder against the model its config describes: a missing, extra or mis-shaped
parameter is an error that names it, never a silent partial load.
"""

from __future__ import annotations

import glob
import json
import os

import jax
import ml_collections
import numpy as np

FORMAT = "kinemask-weights-1"
DTYPES = ("float32", "bfloat16")


class WeightsError(ValueError):
  """A weights folder that does not hold a usable model."""


def _flat(tree) -> dict[str, np.ndarray]:
  """{'a/b/c': leaf} of a pytree (nnx.State or dict)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf for path, leaf in leaves}


def save(directory: str, config: ml_collections.ConfigDict, ema, frozen, step: int, dtype: str = "float32",
         shard_mib: float = 15.0, extra: dict | None = None) -> list[str]:
  """Writes config.json and the EMA (plus frozen) parameters as npz shards; returns the files written."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
  os.makedirs(directory, exist_ok=True)
  for stale in glob.glob(os.path.join(directory, "ema-*.npz")):
    os.remove(stale)
  arrays = {}
  for name, leaf in {**_flat(ema), **{"frozen/" + k: v for k, v in _flat(frozen).items()}}.items():
    a = np.asarray(jax.device_get(leaf), np.float32)
    arrays[name] = a.astype(jax.numpy.bfloat16).view(np.uint16) if dtype == "bfloat16" else a
  shards, current, size = [], {}, 0
  for name in sorted(arrays):
    nbytes = arrays[name].nbytes
    if current and size + nbytes > shard_mib * 2**20:
      shards.append(current)
      current, size = {}, 0
    current[name] = arrays[name]
    size += nbytes
  shards.append(current)
  files = []
  for i, shard in enumerate(shards):
    path = os.path.join(directory, f"ema-{i:05d}.npz")
    np.savez(path, **shard)
    files.append(path)
  meta = dict(format=FORMAT, step=int(step), dtype=dtype, shards=len(shards), config=json.loads(config.to_json()),
              **(extra or {}))
  path = os.path.join(directory, "config.json")
  with open(path, "w") as f:
    json.dump(meta, f, indent=1)
  return files + [path]


def read_config(directory: str) -> dict:
  """The folder's config.json as a dict (format, step, dtype, shards, config)."""
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    raise WeightsError(f"{directory}: no config.json (not a weights folder written by kinemask_jax.store.weights.save)")
  with open(path) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT:
    raise WeightsError(f"{directory}: format {meta.get('format')!r}, this code reads {FORMAT!r}")
  return meta


def load(directory: str, template_ema, template_frozen) -> tuple:
  """(ema, frozen) shaped like the templates (abstract or real nnx.State), from the folder's shards."""
  meta = read_config(directory)
  stored = {}
  for i in range(meta["shards"]):
    path = os.path.join(directory, f"ema-{i:05d}.npz")
    if not os.path.exists(path):
      raise WeightsError(f"{directory}: shard {os.path.basename(path)} of {meta['shards']} is missing")
    with np.load(path) as z:
      stored.update({k: z[k] for k in z.files})

  def fill(template, prefix: str):
    names = list(_flat(template))
    leaves, treedef = jax.tree_util.tree_flatten(template)
    out = []
    for name, leaf in zip(names, leaves):
      key = prefix + name
      if key not in stored:
        raise WeightsError(f"{directory}: no parameter {key!r} (the folder was written for another model layout)")
      a = stored.pop(key)
      a = a.view(jax.numpy.bfloat16).astype(np.float32) if meta["dtype"] == "bfloat16" else a
      if a.shape != tuple(leaf.shape):
        raise WeightsError(f"{directory}: parameter {key!r} has shape {a.shape}, the model expects {tuple(leaf.shape)}")
      out.append(jax.numpy.asarray(a, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)

  ema = fill(template_ema, "")
  frozen = fill(template_frozen, "frozen/")
  if stored:
    raise WeightsError(f"{directory}: parameters the model does not have: {sorted(stored)[:5]}")
  return ema, frozen
