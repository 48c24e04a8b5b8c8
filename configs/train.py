"""Shared part of the stage configs (configs/stage1.py, configs/stage2.py): model + data + training.

Not a config file of its own: `python -m kinemask_jax.train --config=configs/stage1.py:tiny`.
"""

import ml_collections

from configs import data as data_configs
from configs import model as model_configs

# Steps of stage 1 and of stage 2, global batch, peak learning rate where it differs from the model config's
# (configs/model.py, 3e-4), checkpoint and sample periods, stage 2's anneal. tiny is the recipe measured on a
# 2-core CPU (README, "The tiny recipe"): 45-85 minutes for both stages there (0.21-0.38 s a step, with the
# day's speed); its learning rate 2e-3 beat 3e-4 at equal steps on every evaluation metric but hit recall and
# vanished (equal), and the warp output (model.output) beat the delta output on every metric at equal steps
# (3% more compute), 2026-11-30; since 2026-12-07 tiny's output is the splat with the floor taught to stay
# (diffusion.flow_background_weight 1) and the residual gated by what lands (model.splat_gate), which beat the
# warp at equal steps on motion error, never-hit stillness, vanished and colour drift on both noise draws,
# hit F1 within 0.01-0.02, PSNR -0.3 dB (README, "The tiny recipe").
# small is for an accelerator: on the second H200 loan (2026-12-04) the loan script with learning rate 1e-3 and
# the warp output beat the first loan's 3e-4 and delta output in a loan run of the same budget on every physics
# metric (fragmented equal) (README, "Measured: the shipped small model"; the two changes and the compiles done
# ahead were measured together, not apart). base and large batches are what fits one 80 GB H100 in bf16 without remat.
_SIZES = {
    "tiny": dict(steps=(4000, 9000), batch=8, lr=2e-3, output="splat", flow_background_weight=1.0,
                 splat_gate=True, checkpoint_every=1000, sample_every=0, anneal_steps=3000),
    "small": dict(steps=(3000, 7000), batch=64, lr=1e-3, output="warp", checkpoint_every=1000, sample_every=2000,
                  anneal_steps=2000),
    "base": dict(steps=(50_000, 50_000), batch=16, checkpoint_every=2000, sample_every=5000,
                 anneal_steps=20_000),
    "large": dict(steps=(100_000, 100_000), batch=8, checkpoint_every=2000, sample_every=5000,
                  anneal_steps=40_000),
}
SIZES = tuple(_SIZES)


def default_size() -> str:
  """The size a stage config gets without one: tiny on a CPU (what 2 cores can train in about an hour), small
  on an accelerator."""
  import jax
  return "tiny" if jax.default_backend() == "cpu" else "small"


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
  # Measured for tiny (CPU) and small (a GPU loan); base and large keep the model config's.
  c.optim.learning_rate = s.get("lr", c.optim.learning_rate)
  c.model.output = s.get("output", c.model.output)
  c.model.splat_gate = s.get("splat_gate", c.model.splat_gate)
  c.diffusion.flow_background_weight = s.get("flow_background_weight", c.diffusion.flow_background_weight)
  c.optim.decay_steps = s["steps"][stage - 1]  # each stage's cosine runs over its own steps
  c.batch_size = s["batch"]  # global batch, split over processes and the mesh's batch axes

  c.data_dir = "data"  # datasets live (or are generated) here, as data_dir/kinemask_synth/<data size>/
  c.num_train = data_configs.num_train(c.data.name)  # generated when the dataset is missing
  c.data_backend = ""  # physics backend for generation: "" (config's auto), "c" or "mjx"
  c.data_threads = 2  # grain read threads

  t = c.train = ml_collections.ConfigDict()
  t.steps = s["steps"][stage - 1]
  # A stage-2 run without init_from first trains stage 1 for this many steps in WORKDIR/stage1 and starts
  # from it (the whole curriculum in one command); 0 trains stage 2 from scratch.
  t.stage1_steps = s["steps"][0] if stage == 2 else 0
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
