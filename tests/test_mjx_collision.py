"""The merged, culled MJX collision (datagen/mjx_collision.py) against MJX's own and MuJoCo C."""

import contextlib
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mujoco import mjx
from mujoco.mjx._src import collision_driver

from datagen import mjx_collision
from datagen import physics
from datagen import scenes
from datagen import shapes


def _cfg(tiny_cfg, max_pairs):
  tiny_cfg.scene.max_objects = tiny_cfg.scene.min_objects = 3
  tiny_cfg.num_frames = 3
  tiny_cfg.physics.mjx_max_pairs = max_pairs
  return tiny_cfg


def _row_of_cylinders(cfg, gap_m: float) -> scenes.Scene:
  """Three cylinders of different sizes in a row on the table, neighbours `gap_m` apart (< 0: pressed into
  each other and the table), still."""
  s = scenes.sample_scene(0, cfg)
  radius, half_height = np.float32([0.03, 0.045, 0.035]), np.float32([0.04, 0.05, 0.03])
  size = np.stack([radius, radius, half_height], 1)
  x = np.concatenate([[0.0], np.cumsum(radius[:-1] + radius[1:] + gap_m)])
  position = np.stack([x - x.mean(), np.zeros(3), half_height + min(gap_m, 0.0)], 1).astype(np.float32)
  zero = np.zeros((3, 3), np.float32)
  return dataclasses.replace(s, shape=np.full(3, shapes.CYLINDER, np.int32), size=size, position=position,
                             yaw_rad=np.zeros(3, np.float32), velocity_mps=zero, angular_velocity_rps=zero)


def _model_and_data(cfg, scene, max_pairs=None):
  """The scene's canonical model and its data after kinematics; the data laid out for `merged_collision`
  with `max_pairs` (None: MJX's own layout)."""
  canon = physics._canonical(json.dumps(cfg.to_dict(), sort_keys=True))
  params, qpos, qvel = physics.mjx_batch_params([scene], cfg, canon)
  params = jax.tree.map(lambda x: jnp.asarray(x[0], jnp.float32), params)
  mx = canon.mjx_model
  convex = tuple(c.replace(vert=v, face=f) for c, (v, f) in zip(mx._impl.mesh_convex, params["mesh"]))
  m = mx.tree_replace({k: v for k, v in params.items() if k != "mesh"}).tree_replace({"_impl.mesh_convex": convex})
  with mjx_collision.patched(max_pairs) if max_pairs is not None else contextlib.nullcontext():
    d = mjx.make_data(m)
  d = d.replace(qpos=jnp.asarray(qpos[0], jnp.float32), qvel=jnp.asarray(qvel[0], jnp.float32))
  return m, jax.jit(mjx.kinematics)(m, d)


def _touching(contact) -> list:
  g1, g2, dist = (np.asarray(x) for x in (contact.geom1, contact.geom2, contact.dist))
  return sorted(zip(g1[dist < 0].tolist(), g2[dist < 0].tolist(), np.round(dist[dist < 0], 5).tolist()))


def test_merged_and_culled_collision_give_mjx_contacts(tiny_cfg):
  """Three cylinders pressed together (cylinder-cylinder, and each on the table: the mesh groups), against
  MJX's own collision: the same contacts, culled ones in a shorter contact array (the data's layout)."""
  cfg = _cfg(tiny_cfg, 2)
  scene = _row_of_cylinders(cfg, -0.004)
  m, d = _model_and_data(cfg, scene)
  stock = jax.jit(collision_driver.collision)(m, d)._impl.contact
  want = _touching(stock)
  slots = {tuple(sorted(np.asarray(m.geom_bodyid)[[a, b]] - 1)) for a, b, _ in want}
  assert {(0, 1), (1, 2), (-1, 0)} <= slots, slots  # cylinder-cylinder and cylinder-table contacts exist
  sizes = []
  for max_pairs in (0, 2):
    m, d = _model_and_data(cfg, scene, max_pairs)
    got = jax.jit(lambda m, d, k=max_pairs: mjx_collision.merged_collision(m, d, k))(m, d)._impl.contact
    assert got.dist.shape[0] == len(mjx_collision.condim(m, max_pairs)) == d._impl.ncon
    assert _touching(got) == want, max_pairs
    sizes.append(got.dist.shape[0])
  assert sizes[1] < sizes[0] == stock.dist.shape[0], sizes  # merged: all pairs; culled: fewer rows
  with pytest.raises(ValueError, match="inside mjx_collision.patched"):  # data laid out for another cull
    mjx_collision.merged_collision(m, _model_and_data(cfg, scene)[1], 2)
  assert len(mjx_collision.merged_groups(m)) < len(collision_driver._geom_groups(m))  # 9 calls, not 12


def test_cull_overflow_is_detected(tiny_cfg):
  """Two cylinder pairs within reach: a cull to one pair would drop a contact, and says so."""
  cfg = _cfg(tiny_cfg, 1)
  m, d = _model_and_data(cfg, _row_of_cylinders(cfg, -0.004), 1)
  assert bool(mjx_collision.near_overflow(m, d, 1))
  assert not bool(mjx_collision.near_overflow(m, d, 2))
  m, d = _model_and_data(cfg, _row_of_cylinders(cfg, 0.1), 1)  # apart: nothing within reach
  assert not bool(mjx_collision.near_overflow(m, d, 1))


@pytest.mark.timeout(600)
def test_rollout_hands_overflowing_scenes_to_mujoco_c(tiny_cfg):
  """A scene whose cull overflows is simulated again with MuJoCo C (bit-equal to rollout_c); a scene
  that never overflows keeps MJX's trajectory and stays close to C's."""
  cfg = _cfg(tiny_cfg, 1)
  pressed, apart = _row_of_cylinders(cfg, -0.002), _row_of_cylinders(cfg, 0.1)
  x = physics.rollout_mjx([pressed, apart], cfg)
  c = physics.rollout_c([pressed, apart], cfg)
  assert x.resimulated.tolist() == [True, False]
  for field in ("position", "quat", "velocity", "contact"):
    np.testing.assert_array_equal(getattr(x, field)[0], getattr(c, field)[0])
  assert not np.array_equal(x.position[1], c.position[1])  # MJX's own result, ...
  np.testing.assert_allclose(x.position[1], c.position[1], atol=2e-3)  # ... the same physics
