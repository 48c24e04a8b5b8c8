"""Prints each model size's parameter count and FLOPs per sample.

  python -m kinemask_jax.model_info            # all sizes
  python -m kinemask_jax.model_info small base # some
"""

import sys

from configs import model as model_configs
from kinemask_jax.model import cost


def main(argv: list[str]) -> None:
  sizes = argv or list(model_configs.SIZES)
  rows = [cost.size_summary(model_configs.get_config(s)) for s in sizes]
  print(cost.format_table(rows))


if __name__ == "__main__":
  main(sys.argv[1:])
