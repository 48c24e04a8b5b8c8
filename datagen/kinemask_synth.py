"""TFDS builder `kinemask_synth`: the data engine's videos as an array_record dataset.

The generation parameters are the builder's config, as TFDS intends: a `KinemaskSynthConfig` holds the data
config (configs/data.py), the number of train examples and the physics backend. The registered configs are
the data sizes (tiny, small, base) with their default data config and train examples, so after
`import datagen.kinemask_synth` TFDS's own entry points find a built dataset:

  tfds.builder("kinemask_synth/tiny", data_dir=DIR)   # what `python -m datagen.generate --out=DIR` wrote
  tfds.load("kinemask_synth/tiny", data_dir=DIR, split="test")   # tf.data (served from the array_record files)
  tfds.data_source("kinemask_synth/tiny", data_dir=DIR, split="test")   # random access (what grain reads)

`python -m datagen.generate` builds one (it passes its KinemaskSynthConfig to the builder). A dataset
generated with an edited data config (`--config.scene.max_objects=4`) keeps its config name (the
size); its features are those of the data config stored with it (metadata.json), so it reads back as built.
Splits come from disjoint seed ranges (train from 0, validation from 1e9, test from 2e9): example i of a
split is always the scene of seed SPLIT_SEED_BASE[split] + i, whatever the number of examples asked for.
Features are plain tensors (and one text), so the dataset also reads back through
`tfds.builder_from_directory(...).as_data_source(split)` and grain without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from configs import data as data_configs
from datagen import engine
from datagen import physics
from datagen import scenes as scenes_lib
from datagen import shapes as shapes_lib

SPLIT_SEED_BASE = engine.SPLIT_SEED_BASE


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


@dataclasses.dataclass(eq=False)
class KinemaskSynthConfig(tfds.core.BuilderConfig):
  """What a kinemask_synth dataset is made from: the data config (its name is the config's), the number of
  train examples (validation and test follow from the data config's fractions) and the physics backend
  ("" for the data config's choice)."""
  data_config: Any = None  # ml_collections.ConfigDict of configs/data.py
  num_train: int = 0
  backend: str = ""

  @classmethod
  def of(cls, data_config: ml_collections.ConfigDict, num_train: int, backend: str | None = None
         ) -> "KinemaskSynthConfig":
    return cls(name=data_config.name, description=f"{data_config.name} size, see configs/data.py",
               data_config=data_config, num_train=num_train, backend=backend or "")


class KinemaskSynth(tfds.core.GeneratorBasedBuilder):
  """Synthetic rigid-body interaction videos with velocity, event and caption annotations."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [KinemaskSynthConfig.of(data_configs.get_config(n), data_configs.num_train(n))
                     for n in data_configs.SIZES]

  def __init__(self, *, file_format=None, **kwargs):
    # array_record by default (grain and TFDS's random-access data sources read it), also under `tfds build`.
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _create_builder_config(self, builder_config, version):
    """A KinemaskSynthConfig given as an object may share its size's name: it is a variant of that size
    (another number of examples, an edited data config) and lands in the same folder, where the data
    config stored with it (and datagen.generate.check_dataset) tells the variants apart. TFDS otherwise
    refuses a custom config named like a registered one."""
    if isinstance(builder_config, KinemaskSynthConfig):
      return builder_config
    return super()._create_builder_config(builder_config, version)

  def _data_config(self) -> ml_collections.ConfigDict:
    """The data config of the dataset on disk when there is one (what it was built from), else the builder
    config's."""
    stored = os.path.join(self.data_path, "metadata.json") if self.data_path else ""
    if stored and os.path.exists(stored):
      with open(stored) as f:
        return ml_collections.ConfigDict(json.load(f)["data_config"])
    return self.builder_config.data_config

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self._data_config()
    backend = self.builder_config.backend or physics.resolve_backend(cfg)
    return self.dataset_info_from_configs(
        features=features(cfg),
        description=__doc__,
        metadata=tfds.core.MetadataDict(data_config=json.loads(cfg.to_json()), shape_names=list(shapes_lib.names()),
                                        physics_backend=backend),
    )

  def _as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    """The split as a tf.data.Dataset, for `tfds.load` and `builder.as_dataset`: TFDS reads array_record files
    only as a random-access data source, so the examples come from that source (in order; in a seeded random
    order with shuffle_files, seed read_config.shuffle_seed)."""
    import tensorflow as tf
    source = self.as_data_source(split)
    spec = {k: tf.TensorSpec(f.shape, tf.string if isinstance(f, tfds.features.Text) else tf.as_dtype(f.np_dtype))
            for k, f in self.info.features.items()}
    seed = getattr(read_config, "shuffle_seed", None) or 0
    order = np.random.default_rng(seed).permutation(len(source)) if shuffle_files else np.arange(len(source))
    return tf.data.Dataset.from_generator(lambda: (source[int(i)] for i in order), output_signature=spec)

  def _split_generators(self, dl_manager):
    c = self.builder_config
    scenes_lib.validate_config(c.data_config)
    sizes = split_sizes(c.data_config, c.num_train)
    backend = c.backend or physics.resolve_backend(c.data_config)
    return {split: self._generate_examples(split, num, backend) for split, num in sizes.items()}

  def _generate_examples(self, split: str, num: int, backend: str):
    for i, example in enumerate(engine.generate_split(split, num, self.builder_config.data_config, backend)):
      yield i, example
