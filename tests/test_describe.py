"""Outcome predictor and prompt="auto": targets from captions, overfitting a small set, end to end."""

import json
import os

import numpy as np
import pytest

from datagen import captions, palette
from kinemask_jax import KineMaskPipeline
from kinemask_jax.outcome import predictor
from kinemask_jax.training import outcome as training


def test_targets_follow_the_caption(tiny_examples):
  for e in tiny_examples:
    t = training.targets(e, max_rank=5)
    n = int(e["num_objects"])
    names = palette.color_names(e["color"][:n])
    outcome = captions.parse_caption(e["caption"], names)
    hit_slots = [palette.NAMES.index(names[k]) for k in outcome.hits]
    assert [int(s) for s in np.argsort(-t["rank"])[: len(hit_slots)]] == hit_slots or not hit_slots
    assert sorted(np.flatnonzero(t["rank"])) == sorted(hit_slots)
    assert palette.NAMES[int(t["mover_slot"])] == names[outcome.mover]
    assert (t["shape"] >= 0).sum() == n and tuple(captions.MOVER_FATES)[int(t["mover_fate"])] == outcome.mover_fate


def test_predictor_fits_a_small_training_set(tiny_describer, tiny_dataset):
  workdir, test_scores = tiny_describer
  trained = predictor.OutcomePredictor.from_checkpoint(workdir)
  train_scores = training.evaluate(trained, trained.config, "train")
  assert train_scores["examples"] == 6
  assert train_scores["exact_match"] == 1.0 and train_scores["hit_accuracy"] == 1.0
  assert json.dumps(json.load(open(os.path.join(workdir, "test_scores.json")))) == json.dumps(test_scores)
  for key in ("hit_accuracy", "hit_f1", "exact_match", "baseline_hit_accuracy", "baseline_exact_match"):
    assert key in test_scores
  losses = [json.loads(line)["loss"] for line in open(os.path.join(workdir, "losses.jsonl"))]
  assert losses[-1] < 0.1 * losses[0]


def test_predictor_resumes_from_its_checkpoint(tiny_describer, capsys):
  workdir, _ = tiny_describer
  config = predictor.OutcomePredictor.from_checkpoint(workdir).config
  config.train.steps = 210  # 10 more steps than the fixture ran
  training.train_and_evaluate(config, workdir)
  assert "resumed from" in capsys.readouterr().out
  steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "losses.jsonl"))]
  assert steps[-1] == 210 and steps.count(200) == 1


def test_prompt_auto_end_to_end(tiny_checkpoint, tiny_describer, tiny_examples):
  workdir, _ = tiny_describer
  pipe = KineMaskPipeline.from_checkpoint(tiny_checkpoint, describer=workdir)
  e = tiny_examples[0]
  k = int(np.argmax(e["moving_at_start"]))
  mask = e["instance_ids"][0] == k + 1
  result = pipe.generate(e["video"][0], mask, e["velocity_cam"][0, k], num_steps=2)
  # The description names the pushed object by its colour and parses back with the grammar.
  names = list(palette.NAMES)
  outcome = captions.parse_caption(result.prompt, names)
  assert names[outcome.mover] == palette.color_names(e["color"][k:k + 1])[0]
  assert outcome.direction == captions.direction_name(e["velocity_cam"][0, k])
  own = pipe.generate(e["video"][0], mask, e["velocity_cam"][0, k], prompt="A red cube slides.", num_steps=2)
  assert own.prompt == "A red cube slides."
  with pytest.warns(UserWarning, match="no outcome predictor"):
    assert KineMaskPipeline.from_checkpoint(tiny_checkpoint).generate(
        e["video"][0], mask, e["velocity_cam"][0, k], num_steps=2).prompt == ""


def test_text_following_counts_which_description_the_video_follows(tiny_examples, monkeypatch):
  """With a stand-in generator whose hit object moves only under the "hits" text, the rate is 1; when it
  ignores the text, 0.5 (ties)."""
  from configs import evaluate as evaluate_configs
  from kinemask_jax.evaluation import score
  examples = [e for e in tiny_examples if captions.parse_caption(
      e["caption"], palette.color_names(e["color"][:int(e["num_objects"])])).hits]
  assert examples

  class Stub:
    def __init__(self, follows):
      self.follows = follows

    def generate(self, images, masks, vels, prompt, num_steps, seed):
      videos = []
      for image, text in zip(images, prompt):
        e = next(x for x in examples if np.array_equal(x["video"][0], image))
        hit = "nothing" not in text and "without" not in text
        videos.append(e["video"] if (hit or not self.follows) else np.repeat(e["video"][:1], len(e["video"]), 0))
      return type("R", (), {"video": np.stack(videos)})

  config = evaluate_configs.get_config()

  def first_hit_moves(e):
    names = palette.color_names(e["color"][:int(e["num_objects"])])
    k = captions.parse_caption(e["caption"], names).hits[0]
    c = e["centroid_px"][:, k]
    return np.linalg.norm(c - c[:1], axis=-1).max() > 1.0
  moved = [e for e in examples if first_hit_moves(e)]
  assert moved
  config.text_following.num = len(moved)
  follows = score.text_following(Stub(True), moved, config)
  assert follows["text_following_pairs"] == len(moved) and follows["text_following_rate"] == 1.0
  assert score.text_following(Stub(False), moved, config)["text_following_rate"] == 0.5


def test_the_predictor_reads_its_classes_from_its_checkpoint(tiny_describer):
  """The heads' class lists are stored with the checkpoint: a reordered list loads with a warning and the
  predictor uses the stored order; a name the grammar no longer has, or no lists at all, is refused."""
  from kinemask_jax.store.checkpoints import CheckpointError
  workdir, _ = tiny_describer
  trained = predictor.OutcomePredictor.from_checkpoint(workdir)
  assert trained.vocabulary == predictor.Vocabulary.current()
  stored = trained.config.predictor.to_dict()
  reordered = {**stored, "vocabulary": {**stored["vocabulary"], "mover_fates": list(reversed(stored["vocabulary"]["mover_fates"]))}}
  with pytest.warns(UserWarning, match="differs from the current tables"):
    predictor.check_vocabulary(reordered, "w")
  assert predictor.Vocabulary.of(reordered).mover_fates == tuple(reversed(captions.MOVER_FATES))
  unknown = {**stored, "vocabulary": {**stored["vocabulary"], "fates": [*stored["vocabulary"]["fates"][:-1], "explodes"]}}
  with pytest.raises(CheckpointError, match="explodes"):
    predictor.check_vocabulary(unknown, "w")
  with pytest.raises(CheckpointError, match="does not store the predictor's vocabulary"):
    predictor.check_vocabulary({k: v for k, v in stored.items() if k != "vocabulary"}, "w")
