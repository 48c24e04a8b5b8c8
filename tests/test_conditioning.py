"""One conditioning path: training batches and the sampling API build the same Condition; frame 0 given."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import model as model_configs
from configs import train as train_configs
from kinemask_jax.model import conditioning, diffusion, text
from kinemask_jax.training import curriculum, input_pipeline, video
from kinemask_jax.sampling import api as sampling_api
from kinemask_jax.model import VideoDiT

VOCABULARY = model_configs.get_config("tiny").model.text.vocabulary  # the caption grammar's words


def _raw(examples, tokenizer):
  raw = {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in input_pipeline.RAW_KEYS}
  ids, lengths = tokenizer.encode_batch([e["caption"] for e in examples])
  raw["text_ids"], raw["text_lengths"] = jnp.asarray(ids), jnp.asarray(lengths)
  return raw


def test_training_batch_with_k1_and_the_api_build_the_same_condition(tiny_examples):
  config = train_configs.get_config("tiny", stage=2)
  state = video.trainer(config).init(0)
  pipe = sampling_api.KineMaskPipeline(config, state.ema, state.frozen)
  examples = [e for e in tiny_examples if e["moving_at_start"].any()][:3]
  raw = _raw(examples, pipe.tokenizer)
  train = conditioning.from_truth(raw, 1, config.conditioning.v_max_mps)
  # What the train step sees with k = 1 and no guidance dropout goes through curriculum.model_batch.
  config.curriculum.update(floor_prob=1.0, drop_text_prob=0.0, drop_mask_prob=0.0)
  batch, _ = curriculum.model_batch(raw, 0, jax.random.key(0), config)
  for i, e in enumerate(examples):
    k = int(np.argmax(e["moving_at_start"]))
    api = pipe.condition(e["video"][0], e["instance_ids"][0] == k + 1, e["velocity_cam"][0, k], e["caption"])
    for name in ("first_frame", "velocity_mask", "mask_present", "text_ids", "text_lengths"):
      ours = np.asarray(getattr(api, name))[0]
      np.testing.assert_array_equal(ours, np.asarray(getattr(train, name))[i], err_msg=name)
      np.testing.assert_array_equal(ours, np.asarray(getattr(batch["cond"], name))[i], err_msg=name)
    assert np.abs(np.asarray(api.velocity_mask)[0, 0]).max() > 0  # the pushed object is in frame 0's mask
  assert conditioning.image_channels(config.model) == 3 + 3 + 1 + 3 + conditioning.GEOMETRY_CHANNELS


def test_push_geometry_follows_the_push():
  mask0 = np.zeros((1, 8, 8, 3), np.float32)
  mask0[0, 3:5, 1:3] = (0.5, 0.0, 0.1)  # an object left of centre pushed to the right
  g = np.asarray(conditioning.push_geometry(jnp.asarray(mask0)))[0]
  along, across, speed = g[..., 0], g[..., 1], g[..., 2]
  assert along[4, 7] > along[4, 4] > along[4, 2] > along[4, 0]  # grows to the right
  np.testing.assert_allclose(across[:, 4], across[:, 0])  # and across varies only with the row
  assert abs(across[4, 2]) < 0.1 and np.allclose(speed, np.hypot(0.5, 0.1))
  assert np.abs(np.asarray(conditioning.push_geometry(jnp.zeros((1, 8, 8, 3))))).max() == 0  # no mask, no push


def _still_video(b=2, t=4, h=8, w=8, seed=0):
  rng = np.random.default_rng(seed)
  first = rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32)
  video = np.repeat(first[:, None], t, axis=1)
  ids, lengths = text.Tokenizer(8, VOCABULARY).encode_batch([""] * b)
  cond = conditioning.Condition(jnp.asarray(first), jnp.zeros((b, t, h, w, 3)), jnp.zeros((b, t)),
                                jnp.asarray(ids), jnp.asarray(lengths))
  return jnp.asarray(video), cond


def test_delta_output_makes_a_still_scene_the_zero_output_and_the_loss_skips_frame_0():
  model = VideoDiT(model_configs.get_config("tiny").model, rngs=nnx.Rngs(0))
  video, cond = _still_video()
  t = jnp.array([0.5, 0.9])
  # The final layer starts at zero: the prediction is the first frame in every frame, so a still scene costs 0.
  x0 = model(jax.random.normal(jax.random.key(0), video.shape), t, cond)
  np.testing.assert_allclose(x0, video, atol=1e-6)
  loss = lambda v, c: float(diffusion.loss(model, v, c, jax.random.key(1), 0.0, 1.0, "clean"))
  assert loss(video, cond) < 1e-10
  # Frame 0 is given: changing the video's frame 0 changes nothing (the loss covers frames 1..T-1).
  np.testing.assert_allclose(loss(video.at[:, 0].set(0.3), cond), loss(video, cond), atol=1e-12)
  assert loss(video.at[:, 2].set(0.3), cond) > 1e-3
  with pytest.raises(ValueError, match="loss_weighting"):
    diffusion.loss(model, video, cond, jax.random.key(1), 0.0, 1.0, "eps")
