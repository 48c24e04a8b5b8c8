import math

import numpy as np
import pytest

from datagen import physics
from datagen import scenes


def test_same_seed_same_scene(tiny_cfg):
  a, b, c = scenes.sample_scene(7, tiny_cfg), scenes.sample_scene(7, tiny_cfg), scenes.sample_scene(8, tiny_cfg)
  for field in ("shape", "size", "color", "position", "velocity_mps", "floor_texture"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  assert not np.array_equal(a.position, c.position)


def test_scene_invariants(tiny_cfg):
  s_cfg = tiny_cfg.scene
  for seed in range(150):
    s = scenes.sample_scene(seed, tiny_cfg)
    n = s.num_objects
    assert s_cfg.min_objects <= n <= s_cfg.max_objects
    assert len(set(s.color_name)) == n, "colours must be distinct"
    radii = [scenes.bounding_radius(k, z) for k, z in zip(s.shape[:n], s.size[:n])]
    for i in range(n):
      for j in range(i + 1, n):
        gap = np.linalg.norm(s.position[i, :2] - s.position[j, :2]) - radii[i] - radii[j]
        assert gap >= s_cfg.min_gap_m - 1e-6, f"seed {seed}: objects {i},{j} start overlapping"
    np.testing.assert_allclose(s.position[:n, 2], s.size[:n, 2] + 1e-4, atol=1e-6)  # resting on the table
    assert 1 <= s.moving_at_start.sum() <= s_cfg.max_controlled
    speed = np.linalg.norm(s.velocity_mps[s.moving_at_start], axis=-1)
    assert np.all((speed >= s_cfg.speed_mps[0] - 1e-6) & (speed <= s_cfg.speed_mps[1] + 1e-6))
    assert np.all(s.velocity_mps[:, 2] == 0) and np.all(s.velocity_mps[~s.moving_at_start] == 0)
    forward = s.camera.rotation[2]
    elevation = math.degrees(math.asin(-forward[2]))
    assert 30 - 1e-3 <= elevation <= 50 + 1e-3
    # floor colours stay desaturated, object colours saturated: the tracker can tell them apart
    tex = s.floor_texture.astype(float)
    assert (tex.max(-1) - tex.min(-1)).max() <= 255 * scenes.FLOOR_MAX_SATURATION + 2
    obj = s.color[:n].astype(float)
    assert ((obj.max(-1) - obj.min(-1)) / np.maximum(obj.max(-1), 1)).min() > 0.35


def test_most_videos_contain_a_collision(tiny_cfg):
  batch = [scenes.sample_scene(seed, tiny_cfg) for seed in range(64)]
  traj = physics.rollout_c(batch, tiny_cfg)
  collided = traj.contact.any((1, 2, 3))
  assert collided.mean() >= 0.6, collided.mean()


@pytest.mark.parametrize("overrides,message", [
    ({"scene.min_objects": 0}, "config.scene.min_objects"),
    ({"scene.speed_mps": (-1.0, 1.0)}, "config.scene.speed_mps"),
    ({"scene.shapes": ("box", "torus")}, "config.scene.shapes"),
    ({"scene.max_objects": 9, "scene.placement_half_m": 0.12}, "config.scene.max_objects"),  # no room
    ({"scene.placement_half_m": 0.6}, "config.scene.placement_half_m"),
    ({"physics.timestep_s": 0.003}, "config.physics.timestep_s"),
    ({"physics.timestep_s": 0.0}, "config.physics.timestep_s: must be > 0"),
    ({"physics.solver_iterations": 0}, "config.physics.solver_iterations"),
    ({"render.supersample": 0}, "config.render.supersample"),
])
def test_bad_config_names_the_field(tiny_cfg, overrides, message):
  for field, value in overrides.items():
    section, name = field.split(".")
    tiny_cfg[section][name] = value
  with pytest.raises(ValueError, match=message.replace(".", r"\.")):
    scenes.validate_config(tiny_cfg)
