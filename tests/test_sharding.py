"""Sharding: one step's loss and gradients on 8 simulated CPU devices equal the single-device ones."""

import json
import os
import subprocess
import sys

import pytest

from kinemask_jax.model import sharding as shd

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_loss_and_gradients_match_single_device_on_three_meshes():
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, os.path.join(HERE, "sharding_worker.py")], env=env, capture_output=True,
                       text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8
  expected_shard = {"(8, 1, 1)": [64, 256], "(2, 4, 1)": [16, 256], "(2, 2, 2)": [32, 128]}
  for mesh, r in result["meshes"].items():
    assert r["loss_rel"] < 1e-5 and r["grad_rel_max"] < 1e-4, (mesh, r)
    assert r["zero_grads"] == 0 and r["init_max_diff"] < 1e-6, (mesh, r)
    assert r["mlp_spec"] == "P('fsdp', 'tensor')", (mesh, r)
    assert r["mlp_shard"] == expected_shard[mesh], (mesh, r)


def test_spec_rules_and_mesh_errors():
  import jax
  mesh = shd.make_mesh((1, 1, -1), jax.devices()[:1])
  rules = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"))
  assert mesh.shape == {"data": 1, "fsdp": 1, "tensor": 1}
  assert shd.spec_for(("batch", None, "embed"), (8, 3, 64), mesh, rules) == jax.sharding.PartitionSpec(
      ("data", "fsdp"), None, None)  # fsdp already used by the batch
  assert shd.spec_for(("embed", "mlp"), (64, 256), mesh, rules) == jax.sharding.PartitionSpec("fsdp", "tensor")
  with pytest.raises(ValueError, match="needs 3 sizes"):
    shd.make_mesh((1, 1))
  with pytest.raises(ValueError, match="devices"):
    shd.make_mesh((2, 1, 1), jax.devices()[:1])


def test_an_activated_mesh_belongs_to_its_thread():
  # kinemask_jax/express.py traces steps on a helper thread while the main thread traces its own work: a mesh
  # activated on one thread must not shard (or stop sharding) what the other traces.
  import threading
  import jax
  import jax.numpy as jnp
  mesh = shd.make_mesh((1, 1, -1))
  entered, release = threading.Event(), threading.Event()

  def helper():
    with shd.activate(mesh, [("batch", "data")]):
      entered.set()
      release.wait(10)
  thread = threading.Thread(target=helper)
  thread.start()
  entered.wait(10)
  try:
    text = jax.jit(lambda x: shd.constrain(x * 2, ("batch",))).lower(jnp.ones(4)).as_text()
    assert "sharding_constraint" not in text and "Sharding" not in text
    with shd.activate(mesh, [("batch", "data")]):
      inside = jax.jit(lambda x: shd.constrain(x * 2, ("batch",))).lower(jnp.ones(4)).as_text()
    assert "sharding_constraint" in inside or "Sharding" in inside
  finally:
    release.set()
    thread.join()
