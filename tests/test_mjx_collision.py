"""The merged, culled MJX collision (datagen/mjx_collision.py) against MJX's own and MuJoCo C."""

import contextlib
import dataclasses
import json

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx
from mujoco.mjx._src import collision_driver

from datagen import mjcf
from datagen import mjx_collision
from datagen import physics
from datagen import scenes
from datagen import shapes
from datagen.mjx_collision import Cull


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


def _arrays(cfg, scene_list):
  """The canonical model of `cfg` and its per-scene arrays for `scene_list` (float32, leading axis: scenes)."""
  canon = physics._canonical(json.dumps(cfg.to_dict(), sort_keys=True))
  params, qpos, qvel = physics.mjx_batch_params(scene_list, cfg, canon)
  return canon, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), (params, qpos, qvel))


def _scene_model_and_data(canon, params, qpos, qvel, cull=None):
  """One scene's model and its data after kinematics; the data laid out for `merged_collision` with `cull`
  (None: MJX's own layout)."""
  mx = canon.mjx_model
  convex = tuple(c.replace(vert=v, face=f) for c, (v, f) in zip(mx._impl.mesh_convex, params["mesh"]))
  m = mx.tree_replace({k: v for k, v in params.items() if k != "mesh"}).tree_replace({"_impl.mesh_convex": convex})
  with mjx_collision.patched(cull) if cull is not None else contextlib.nullcontext():
    d = mjx.make_data(m)
  return m, mjx.kinematics(m, d.replace(qpos=qpos, qvel=qvel))


def _model_and_data(cfg, scene, cull=None):
  canon, arrays = _arrays(cfg, [scene])
  return jax.jit(lambda a: _scene_model_and_data(canon, *jax.tree.map(lambda x: x[0], a), cull))(arrays)


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
  for cull in (Cull(), Cull(objects=2), Cull(objects=2, world=3)):
    m, d = _model_and_data(cfg, scene, cull)
    got = jax.jit(lambda m, d, c=cull: mjx_collision.merged_collision(m, d, c))(m, d)._impl.contact
    assert got.dist.shape[0] == len(mjx_collision.condim(m, cull)) == d._impl.ncon
    assert _touching(got) == want, cull
    sizes.append(got.dist.shape[0])
  assert sizes[2] < sizes[1] < sizes[0] == stock.dist.shape[0], sizes  # merged: all pairs; culled: fewer rows
  with pytest.raises(ValueError, match="inside mjx_collision.patched"):  # data laid out for another cull
    mjx_collision.merged_collision(m, _model_and_data(cfg, scene)[1], Cull(objects=2))
  assert len(mjx_collision.merged_groups(m)) < len(collision_driver._geom_groups(m))  # 9 calls, not 12


def test_kept_contacts_are_the_deepest_and_a_full_house_is_flagged(tiny_cfg):
  """Keeping the deepest contacts only: with room for every touching one they are MJX's own, in a data of
  that many contacts; with one slot fewer a touching contact is dropped, and near_overflow says so. A model
  whose contacts differ in condim is refused by name."""
  cfg = _cfg(tiny_cfg, 2)
  scene = _row_of_cylinders(cfg, -0.004)
  m, d = _model_and_data(cfg, scene)
  want = _touching(jax.jit(collision_driver.collision)(m, d)._impl.contact)
  for keep in (len(want) + 1, len(want) - 1):
    cull = Cull(objects=2, world=3, contacts=keep)
    m, d = _model_and_data(cfg, scene, cull)

    def collide(m, d, c=cull):
      d = mjx_collision.merged_collision(m, d, c)
      return d._impl.contact, mjx_collision.near_overflow(m, d, c)
    got, flag = jax.jit(collide)(m, d)
    assert got.dist.shape[0] == keep == d._impl.ncon == len(mjx_collision.condim(m, cull))
    assert (_touching(got) == want) == (keep > len(want)), keep
    assert bool(flag) == (keep < len(want)), keep
  model = mujoco.MjModel.from_xml_string(mjcf.canonical_xml(cfg))
  model.geom_condim[np.flatnonzero(model.geom_bodyid == 1)] = 4  # the first slot's geoms: torsional friction
  with pytest.raises(ValueError, match="physics.mjx_max_contacts"):
    mjx_collision.condim(mjx.put_model(model), Cull(objects=2, world=3, contacts=8))


