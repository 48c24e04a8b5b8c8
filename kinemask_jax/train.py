"""Trains KineMask: `python -m kinemask_jax.train --config=configs/stage1.py:tiny --workdir=W`.

Stage 2: `--config=configs/stage2.py:tiny --workdir=W2 --config.init_from=W`. Any config field can be
overridden (`--config.train.steps=50`). A run resumes from the latest checkpoint in its workdir; when the
configured dataset does not exist it is generated first.
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging
from flax import nnx
from ml_collections import config_flags

from datagen import cli
from kinemask_jax import checkpoint as ckpt_lib, conditioning, data, diffusion, media, sharding as shd, step as step_lib
from kinemask_jax.model import cost


class TrainingError(RuntimeError):
  """A run that cannot go on (non-finite loss, incompatible init_from)."""


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


def _load_init_from(config, state: step_lib.TrainState) -> step_lib.TrainState:
  """Parameters and EMA of the latest checkpoint of the stage-1 run config.init_from; fresh optimizer."""
  source = config.init_from
  if not os.path.isdir(source):
    raise TrainingError(f"--config.init_from={source}: no such directory (expected a stage-1 workdir)")
  try:
    ckpts = ckpt_lib.Checkpoints(source, read_only=True)
    stored = ckpts.restore(state, items=("config",))
  except FileNotFoundError as e:
    raise TrainingError(f"--config.init_from={source}: {e}") from e
  # The model section fixes the parameter shapes; everything else may differ between the stages.
  ours, theirs = json.loads(config.to_json())["model"], stored["config"]["model"]
  if ours != theirs:
    diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
    raise TrainingError(f"--config.init_from={source} holds an incompatible model (field: (theirs, ours)): {diff}")
  restored = ckpts.restore(state, step=stored["step"], items=("state", "ema"))["state"]
  logging.info("initialised from %s step %d (parameters and EMA; fresh optimizer)", source, stored["step"])
  return state.replace(params=restored.params, frozen=restored.frozen, ema=restored.ema)


def _write_samples(path: str, generated: np.ndarray, truth: np.ndarray, fps: float) -> None:
  """A GIF of generated videos (top) above their ground truth (bottom), examples side by side."""
  top = np.concatenate(list(generated), axis=2)
  bottom = np.concatenate(list(truth), axis=2)
  media.save_gif(path, np.concatenate([top, bottom], axis=1), fps, target_height=384)


def _sampler(config, trainer: step_lib.Trainer):
  """Jitted (ema params, frozen, raw batch, key) -> uint8 videos, conditioned on frame 0's mask only."""
  d = config.diffusion

  @jax.jit
  def sample(ema, frozen, raw, rng):
    model = nnx.merge(trainer.graphdef, ema, frozen)
    cond = conditioning.from_truth(raw, 1, config.conditioning.v_max_mps)
    x = diffusion.sample(model, cond, rng, raw["video"].shape, config.train.sample_steps, d.sampler,
                         d.text_scale, d.mask_scale, d.time_shift)
    return diffusion.to_uint8(x)
  return sample


