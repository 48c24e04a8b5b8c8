"""TFDS builder `kinemask_synth`: the data engine's videos as an array_record dataset.

Splits come from disjoint seed ranges (train from 0, validation from 1e9, test from 2e9): example i of a
split is always the scene of seed SPLIT_SEED_BASE[split] + i, whatever the number of examples asked for.
Features are plain tensors (and one text), so the dataset reads back through
`tfds.builder_from_directory(...).as_data_source(split)` and grain without TensorFlow.
"""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from datagen import engine
from datagen import physics
from datagen import scenes as scenes_lib

SPLIT_SEED_BASE = engine.SPLIT_SEED_BASE
SHAPE_NAMES = scenes_lib.SHAPES  # `shape` feature: index into this, -1 for padding


def features(cfg: ml_collections.ConfigDict) -> tfds.features.FeaturesDict:
  """The data contract as TFDS features (T, H, W and max_objects N from the config)."""
  t, h, w, n = cfg.num_frames, cfg.height, cfg.width, cfg.scene.max_objects
  e = n * (n - 1) // 2
  tensor = tfds.features.Tensor
  spec = {
      "video": tensor(shape=(t, h, w, 3), dtype=np.uint8),
      "instance_ids": tensor(shape=(t, h, w), dtype=np.uint8),
      "num_objects": tensor(shape=(), dtype=np.int32),
      "shape": tensor(shape=(n,), dtype=np.int32),
      "color": tensor(shape=(n, 3), dtype=np.uint8),
      "size": tensor(shape=(n, 3), dtype=np.float32),
      "mass": tensor(shape=(n,), dtype=np.float32),
      "friction": tensor(shape=(n,), dtype=np.float32),
      "moving_at_start": tensor(shape=(n,), dtype=np.bool_),
      "position": tensor(shape=(t, n, 3), dtype=np.float32),
      "quat": tensor(shape=(t, n, 4), dtype=np.float32),
      "velocity_cam": tensor(shape=(t, n, 3), dtype=np.float32),
      "centroid_px": tensor(shape=(t, n, 2), dtype=np.float32),
      "visible": tensor(shape=(t, n), dtype=np.bool_),
      "collisions": tensor(shape=(e, 3), dtype=np.int32),
      "fell": tensor(shape=(n,), dtype=np.int32),
      "caption": tfds.features.Text(),
      "camera_intrinsics": tensor(shape=(4,), dtype=np.float32),
      "camera_extrinsics": tensor(shape=(3, 4), dtype=np.float32),
      "seed": tensor(shape=(), dtype=np.int64),
  }
  if cfg.with_depth:
    spec["depth"] = tensor(shape=(t, h, w), dtype=np.float16)
  return tfds.features.FeaturesDict(spec)


def split_sizes(cfg: ml_collections.ConfigDict, num_train: int) -> dict[str, int]:
  """Examples per split for --num=num_train (validation and test at least 1 each)."""
  if num_train < 1:
    raise ValueError(f"--num must be >= 1, got {num_train}")
  extra = lambda f: max(1, int(round(f * num_train)))
  return {"train": num_train, "validation": extra(cfg.validation_fraction), "test": extra(cfg.test_fraction)}


class KinemaskSynth(tfds.core.GeneratorBasedBuilder):
  """Synthetic rigid-body interaction videos with velocity, event and caption annotations."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n, description=f"{n} size, see configs/data.py")
                     for n in ("tiny", "small", "base")]

  def __init__(self, *, data_config: ml_collections.ConfigDict, num_train: int = 0,
               backend: str | None = None, **kwargs):
    scenes_lib.validate_config(data_config)
    self._data_config = data_config
    self._sizes = split_sizes(data_config, num_train) if num_train else None
    self._backend = backend or physics.resolve_backend(data_config)
    super().__init__(config=data_config.name, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self._data_config
    return self.dataset_info_from_configs(
        features=features(cfg),
        description=__doc__,
        metadata=tfds.core.MetadataDict(data_config=json.loads(cfg.to_json()), shape_names=list(SHAPE_NAMES),
                                        physics_backend=self._backend),
    )

  def _split_generators(self, dl_manager):
    if self._sizes is None:
      raise ValueError("kinemask_synth: give num_train (examples in the train split) to generate")
    return {split: self._generate_examples(split, num) for split, num in self._sizes.items()}

  def _generate_examples(self, split: str, num: int):
    for i, example in enumerate(engine.generate_split(split, num, self._data_config, self._backend)):
      yield i, example
