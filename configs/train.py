"""Shared part of the stage configs (configs/stage1.py, configs/stage2.py): model + data + training.

Not a config file of its own: `python -m kinemask_jax.train --config=configs/stage1.py:tiny`.
"""

import ml_collections

from configs import model as model_configs

# train examples generated when the dataset is missing, steps per stage, global batch, checkpoint and sample
# periods. base and large batches are what fits one 80 GB H100 in bf16 without remat (measured).
_SIZES = {
    "tiny": dict(num_train=64, steps=60, batch=8, checkpoint_every=20, sample_every=0, anneal_steps=40),
    "small": dict(num_train=512, steps=150, batch=8, checkpoint_every=50, sample_every=150, anneal_steps=100),
    "base": dict(num_train=8192, steps=50_000, batch=16, checkpoint_every=2000, sample_every=5000,
                 anneal_steps=20_000),
    "large": dict(num_train=8192, steps=100_000, batch=8, checkpoint_every=2000, sample_every=5000,
                  anneal_steps=40_000),
}
SIZES = tuple(_SIZES)


def get_config(size: str, stage: int) -> ml_collections.ConfigDict:
  """Training config of `size` for curriculum `stage` (1: every frame's mask; 2: masks annealed to frame 0)."""
  if size not in _SIZES:
    raise ValueError(f"unknown size {size!r}; expected one of {list(_SIZES)}")
  s = _SIZES[size]
  c = model_configs.get_config(size)
  c.stage = stage
  c.seed = 0
  # Stage 2 starts from a stage-1 workdir (parameters and EMA; fresh optimizer).
  c.init_from = ""
  c.batch_size = s["batch"]  # global batch, split over processes and the mesh's batch axes

  c.data_dir = "data"  # datasets live (or are generated) here, as data_dir/kinemask_synth/<data size>/
  c.num_train = s["num_train"]
  c.data_backend = ""  # physics backend for generation: "" (config's auto), "c" or "mjx"
  c.data_threads = 2  # grain read threads

  t = c.train = ml_collections.ConfigDict()
  t.steps = s["steps"]
  t.log_every = 10
  t.checkpoint_every = s["checkpoint_every"]
  t.keep_checkpoints = 3
  t.sample_every = s["sample_every"]  # 0: never; GIFs of EMA samples next to the ground truth
  t.num_samples = 2
  t.sample_steps = 20

  cur = c.curriculum = ml_collections.ConfigDict()
  cur.anneal_steps = s["anneal_steps"]  # stage 2: kept frames move from T to 1 over these steps
  cur.floor_prob = 0.2 if stage == 2 else 0.0  # probability of k = 1 (the inference case) per example
  cur.drop_text_prob = 0.1  # classifier-free guidance dropout
  cur.drop_mask_prob = 0.1

  d = c.distributed = ml_collections.ConfigDict()
  d.enabled = False  # call jax.distributed.initialize() (multi-host GPU / TPU)
  d.coordinator_address = ""  # empty: auto-detect (TPU pods, SLURM); else host:port
  d.num_processes = 0  # 0: auto-detect
  d.process_id = -1  # -1: auto-detect
  return c
