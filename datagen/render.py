"""Pure-JAX ray-casting renderer: RGB, instance ids and depth, jit + vmap over frames and scenes.

Each pixel casts one ray (s x s for supersampled RGB) against the objects, the table and the ground;
the nearest hit gives the instance id, the depth and the colour (Lambert + ambient, with a shadow ray
towards a directional light). No OpenGL.

Every solid is the intersection of a quadric and three slabs in its own frame, which covers all shapes
with one branch-free code path; each shape's entry in the shape table (datagen/shapes.py) gives its own:
  sphere   sum(x^2) <= r^2,            no slabs
  cylinder x^2 + y^2 <= r^2,           |z| <= h          (analytic; physics uses a 14-sided prism)
  box      no quadric,                 |x|,|y|,|z| <= half-extents
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from datagen import scenes as scenes_lib
from datagen import shapes as shapes_lib

_EPS = 1e-4
_INF = jnp.inf


def quat_to_matrix(q: jax.Array) -> jax.Array:
  """(w, x, y, z) [..., 4] -> rotation matrices [..., 3, 3] (body to world)."""
  q = q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
  w, x, y, z = jnp.moveaxis(q, -1, 0)
  return jnp.stack([
      jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
      jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
      jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
  ], -2)


def solid_params(shape: jax.Array, size: jax.Array, table: tuple[str, ...] | None = None
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Quadric coefficients a [N,3], quadric radius^2 [N] and slab half-extents [N,3] (inf: none) of solids of
  shape ids [N] and sizes [N,3]: every shape's `solid` of the table (names `table`, default all), picked
  per solid."""
  entries = [shapes_lib.SHAPES[name] for name in (table or shapes_lib.names())]
  a, r2, slab = (jnp.stack(x) for x in zip(*(e.solid(size) for e in entries)))  # [S,N,...]
  pick = lambda x: jnp.take_along_axis(x, shape.astype(jnp.int32).reshape((1, -1) + (1,) * (x.ndim - 2)), 0)[0]
  return pick(a), pick(r2), pick(slab)


def _to_local(v, rotation):
  """[R,N,3] world vectors -> each solid's frame, as fused elementwise products (v @ rotation per solid)."""
  return sum(v[..., k:k + 1] * rotation[None, :, k, :] for k in range(3))


def intersect(origin, direction, centre, rotation, a, r2, slab, valid):
  """Entry distance of rays into solids.

  origin, direction: [R,3] world; centre [N,3], rotation [N,3,3] (body to world), a/r2/slab from
  `solid_params`, valid [N]. Returns t [R,N] (inf on a miss).
  """
  o = _to_local(origin[:, None, :] - centre[None], rotation)
  d = _to_local(jnp.broadcast_to(direction[:, None, :], o.shape), rotation)
  qa = jnp.sum(a * d * d, -1)
  qb = 2 * jnp.sum(a * o * d, -1)
  qc = jnp.sum(a * o * o, -1) - r2
  disc = qb * qb - 4 * qa * qc
  has_q = qa > 1e-12
  sq = jnp.sqrt(jnp.maximum(disc, 0.0))
  safe_a = jnp.where(has_q, qa, 1.0)
  tq0 = jnp.where(has_q, (-qb - sq) / (2 * safe_a), jnp.where(qc <= 0, -_INF, _INF))
  tq1 = jnp.where(has_q, (-qb + sq) / (2 * safe_a), jnp.where(qc <= 0, _INF, -_INF))
  q_ok = ~has_q | (disc >= 0)
  inv = 1.0 / jnp.where(jnp.abs(d) < 1e-12, 1e-12, d)
  t1, t2 = (-slab - o) * inv, (slab - o) * inv
  t_in = jnp.maximum(tq0, jnp.max(jnp.minimum(t1, t2), -1))
  t_out = jnp.minimum(tq1, jnp.min(jnp.maximum(t1, t2), -1))
  hit = q_ok & (t_in <= t_out) & (t_in > _EPS) & valid[None]
  return jnp.where(hit, t_in, _INF)


