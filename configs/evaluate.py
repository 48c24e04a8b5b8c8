"""Evaluation config: `python -m kinemask_jax.evaluate --workdir=W --num=N [--config=configs/evaluate.py]`.

Scores the model of W, its ablations and the baselines on the held-out split with only frame 0's velocity
mask given (README, "Evaluate"; the metrics: kinemask_jax/evaluation/metrics.py). Any field can be overridden on the command line,
e.g. `--config.ablations.no_velocity=runs/no_velocity --config.causality.num=16`.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.split = "test"
  c.num = 64  # examples scored (the first ones of the split); --num overrides
  c.batch_size = 16  # videos generated together
  c.num_steps = 0  # sampler steps; 0: the checkpoint's config
  c.seed = 0
  c.prompt = "caption"  # the model's text: "caption" (the example's own), "auto" (the describer's), "none"
  c.describer = ""  # outcome-predictor workdir (kinemask_jax.train_outcome) for prompt="auto"
  c.data_dir = ""  # dataset root; empty: the checkpoint's config.data_dir
  c.in_memory = False  # make the split's examples with the data engine instead of reading a dataset
  c.generate_missing = False  # generate a missing dataset first (saying so); False: refuse
  c.move_threshold_frac = 0.04  # an object "moved" if its centroid went further than this x image width
  c.num_strips = 4  # examples drawn in samples.png

  c.causality = ml_collections.ConfigDict()
  c.causality.num = 8  # examples with a hit object, each generated at every speed below
  c.causality.speeds_mps = (0.6, 1.0, 1.4, 1.8)

  c.text_following = ml_collections.ConfigDict()
  c.text_following.num = 16  # examples with a hit, each generated with a "hits" and a "hits nothing" text

  # Ablations scored next to the model. no_text: the model of --workdir with its prompt removed.
  # stage1_only: a stage-1 workdir ("auto": the one the stage-2 run started from, its init_from; "" skips).
  # no_velocity: a workdir trained with --config.model.control=none ("" skips).
  c.ablations = ml_collections.ConfigDict()
  c.ablations.no_text = True
  c.ablations.stage1_only = "auto"
  c.ablations.no_velocity = ""
  c.baselines = ("copy_first_frame", "constant_velocity")
  return c
