"""Outcome-predictor configs: `python -m kinemask_jax.train_outcome --config=configs/outcome.py:tiny --workdir=W`.

The predictor (kinemask_jax/outcome/) reads the first frame and frame 0's velocity mask of a video of the
data size named here and predicts its structured outcome (which objects get hit, in which order, what they
and the pushed object do), rendered as a caption for the sampling API's prompt="auto".
"""

import ml_collections

from configs import data as data_configs
from configs import model as model_configs
from datagen import captions, palette, shapes

# data size, train examples generated when the dataset is missing, steps, batch
_SIZES = {
    "tiny": ("tiny", 64, 300, 32),
    "small": ("small", 512, 2000, 32),
    "base": ("base", 8192, 20000, 64),
}


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
  if arg not in _SIZES:
    raise ValueError(f"configs/outcome.py: unknown size {arg!r}; expected one of {sorted(_SIZES)}")
  data_size, num_train, steps, batch = _SIZES[arg]
  c = ml_collections.ConfigDict()
  c.kind = "outcome_predictor"
  c.size = arg
  c.data = data_configs.get_config(data_size)
  c.data_dir = "data"  # datasets live (or are generated) here, as for the video model
  c.num_train = num_train
  c.data_backend = ""
  c.data_threads = 2
  c.seed = 0
  c.batch_size = batch

  m = c.predictor = ml_collections.ConfigDict()
  m.channels = (32, 32, 64, 64)  # 3x3 conv layers at full resolution (the trunk of the per-pixel features)
  m.hidden = 128  # slot and mover MLP width
  m.max_rank = 5  # hit order classes: not hit, 1st, ..., 5th or later (a scene has at most 6 objects)
  # Loss weights of the heads: hit order, fate of each hit object, shape of each object, mover's fate.
  m.loss_weights = (1.0, 0.5, 0.2, 0.5)
  # The heads' classes (they fix the parameter shapes): stored with the checkpoint, read back from it.
  m.vocabulary = ml_collections.ConfigDict(dict(
      slots=palette.NAMES, fates=tuple(captions.FATES), mover_fates=tuple(captions.MOVER_FATES),
      shapes=shapes.names()))

  c.conditioning = ml_collections.ConfigDict()
  c.conditioning.v_max_mps = model_configs.V_MAX_MPS  # as the video model's velocity masks

  o = c.optim = ml_collections.ConfigDict()
  o.learning_rate = 1e-3
  o.warmup_steps = 100
  o.decay_steps = steps
  o.weight_decay = 1e-4
  o.b1 = 0.9
  o.b2 = 0.999
  o.grad_clip = 1.0
  o.ema_decay = 0.99

  t = c.train = ml_collections.ConfigDict()
  t.steps = steps
  t.log_every = 50
  t.checkpoint_every = max(steps // 4, 1)
  t.keep_checkpoints = 2

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor): data parallel over every device
  c.sharding_rules = model_configs.SHARDING_RULES
  return c