def surface_normal(point, centre, rotation, a, r2, slab):
  """World normal [R,3] at surface points [R,3], one solid per ray (centre [R,3], rotation [R,3,3],
  a [R,3], r2 [R], slab [R,3]): the quadric's gradient or the normal of the slab face the point is on,
  whichever constraint the point lies closest to (relative to the solid's size)."""
  p = jnp.einsum("rk,rkj->rj", point - centre, rotation)
  with_slab = jnp.isfinite(slab)
  slab_gap = jnp.where(with_slab, (slab - jnp.abs(p)) / jnp.where(with_slab, slab, 1.0), _INF)
  has_q = jnp.sum(a, -1) > 0
  q_gap = jnp.where(has_q, 1.0 - jnp.sqrt(jnp.sum(a * p * p, -1) / r2), _INF)
  n_slab = jax.nn.one_hot(jnp.argmin(slab_gap, -1), 3) * jnp.sign(p)
  n_local = jnp.where((q_gap <= jnp.min(slab_gap, -1))[:, None], a * p, n_slab)
  n_local = n_local / jnp.maximum(jnp.linalg.norm(n_local, axis=-1, keepdims=True), 1e-12)
  return jnp.einsum("rj,rkj->rk", n_local, rotation)


@dataclasses.dataclass(frozen=True)
class Settings:
  """Static render settings (hashable: a jit static argument)."""
  height: int
  width: int
  supersample: int
  ambient: float
  light_dir: tuple[float, float, float]
  shadows: bool
  ground_rgb: tuple[int, int, int]
  table_side_rgb: tuple[int, int, int]
  sky_rgb: tuple[int, int, int]
  far_m: float
  shapes: tuple[str, ...]  # the shape table's names when the settings were made (a compile sees them all)
  scenes_per_call: int = 0  # scenes rendered at once (lax.map over the rest); 0: the whole batch

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict) -> "Settings":
    r = cfg.render
    return cls(int(cfg.height), int(cfg.width), int(r.supersample), float(r.ambient),
               tuple(float(x) for x in r.light_dir), bool(r.shadows), tuple(r.ground_rgb),
               tuple(r.table_side_rgb), tuple(r.sky_rgb), float(r.far_m), shapes_lib.names(),
               int(r.get("scenes_per_call", 0)))


def camera_rays(rotation, position, intrinsics, height: int, width: int, supersample: int = 1):
  """World rays through (sub)pixel centres.

  Returns origins [R,3], unit directions [R,3] and depth_per_t [R] (camera z per unit ray length),
  R = height*s * width*s in row-major order.
  """
  s = supersample
  fx, fy, cx, cy = intrinsics[0], intrinsics[1], intrinsics[2], intrinsics[3]
  u = (jnp.arange(width * s) + 0.5) / s
  v = (jnp.arange(height * s) + 0.5) / s
  x = jnp.broadcast_to(((u - cx) / fx)[None, :], (height * s, width * s))
  y = jnp.broadcast_to(((v - cy) / fy)[:, None], (height * s, width * s))
  d_cam = jnp.stack([x, y, jnp.ones_like(x)], -1).reshape(-1, 3)
  norm = jnp.linalg.norm(d_cam, axis=-1)
  d_world = (d_cam / norm[:, None]) @ rotation  # R^T d, R maps world to camera
  return jnp.broadcast_to(position, d_world.shape), d_world, 1.0 / norm


def _solids(sc, position, quat, table: tuple[str, ...]):
  """The objects plus the table (last solid, a box), as arrays for `intersect`."""
  tx, ty = sc["table_half"][0], sc["table_half"][1]
  th = sc["table_height"]
  shape = jnp.concatenate([sc["shape"], jnp.array([shapes_lib.BOX])])
  size = jnp.concatenate([sc["size"], jnp.stack([tx, ty, th / 2])[None]])
  centre = jnp.concatenate([position, jnp.stack([0.0, 0.0, -th / 2])[None]])
  rotation = jnp.concatenate([quat_to_matrix(quat), jnp.eye(3)[None]])
  valid = jnp.concatenate([sc["valid"], jnp.array([True])])
  return (centre, rotation, *solid_params(shape, size, table), valid)


