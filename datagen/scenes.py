"""Scene sampler: one integer seed -> one rigid-body scene (objects, initial motion, table, camera).

Everything is padded to `scene.max_objects` so that scenes batch; `num_objects` says how many are real.
World frame: z up, table top at z = 0, camera on the -y side looking towards +y and down.
Camera frame (OpenCV): x right, y down, z forward.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections
import numpy as np

from datagen import cli
from datagen import palette
from datagen import shapes as shapes_lib



@dataclasses.dataclass(frozen=True)
class Camera:
  """Pinhole camera. `rotation` maps world to camera (rows: right, down, forward)."""
  position: np.ndarray  # [3] world, metres
  rotation: np.ndarray  # [3,3]
  intrinsics: np.ndarray  # [4] fx, fy, cx, cy in pixels

  @property
  def translation(self) -> np.ndarray:
    """t of x_cam = R x_world + t."""
    return -self.rotation @ self.position

  @property
  def extrinsics(self) -> np.ndarray:
    """[3,4] world-to-camera matrix [R | t]."""
    return np.concatenate([self.rotation, self.translation[:, None]], axis=1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Scene:
  """A sampled scene; per-object arrays are padded to max_objects (pad rows are zero)."""
  seed: int
  num_objects: int
  shape: np.ndarray  # int32 [N] shape ids (datagen/shapes.py)
  size: np.ndarray  # float32 [N,3] half-extents in the body frame (sphere: r,r,r; cylinder: r,r,h)
  color: np.ndarray  # uint8 [N,3]
  color_name: tuple[str, ...]  # [num_objects]
  mass_kg: np.ndarray  # float32 [N]
  friction: np.ndarray  # float32 [N]
  position: np.ndarray  # float32 [N,3] initial centre, world
  yaw_rad: np.ndarray  # float32 [N] initial rotation about z
  velocity_mps: np.ndarray  # float32 [N,3] initial linear velocity, world
  angular_velocity_rps: np.ndarray  # float32 [N,3] initial angular velocity, world
  moving_at_start: np.ndarray  # bool [N] the controlled objects
  table_half_m: np.ndarray  # float32 [2]
  table_height_m: float
  floor_texture: np.ndarray  # uint8 [G,G,3] tile colours, G = max floor tiles
  tile_m: float  # tile edge length on the table top
  camera: Camera

  @property
  def valid(self) -> np.ndarray:
    """bool [N]: which object slots are real."""
    return np.arange(self.shape.shape[0]) < self.num_objects


def with_pushes(scene: Scene, velocities_mps: dict[int, np.ndarray]) -> Scene:
  """The scene with exactly the objects k of `velocities_mps` set moving at the given world velocity (its
  horizontal part: objects start on the table), spheres rolling without slipping; every other object still.
  At least one object is pushed (the data contract's captions describe a mover)."""
  if not velocities_mps:
    raise ValueError("with_pushes: push at least one object")
  velocity = np.zeros_like(scene.velocity_mps)
  angular = np.zeros_like(scene.angular_velocity_rps)
  moving = np.zeros_like(scene.moving_at_start)
  for k, v in velocities_mps.items():
    if not 0 <= k < scene.num_objects:
      raise ValueError(f"object {k}: the scene has objects 0..{scene.num_objects - 1}")
    velocity[k, :2] = np.asarray(v, np.float32)[:2]
    moving[k] = True
    if shapes_lib.by_id(scene.shape[k]).rolls:
      angular[k] = np.cross([0.0, 0.0, 1.0], velocity[k]) / scene.size[k, 0]
  return dataclasses.replace(scene, velocity_mps=velocity, angular_velocity_rps=angular, moving_at_start=moving)


def yaw_quat(yaw_rad) -> np.ndarray:
  """Quaternions (w, x, y, z) [..., 4] of rotations by yaw_rad [...] about the world z axis."""
  yaw_rad = np.asarray(yaw_rad, np.float64)
  zero = np.zeros_like(yaw_rad)
  return np.stack([np.cos(yaw_rad / 2), zero, zero, np.sin(yaw_rad / 2)], -1)


def validate_config(cfg: ml_collections.ConfigDict, prefix: str = "config.") -> None:
  """Raises cli.ConfigError (a ValueError) naming the offending field (`prefix` + its path: "config.data." for
  the data section of a training config); call before any work starts."""
  s = cfg.scene

  def fail(field, msg):
    raise cli.ConfigError(f"{prefix}{field}: {msg}")

  def check_range(field, lo_min=0.0, strict=True):
    value = s[field]
    if len(value) != 2:
      fail(f"scene.{field}", f"expected (min, max), got {value!r}")
    lo, hi = value
    if not (lo > lo_min if strict else lo >= lo_min) or hi < lo:
      fail(f"scene.{field}", f"expected {lo_min} {'<' if strict else '<='} min <= max, got {value!r}")

  for field in ("num_frames", "height", "width", "batch_size"):
    if int(cfg[field]) < 1:
      fail(field, f"must be >= 1, got {cfg[field]!r}")
  if cfg.fps <= 0:
    fail("fps", f"must be > 0, got {cfg.fps!r}")
  if s.min_objects < 2:
    fail("scene.min_objects", f"a scene needs at least 2 objects (one to push, one to hit), got {s.min_objects}")
  if s.max_objects < s.min_objects:
    fail("scene.max_objects", f"must be >= scene.min_objects={s.min_objects}, got {s.max_objects}")
  if s.max_objects > 254:
    fail("scene.max_objects", f"instance ids are uint8, got {s.max_objects}")
  if not s.shapes:
    fail("scene.shapes", "at least one shape is needed")
  for shape in s.shapes:
    if shape not in shapes_lib.SHAPES:
      fail("scene.shapes", f"unknown shape {shape!r}; expected some of {shapes_lib.names()}")
  if s.max_objects > len(palette.PALETTE):
    fail("scene.max_objects", f"colours must be distinct and the palette has {len(palette.PALETTE)}, got {s.max_objects}")
  if not 1 <= s.max_controlled < s.min_objects:
    fail("scene.max_controlled", f"must be in [1, scene.min_objects - 1 = {s.min_objects - 1}], got {s.max_controlled}")
  size_fields = [f for name in s.shapes for f in shapes_lib.SHAPES[name].size_fields]
  for field in (*dict.fromkeys(size_fields), "mass_kg", "speed_mps", "camera_distance_m", "camera_elevation_deg"):
    if field not in s:
      fail(f"scene.{field}", "missing: the shapes of scene.shapes read it")
    check_range(field)
  check_range("friction", strict=False)
  check_range("floor_tiles")
  if not 0.0 <= s.aim_fraction <= 1.0:
    fail("scene.aim_fraction", f"must be in [0, 1], got {s.aim_fraction}")
  lo, hi = s.camera_elevation_deg
  if hi >= 90:
    fail("scene.camera_elevation_deg", f"must stay below 90 degrees, got {s.camera_elevation_deg}")
  if s.min_gap_m < 0:
    fail("scene.min_gap_m", f"must be >= 0, got {s.min_gap_m}")
  if s.placement_half_m <= 0:
    fail("scene.placement_half_m", f"must be > 0, got {s.placement_half_m}")
  rho_max = max(shapes_lib.SHAPES[shape].max_radius(s) for shape in s.shapes)
  if s.placement_half_m + rho_max > min(s.table_half_m):
    fail("scene.placement_half_m", f"objects placed within {s.placement_half_m} m of the centre (plus their "
         f"radius {rho_max:.3f} m) would overhang the table, scene.table_half_m={tuple(s.table_half_m)}")
  # Random sequential placement of discs jams near 55% cover; stay well below it.
  disc_area = s.max_objects * math.pi * (rho_max + s.min_gap_m / 2) ** 2
  region_area = (2 * (s.placement_half_m + rho_max)) ** 2
  if disc_area > 0.5 * region_area:
    fail("scene.max_objects", f"{s.max_objects} objects of up to {rho_max:.3f} m radius cannot be placed "
         f"without overlap in scene.placement_half_m={s.placement_half_m} (cover {disc_area / region_area:.0%} "
         "> 50%); lower the count or sizes, or enlarge the area")
  if cfg.render.supersample < 1:
    fail("render.supersample", f"must be >= 1, got {cfg.render.supersample}")
  if cfg.physics.timestep_s <= 0:
    fail("physics.timestep_s", f"must be > 0 seconds, got {cfg.physics.timestep_s!r}")
  steps = 1.0 / (cfg.fps * cfg.physics.timestep_s)
  if abs(steps - round(steps)) > 1e-6 or round(steps) < 10:
    fail("physics.timestep_s", f"the frame interval 1/fps must be a whole number >= 10 of physics steps, got "
         f"{steps:.3f} steps of {cfg.physics.timestep_s} s")
  if cfg.physics.backend not in ("auto", "c", "mjx"):
    fail("physics.backend", f"expected 'auto', 'c' or 'mjx', got {cfg.physics.backend!r}")
  if not 3 <= cfg.physics.cylinder_sides <= 15:
    fail("physics.cylinder_sides", f"must be in [3, 15] (fewer than 32 mesh vertices), got {cfg.physics.cylinder_sides}")
  for field in ("solver_iterations", "ls_iterations", "threads"):
    if int(cfg.physics[field]) < 1:
      fail(f"physics.{field}", f"must be >= 1, got {cfg.physics[field]!r}")
  # All but the first: absent from configs stored before them.
  for field, zero in (("mjx_max_pairs", "collide every pair"), ("mjx_max_world_pairs", "collide every pair"),
                      ("mjx_max_contacts", "keep every contact")):
    if int(cfg.physics.get(field, 0)) < 0:
      fail(f"physics.{field}", f"must be >= 0 (0: {zero}), got {cfg.physics[field]!r}")
  budget = tuple(cfg.physics.get("mjx_batch_pairs", (0.0, 0.0)))
  if len(budget) != 2 or min(budget) < 0:
    fail("physics.mjx_batch_pairs", f"expected two numbers >= 0 (between objects, with the world; 0: every kept "
         f"pair), got {cfg.physics.mjx_batch_pairs!r}")
  for field in ("validation_fraction", "test_fraction"):
    if not 0.0 <= cfg[field] <= 1.0:
      fail(field, f"must be in [0, 1] (a share of --num), got {cfg[field]!r}")
  if not 0.0 <= cfg.render.ambient <= 1.0:
    fail("render.ambient", f"must be in [0, 1], got {cfg.render.ambient!r}")
  if int(cfg.render.get("scenes_per_call", 0)) < 0:
    fail("render.scenes_per_call", f"must be >= 0 (0: the whole batch), got {cfg.render.scenes_per_call!r}")
  if cfg.render.far_m <= 0:
    fail("render.far_m", f"must be > 0, got {cfg.render.far_m!r}")


def _place(rng: np.random.Generator, s, radii: np.ndarray) -> np.ndarray | None:
  """Non-overlapping xy centres for discs of `radii`, or None if random placement got stuck."""
  centres = []
  for rho in radii:
    for _ in range(200):
      xy = rng.uniform(-s.placement_half_m, s.placement_half_m, size=2)
      if all(np.linalg.norm(xy - c) >= rho + r + s.min_gap_m for c, r in zip(centres, radii)):
        centres.append(xy)
        break
    else:
      return None
  return np.array(centres)


def _floor_texture(rng: np.random.Generator, grid: int, tiles: int) -> np.ndarray:
  """Desaturated tile colours: a two-colour checkerboard or random tiles."""
  def muted(n):
    hue = rng.uniform(0, 1, n)
    sat = rng.uniform(0.0, palette.FLOOR_MAX_SATURATION, n)
    val = rng.uniform(0.35, 0.9, n)
    return _hsv_to_rgb(hue, sat, val)

  texture = np.zeros((grid, grid, 3), np.uint8)
  if rng.random() < 0.5:
    a, b = muted(2)
    if abs(int(a.mean()) - int(b.mean())) < 40:  # keep the checkerboard visible
      b = np.clip(a.astype(int) + (70 if a.mean() < 128 else -70), 0, 255).astype(np.uint8)
    ii, jj = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    texture[:] = np.where(((ii + jj) % 2 == 0)[..., None], a, b)
  else:
    base = muted(4)
    texture[:] = base[rng.integers(0, 4, size=(grid, grid))]
  return texture


def _hsv_to_rgb(h, s, v) -> np.ndarray:
  i = np.floor(h * 6).astype(int) % 6
  f = h * 6 - np.floor(h * 6)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  r = np.choose(i, [v, q, p, p, t, v])
  g = np.choose(i, [t, v, v, q, p, p])
  b = np.choose(i, [p, p, t, v, v, q])
  return np.round(np.stack([r, g, b], -1) * 255).astype(np.uint8)


def focal_length_px(width: int, fov_deg: float) -> float:
  """The pinhole focal length in pixels of an image `width` pixels wide with horizontal field of view fov_deg."""
  return (width / 2) / math.tan(math.radians(fov_deg) / 2)


def _camera(rng: np.random.Generator, s, height: int, width: int) -> Camera:
  elevation = math.radians(rng.uniform(*s.camera_elevation_deg))
  azimuth = math.radians(-90.0 + rng.uniform(-1, 1) * s.camera_azimuth_jitter_deg)
  distance = rng.uniform(*s.camera_distance_m)
  target = np.array([*rng.uniform(-1, 1, 2) * s.camera_target_jitter_m, 0.0])
  position = target + distance * np.array([
      math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
  forward = (target - position) / np.linalg.norm(target - position)
  right = np.cross(forward, [0.0, 0.0, 1.0])
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  focal = focal_length_px(width, s.camera_fov_deg)
  return Camera(position=position.astype(np.float32),
                rotation=np.stack([right, down, forward]).astype(np.float32),
                intrinsics=np.array([focal, focal, width / 2, height / 2], np.float32))


def sample_scene(seed: int, cfg: ml_collections.ConfigDict) -> Scene:
  """Samples the scene of `seed` (deterministic: same seed and config, same scene).

  Raises RuntimeError if the objects cannot be placed without overlap (validate_config rules out
  configs where this is likely).
  """
  s = cfg.scene
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x4B4D]))  # "KM": scene stream
  n_max = s.max_objects
  allowed = np.array([shapes_lib.id_of(x) for x in s.shapes])
  for _ in range(100):
    n = int(rng.integers(s.min_objects, s.max_objects + 1))
    shape = rng.choice(allowed, size=n)
    size = np.stack([shapes_lib.by_id(k).sample_size(rng, s) for k in shape])
    radii = np.array([shapes_lib.by_id(k).footprint_radius(z) for k, z in zip(shape, size)])
    xy = _place(rng, s, radii)
    if xy is not None:
      break
  else:
    raise RuntimeError(f"seed {seed}: could not place objects without overlap; enlarge "
                       f"config.scene.placement_half_m or lower config.scene.max_objects")

  colour_idx = rng.choice(len(palette.PALETTE), size=n, replace=False)
  jitter = rng.integers(-palette.COLOR_JITTER, palette.COLOR_JITTER + 1, size=(n, 3))
  color = np.clip(palette.rgb()[colour_idx].astype(np.int64) + jitter, 0, 255)
  yaw = np.where([shapes_lib.by_id(k).turns for k in shape], rng.uniform(-math.pi, math.pi, n), 0.0)
  position = np.concatenate([xy, size[:, 2:3] + 1e-4], axis=1)  # resting on the table top

  n_ctrl = int(rng.integers(1, min(s.max_controlled, n - 1) + 1))
  controlled = np.zeros(n, bool)
  controlled[rng.choice(n, size=n_ctrl, replace=False)] = True
  velocity = np.zeros((n, 3))
  angular = np.zeros((n, 3))
  for i in np.flatnonzero(controlled):
    targets = np.flatnonzero(~controlled)
    if rng.random() < s.aim_fraction:
      to = xy[rng.choice(targets)] - xy[i]
      heading = math.atan2(to[1], to[0]) + math.radians(rng.normal(0, s.aim_jitter_deg))
    else:
      heading = rng.uniform(-math.pi, math.pi)
    speed = rng.uniform(*s.speed_mps)
    velocity[i, :2] = speed * np.array([math.cos(heading), math.sin(heading)])
    if shapes_lib.by_id(shape[i]).rolls:  # start rolling without slipping: w x (0,0,-r) + v = 0
      angular[i] = np.cross([0.0, 0.0, 1.0], velocity[i]) / size[i, 0]

  tiles = int(rng.integers(s.floor_tiles[0], s.floor_tiles[1] + 1))
  grid = int(s.floor_tiles[1])
  texture = _floor_texture(rng, grid, tiles)
  camera = _camera(rng, s, cfg.height, cfg.width)

  def pad(a, dtype):
    out = np.zeros((n_max,) + a.shape[1:], dtype)
    out[:n] = a
    return out

  return Scene(
      seed=int(seed), num_objects=n, shape=pad(shape, np.int32), size=pad(size, np.float32),
      color=pad(color, np.uint8), color_name=tuple(palette.NAMES[i] for i in colour_idx),
      mass_kg=pad(rng.uniform(*s.mass_kg, size=n), np.float32),
      friction=pad(rng.uniform(*s.friction, size=n), np.float32),
      position=pad(position, np.float32), yaw_rad=pad(yaw, np.float32),
      velocity_mps=pad(velocity, np.float32), angular_velocity_rps=pad(angular, np.float32),
      moving_at_start=pad(controlled, bool),
      table_half_m=np.asarray(s.table_half_m, np.float32), table_height_m=float(s.table_height_m),
      floor_texture=texture, tile_m=float(2 * s.table_half_m[0] / tiles), camera=camera)
