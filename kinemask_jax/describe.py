"""Outcome predictor: from the first frame and its velocity mask, what will happen, as a caption.

KineMask's inference prompt describes the coming interaction (the paper asks GPT). Ours is a small model
trained on our own data, so it works offline:

  python -m kinemask_jax.describe --config=configs/describe.py:tiny --workdir=W      # train, then evaluate

Objects are named by colour (each palette colour appears at most once in a scene), so the outcome is
predicted per palette colour ("slot"): its hit order (not hit, 1st, 2nd, ...), what it does once
hit (datagen.captions.FATES), its shape (for the caption's noun), and what the pushed object does in the end
(datagen.captions.MOVER_FATES). Targets come from the dataset's captions through
`datagen.captions.parse_caption`. The direction is not predicted: it is the input velocity's. Training
uses the trainer's machinery: grain input pipeline, TrainState with EMA, AdamW, Orbax checkpoints (state,
EMA, data iterator, config) with exact resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import flags, logging
from flax import nnx
from ml_collections import config_flags

from datagen import captions, scenes
from kinemask_jax import checkpoint as ckpt_lib, conditioning, data, step as step_lib, tracking

SLOTS = len(scenes.PALETTE)
SLOT_NAMES = tuple(name for name, _ in scenes.PALETTE)
FATES = tuple(captions.FATES)
MOVER_FATES = tuple(captions.MOVER_FATES)
SHAPES = (scenes.BOX, scenes.SPHERE, scenes.CYLINDER)


class OutcomeNet(nnx.Module):
  """Object-centric: a conv trunk over the image, the velocity mask and the push's geometry gives per-pixel
  features; each palette slot pools them over the pixels of its colour; a shared MLP reads each slot (with the
  scene's and the pushed object's pooled features) into its hit order [B,S,R+1], fate [B,S,F] and shape
  [B,S,3] logits, and the context into the pushed object's fate [B,M]. Slots generalise across scenes because
  every colour is read by the same weights."""

  def __init__(self, cfg, height: int, width: int, *, rngs: nnx.Rngs):
    del height, width  # fully convolutional
    convs, c_in = [], INPUT_CHANNELS
    for c in cfg.channels:
      convs.append(nnx.Conv(c_in, c, (3, 3), rngs=rngs))
      c_in = c
    self.convs = nnx.List(convs)
    context = 2 * c_in
    self.slot_mlp = nnx.Linear(c_in + 1 + context, cfg.hidden, rngs=rngs)
    self.slot_mlp2 = nnx.Linear(cfg.hidden, cfg.hidden, rngs=rngs)
    self.slot_head = nnx.Linear(cfg.hidden, cfg.max_rank + 1 + len(FATES) + len(SHAPES), rngs=rngs)
    self.mover_mlp = nnx.Linear(context, cfg.hidden, rngs=rngs)
    self.mover_head = nnx.Linear(cfg.hidden, len(MOVER_FATES), rngs=rngs)
    self.max_rank = cfg.max_rank

  def __call__(self, x: jax.Array, slots: jax.Array, mover: jax.Array) -> dict:
    """x [B,H,W,INPUT_CHANNELS]; slots [B,H,W,S] each colour's pixels; mover [B,H,W] the pushed pixels."""
    for conv in self.convs:
      x = jax.nn.gelu(conv(x))
    pool = lambda w: jnp.einsum("bhws,bhwc->bsc", w, x) / jnp.maximum(w.sum((1, 2))[..., None], 1.0)
    slot_feat = pool(slots)  # [B,S,C]
    area = jnp.log1p(slots.sum((1, 2)))[..., None]  # [B,S,1]
    context = jnp.concatenate([x.mean((1, 2)), pool(mover[..., None])[:, 0]], -1)  # [B,2C]
    h = jnp.concatenate([slot_feat, area, jnp.broadcast_to(context[:, None], slot_feat.shape[:2] + context.shape[-1:])],
                        -1)
    h = jax.nn.gelu(self.slot_mlp2(jax.nn.gelu(self.slot_mlp(h))))
    rank, fate, shape = jnp.split(self.slot_head(h), np.cumsum([self.max_rank + 1, len(FATES)]), axis=-1)
    return dict(rank=rank, fate=fate, shape=shape, mover=self.mover_head(jax.nn.gelu(self.mover_mlp(context))))