def test_world_reach_distance_is_a_box_bound(tiny_cfg):
  """The table is far wider than an object: its bounding sphere reaches everything near it, while the
  box bound says which objects can touch it: a cylinder resting on it (<= 0), one lifted 1 cm above its
  bounding radius (1 cm), none near the ground far below (> 0.5 m)."""
  cfg = _cfg(tiny_cfg, 2)
  scene = _row_of_cylinders(cfg, 0.1)
  m, d = _model_and_data(cfg, scene)
  body, kind, z = np.asarray(m.geom_bodyid), np.asarray(m.geom_type), np.asarray(m.geom_pos)[:, 2]
  ground, table = sorted(np.flatnonzero(body == 0), key=lambda g: z[g])  # the ground lies below the table
  cylinders = np.flatnonzero((body > 0) & (kind == mjx.GeomType.MESH))  # every slot's is real here
  pairs = np.array([[table, g] for g in cylinders] + [[g, ground] for g in cylinders])
  on_table = np.asarray(mjx_collision.reach_distance(m, d, pairs))
  assert (on_table[:3] <= 0).all() and (on_table[3:] > 0.5).all(), on_table
  lifted = scene.position.copy()
  lifted[0, 2] = float(np.asarray(m.geom_rbound)[cylinders[0]]) + 0.01
  m, d = _model_and_data(cfg, dataclasses.replace(scene, position=lifted))
  np.testing.assert_allclose(np.asarray(mjx_collision.reach_distance(m, d, pairs[:1])), [0.01], atol=1e-5)


def test_cull_overflow_is_detected(tiny_cfg):
  """Two cylinder pairs within reach (and three cylinders on the table): a cull to one pair (to two with
  the world) would drop a contact, and says so."""
  cfg = _cfg(tiny_cfg, 1)
  for cull, overflow in ((Cull(objects=1), True), (Cull(objects=2), False), (Cull(objects=2, world=2), True),
                         (Cull(objects=2, world=3), False)):
    m, d = _model_and_data(cfg, _row_of_cylinders(cfg, -0.004), cull)
    assert bool(mjx_collision.near_overflow(m, d, cull)) == overflow, cull
  cull = Cull(objects=1, world=1)
  m, d = _model_and_data(cfg, _row_of_cylinders(cfg, 0.1), cull)  # apart: no object pair within reach ...
  assert bool(mjx_collision.near_overflow(m, d, cull))  # ... but three cylinders on the table
  cull = Cull(objects=1, world=3)
  m, d = _model_and_data(cfg, _row_of_cylinders(cfg, 0.1), cull)
  assert not bool(mjx_collision.near_overflow(m, d, cull))


def test_budget_under_vmap_collides_the_batch_pairs_within_reach(tiny_cfg):
  """Under vmap, budgeted calls collide the batch's pairs within reach: with room for all of them the
  contacts are MJX's own in every scene; with room for one scene's cylinder pairs only, the second scene
  loses its cylinder-cylinder contacts and is flagged, the first is exact. Unbatched, the budget is moot."""
  cfg = _cfg(tiny_cfg, 2)
  pressed = _row_of_cylinders(cfg, -0.004)
  m, d = _model_and_data(cfg, pressed)
  want = _touching(jax.jit(collision_driver.collision)(m, d)._impl.contact)
  canon, arrays = _arrays(cfg, [pressed, pressed])

  def collide(cull, p, q, v):
    m, d = _scene_model_and_data(canon, p, q, v, cull)
    return mjx_collision.merged_collision(m, d, cull)._impl.contact, mjx_collision.near_overflow(m, d, cull)

  for cull, overflow in ((Cull(objects=2, world=3, batch_objects=1.0, batch_world=3.0), [False, True]),
                         (Cull(objects=2, world=3, batch_objects=2.0, batch_world=3.0), [False, False]),
                         (Cull(objects=2, world=3, batch_objects=2.0, batch_world=1.5), [False, True])):
    contact, flags = jax.jit(jax.vmap(lambda p, q, v, c=cull: collide(c, p, q, v)))(*arrays)
    assert np.asarray(flags).tolist() == overflow, cull
    for i in range(2):
      got = _touching(jax.tree.map(lambda x, i=i: x[i], contact))
      assert (got == want) == (not overflow[i]), (cull, i)
  single, flag = jax.jit(lambda a: collide(cull, *jax.tree.map(lambda x: x[1], a)))(arrays)
  assert _touching(single) == want and not bool(flag)


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
