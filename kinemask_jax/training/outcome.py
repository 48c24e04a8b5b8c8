"""Training the outcome predictor: `python -m kinemask_jax.train_outcome --config=configs/outcome.py:tiny
--workdir=W` trains (or resumes) it in W, then scores it on the test split.

The predictor itself is kinemask_jax/outcome/predictor.py. Targets come from the dataset's captions through
datagen.captions.parse_caption. Training runs the same loop as the video model (training/loop.py: sharded
step with the finite guard, AdamW with EMA, Orbax checkpoints of state, EMA, data iterator and config, exact
resume) with this predictor's task.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from datagen import captions, cli, datasets, palette, shapes as shapes_lib
from kinemask_jax.model import sharding as shd
from kinemask_jax.outcome.predictor import OutcomePredictor, Vocabulary, build, inputs
from kinemask_jax.training import input_pipeline, loop, trainer as trainer_lib
from kinemask_jax.training.trainer import Task, Trainer


def targets(example: dict, max_rank: int, vocabulary: Vocabulary | None = None) -> dict:
  """Training targets of a dataset example: per slot hit order, fate (-1 unless hit), shape (-1 if absent);
  the mover's fate and slot, as indices into `vocabulary` (default: the current tables). Raises
  datagen.captions.CaptionParseError on a caption outside the grammar."""
  v = vocabulary or Vocabulary.current()
  n = int(example["num_objects"])
  names = palette.color_names(np.asarray(example["color"])[:n])
  outcome = captions.parse_caption(datasets.decode_text(example["caption"]), names)
  slots = [v.slots.index(name) for name in names]
  rank = np.zeros(len(v.slots), np.int32)
  fate = np.full(len(v.slots), -1, np.int32)
  shape = np.full(len(v.slots), -1, np.int32)
  for k in range(n):
    shape[slots[k]] = v.shapes.index(shapes_lib.by_id(example["shape"][k]).name)
  for order, (k, f) in enumerate(zip(outcome.hits, outcome.fates)):
    rank[slots[k]] = min(order + 1, max_rank)
    fate[slots[k]] = v.fates.index(f)
  return dict(rank=rank, fate=fate, shape=shape, mover_fate=np.int32(v.mover_fates.index(outcome.mover_fate)),
              mover_slot=np.int32(slots[outcome.mover]))


class Example:
  """Dataset example -> inputs (frame 0, its ids and velocities) and targets (the input pipeline's transform)."""

  def __init__(self, predictor_cfg):
    self.max_rank = predictor_cfg.max_rank
    self.vocabulary = Vocabulary.of(predictor_cfg)

  def __call__(self, example):
    out = dict(image=np.asarray(example["video"][0]), ids=np.asarray(example["instance_ids"][0]),
               velocity=np.asarray(example["velocity_cam"][0]), controlled=np.asarray(example["moving_at_start"]))
    out.update(targets(example, self.max_rank, self.vocabulary))
    return out


def _cross_entropy(logits, labels):
  """Mean over labels >= 0 (the others are masked out); 0 when none."""
  valid = labels >= 0
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
  return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(valid.sum(), 1)


def loss_fn(model, config, batch: dict) -> tuple[jax.Array, dict]:
  """Weighted sum of the heads' cross-entropies (config.predictor.loss_weights), and each of them."""
  out = model(*inputs(config, batch["image"], batch["ids"], batch["velocity"], batch["controlled"]))
  parts = dict(rank=_cross_entropy(out["rank"], batch["rank"]), fate=_cross_entropy(out["fate"], batch["fate"]),
               shape=_cross_entropy(out["shape"], batch["shape"]),
               mover=_cross_entropy(out["mover"], batch["mover_fate"]))
  w = config.predictor.loss_weights
  total = w[0] * parts["rank"] + w[1] * parts["fate"] + w[2] * parts["shape"] + w[3] * parts["mover"]
  return total, parts


def task(config) -> Task:
  """The predictor's Task for the training loop: OutcomeNet of config.predictor and `loss_fn`."""
  return Task(build=functools.partial(build, config.predictor), loss=lambda model, batch, rng: loss_fn(model, config, batch))


def examples(config, split: str):
  """The split's examples as inputs and targets (a grain MapDataset, in order)."""
  import grain
  return grain.MapDataset.source(datasets.source(config, split)).map(Example(config.predictor))


def validate_config(config) -> None:
  """Raises cli.ConfigError naming the first field of a predictor config out of its range (before any work)."""
  require = cli.require
  datasets.validate_config(config)
  for field in ("predictor.hidden", "predictor.max_rank", "train.steps", "train.log_every", "train.checkpoint_every",
                "train.keep_checkpoints"):
    require(int(config[field]) >= 1, field, f"must be >= 1, got {config[field]!r}")
  require(len(config.predictor.loss_weights) == 4, "predictor.loss_weights",
          f"expected 4 weights (hit order, hit fate, shape, mover fate), got {config.predictor.loss_weights!r}")
  trainer_lib.validate_optim(config.optim)
  require(config.conditioning.v_max_mps > 0, "conditioning.v_max_mps", f"must be > 0, got {config.conditioning.v_max_mps!r}")


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) the predictor in `workdir`, then scores it on the test split; returns the scores."""
  validate_config(config)
  datasets.ensure_dataset(config)
  mesh = shd.make_mesh(config.mesh.shape)
  trainer = Trainer(config, task(config), mesh)
  batches = input_pipeline.GlobalBatches(
      iter(input_pipeline.make_dataset(config, "train", config.seed, Example(config.predictor))), mesh,
      config.sharding_rules)
  result = loop.fit(config, trainer, batches, workdir, label="outcome predictor", log=lambda m: print(m, flush=True))
  state = result.state
  scores = evaluate(OutcomePredictor(config, trainer.graphdef, state.ema, state.frozen), config, "test")
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "test_scores.json"), "w") as f:
      json.dump(scores, f, indent=1)
  return scores


def evaluate(predictor: OutcomePredictor, config, split: str = "test", batch: int = 64) -> dict:
  """Per-object "is hit" accuracy and F1, exact match of the whole outcome (hits in order, their fates, the
  mover's fate), against the majority-class baseline (fitted on the train split)."""
  test = examples(config, split)
  train = examples(config, "train")
  v = predictor.vocabulary
  num_slots = len(v.slots)
  test_examples = [test[i] for i in range(len(test))]
  # An outcome's signature: (slot, hit order, fate) of each hit object, and the mover's fate.
  signature = lambda rank, fate, mover: (tuple((int(s), int(rank[s]), int(fate[s])) for s in np.flatnonzero(rank)),
                                         int(mover))
  # Majority baseline: every object "not hit" unless most are hit; the most frequent whole outcome.
  train_sigs, hit_votes = {}, []
  for i in range(len(train)):
    e = train[i]
    sig = signature(e["rank"], e["fate"], e["mover_fate"])
    train_sigs[sig] = train_sigs.get(sig, 0) + 1
    present = (e["shape"] >= 0) & (np.arange(num_slots) != e["mover_slot"])
    hit_votes.extend((e["rank"][present] > 0).tolist())
  majority_hit = bool(np.mean(hit_votes) > 0.5)
  majority_sig = max(train_sigs, key=train_sigs.get)
  tp = fp = fn = tn = exact = base_exact = base_correct = 0
  for start in range(0, len(test_examples), batch):
    chunk = test_examples[start:start + batch]
    stack = lambda k: np.stack([e[k] for e in chunk])
    logits = predictor.logits(stack("image"), stack("ids"), stack("velocity"), stack("controlled"))
    for j, e in enumerate(chunk):
      pred = predictor.decode({k: v[j] for k, v in logits.items()}, int(e["mover_slot"]), "to the right")
      pred_rank = np.zeros(num_slots, np.int64)
      pred_fate = np.full(num_slots, -1, np.int64)
      for order, (s, f) in enumerate(zip(pred.outcome.hits, pred.outcome.fates)):
        pred_rank[s] = min(order + 1, config.predictor.max_rank)
        pred_fate[s] = v.fates.index(f)
      present = (e["shape"] >= 0) & (np.arange(num_slots) != e["mover_slot"])
      truth_hit, pred_hit = e["rank"] > 0, pred_rank > 0
      tp += int((truth_hit & pred_hit & present).sum())
      fp += int((~truth_hit & pred_hit & present).sum())
      fn += int((truth_hit & ~pred_hit & present).sum())
      tn += int((~truth_hit & ~pred_hit & present).sum())
      base_correct += int((truth_hit[present] == majority_hit).sum())
      truth_sig = signature(e["rank"], e["fate"], e["mover_fate"])
      exact += int(signature(pred_rank, pred_fate, v.mover_fates.index(pred.outcome.mover_fate)) == truth_sig)
      base_exact += int(majority_sig == truth_sig)
  objects = tp + fp + fn + tn
  f1 = lambda tp_, fp_, fn_: 2 * tp_ / (2 * tp_ + fp_ + fn_) if tp_ + fp_ + fn_ else float("nan")
  base_tp = tp + fn if majority_hit else 0
  base_fp = fp + tn if majority_hit else 0
  base_fn = 0 if majority_hit else tp + fn
  return dict(split=split, examples=len(test_examples), objects=objects,
              hit_accuracy=(tp + tn) / max(objects, 1), hit_f1=f1(tp, fp, fn), exact_match=exact / len(test_examples),
              baseline_hit_accuracy=base_correct / max(objects, 1), baseline_hit_f1=f1(base_tp, base_fp, base_fn),
              baseline_exact_match=base_exact / len(test_examples),
              baseline=f"every object {'hit' if majority_hit else 'not hit'}; outcome {majority_sig}")