def slot_of(rgb) -> int:
  """Palette slot of an object colour [3] (the nearest palette entry)."""
  return SLOT_NAMES.index(scenes.color_names(np.asarray(rgb)[None])[0])


def targets(example: dict, max_rank: int) -> dict:
  """Training targets of a dataset example: per slot hit order, fate (-1 unless hit), shape (-1 if absent);
  the mover's fate and slot. Raises datagen.captions.CaptionParseError on a caption outside the grammar."""
  n = int(example["num_objects"])
  names = scenes.color_names(np.asarray(example["color"])[:n])
  caption = example["caption"]
  outcome = captions.parse_caption(caption.decode() if isinstance(caption, bytes) else caption, names)
  slots = [SLOT_NAMES.index(name) for name in names]
  rank = np.zeros(SLOTS, np.int32)
  fate = np.full(SLOTS, -1, np.int32)
  shape = np.full(SLOTS, -1, np.int32)
  for k in range(n):
    shape[slots[k]] = SHAPES.index(int(example["shape"][k]))
  for order, (k, f) in enumerate(zip(outcome.hits, outcome.fates)):
    rank[slots[k]] = min(order + 1, max_rank)
    fate[slots[k]] = FATES.index(f)
  return dict(rank=rank, fate=fate, shape=shape, mover_fate=np.int32(MOVER_FATES.index(outcome.mover_fate)),
              mover_slot=np.int32(slots[outcome.mover]))


class _Example(grain.transforms.Map):
  """Dataset example -> inputs (frame 0, its ids and velocities) and targets."""

  def __init__(self, max_rank: int):
    self.max_rank = max_rank

  def map(self, example):
    out = dict(image=np.asarray(example["video"][0]), ids=np.asarray(example["instance_ids"][0]),
               velocity=np.asarray(example["velocity_cam"][0]), controlled=np.asarray(example["moving_at_start"]))
    out.update(targets(example, self.max_rank))
    return out


INPUT_CHANNELS = 10  # image 3, velocity mask 3, along / across / distance from the push's line, "pushed" 1


def _palette_chroma() -> np.ndarray:
  rgb = np.array([c for _, c in scenes.PALETTE], np.float32)
  return rgb / rgb.sum(-1, keepdims=True)


