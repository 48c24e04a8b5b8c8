"""Stage 2 of the KineMask curriculum: future-frame masks are removed until only frame 0's is left.

  python -m kinemask_jax.train --config=configs/stage2.py:tiny --workdir=W2 --config.init_from=W
Without init_from it first trains stage 1 (`train.stage1_steps`) in W2/stage1 and starts from it: the whole
curriculum in one command; with `--config.train.stage1_steps=0` it trains stage 2 from scratch (a warning).
Sizes: tiny (the default on a CPU), small (the default on an accelerator), base, large.
"""

from configs import train


def get_config(arg: str = ""):
  return train.get_config(arg or train.default_size(), stage=2)
