"""Stage 1 of the KineMask curriculum: the velocity masks of every frame are given.

  python -m kinemask_jax.train --config=configs/stage1.py:tiny --workdir=W [--config.train.steps=50]
Sizes: tiny (the default on a CPU), small (the default on an accelerator), base, large.
"""

from configs import train


def get_config(arg: str = ""):
  return train.get_config(arg or train.default_size(), stage=1)