def inputs(config, image, ids, velocity, controlled) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The network's inputs for frame 0 uint8 [B,H,W,3] with instance ids [B,H,W] and velocities [B,N,3] of the
  controlled objects [B,N]: pixels [B,H,W,INPUT_CHANNELS], each palette colour's pixels [B,H,W,S] (by
  chromaticity, as kinemask_jax/tracking.py) and the pushed pixels [B,H,W].

  The pixel channels are the image in [-1, 1], its velocity mask (kinemask_jax/velocity_mask.py, as the video
  model's) and where each pixel lies relative to the push: along and across the image-plane line from the
  pushed pixels' centroid in the direction of their (right, down) velocity, and the distance, in image widths.
  """
  b, h, w, _ = image.shape
  mask = conditioning.velocity_masks(ids[:, None], velocity[:, None], controlled, 1,
                                     config.conditioning.v_max_mps)[0][:, 0]
  pushed = (jnp.abs(mask).sum(-1) > 0).astype(jnp.float32)
  ys, xs = jnp.mgrid[0:h, 0:w] + 0.5
  count = jnp.maximum(pushed.sum((1, 2)), 1.0)
  cx = (pushed * xs).sum((1, 2)) / count
  cy = (pushed * ys).sum((1, 2)) / count
  direction = (mask[..., :2] * pushed[..., None]).sum((1, 2)) / count[:, None]
  direction = direction / jnp.maximum(jnp.linalg.norm(direction, axis=-1, keepdims=True), 1e-6)
  dx = (xs[None] - cx[:, None, None]) / w
  dy = (ys[None] - cy[:, None, None]) / w
  along = dx * direction[:, None, None, 0] + dy * direction[:, None, None, 1]
  across = dx * direction[:, None, None, 1] - dy * direction[:, None, None, 0]
  geometry = jnp.stack([along, across, jnp.sqrt(dx * dx + dy * dy), pushed], -1)
  rgb = image.astype(jnp.float32)
  chroma = rgb / jnp.maximum(rgb.sum(-1, keepdims=True), 1.0)
  hi, lo = rgb.max(-1), rgb.min(-1)
  usable = ((hi - lo) / jnp.maximum(hi, 1.0) >= tracking.MIN_SATURATION) & (hi >= tracking.MIN_VALUE)
  dist = jnp.linalg.norm(chroma[..., None, :] - jnp.asarray(_palette_chroma()), axis=-1)  # [B,H,W,S]
  slots = ((dist == dist.min(-1, keepdims=True)) & (dist <= 2 * tracking.MAX_CHROMA_DISTANCE) & usable[..., None])
  x = jnp.concatenate([rgb / 127.5 - 1.0, mask, geometry], axis=-1)
  return x, slots.astype(jnp.float32), pushed


def _cross_entropy(logits, labels):
  """Mean over labels >= 0 (the others are masked out); 0 when none."""
  valid = labels >= 0
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
  return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(valid.sum(), 1)


def loss_fn(model: OutcomeNet, config, batch: dict) -> tuple[jax.Array, dict]:
  """Weighted sum of the heads' cross-entropies (config.predictor.loss_weights), and each of them."""
  out = model(*inputs(config, batch["image"], batch["ids"], batch["velocity"], batch["controlled"]))
  parts = dict(rank=_cross_entropy(out["rank"], batch["rank"]), fate=_cross_entropy(out["fate"], batch["fate"]),
               shape=_cross_entropy(out["shape"], batch["shape"]),
               mover=_cross_entropy(out["mover"], batch["mover_fate"]))
  w = config.predictor.loss_weights
  total = w[0] * parts["rank"] + w[1] * parts["fate"] + w[2] * parts["shape"] + w[3] * parts["mover"]
  return total, parts


def _model(config, seed: int) -> OutcomeNet:
  return OutcomeNet(config.predictor, config.data.height, config.data.width, rngs=nnx.Rngs(seed))


def init_state(config, seed: int) -> tuple[nnx.GraphDef, step_lib.TrainState]:
  """The predictor's graph and a fresh TrainState (the video trainer's: parameters, EMA, AdamW state, key)."""
  graphdef, params, frozen = nnx.split(_model(config, seed), nnx.Param, ...)
  state = step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                              ema=jax.tree.map(jnp.copy, params),
                              opt_state=step_lib.make_optimizer(config.optim).init(params),
                              rng=jax.random.key_data(jax.random.key(seed)))
  return graphdef, state


def make_train_step(config, graphdef):
  """Jitted (state, batch) -> (state, metrics): one AdamW step and the EMA update."""
  optimizer = step_lib.make_optimizer(config.optim)

  @jax.jit
  def train_step(state: step_lib.TrainState, batch: dict):
    def loss(params):
      return loss_fn(nnx.merge(graphdef, params, state.frozen), config, batch)
    (value, parts), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = step_lib.ema_update(state.ema, params, state.step, config.optim.ema_decay)
    return state.replace(step=state.step + 1, params=params, ema=ema, opt_state=opt_state), dict(loss=value, **parts)
  return train_step


