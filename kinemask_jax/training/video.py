"""Training the KineMask video model: its task for the loop, the two-stage curriculum run, sample GIFs.

`train_and_evaluate(config, workdir)` is what `python -m kinemask_jax.train` runs: it checks the config,
trains stage 1 first when a stage-2 config has no init_from (in WORKDIR/stage1), makes sure the dataset
exists, and runs the loop (training/loop.py) with the video task: the rectified-flow loss
(kinemask_jax/model/diffusion.py) on batches the curriculum prepares inside the step (training/curriculum.py).
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from datagen import cli, datasets
from kinemask_jax import model as model_lib
from kinemask_jax.model import conditioning, cost, diffusion, dit, sharding as shd
from kinemask_jax.sampling import media
from kinemask_jax.store import checkpoints
from kinemask_jax.training import curriculum, input_pipeline, loop
from kinemask_jax.training.loop import TrainingError
from kinemask_jax.training import trainer as trainer_lib
from kinemask_jax.training.trainer import Task, Trainer, TrainState

__all__ = ["TrainingError", "task", "trainer", "validate_config", "stage1_config", "train_and_evaluate"]


def task(config, prepare: bool = True) -> Task:
  """The video model's Task: VideoDiT of config.model, its trainable filter, the flow loss, and (with
  `prepare`) the curriculum's batch preparation of raw batches."""
  d = config.diffusion

  def loss(model, batch, rng):
    return diffusion.loss(model, batch["video"], batch["cond"], rng, d.time_mean, d.time_std, d.loss_weighting,
                          batch.get("pixel_weight"), batch.get("flow"), d.get("flow_weight", 1.0),
                          d.get("flow_loss", "squared"))
  return Task(build=functools.partial(model_lib.build, config.model), loss=loss,
              trainable=model_lib.trainable_filter(config.model),
              prepare=functools.partial(curriculum.model_batch, config=config) if prepare else None)


def trainer(config, mesh=None, prepare: bool = False) -> Trainer:
  """A Trainer of the video model (batches already in model form unless `prepare`)."""
  return Trainer(config, task(config, prepare), mesh)


def _initialize_distributed(config) -> None:
  d = config.distributed
  if not d.enabled:
    return
  kwargs = {}
  if d.coordinator_address:
    kwargs["coordinator_address"] = d.coordinator_address
  if d.num_processes:
    kwargs["num_processes"] = d.num_processes
  if d.process_id >= 0:
    kwargs["process_id"] = d.process_id
  if jax.config.jax_platforms == "cpu" or os.environ.get("JAX_PLATFORMS") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


def _load_init_from(config, state: TrainState) -> TrainState:
  """Parameters and EMA of the latest checkpoint of the stage-1 run config.init_from; fresh optimizer."""
  source = config.init_from
  try:
    ckpts, stored, step = checkpoints.open_run(source, "a stage-1 workdir", label=f"--config.init_from={source}")
  except checkpoints.CheckpointError as e:
    raise TrainingError(str(e)) from e
  # The model section fixes the parameter shapes; everything else may differ between the stages.
  ours, theirs = json.loads(config.to_json())["model"], stored["model"]
  if ours != theirs:
    diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
    raise TrainingError(f"--config.init_from={source} holds an incompatible model (field: (theirs, ours)): {diff}")
  restored = ckpts.restore(state, step=step, items=("state", "ema"))["state"]
  logging.info("initialised from %s step %d (parameters and EMA; fresh optimizer)", source, step)
  return state.replace(params=restored.params, frozen=restored.frozen, ema=restored.ema)


def _sampler(config, graphdef):
  """Jitted (ema params, frozen, raw batch, key) -> uint8 videos, conditioned on frame 0's mask only."""
  d = config.diffusion

  @jax.jit
  def sample(ema, frozen, raw, rng):
    model = nnx.merge(graphdef, ema, frozen)
    cond = conditioning.from_truth(raw, 1, config.conditioning.v_max_mps)
    x = diffusion.sample(model, cond, rng, raw["video"].shape, config.train.sample_steps, d.sampler,
                         d.text_scale, d.mask_scale, d.time_shift)
    return diffusion.to_uint8(x)
  return sample


def sample_gifs_hook(config, graphdef, workdir: str):
  """A loop hook writing WORKDIR/samples/step_N.gif every train.sample_every steps (and at the end): EMA
  samples of the first validation examples from frame 0's mask only (top) above their truth (bottom)."""
  sampler = _sampler(config, graphdef)
  steps, every = config.train.steps, config.train.sample_every

  def hook(step: int, state: TrainState) -> None:
    if not (step % every == 0 or step == steps):
      return
    raw = input_pipeline.first_examples(config, "validation", config.train.num_samples,
                                        input_pipeline.video_decode(config))
    if not raw:
      return
    raw = {k: jnp.asarray(v) for k, v in raw.items()}
    videos = np.asarray(jax.device_get(sampler(state.ema, state.frozen, raw, jax.random.key(step))))
    if jax.process_index() == 0:
      os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
      path = os.path.join(workdir, "samples", f"step_{step:07d}.gif")
      top, bottom = np.concatenate(list(videos), axis=2), np.concatenate(list(np.asarray(raw["video"])), axis=2)
      media.save_gif(path, np.concatenate([top, bottom], axis=1), config.data.fps, target_height=384)
      logging.info("wrote %s", path)
  return hook


