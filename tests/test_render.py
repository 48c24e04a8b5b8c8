"""The renderer against independent references: exact sphere projection, the table plane, MuJoCo's rays."""

import dataclasses
import math

import mujoco
import numpy as np
import pytest

from datagen import mjcf
from datagen import render
from datagen import scenes, shapes


def _render_still(scene, cfg):
  """One frame of `scene` at its initial pose."""
  quat = scenes.yaw_quat(scene.yaw_rad)
  rgb, ids, depth = render.render([scene], scene.position[None, None], quat[None, None], cfg)
  return rgb[0, 0], ids[0, 0], depth[0, 0]


def _single_sphere(cfg, seed, centre, radius):
  s = scenes.sample_scene(seed, cfg)
  n = s.shape.shape[0]
  one = lambda a, v: np.concatenate([np.asarray(v, a.dtype)[None], np.zeros_like(a[1:])])
  return dataclasses.replace(
      s, num_objects=1, shape=one(s.shape, shapes.SPHERE), size=one(s.size, [radius] * 3),
      position=one(s.position, centre), yaw_rad=np.zeros(n, np.float32), color=one(s.color, [200, 30, 30]))


@pytest.mark.parametrize("seed,centre", [(0, (0.0, 0.0, 0.05)), (3, (0.12, 0.1, 0.05)), (5, (-0.15, -0.05, 0.05))])
def test_sphere_silhouette_matches_exact_projection(tiny_cfg, seed, centre):
  tiny_cfg.height = tiny_cfg.width = 160
  r = 0.05
  s = _single_sphere(tiny_cfg, seed, centre, r)
  _, ids, _ = _render_still(s, tiny_cfg)
  ys, xs = np.nonzero(ids == 1)
  # Exact image of a sphere: an ellipse, elongated along the direction away from the principal point.
  fx, _, cx, cy = s.camera.intrinsics
  c = s.camera.rotation @ np.asarray(centre) + s.camera.translation
  dist = np.linalg.norm(c)
  alpha, theta = math.asin(r / dist), math.acos(c[2] / dist)
  denom = math.cos(theta) ** 2 - math.sin(alpha) ** 2
  a = fx * math.sin(alpha) * math.cos(alpha) / denom
  b = fx * math.sin(alpha) / math.sqrt(denom)
  radial = np.array([c[0], c[1]]) / max(np.hypot(c[0], c[1]), 1e-12)
  centre_px = np.array([cx, cy]) + radial * fx * math.sin(theta) * math.cos(theta) / denom
  np.testing.assert_allclose([xs.mean() + 0.5, ys.mean() + 0.5], centre_px, atol=0.25)
  assert abs(len(xs) / (math.pi * a * b) - 1) < 0.03


def test_table_depth_matches_plane_equation(tiny_cfg):
  tiny_cfg.height = tiny_cfg.width = 48
  s = scenes.sample_scene(11, tiny_cfg)
  _, ids, depth = _render_still(s, tiny_cfg)
  fx, fy, cx, cy = s.camera.intrinsics
  v, u = np.mgrid[0:48, 0:48] + 0.5
  d_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)  # z = 1: t is the camera depth
  d_world = d_cam @ s.camera.rotation
  t = -s.camera.position[2] / d_world[..., 2]
  hit = s.camera.position + t[..., None] * d_world
  on_top = (ids == 0) & (np.abs(hit[..., 0]) < s.table_half_m[0] - 0.01) & (np.abs(hit[..., 1]) < s.table_half_m[1] - 0.01)
  assert on_top.sum() > 200
  np.testing.assert_allclose(depth[on_top], t[on_top], rtol=1e-4)


