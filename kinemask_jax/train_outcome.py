"""Trains the outcome predictor, then scores it on the test split:
`python -m kinemask_jax.train_outcome --config=configs/outcome.py:tiny --workdir=W`.

The predictor writes the sampling API's prompt="auto" descriptions (`--describer=W` of kinemask_jax.sample
and kinemask_jax.demo). A run resumes from the latest checkpoint in W; the dataset is generated first when
missing. The run itself: kinemask_jax/training/outcome.py.
"""

from __future__ import annotations

import json

from absl import flags, logging
from ml_collections import config_flags

from datagen import cli


def main(argv) -> None:
  from kinemask_jax.training import outcome as training
  del argv
  scores = training.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  logging.info("test scores: %s", scores)
  print(json.dumps(scores, indent=1))


def _define_flags() -> None:
  global _CONFIG, _WORKDIR
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/outcome.py", "Outcome-predictor config file:size.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, losses, test scores).", required=True)


if __name__ == "__main__":
  from datagen import generate as _generate
  from kinemask_jax.training.loop import TrainingError
  cli.run(main, expected=(_generate.DatasetMismatch, _generate.DatasetBusy, TrainingError), define=_define_flags)
