"""Stage 2 of the KineMask curriculum: future-frame masks are removed until only frame 0's is left.

  python -m kinemask_jax.train --config=configs/stage2.py:tiny --workdir=W2 --config.init_from=W
Without init_from it trains from scratch (with a warning); the paper starts stage 2 from stage 1.
Sizes: tiny, small (default), base, large.
"""

from configs import train


def get_config(arg: str = "small"):
  return train.get_config(arg, stage=2)