def make_dataset(config, split: str, seed: int, epochs: int | None = None, shuffle: bool = True):
  """grain MapDataset of inputs and targets of `split`; shuffled over `epochs` repetitions unless not `shuffle`."""
  source = data._source(config, split)
  if epochs is None:
    epochs = config.train.steps * config.batch_size // max(len(source), 1) + 2
  ds = grain.MapDataset.source(source)
  if shuffle:
    ds = ds.repeat(epochs).shuffle(seed=seed)
  return ds.map(_Example(config.predictor.max_rank))


def validate_config(config) -> None:
  """Raises cli.ConfigError naming the first field of a predictor config out of its range (before any work)."""
  from datagen import cli
  require = cli.require
  data.validate_config(config)
  for field in ("predictor.hidden", "predictor.max_rank", "train.steps", "train.log_every", "train.checkpoint_every",
                "train.keep_checkpoints"):
    require(int(config[field]) >= 1, field, f"must be >= 1, got {config[field]!r}")
  require(len(config.predictor.loss_weights) == 4, "predictor.loss_weights",
          f"expected 4 weights (hit order, hit fate, shape, mover fate), got {config.predictor.loss_weights!r}")
  require(config.optim.learning_rate > 0, "optim.learning_rate", f"must be > 0, got {config.optim.learning_rate!r}")
  require(0.0 <= config.optim.ema_decay < 1.0, "optim.ema_decay", f"must be in [0, 1), got {config.optim.ema_decay!r}")
  require(config.conditioning.v_max_mps > 0, "conditioning.v_max_mps", f"must be > 0, got {config.conditioning.v_max_mps!r}")


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) the predictor in `workdir`, then scores it on the test split; returns the scores."""
  from tqdm import tqdm
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  data.ensure_dataset(config)
  graphdef, state = init_state(config, config.seed)
  ckpts = ckpt_lib.Checkpoints(workdir, keep=config.train.keep_checkpoints)
  it = iter(make_dataset(config, "train", config.seed).batch(config.batch_size, drop_remainder=True)
            .to_iter_dataset(grain.ReadOptions(num_threads=config.data_threads, prefetch_buffer_size=4)))
  if ckpts.latest_step() is not None:
    restored = ckpts.restore(state)
    state = restored["state"]
    it.set_state(restored["data"])
    print(f"resumed from {ckpts.directory} at step {restored['step']}", flush=True)
  train_step = make_train_step(config, graphdef)
  config_json = config.to_json()
  start = int(state.step)
  progress = tqdm(total=config.train.steps, initial=start, desc="outcome predictor", unit="step")
  losses_path = os.path.join(workdir, "losses.jsonl")
  for step in range(start, config.train.steps):
    state, metrics = train_step(state, next(it))
    done = step + 1
    if done % config.train.log_every == 0 or done == config.train.steps:
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not np.isfinite(metrics["loss"]):
        raise RuntimeError(f"step {done}: loss {metrics['loss']} is not finite")
      progress.set_postfix(loss=f"{metrics['loss']:.3f}")
      with open(losses_path, "a") as f:
        f.write(json.dumps({"step": done, **metrics}) + "\n")
    progress.update(1)
    if done % config.train.checkpoint_every == 0 or done == config.train.steps:
      ckpts.save(done, state, it.get_state(), config_json)
  progress.close()
  ckpts.wait()
  ckpts.close()
  scores = evaluate(OutcomePredictor(config, graphdef, state.ema, state.frozen), config, "test")
  with open(os.path.join(workdir, "test_scores.json"), "w") as f:
    json.dump(scores, f, indent=1)
  return scores


@dataclasses.dataclass(frozen=True)
class Prediction:
  """A predicted outcome: `outcome` over palette slots (datagen.captions.Outcome, objects = slots), the
  slots' shapes, and the caption that says it."""
  outcome: captions.Outcome
  shapes: tuple[int, ...]
  caption: str


