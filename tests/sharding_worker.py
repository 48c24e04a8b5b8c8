"""Run by test_sharding.py in a fresh process with 8 simulated CPU devices; prints one JSON line.

Compares the loss and gradients of one step on several meshes with the single-device ones.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import model as model_configs  # noqa: E402
from kinemask_jax.model import conditioning, sharding as shd, text
from kinemask_jax.training import video as video_training  # noqa: E402

VOCABULARY = model_configs.get_config("tiny").model.text.vocabulary  # the caption grammar's words

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]


def main():
  cfg = model_configs.get_config("tiny")
  cfg.model.update(depth=2, n_control=1)
  cfg.model.text.update(depth=1, max_len=16)
  b, t, h, w = 8, 4, 16, 16
  rng = np.random.default_rng(0)
  ids, lens = text.Tokenizer(16, VOCABULARY).encode_batch(["a red cube slides to the left", "a ball", "", "the blue cylinder"] * 2)
  video = jnp.asarray(rng.uniform(-1, 1, (b, t, h, w, 3)), jnp.float32)
  cond = conditioning.Condition(video[:, 0], jnp.asarray(rng.uniform(-1, 1, (b, t, h, w, 3)), jnp.float32),
                                jnp.asarray(rng.integers(0, 2, (b, t)), jnp.float32), jnp.asarray(ids),
                                jnp.asarray(lens))
  batch = dict(video=video, cond=cond)
  key = jax.random.key(7)

  single = video_training.trainer(cfg)
  state = single.init(0)
  # Random values everywhere, so that no gradient is zero because of zero initialisation.
  leaves, treedef = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  state = state.replace(params=jax.tree.unflatten(
      treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]))
  loss0, grads0 = single.jit_loss_and_grads(state, batch)(state, batch, key)
  g0 = jax.tree.leaves(grads0)

  results = {"devices": jax.device_count(), "loss": float(loss0), "meshes": {}}
  for shape in MESHES:
    trainer = video_training.trainer(cfg, shd.make_mesh(shape))
    fresh = trainer.init(0)
    init_diff = max(float(jnp.abs(a - c).max()) for a, c in zip(jax.tree.leaves(fresh.params),
                                                                jax.tree.leaves(single.init(0).params)))
    sharded = jax.device_put(state, trainer.state_sharding(state))
    sharded_batch = jax.device_put(batch, trainer.batch_sharding(batch))
    loss, grads = trainer.jit_loss_and_grads(sharded, sharded_batch)(sharded, sharded_batch, key)
    rel = [float(jnp.linalg.norm(a - c) / jnp.linalg.norm(c)) for a, c in zip(jax.tree.leaves(grads), g0)]
    kernel = sharded.params["blocks"][0]["mlp"]["up"]["kernel"]
    results["meshes"][str(shape)] = dict(
        loss_rel=abs(float(loss) - float(loss0)) / abs(float(loss0)), grad_rel_max=max(rel),
        zero_grads=sum(float(jnp.abs(c).max()) == 0 for c in g0), init_max_diff=init_diff,
        mlp_spec=str(kernel.get_value().sharding.spec),
        mlp_shard=list(kernel.get_value().addressable_shards[0].data.shape))
  print(json.dumps(results))


if __name__ == "__main__":
  main()
