import math

import numpy as np
import pytest

from datagen import physics
from datagen import palette, scenes, shapes


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
    radii = [shapes.by_id(k).footprint_radius(z) for k, z in zip(s.shape[:n], s.size[:n])]
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
    assert (tex.max(-1) - tex.min(-1)).max() <= 255 * palette.FLOOR_MAX_SATURATION + 2
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
    ({"physics.mjx_max_pairs": -1}, "config.physics.mjx_max_pairs: must be >= 0"),
    ({"physics.mjx_max_world_pairs": -2}, "config.physics.mjx_max_world_pairs: must be >= 0"),
    ({"physics.mjx_batch_pairs": (0.5, -1.0)}, "config.physics.mjx_batch_pairs: expected two numbers >= 0"),
    ({"physics.mjx_max_contacts": -1}, "config.physics.mjx_max_contacts: must be >= 0"),
    ({"render.supersample": 0}, "config.render.supersample"),
])
def test_bad_config_names_the_field(tiny_cfg, overrides, message):
  for field, value in overrides.items():
    section, name = field.split(".")
    tiny_cfg[section][name] = value
  with pytest.raises(ValueError, match=message.replace(".", r"\.")):
    scenes.validate_config(tiny_cfg)


def _ellipsoid() -> shapes.Shape:
  """A shape the table does not have: an upright ellipsoid, with its implementation (MuJoCo's ellipsoid
  geom; a quadric x^2/a^2 + y^2/b^2 + z^2/c^2 <= 1 for the renderer; a solid ellipsoid's inertia)."""
  import jax.numpy as jnp

  def inertia(size, mass):
    a, b, c = (float(x) for x in size)
    return mass / 5.0 * np.array([b * b + c * c, a * a + c * c, a * a + b * b])
  return shapes.Shape(
      name="ellipsoid", nouns=("egg", "ellipsoid"), verbs=("slides", "wobbles"), rolls=False, turns=True,
      size_fields=("ellipsoid_half_m",), sample_size=lambda rng, s: rng.uniform(*s.ellipsoid_half_m, size=3),
      max_radius=lambda s: s.ellipsoid_half_m[1], footprint_radius=lambda size: float(max(size[0], size[1])),
      inertia=inertia,
      geom_xml=lambda common, size, mesh: f'{common} type="ellipsoid" size="{" ".join(f"{float(v):.9g}" for v in size)}"',
      geom_size=lambda size: np.asarray(size, np.float64), rbound=lambda size: float(np.max(size)),
      solid=lambda size: (1.0 / size ** 2, jnp.ones_like(size[:, 0]), jnp.full_like(size, jnp.inf)))


def test_a_registered_shape_goes_through_every_stage(tiny_cfg):
  """One new entry in the shape table (plus its implementation) is all a new shape takes: the sampler, the
  physics, the renderer, the truth and the captions use it; a new model's vocabulary has its words; a
  checkpoint made before it loads and says that its vocabulary lacks them."""
  import warnings
  from configs import model as model_configs
  from datagen import captions, engine
  from kinemask_jax.store import models
  shape_id = shapes.register(_ellipsoid())
  try:
    cfg = tiny_cfg.copy_and_resolve_references()
    cfg.scene.shapes = ("ellipsoid", "box")
    cfg.scene.ellipsoid_half_m = (0.03, 0.045)
    scenes.validate_config(cfg)
    scene = next(s for s in (scenes.sample_scene(seed, cfg) for seed in range(20))
                 if s.shape[0] == shape_id and s.moving_at_start[0])
    assert set(scene.shape[:scene.num_objects]) <= {shape_id, shapes.BOX}
    assert scene.yaw_rad[0] != 0.0  # it turns: placed at a random yaw, as its entry says
    example = engine.simulate([scene], cfg, "c")[0]
    # Physics: it rests on the table (its centre stays at its half-height c until something moves it).
    assert abs(example["position"][0, 0, 2] - scene.size[0, 2]) < 2e-3
    # Render: it shows, and the truth's silhouette centroid is its pixels'.
    pixels = example["instance_ids"][0] == 1
    assert pixels.sum() > 4
    ys, xs = np.nonzero(pixels)
    np.testing.assert_allclose(example["centroid_px"][0, 0], [xs.mean() + 0.5, ys.mean() + 0.5], atol=1e-3)
    # Captions name it with its own nouns and verbs, and parse back.
    caption = example["caption"]
    names = palette.color_names(scene.color[:scene.num_objects])
    words = captions.words(caption)
    assert words[words.index(names[0]) + 1] in ("egg", "ellipsoid"), caption  # the mover, named by its entry
    assert captions.parse_caption(caption, names).mover == 0
    # A new model's vocabulary has its words; the shipped model's lacks them: it loads and says so.
    assert {"egg", "wobbles"} <= set(model_configs.get_config("tiny").model.text.vocabulary)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      models.load_pretrained("tiny")
    assert any("lacks ['egg', 'ellipsoid', 'wobbles']" in str(w.message) for w in caught), [str(w.message) for w in caught]
  finally:
    shapes.unregister("ellipsoid")
  assert "egg" not in captions.phrases()
  with pytest.raises(Exception, match="unknown shape 'ellipsoid'"):
    scenes.validate_config(cfg)
