"""Exported weights (kinemask_jax/store/weights.py) and the weights shipped in kinemask_jax/pretrained/."""

import json
import os

import jax
import numpy as np
import pytest

from configs import model as model_configs
from kinemask_jax import CheckpointError, KineMaskPipeline
from kinemask_jax import model as model_lib
from kinemask_jax.evaluation import score
from kinemask_jax.training import video
from kinemask_jax.store import weights
from kinemask_jax.store import models


def _perturbed_state(config, seed=0):
  state = video.trainer(config).init(seed)
  rng = np.random.default_rng(seed)
  ema = jax.tree.map(lambda x: x + np.float32(0.05) * rng.standard_normal(x.shape, np.float32), state.ema)
  return ema, state.frozen


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_save_and_load_round_trip(tmp_path, dtype):
  config = model_configs.get_config("tiny")
  ema, frozen = _perturbed_state(config)
  files = weights.save(str(tmp_path), config, ema, frozen, step=7, dtype=dtype, shard_mib=0.5)
  assert len([f for f in files if f.endswith(".npz")]) > 1  # sharded
  _, params, frozen_template = model_lib.abstract_weights(config.model)
  got, _ = weights.load(str(tmp_path), params, frozen_template)
  tol = 0 if dtype == "float32" else 1e-2
  for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(got)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=tol, atol=tol)
  pipe = KineMaskPipeline.from_weights(str(tmp_path))
  assert pipe.step == 7 and pipe.video_shape == (8, 32, 32, 3)


def test_bad_weights_folders_are_refused(tmp_path):
  config = model_configs.get_config("tiny")
  ema, frozen = _perturbed_state(config)
  weights.save(str(tmp_path), config, ema, frozen, step=1, shard_mib=0.5)
  _, params, frozen_template = model_lib.abstract_weights(config.model)
  other = model_configs.get_config("tiny")
  other.model.width = 32
  _, small_params, small_frozen = model_lib.abstract_weights(other.model)
  with pytest.raises(weights.WeightsError, match="shape"):
    weights.load(str(tmp_path), small_params, small_frozen)
  meta = json.load(open(tmp_path / "config.json"))
  del meta["config"]["model"]["mask0_all"]
  json.dump(meta, open(tmp_path / "config.json", "w"))
  with pytest.raises(CheckpointError, match="older kinemask-jax.*mask0_all"):
    KineMaskPipeline.from_weights(str(tmp_path))
  os.remove(tmp_path / "ema-00001.npz")
  with pytest.raises(weights.WeightsError, match="missing"):
    weights.load(str(tmp_path), params, frozen_template)
  with pytest.raises(CheckpointError, match="no config.json"):
    KineMaskPipeline.from_weights(str(tmp_path / "nowhere"))
  with pytest.raises(CheckpointError, match="shipped"):
    KineMaskPipeline.from_pretrained("huge")


def test_shipped_small_weights_respond_to_the_velocity():
  """The small model trained on a GPU loan loads on a CPU and its video depends on the push."""
  assert "small" in models.pretrained_names()
  pipe = KineMaskPipeline.from_pretrained("small")
  assert pipe.video_shape == (16, 64, 64, 3) and pipe.config.model.dtype == "float32"
  from datagen import engine
  example = next(e for e in engine.generate_split("test", 4, pipe.config.data, "c") if score.controlled_objects(e))
  image, masks, vels = score.generation_inputs(example)
  a = pipe.generate(image, masks, vels, prompt=None, num_steps=4, seed=0).video
  b = pipe.generate(image, masks, [-v for v in vels], prompt=None, num_steps=4, seed=0).video
  assert np.array_equal(a[0], image) and np.abs(a[1:].astype(int) - b[1:]).mean() > 0.5


def test_a_checkpoint_with_a_frozen_backbone_loads_its_own_frozen_weights(tmp_path):
  """Inference reads the EMA and the frozen weights of a checkpoint without its optimizer state."""
  from kinemask_jax.store import checkpoints
  from configs import train as train_configs
  config = train_configs.get_config("tiny", stage=2)
  config.model.freeze_backbone = True
  state = video.trainer(config).init(3)
  state = state.replace(frozen=jax.tree.map(lambda x: x + 1.0, state.frozen), ema=jax.tree.map(lambda x: x - 1.0, state.ema))
  ckpts = checkpoints.Checkpoints(str(tmp_path))
  ckpts.save(5, state, {}, config.to_json())
  ckpts.wait()
  ckpts.close()
  stored = models.load_run(str(tmp_path))
  assert stored.step == 5 and jax.tree.leaves(state.frozen)
  for want, got in ((state.frozen, stored.frozen), (state.ema, stored.ema)):
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_a_stored_vocabulary_is_the_models_own(tmp_path):
  """The vocabulary comes from the checkpoint: one that differs from the caption grammar loads, says which
  words differ, and reads prompts with its own words; one that stores none is refused with the reason."""
  import shutil
  import warnings
  folder = str(tmp_path / "tiny")
  shutil.copytree(models.pretrained_dir("tiny"), folder)
  meta = json.load(open(os.path.join(folder, "config.json")))
  vocabulary = meta["config"]["model"]["text"]["vocabulary"]
  vocabulary[vocabulary.index("ball")] = "zebra"  # same size: the embedding still fits
  json.dump(meta, open(os.path.join(folder, "config.json"), "w"))
  with pytest.warns(UserWarning, match=r"lacks \['ball'\].*has \['zebra'\]"):
    pipe = KineMaskPipeline.from_weights(folder)
  assert "zebra" in pipe.tokenizer.vocabulary and "ball" not in pipe.tokenizer.vocabulary
  image = np.zeros((32, 32, 3), np.uint8)
  image[10:16, 10:16] = (215, 35, 35)
  mask = image[..., 0] > 0
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # the model knows "zebra": no warning
    pipe.generate(image, mask, (0.5, 0.0), prompt="a red zebra", num_steps=1)
  with pytest.warns(UserWarning, match=r"outside the caption vocabulary.*\['ball'\]"):
    pipe.generate(image, mask, (0.5, 0.0), prompt="a red ball", num_steps=1)
  del meta["config"]["model"]["text"]["vocabulary"]
  json.dump(meta, open(os.path.join(folder, "config.json"), "w"))
  with pytest.raises(CheckpointError, match="does not store the text vocabulary"):
    KineMaskPipeline.from_weights(folder)


def test_a_training_run_exports_to_a_folder_that_samples_the_same(tiny_checkpoint, tmp_path):
  """`python -m kinemask_jax.export` writes the run's EMA weights; the folder samples what the run does."""
  import subprocess
  import sys
  out = str(tmp_path / "exported")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-m", "kinemask_jax.export", f"--workdir={tiny_checkpoint}", f"--out={out}"],
                        cwd=root, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and "wrote" in proc.stdout, proc.stderr[-2000:]
  run, folder = KineMaskPipeline.from_checkpoint(tiny_checkpoint), KineMaskPipeline.from_weights(out)
  assert folder.step == run.step and folder.config.init_from == ""
  image = np.zeros((32, 32, 3), np.uint8)
  image[10:16, 10:16] = (215, 35, 35)
  mask = image[..., 0] > 0
  videos = [p.generate(image, mask, (0.5, 0.0), prompt=None, num_steps=2, seed=1).video for p in (run, folder)]
  np.testing.assert_array_equal(videos[0], videos[1])