def _cast(origin, direction, solids, table_height):
  """Nearest hit: t [R], solid index [R] (n_solids for the ground, -1 for nothing), point [R,3] and
  normal [R,3] (world)."""
  t = intersect(origin, direction, *solids)
  k = jnp.argmin(t, -1)
  t_best = jnp.take_along_axis(t, k[:, None], -1)[:, 0]
  dz = direction[:, 2]
  t_ground = jnp.where(dz < -1e-9, (-table_height - origin[:, 2]) / jnp.where(dz < -1e-9, dz, -1.0), _INF)
  ground = t_ground < t_best
  t_hit = jnp.minimum(t_best, t_ground)
  point = origin + jnp.where(jnp.isfinite(t_hit), t_hit, 0.0)[:, None] * direction
  centre, rotation, a, r2, slab, _ = solids
  n_best = surface_normal(point, centre[k], rotation[k], a[k], r2[k], slab[k])  # unused where ground wins
  index = jnp.where(ground, t.shape[1], jnp.where(jnp.isfinite(t_best), k, -1))
  n_hit = jnp.where(ground[:, None], jnp.array([0.0, 0.0, 1.0]), n_best)
  return t_hit, index, point, n_hit


def _shade(sc, settings: Settings, solids, index, p, normal):
  """RGB in [0, 1] of each hit at points p (Lambert + ambient on the base colour, sky where nothing is hit)."""
  n_obj = sc["shape"].shape[0]
  table, ground = n_obj, n_obj + 1
  tile = sc["tile_m"]
  grid = sc["texture"].shape[0]
  i = jnp.clip(jnp.floor((p[:, 0] + sc["table_half"][0]) / tile).astype(jnp.int32), 0, grid - 1)
  j = jnp.clip(jnp.floor((p[:, 1] + sc["table_half"][1]) / tile).astype(jnp.int32), 0, grid - 1)
  top = normal[:, 2] > 0.5
  table_rgb = jnp.where(top[:, None], sc["texture"][i, j], jnp.array(settings.table_side_rgb) / 255.0)
  obj_rgb = sc["color"][jnp.clip(index, 0, n_obj - 1)]
  base = jnp.where((index == table)[:, None], table_rgb,
                   jnp.where((index == ground)[:, None], jnp.array(settings.ground_rgb) / 255.0, obj_rgb))
  light = jnp.array(settings.light_dir)
  light = light / jnp.linalg.norm(light)
  lambert = jnp.maximum(normal @ light, 0.0)
  if settings.shadows:
    start = p + normal * 1e-3
    t_shadow = intersect(start, jnp.broadcast_to(light, start.shape), *solids)
    lambert = jnp.where(jnp.isfinite(t_shadow).any(-1), 0.0, lambert)
  rgb = base * (settings.ambient + (1 - settings.ambient) * lambert)[:, None]
  return jnp.where((index < 0)[:, None], jnp.array(settings.sky_rgb) / 255.0, rgb)


def render_frame(sc: dict, position: jax.Array, quat: jax.Array, settings: Settings):
  """One frame. sc: per-scene arrays (see `scene_arrays`); position [N,3], quat [N,4].

  Returns rgb float [H,W,3] in [0,1], ids int32 [H,W] (0 floor/background, k = object k),
  depth float32 [H,W] (camera z in metres, far_m where nothing is hit).
  """
  h, w, s = settings.height, settings.width, settings.supersample
  solids = _solids(sc, position, quat, settings.shapes)
  cam = (sc["cam_rot"], sc["cam_pos"], sc["intrinsics"])
  origin, direction, depth_per_t = camera_rays(*cam, h, w, s)
  t, index, point, normal = _cast(origin, direction, solids, sc["table_height"])
  rgb = _shade(sc, settings, solids, index, point, normal)
  rgb = rgb.reshape(h, s, w, s, 3).mean((1, 3))
  if s > 1:  # ids and depth belong to the pixel centre
    origin, direction, depth_per_t = camera_rays(*cam, h, w, 1)
    t, index, _, _ = _cast(origin, direction, solids, sc["table_height"])
  n_obj = sc["shape"].shape[0]
  ids = jnp.where((index >= 0) & (index < n_obj), index + 1, 0).reshape(h, w)
  depth = jnp.where(jnp.isfinite(t), t * depth_per_t, settings.far_m).reshape(h, w)
  return rgb, ids, depth