def validate_config(config) -> None:
  """Raises cli.ConfigError naming the first field of a training config out of its range (data, model,
  diffusion, optimizer, curriculum, training loop): called before any data, folder or device work."""
  require = cli.require
  require(config.stage in (1, 2), "stage", f"must be 1 or 2, got {config.stage!r}")
  datasets.validate_config(config)
  d = config.data
  dit.check_config(config.model, (d.num_frames, d.height, d.width))
  t = config.train
  for field, low in (("steps", 1), ("stage1_steps", 0), ("log_every", 1), ("checkpoint_every", 1),
                     ("keep_checkpoints", 1), ("sample_every", 0), ("num_samples", 1), ("sample_steps", 1)):
    require(int(t[field]) >= low, f"train.{field}", f"must be >= {low}, got {t[field]!r}")
  cur = config.curriculum
  require(cur.anneal_steps >= 1, "curriculum.anneal_steps", f"must be >= 1, got {cur.anneal_steps!r}")
  for field in ("floor_prob", "drop_text_prob", "drop_mask_prob"):
    require(0.0 <= cur[field] <= 1.0, f"curriculum.{field}", f"must be a probability in [0, 1], got {cur[field]!r}")
  f = config.diffusion
  require(f.time_std > 0, "diffusion.time_std", f"must be > 0, got {f.time_std!r}")
  require(f.loss_weighting in diffusion.LOSS_WEIGHTINGS, "diffusion.loss_weighting",
          f"must be one of {diffusion.LOSS_WEIGHTINGS}, got {f.loss_weighting!r}")
  # Loss weights (older configs may lack them: their defaults).
  for field, default in (("object_weight", 0.0), ("flow_weight", 1.0), ("flow_background_weight", 0.0),
                         ("flow_other_weight", 0.0)):
    require(f.get(field, default) >= 0, f"diffusion.{field}", f"must be >= 0, got {f.get(field)!r}")
  require(f.get("flow_loss", "squared") in diffusion.FLOW_LOSSES, "diffusion.flow_loss",
          f"must be one of {diffusion.FLOW_LOSSES}, got {f.get('flow_loss')!r}")
  require(f.sampler in ("euler", "heun"), "diffusion.sampler", f"must be 'euler' or 'heun', got {f.sampler!r}")
  require(f.num_steps >= 1, "diffusion.num_steps", f"must be >= 1, got {f.num_steps!r}")
  require(f.time_shift > 0, "diffusion.time_shift", f"must be > 0, got {f.time_shift!r}")
  require(config.conditioning.v_max_mps > 0, "conditioning.v_max_mps", f"must be > 0, got {config.conditioning.v_max_mps!r}")
  trainer_lib.validate_optim(config.optim)
  if config.init_from:
    require(os.path.isdir(config.init_from), "init_from", f"no such directory: {config.init_from!r}")


def stage1_config(config):
  """The stage-1 run a stage-2 config without init_from trains first (its `train.stage1_steps`)."""
  c = config.copy_and_resolve_references()
  c.stage = 1
  c.train.steps = config.train.stage1_steps
  c.train.stage1_steps = 0
  c.optim.decay_steps = config.train.stage1_steps
  c.curriculum.floor_prob = 0.0
  return c


def describe_run(config, workdir: str) -> str:
  """What a run will train, for how long, from what: printed at its start."""
  d = config.data
  start = (f"from {config.init_from}" if config.init_from else
           f"after stage 1 ({config.train.stage1_steps} steps in {os.path.join(workdir, 'stage1')})"
           if config.stage == 2 and config.train.stage1_steps else "from scratch")
  return (f"kinemask_jax.train: stage {config.stage} of the {config.size} model ({d.num_frames}x{d.height}x{d.width}"
          f" videos) for {config.train.steps} steps of batch {config.batch_size}, {start}, on "
          f"{jax.device_count()} {jax.devices()[0].platform.upper()} device(s); dataset "
          f"{datasets.dataset_path(config)} ({config.num_train} train videos, generated first if missing). "
          f"The progress bar shows the time left; README 'The model learns' gives what each size reaches.")


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs (or resumes) the configured training in `workdir`; returns the last step's metrics.

  A stage-2 config without init_from and with train.stage1_steps > 0 trains (or resumes) its stage 1 in
  workdir/stage1 first and starts from it.
  """
  _initialize_distributed(config)
  validate_config(config)
  if config.stage == 2 and not config.init_from and config.train.stage1_steps > 0:
    first = os.path.join(workdir, "stage1")
    train_and_evaluate(stage1_config(config), first)
    config = config.copy_and_resolve_references()
    config.init_from = first
  if jax.process_index() == 0:
    print(describe_run(config, workdir), flush=True)
  mesh = shd.make_mesh(config.mesh.shape)
  datasets.log_dataset(datasets.ensure_dataset(config))
  video_trainer = trainer(config, mesh, prepare=True)
  batches = input_pipeline.GlobalBatches(
      iter(input_pipeline.make_dataset(config, "train", config.seed, input_pipeline.video_decode(config))),
      mesh, config.sharding_rules)
  initial = None
  if config.init_from:
    initial = functools.partial(_load_init_from, config)
  elif config.stage == 2:
    logging.warning("stage 2 without --config.init_from and train.stage1_steps=0: training from scratch (the "
                    "curriculum starts stage 2 from a stage-1 run)")
  hooks = [sample_gifs_hook(config, video_trainer.graphdef, workdir)] if config.train.sample_every else []
  flops = cost.TRAIN_FACTOR * config.batch_size * cost.forward_flops(
      config.model, config.data.num_frames, config.data.height, config.data.width)
  result = loop.fit(config, video_trainer, batches, workdir, label=f"stage {config.stage}", initial=initial,
                    hooks=hooks, flops_per_step=flops, log=lambda m: print(m, flush=True))
  return result.metrics
