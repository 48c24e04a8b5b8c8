"""Exports a training run's EMA weights as a weights folder:
`python -m kinemask_jax.export --workdir=W --out=DIR [--step=N] [--dtype=bfloat16]`.

The folder (config.json and npz shards, kinemask_jax/store/weights.py) is what `KineMaskPipeline.from_weights`
loads and what kinemask_jax/pretrained/ ships.
"""

from __future__ import annotations

import os

from absl import flags

from datagen import cli


def main(argv) -> None:
  from kinemask_jax.store import models, weights
  del argv
  f = flags.FLAGS
  if f.dtype not in weights.DTYPES:
    raise cli.UsageError(f"--dtype: must be one of {weights.DTYPES}, got {f.dtype!r}")
  if not os.path.isdir(f.workdir):
    raise cli.UsageError(f"--workdir={f.workdir}: no such directory")
  if f.step is not None and f.step < 0:
    raise cli.UsageError(f"--step: must be >= 0, got {f.step}")
  files = models.export_run(f.workdir, f.out, f.step, f.dtype)
  print("wrote " + ", ".join(files), flush=True)


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training workdir to export.", required=True)
  flags.DEFINE_string("out", None, "Weights folder to write.", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_string("dtype", "float32", "float32 or bfloat16.")


if __name__ == "__main__":
  from kinemask_jax.store import checkpoints, weights as _weights
  cli.run(main, expected=(checkpoints.CheckpointError, _weights.WeightsError), define=_define_flags)
