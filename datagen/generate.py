"""Writes the TFDS dataset `kinemask_synth`.

  python -m datagen.generate --config=configs/data.py:tiny --out=DIR --num=N [--config.scene.max_objects=4]

N train examples, plus validation and test examples (config fractions); progress bars per split. The
dataset lands in DIR/kinemask_synth/<config>/<version>; TFDS writes it under a temporary name and renames
it when every split is complete, so an interrupted run never leaves a dataset that looks complete
(its leftover `incomplete.*` folder is removed by the next run).
"""

from __future__ import annotations

import glob
import os
import shutil
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags



def dataset_dir(out: str, config_name: str) -> str:
  """Where generate() puts the finished dataset for builder_from_directory."""
  from datagen import kinemask_synth
  return os.path.join(out, "kinemask_synth", config_name, str(kinemask_synth.KinemaskSynth.VERSION))


def generate(cfg, out: str, num: int, backend: str | None = None) -> str:
  """Generates (or finds complete) the dataset of `cfg` with `num` train examples; returns its directory."""
  from datagen import kinemask_synth
  from datagen import scenes
  scenes.validate_config(cfg)  # before any work or any folder is made
  kinemask_synth.split_sizes(cfg, num)
  for stale in glob.glob(os.path.join(out, "kinemask_synth", cfg.name, "incomplete.*")):
    logging.warning("removing the leftover of an interrupted generation: %s", stale)
    shutil.rmtree(stale)
  builder = kinemask_synth.KinemaskSynth(data_config=cfg, num_train=num, backend=backend, data_dir=out,
                                         file_format="array_record")
  target = dataset_dir(out, cfg.name)
  if os.path.exists(os.path.join(target, "dataset_info.json")):
    have = builder.info.splits["train"].num_examples
    if have != num:
      raise ValueError(f"{target} already holds a dataset with {have} train examples, not --num={num}; "
                       "use another --out or delete it")
    print(f"dataset already complete: {target}")
    return target
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
  _define_flags()
  app.run(main)