class OutcomePredictor:
  """A trained outcome predictor (EMA weights): `predict` gives the outcome and caption of each input."""

  def __init__(self, config, graphdef, params, frozen):
    self.config = config
    self._graphdef, self._params, self._frozen = graphdef, params, frozen
    self._logits = jax.jit(lambda p, f, x: nnx.merge(graphdef, p, f)(*x))

  @classmethod
  def from_checkpoint(cls, workdir: str, step: int | None = None) -> "OutcomePredictor":
    ckpts = ckpt_lib.Checkpoints(workdir, read_only=True)
    stored, step = ckpts.restore_config(step)
    if stored.get("kind") != "outcome_predictor":
      raise ValueError(f"{workdir}: not an outcome-predictor checkpoint (config kind {stored.get('kind')!r})")
    config = ml_collections.ConfigDict(stored)
    graphdef, template = init_state(config, 0)
    state = ckpts.restore(jax.eval_shape(lambda: template), step, items=("state", "ema"))["state"]
    return cls(config, graphdef, state.ema, state.frozen)

  def logits(self, image, ids, velocity, controlled) -> dict:
    x = inputs(self.config, jnp.asarray(image), jnp.asarray(ids), jnp.asarray(velocity, jnp.float32),
               jnp.asarray(controlled))
    return {k: np.asarray(v) for k, v in self._logits(self._params, self._frozen, x).items()}

  def decode(self, logits: dict, mover_slot: int, direction: str, seed: int = 0) -> Prediction:
    """One example's logits (no batch axis) -> Prediction."""
    rank = logits["rank"].argmax(-1)
    rank[mover_slot] = 0
    hit = np.flatnonzero(rank > 0)
    # Hit order: by predicted rank, ties by the probability of being hit first.
    p_first = jax.nn.softmax(logits["rank"], -1)[:, 1]
    order = sorted(hit, key=lambda s: (rank[s], -float(p_first[s])))
    fates = tuple(FATES[int(logits["fate"][s].argmax())] for s in order)
    outcome = captions.Outcome(int(mover_slot), direction, tuple(int(s) for s in order), fates,
                               MOVER_FATES[int(logits["mover"].argmax())])
    shapes = tuple(SHAPES[int(i)] for i in logits["shape"].argmax(-1))
    scene = types.SimpleNamespace(color_name=SLOT_NAMES, shape=np.asarray(shapes))
    return Prediction(outcome, shapes, captions.render_caption(outcome, scene, np.random.default_rng(seed)))

  def predict(self, image, object_masks, velocities) -> Prediction:
    """The outcome of pushing the masked object(s) (the first one is the caption's mover).

    image uint8 [H,W,3]; object_masks bool [K,H,W]; velocities [K,3] m/s (camera frame).
    """
    masks = np.asarray(object_masks, bool)
    ids = np.zeros(masks.shape[1:], np.int32)
    for k, m in enumerate(masks):
      ids[m] = k + 1
    vel = np.asarray(velocities, np.float32)
    logits = self.logits(image[None], ids[None], vel[None], np.ones((1, len(masks)), bool))
    _, colour = tracking.reference_chromaticity(np.asarray(image), masks[:1])
    mover_slot = slot_of(colour[0]) if np.isfinite(colour[0]).all() else \
        slot_of(np.median(np.asarray(image)[masks[0]], axis=0))
    return self.decode({k: v[0] for k, v in logits.items()}, mover_slot, captions.direction_name(vel[0]))


