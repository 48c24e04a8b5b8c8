"""Trains KineMask: `python -m kinemask_jax.train --config=configs/stage1.py:tiny --workdir=W`.

Stage 2: `--config=configs/stage2.py:tiny --workdir=W2 --config.init_from=W`; without init_from a stage-2
config trains its stage 1 first, in W2/stage1 (the whole curriculum in one command). Any config field can be
overridden (`--config.train.steps=50`). A run resumes from the latest checkpoint in its workdir; when the
configured dataset does not exist it is generated first. The run itself: kinemask_jax/training/video.py.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from datagen import cli


def main(argv) -> None:
  from kinemask_jax.training import video
  del argv
  metrics = video.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if metrics:
    print("final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())), flush=True)


def _define_flags():
  global _CONFIG, _WORKDIR
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/stage2.py", "Stage config file:size.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).", required=True)


if __name__ == "__main__":
  from datagen import generate as _generate
  from kinemask_jax.training.loop import TrainingError
  cli.run(main, expected=(TrainingError, _generate.DatasetMismatch, _generate.DatasetBusy), define=_define_flags)
