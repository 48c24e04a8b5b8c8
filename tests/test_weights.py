"""Exported weights (kinemask_jax/weights.py) and the weights shipped in kinemask_jax/pretrained/."""

import json
import os

import jax
import numpy as np
import pytest

from configs import model as model_configs
from kinemask_jax import CheckpointError, KineMaskPipeline, evaluate, step as step_lib, weights
from kinemask_jax import pipeline as pipeline_lib


def _perturbed_state(config, seed=0):
  state = step_lib.Trainer(config).init(seed)
  rng = np.random.default_rng(seed)
  ema = jax.tree.map(lambda x: x + np.float32(0.05) * rng.standard_normal(x.shape, np.float32), state.ema)
  return ema, state.frozen


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_save_and_load_round_trip(tmp_path, dtype):
  config = model_configs.get_config("tiny")
  ema, frozen = _perturbed_state(config)
  files = weights.save(str(tmp_path), config, ema, frozen, step=7, dtype=dtype, shard_mib=0.5)
  assert len([f for f in files if f.endswith(".npz")]) > 1  # sharded
  template = jax.eval_shape(lambda: step_lib.Trainer(config)._init(0))
  got, _ = weights.load(str(tmp_path), template.ema, template.frozen)
  tol = 0 if dtype == "float32" else 1e-2
  for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(got)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=tol, atol=tol)
  pipe = KineMaskPipeline.from_weights(str(tmp_path))
  assert pipe.step == 7 and pipe.video_shape == (8, 32, 32, 3)


def test_bad_weights_folders_are_refused(tmp_path):
  config = model_configs.get_config("tiny")
  ema, frozen = _perturbed_state(config)
  weights.save(str(tmp_path), config, ema, frozen, step=1, shard_mib=0.5)
  template = jax.eval_shape(lambda: step_lib.Trainer(config)._init(0))
  other = model_configs.get_config("tiny")
  other.model.width = 32
  small_template = jax.eval_shape(lambda: step_lib.Trainer(other)._init(0))
  with pytest.raises(weights.WeightsError, match="shape"):
    weights.load(str(tmp_path), small_template.ema, small_template.frozen)
  meta = json.load(open(tmp_path / "config.json"))
  del meta["config"]["model"]["mask0_all"]
  json.dump(meta, open(tmp_path / "config.json", "w"))
  with pytest.raises(CheckpointError, match="older kinemask-jax.*mask0_all"):
    KineMaskPipeline.from_weights(str(tmp_path))
  os.remove(tmp_path / "ema-00001.npz")
  with pytest.raises(weights.WeightsError, match="missing"):
    weights.load(str(tmp_path), template.ema, template.frozen)
  with pytest.raises(CheckpointError, match="no config.json"):
    KineMaskPipeline.from_weights(str(tmp_path / "nowhere"))
  with pytest.raises(CheckpointError, match="shipped"):
    KineMaskPipeline.from_pretrained("huge")


def test_shipped_small_weights_respond_to_the_velocity():
  """The small model trained on a GPU loan loads on a CPU and its video depends on the push."""
  assert "small" in pipeline_lib.pretrained_names()
  pipe = KineMaskPipeline.from_pretrained("small")
  assert pipe.video_shape == (16, 64, 64, 3) and pipe.config.model.dtype == "float32"
  from datagen import engine
  example = next(e for e in engine.generate_split("test", 4, pipe.config.data, "c") if evaluate.controlled_objects(e))
  image, masks, vels = evaluate.generation_inputs(example)
  a = pipe.generate(image, masks, vels, prompt=None, num_steps=4, seed=0).video
  b = pipe.generate(image, masks, [-v for v in vels], prompt=None, num_steps=4, seed=0).video
  assert np.array_equal(a[0], image) and np.abs(a[1:].astype(int) - b[1:]).mean() > 0.5
