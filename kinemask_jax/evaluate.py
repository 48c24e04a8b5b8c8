"""Physics evaluation: `python -m kinemask_jax.evaluate (--workdir=W | --pretrained=tiny --out=DIR) --num=N`.

On the first N examples of the held-out split, with only frame 0's velocity given, scores the model, its
ablations, the baselines and the simulator's own videos (kinemask_jax/evaluation/): motion fidelity,
interaction precision / recall / F1 and displacement error of hit objects, stillness of objects never hit,
causality over a speed sweep, text following, object consistency (area, colour, vanishing, fragmentation),
PSNR and SSIM. Writes report.md (table and plots) and eval/metrics.json into W (or DIR).
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from datagen import cli


def main(argv) -> None:
  del argv
  config = _CONFIG.value
  if (_WORKDIR.value is None) == (_PRETRAINED.value is None):
    raise cli.UsageError("give exactly one of --workdir and --pretrained")
  if _PRETRAINED.value is not None and _OUT.value is None:
    raise cli.UsageError("--pretrained needs --out (where report.md and eval/ go)")
  from kinemask_jax.evaluation import report, score
  from kinemask_jax.store import models
  if _PRETRAINED.value is not None and _PRETRAINED.value not in models.pretrained_names():
    raise cli.UsageError(f"--pretrained={_PRETRAINED.value}: no such shipped weights; shipped: "
                         f"{models.pretrained_names()}")
  if _NUM.value is not None:
    if _NUM.value < 1:
      raise cli.UsageError(f"--num: must be >= 1, got {_NUM.value}")
    config.num = _NUM.value
  out = score.evaluate(config, _WORKDIR.value, _OUT.value, _PRETRAINED.value)
  print(report.table(out["results"]))
  print(f"wrote {os.path.join(_OUT.value or _WORKDIR.value, 'report.md')}", flush=True)


def _define_flags() -> None:
  global _CONFIG, _WORKDIR, _NUM, _OUT, _PRETRAINED
  _CONFIG = config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(__file__), "..", "configs", "evaluate.py"), "Evaluation config.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir of the model to evaluate (or --pretrained).")
  _PRETRAINED = flags.DEFINE_string("pretrained", None, "Shipped weights to evaluate: tiny or small (or --workdir).")
  _NUM = flags.DEFINE_integer("num", None, "Examples to score (overrides config.num).")
  _OUT = flags.DEFINE_string("out", None, "Where report.md and eval/ go (default: --workdir).")


if __name__ == "__main__":
  from datagen import generate as _generate
  from kinemask_jax.evaluation.score import DatasetMissing
  from kinemask_jax.sampling.units import InputError
  from kinemask_jax.store.checkpoints import CheckpointError
  cli.run(main, expected=(CheckpointError, InputError, DatasetMissing, _generate.DatasetMismatch),
          define=_define_flags)