def test_ids_and_distances_agree_with_mujoco_rays(tiny_cfg):
  """Per pixel, the first object hit and its distance against mujoco.mj_ray on the scene's own MJCF.

  Boxes and spheres only: MuJoCo's cylinders are the physics prism, ours are analytic.
  """
  tiny_cfg.height = tiny_cfg.width = 40
  tiny_cfg.scene.shapes = ("box", "sphere")
  checked = 0
  for seed in range(3):
    s = scenes.sample_scene(seed, tiny_cfg)
    _, ids, depth = _render_still(s, tiny_cfg)
    model = mujoco.MjModel.from_xml_string(mjcf.scene_xml(s, tiny_cfg))
    data = mujoco.MjData(model)
    n = s.num_objects
    data.qpos[:] = np.concatenate([s.position[:n], scenes.yaw_quat(s.yaw_rad[:n])], 1).ravel()
    mujoco.mj_forward(model, data)
    obj_of_geom = {mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"geom{k}"): k + 1 for k in range(s.num_objects)}
    fx, fy, cx, cy = s.camera.intrinsics
    mismatch = 0
    for v in range(40):
      for u in range(40):
        d_cam = np.array([(u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1.0])
        vec = s.camera.rotation.T @ (d_cam / np.linalg.norm(d_cam))
        geom = np.zeros(1, np.int32)
        dist = mujoco.mj_ray(model, data, s.camera.position.astype(float), vec, None, 1, -1, geom)
        mj_id = obj_of_geom.get(int(geom[0]), 0)
        mismatch += mj_id != ids[v, u]
        if mj_id and mj_id == ids[v, u]:
          ours = depth[v, u] * np.linalg.norm(d_cam)
          assert abs(ours - dist) < 1e-3, (seed, u, v, ours, dist)
          checked += 1
    assert mismatch <= 0.01 * 40 * 40, mismatch  # silhouette edges may round either way
  assert checked > 50


def test_render_is_deterministic_and_shaded(tiny_cfg):
  s = scenes.sample_scene(2, tiny_cfg)
  a = _render_still(s, tiny_cfg)
  b = _render_still(s, tiny_cfg)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  rgb, ids, _ = a
  # shadows and Lambert: an object's pixels are not one flat colour
  k = int(ids.max())
  assert k >= 1 and rgb[ids == k].std(0).max() > 2


def test_device_silhouettes_match_the_numpy_reference():
  """render.silhouettes (on the rendering device, batched) against truth.silhouette_centroids (numpy, per scene),
  on random ids with empty objects and frames."""
  from datagen import truth
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 5, (3, 4, 9, 11)).astype(np.uint8)  # objects 1-4 of max 6: 5 and 6 never appear
  ids[1, 2] = 0  # a frame with no object at all
  centroid, count = (np.asarray(x) for x in render.silhouettes(ids, 6))
  for b in range(3):
    want_c, want_n = truth.silhouette_centroids(ids[b], 6)
    np.testing.assert_array_equal(count[b], want_n)
    np.testing.assert_allclose(centroid[b], want_c, atol=1e-4)  # NaN where absent, on both sides


def test_rendering_in_groups_of_scenes_matches_the_whole_batch(tiny_cfg):
  """render.scenes_per_call (a lax.map over groups of scenes, uneven last group included) renders what one
  vmap over the batch renders, but for float rounding at an edge pixel."""
  batch = [scenes.sample_scene(s, tiny_cfg) for s in range(5)]
  rng = np.random.default_rng(0)
  position = np.stack([s.position for s in batch])[:, None].repeat(3, 1)
  position = position + rng.normal(0, 0.01, position.shape).astype(np.float32) * np.array([1, 1, 0], np.float32)
  quat = np.stack([scenes.yaw_quat(s.yaw_rad) for s in batch])[:, None].repeat(3, 1)
  whole = render.render(batch, position, quat, tiny_cfg)
  cfg = tiny_cfg.copy_and_resolve_references()
  cfg.render.scenes_per_call = 2
  grouped = render.render(batch, position, quat, cfg)
  rgb, ids, depth = whole
  assert len(np.unique(ids)) > 3  # objects in view
  for b in range(5):  # each scene's own video, in place
    assert (grouped[1][b] == ids[b]).mean() > 0.999
    assert np.abs(grouped[0][b].astype(int) - rgb[b]).mean() < 0.05
    assert np.abs(grouped[2][b] - depth[b]).mean() < 1e-3
  cfg.render.scenes_per_call = -1
  with pytest.raises(ValueError, match="render.scenes_per_call"):
    scenes.validate_config(cfg)