def validate_config(config) -> None:
  """Raises cli.ConfigError naming the first field of a training config out of its range (data, model,
  diffusion, optimizer, curriculum, training loop): called before any data, folder or device work."""
  from kinemask_jax.model import dit
  require = cli.require
  require(config.stage in (1, 2), "stage", f"must be 1 or 2, got {config.stage!r}")
  data.validate_config(config)
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
  require(f.sampler in ("euler", "heun"), "diffusion.sampler", f"must be 'euler' or 'heun', got {f.sampler!r}")
  require(f.num_steps >= 1, "diffusion.num_steps", f"must be >= 1, got {f.num_steps!r}")
  require(f.time_shift > 0, "diffusion.time_shift", f"must be > 0, got {f.time_shift!r}")
  require(config.conditioning.v_max_mps > 0, "conditioning.v_max_mps", f"must be > 0, got {config.conditioning.v_max_mps!r}")
  o = config.optim
  require(o.learning_rate > 0, "optim.learning_rate", f"must be > 0, got {o.learning_rate!r}")
  for field in ("warmup_steps", "decay_steps"):
    require(o[field] >= 0, f"optim.{field}", f"must be >= 0, got {o[field]!r}")
  require(0.0 <= o.ema_decay < 1.0, "optim.ema_decay", f"must be in [0, 1), got {o.ema_decay!r}")
  require(o.grad_clip > 0, "optim.grad_clip", f"must be > 0, got {o.grad_clip!r}")
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
          f"{data.dataset_path(config)} ({config.num_train} train videos, generated first if missing). "
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
  primary = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  from clu import metric_writers, parameter_overview, periodic_actions

  mesh = shd.make_mesh(config.mesh.shape)
  dataset = data.ensure_dataset(config)
  data.log_dataset(dataset)
  trainer = step_lib.Trainer(config, mesh, prepare=functools.partial(data.model_batch, config=config))
  state = trainer.init(config.seed)
  ckpts = ckpt_lib.Checkpoints(workdir, keep=config.train.keep_checkpoints)
  config_json = config.to_json()
  train_iter = iter(data.make_dataset(config, "train", config.seed))
  latest = ckpts.latest_step()
  if latest is not None:
    restored = ckpts.restore(state)
    state = restored["state"]
    train_iter.set_state(restored["data"])
    print(f"resumed from {ckpts.directory} at step {latest}", flush=True)
  elif config.init_from:
    state = _load_init_from(config, state)
  elif config.stage == 2:
    logging.warning("stage 2 without --config.init_from and train.stage1_steps=0: training from scratch (the "
                    "curriculum starts stage 2 "
                    "from a stage-1 run)")

  writer = metric_writers.create_default_writer(workdir, just_logging=not primary)
  if latest is None and primary:
    parameter_overview.log_parameter_overview(state.params.to_pure_dict())
    from datagen import generate
    writer.write_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                          for k, v in generate.flat_config(json.loads(config_json)).items()})
  steps = config.train.steps
  flops_per_step = cost.TRAIN_FACTOR * config.batch_size * cost.forward_flops(
      config.model, config.data.num_frames, config.data.height, config.data.width)
  report = periodic_actions.ReportProgress(num_train_steps=steps, writer=writer, every_steps=config.train.log_every)
  sampler = _sampler(config, trainer) if config.train.sample_every else None
  losses_path = os.path.join(workdir, "losses.jsonl")

  start_step = int(jax.device_get(state.step))
  first = data.global_batch(next(train_iter), mesh, config.sharding_rules) if start_step < steps else None
  train_step = trainer.jit_step(state, first) if first is not None else None
  metrics_host: dict = {}
  window_start, window_steps = time.perf_counter(), 0
  progress = None
  if primary:
    from tqdm import tqdm
    progress = tqdm(total=steps, initial=start_step, desc=f"stage {config.stage}", unit="step", dynamic_ncols=True)
  batch = first
  for step in range(start_step, steps):
    if batch is None:
      batch = data.global_batch(next(train_iter), mesh, config.sharding_rules)
    state, metrics = train_step(state, batch)
    batch = None
    metrics_host = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not metrics_host.pop("finite"):
      ckpts.wait()
      last = ckpts.latest_step()
      raise TrainingError(f"step {step}: loss {metrics_host['loss']} or gradient norm {metrics_host['grad_norm']} "
                          f"is not finite; stopping. The state was not updated; last good checkpoint: "
                          f"{'step ' + str(last) if last is not None else 'none'} in {ckpts.directory}")
    done = step + 1
    window_steps += 1
    if primary:
      with open(losses_path, "a") as f:
        f.write(json.dumps({"step": done, "loss": metrics_host["loss"]}) + "\n")
      progress.update(1)
      progress.set_postfix(loss=f"{metrics_host['loss']:.4f}", k=f"{metrics_host['curriculum_k']:.1f}")
    report(done)
    if done % config.train.log_every == 0 or done == steps:
      elapsed = time.perf_counter() - window_start
      metrics_host["steps_per_s"] = window_steps / elapsed
      metrics_host["tflops_per_device"] = flops_per_step * window_steps / elapsed / 1e12 / jax.device_count()
      writer.write_scalars(done, metrics_host)
      window_start, window_steps = time.perf_counter(), 0
    if done % config.train.checkpoint_every == 0 or done == steps:
      ckpts.save(done, state, train_iter.get_state(), config_json)
    if sampler is not None and (done % config.train.sample_every == 0 or done == steps):
      _sample_gifs(config, sampler, state, workdir, done, primary)
  if progress is not None:
    progress.close()
  ckpts.wait()
  ckpts.close()
  writer.flush()
  return metrics_host


def _sample_gifs(config, sampler, state, workdir: str, step: int, primary: bool) -> None:
  """EMA samples of the first validation examples, from frame 0's mask only, as a GIF next to the truth."""
  raw = data.first_examples(config, "validation", config.train.num_samples)
  if not raw:
    return
  raw = {k: jnp.asarray(v) for k, v in raw.items()}
  videos = np.asarray(jax.device_get(sampler(state.ema, state.frozen, raw, jax.random.key(step))))
  if primary:
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    path = os.path.join(workdir, "samples", f"step_{step:07d}.gif")
    _write_samples(path, videos, np.asarray(raw["video"]), config.data.fps)
    logging.info("wrote %s", path)


def main(argv) -> None:
  del argv
  metrics = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if metrics:
    print("final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())), flush=True)


def _define_flags():
  global _CONFIG, _WORKDIR
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/stage2.py", "Stage config file:size.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).", required=True)


if __name__ == "__main__":
  from datagen import generate as _generate
  cli.run(main, expected=(TrainingError, _generate.DatasetMismatch, _generate.DatasetBusy), define=_define_flags)