@functools.partial(jax.jit, static_argnames="settings")
def render_batch(sc: dict, position: jax.Array, quat: jax.Array, settings: Settings):
  """[B] scenes x [T] frames: position [B,T,N,3], quat [B,T,N,4] -> uint8 rgb [B,T,H,W,3],
  uint8 ids [B,T,H,W], float32 depth [B,T,H,W]. `settings.scenes_per_call` scenes are rendered at once (a
  lax.map over groups of them; 0 or >= B: all B in one vmap)."""
  frame = lambda sc, p, q: render_frame(sc, p, q, settings)
  scene = lambda args: jax.vmap(frame, in_axes=(None, 0, 0))(*args)
  group = settings.scenes_per_call
  if 0 < group < position.shape[0]:
    rgb, ids, depth = jax.lax.map(scene, (sc, position, quat), batch_size=group)
  else:
    rgb, ids, depth = jax.vmap(scene)((sc, position, quat))
  rgb = jnp.round(jnp.clip(rgb, 0.0, 1.0) * 255).astype(jnp.uint8)
  return rgb, ids.astype(jnp.uint8), depth


@functools.partial(jax.jit, static_argnames="n_max")
def silhouettes(ids: jax.Array, n_max: int) -> tuple[jax.Array, jax.Array]:
  """ids uint8 [B,T,H,W] -> centroid of each object's pixels [B,T,N,2] (x, y, pixel centres at +0.5; NaN if
  absent) and pixel count int32 [B,T,N], on the device that rendered them (truth.silhouette_centroids is
  the per-scene numpy reference)."""
  h, w = ids.shape[-2:]
  ys, xs = jnp.mgrid[0:h, 0:w] + 0.5
  onehot = (ids[..., None] == jnp.arange(1, n_max + 1, dtype=ids.dtype)).astype(jnp.float32)
  count = onehot.sum((2, 3))
  cx = jnp.einsum("bthwn,hw->btn", onehot, xs) / count
  cy = jnp.einsum("bthwn,hw->btn", onehot, ys) / count
  return jnp.stack([cx, cy], -1), count.astype(jnp.int32)


def scene_arrays(scenes: list[scenes_lib.Scene]) -> dict:
  """Stacks the render inputs of `scenes` (numpy, leading axis B)."""
  stack = lambda f, dtype=np.float32: np.stack([f(s) for s in scenes]).astype(dtype)
  return dict(
      shape=stack(lambda s: s.shape, np.int32), size=stack(lambda s: s.size),
      color=stack(lambda s: s.color / 255.0), valid=stack(lambda s: s.valid, bool),
      table_half=stack(lambda s: s.table_half_m), table_height=stack(lambda s: s.table_height_m),
      texture=stack(lambda s: s.floor_texture / 255.0), tile_m=stack(lambda s: s.tile_m),
      cam_rot=stack(lambda s: s.camera.rotation), cam_pos=stack(lambda s: s.camera.position),
      intrinsics=stack(lambda s: s.camera.intrinsics))


def render(scenes: list[scenes_lib.Scene], position: np.ndarray, quat: np.ndarray,
           cfg: ml_collections.ConfigDict, with_silhouettes: bool = False) -> tuple[np.ndarray, ...]:
  """Renders trajectories of `scenes` (position [B,T,N,3], quat [B,T,N,4]) to numpy rgb, ids, depth, and with
  `with_silhouettes` the objects' silhouette centroids and pixel counts (see `silhouettes`)."""
  out = render_batch(scene_arrays(scenes), jnp.asarray(position), jnp.asarray(quat), Settings.from_config(cfg))
  if with_silhouettes:
    out = out + silhouettes(out[1], int(position.shape[2]))
  return tuple(np.asarray(x) for x in jax.device_get(out))
