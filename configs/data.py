"""Data-engine configs: `get_config("tiny" | "small" | "base")`.

Every number the data engine uses lives here. Override any field on the command line, e.g.
`--config.scene.max_objects=4`.
"""

import ml_collections

# (num_frames, height, width, scenes per engine batch, train examples of the size's dataset)
_SIZES = {
    "tiny": (8, 32, 32, 64, 2048),
    "small": (16, 64, 64, 64, 16384),
    "base": (24, 128, 128, 16, 8192),
}
SIZES = tuple(_SIZES)


def num_train(arg: str) -> int:
  """Train examples of the size's dataset: what a training run generates when it is missing, and what
  `tfds build` makes (datagen/kinemask_synth.py's registered configs)."""
  return _SIZES[arg][4]


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
  """Returns the data config for size `arg` (tiny 8x32x32, small 16x64x64, base 24x128x128)."""
  if arg not in _SIZES:
    raise ValueError(f"configs/data.py: unknown size {arg!r}; expected one of {sorted(_SIZES)}")
  num_frames, height, width, batch, _ = _SIZES[arg]
  c = ml_collections.ConfigDict()
  c.name = arg
  c.num_frames = num_frames
  c.height = height
  c.width = width
  c.fps = 8.0
  c.with_depth = True
  c.batch_size = batch  # scenes simulated and rendered together
  # Fraction of --num added as validation and test examples (each at least 1).
  c.validation_fraction = 0.1
  c.test_fraction = 0.1

  c.scene = ml_collections.ConfigDict()
  c.scene.min_objects = 2
  c.scene.max_objects = 6
  c.scene.shapes = ("box", "sphere", "cylinder")
  # Half-extents in metres: boxes per axis, spheres radius, cylinders (radius, half-height).
  c.scene.box_half_m = (0.03, 0.055)
  c.scene.sphere_radius_m = (0.03, 0.05)
  c.scene.cylinder_radius_m = (0.03, 0.05)
  c.scene.cylinder_half_height_m = (0.03, 0.07)
  c.scene.mass_kg = (0.2, 2.0)
  c.scene.friction = (0.15, 0.45)
  c.scene.max_controlled = 1
  c.scene.speed_mps = (0.8, 2.0)
  c.scene.aim_fraction = 0.85  # share of controlled objects aimed at another object
  c.scene.aim_jitter_deg = 6.0
  c.scene.placement_half_m = 0.26  # objects start in this square around the table centre
  c.scene.min_gap_m = 0.02  # clearance between bounding circles at the start
  c.scene.table_half_m = (0.5, 0.42)  # table top half-size (x, y)
  c.scene.table_height_m = 0.75
  c.scene.floor_tiles = (4, 10)  # tiles across the table, checkerboard or random tiles
  c.scene.camera_elevation_deg = (30.0, 50.0)
  c.scene.camera_distance_m = (0.85, 1.0)
  c.scene.camera_azimuth_jitter_deg = 6.0
  c.scene.camera_target_jitter_m = 0.03
  c.scene.camera_fov_deg = 50.0

  c.physics = ml_collections.ConfigDict()
  c.physics.backend = "auto"  # "c" (MuJoCo C, CPU), "mjx" (JAX), "auto": mjx on GPU/TPU, c on CPU
  c.physics.timestep_s = 0.0025  # 50 steps per frame at 8 fps
  c.physics.solver_iterations = 8
  c.physics.ls_iterations = 8
  c.physics.cylinder_sides = 14  # convex-mesh cylinders: 28 vertices (< 32, see physics.py)
  c.physics.threads = 2  # MuJoCo C rollout threads
  # MJX (datagen/mjx_collision.py): pairs collided per collision function, scene and step, the nearest; a
  # scene that ever has more within reach is simulated again with MuJoCo C. 0: every pair.
  c.physics.mjx_max_pairs = 4  # between objects; measured here: at most 3 within reach in 64 small scenes
  c.physics.mjx_max_world_pairs = 4  # with the table and the ground; at most 4 in 32 small scenes
  # Under vmap (accelerators), pairs within reach collided per collision function and step, per scene on
  # average over the batch (between objects, with the world); a scene left out is simulated with MuJoCo C.
  # 0: every kept pair. Measured over 32 small scenes: 0.1-0.3 and 1.2-1.6 within reach per scene and step.
  c.physics.mjx_batch_pairs = (0.75, 2.5)
  # Contacts the constraint solver gets per scene and step, the deepest; a scene in which all of them touch
  # is simulated with MuJoCo C. 0: every contact the collision emits (small: 107). Measured here: at most 25
  # touching at once over 64 small scenes.
  c.physics.mjx_max_contacts = 32

  c.render = ml_collections.ConfigDict()
  c.render.supersample = 1  # s x s rays per pixel for RGB
  c.render.ambient = 0.35
  c.render.light_dir = (-0.45, -0.35, 0.82)  # towards the light, world frame
  c.render.shadows = True
  c.render.ground_rgb = (70, 70, 76)
  c.render.table_side_rgb = (120, 88, 60)
  c.render.sky_rgb = (200, 205, 215)
  c.render.far_m = 50.0  # depth stored for rays that hit nothing
  # Scenes rendered at once inside one engine batch (the rest of the batch waits in a lax.map): 0 the whole
  # batch. How, not what (a dataset does not record it); a pixel at an edge may come out different. On a
  # 2-core CPU 4 renders small videos about 1.5-1.9x faster than 0 and the whole engine runs 1.7x (the batch's
  # [rays x solids] intermediates stay small; README "Data-engine benchmark"); on an accelerator keep 0.
  c.render.scenes_per_call = 0
  return c