def evaluate(predictor: OutcomePredictor, config, split: str = "test", batch: int = 64) -> dict:
  """Per-object "is hit" accuracy and F1, exact match of the whole outcome (hits in order, their fates, the
  mover's fate), against the majority-class baseline (fitted on the train split)."""
  test = make_dataset(config, split, 0, shuffle=False)
  train = make_dataset(config, "train", 0, shuffle=False)
  examples = [test[i] for i in range(len(test))]
  # An outcome's signature: (slot, hit order, fate) of each hit object, and the mover's fate.
  signature = lambda rank, fate, mover: (tuple((int(s), int(rank[s]), int(fate[s])) for s in np.flatnonzero(rank)),
                                         int(mover))
  # Majority baseline: every object "not hit" unless most are hit; the most frequent whole outcome.
  train_sigs, hit_votes = {}, []
  for i in range(len(train)):
    e = train[i]
    sig = signature(e["rank"], e["fate"], e["mover_fate"])
    train_sigs[sig] = train_sigs.get(sig, 0) + 1
    present = (e["shape"] >= 0) & (np.arange(SLOTS) != e["mover_slot"])
    hit_votes.extend((e["rank"][present] > 0).tolist())
  majority_hit = bool(np.mean(hit_votes) > 0.5)
  majority_sig = max(train_sigs, key=train_sigs.get)
  tp = fp = fn = tn = exact = base_exact = base_correct = 0
  for start in range(0, len(examples), batch):
    chunk = examples[start:start + batch]
    stack = lambda k: np.stack([e[k] for e in chunk])
    logits = predictor.logits(stack("image"), stack("ids"), stack("velocity"), stack("controlled"))
    for j, e in enumerate(chunk):
      pred = predictor.decode({k: v[j] for k, v in logits.items()}, int(e["mover_slot"]), "to the right")
      pred_rank = np.zeros(SLOTS, np.int64)
      pred_fate = np.full(SLOTS, -1, np.int64)
      for order, (s, f) in enumerate(zip(pred.outcome.hits, pred.outcome.fates)):
        pred_rank[s] = min(order + 1, config.predictor.max_rank)
        pred_fate[s] = FATES.index(f)
      present = (e["shape"] >= 0) & (np.arange(SLOTS) != e["mover_slot"])
      truth_hit, pred_hit = e["rank"] > 0, pred_rank > 0
      tp += int((truth_hit & pred_hit & present).sum())
      fp += int((~truth_hit & pred_hit & present).sum())
      fn += int((truth_hit & ~pred_hit & present).sum())
      tn += int((~truth_hit & ~pred_hit & present).sum())
      base_correct += int((truth_hit[present] == majority_hit).sum())
      truth_sig = signature(e["rank"], e["fate"], e["mover_fate"])
      exact += int(signature(pred_rank, pred_fate, MOVER_FATES.index(pred.outcome.mover_fate)) == truth_sig)
      base_exact += int(majority_sig == truth_sig)
  objects = tp + fp + fn + tn
  f1 = lambda tp_, fp_, fn_: 2 * tp_ / (2 * tp_ + fp_ + fn_) if tp_ + fp_ + fn_ else float("nan")
  base_tp = tp + fn if majority_hit else 0
  base_fp = fp + tn if majority_hit else 0
  base_fn = 0 if majority_hit else tp + fn
  return dict(split=split, examples=len(examples), objects=objects,
              hit_accuracy=(tp + tn) / max(objects, 1), hit_f1=f1(tp, fp, fn), exact_match=exact / len(examples),
              baseline_hit_accuracy=base_correct / max(objects, 1), baseline_hit_f1=f1(base_tp, base_fp, base_fn),
              baseline_exact_match=base_exact / len(examples),
              baseline=f"every object {'hit' if majority_hit else 'not hit'}; outcome {majority_sig}")


def main(argv) -> None:
  del argv
  scores = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  logging.info("test scores: %s", scores)
  print(json.dumps(scores, indent=1))


def _define_flags() -> None:
  global _CONFIG, _WORKDIR
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/describe.py", "Outcome-predictor config file:size.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, losses, test scores).", required=True)


if __name__ == "__main__":
  from datagen import cli, generate as _generate
  cli.run(main, expected=(_generate.DatasetMismatch, _generate.DatasetBusy), define=_define_flags)
