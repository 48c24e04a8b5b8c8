"""MJX collision for the canonical model, with the per-mesh collision groups merged.

MJX (mujoco.mjx 3.17, JAX backend) runs one collision function per (geom types, mesh ids, condim) group,
since its convex functions take a mesh's arrays as static. The canonical model (mjcf.canonical_xml) gives
every object slot its own cylinder mesh, so that each scene can size each slot's cylinder: its 6 slots make
31 groups, 27 of them for one to seven pairs each (15 cylinder-cylinder groups of one pair). Each group is
a separate chain of XLA operations, and the chains, not the arithmetic, made collision three quarters of a
step (on this repository's 2-core CPU: 3.6 of 4.6 ms per scene step).

`merged_collision(m, d)` computes the same contacts with one call per collision function: pairs whose
meshes have the same topology (equal array shapes: the slots' cylinders are one prism scaled) run together,
each pair gathering its own meshes' vertices, faces and normals. Per pair it calls the same MJX routine on
the same inputs as `collision_driver.collision`; only the order of the contacts differs (by function
rather than by mesh), which the constraint solver does not depend on beyond float rounding.

`patched()` makes MJX's forward pass use it while a function is traced (`forward.fwd_position` looks the
collision function up on the module at call time): physics.py traces its rollout inside it. This reaches
into MJX's private modules, so mujoco and mujoco-mjx are pinned (requirements.txt) and
tests/test_physics.py checks contacts and trajectories against the stock path and against MuJoCo C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np
from mujoco.mjx._src import collision_convex
from mujoco.mjx._src import collision_driver
from mujoco.mjx._src import math as mjx_math
from mujoco.mjx._src import mesh as mjx_mesh
from mujoco.mjx._src.collision_types import ConvexInfo
from mujoco.mjx._src.collision_types import GeomInfo
from mujoco.mjx._src.types import GeomType


def _with_frames(fn):
  """A per-pair MJX routine returning (dist, pos, normal[s]) -> (dist, pos, frame[s])."""
  def collide(a, b):
    dist, pos, n = fn(a, b)
    frame = jax.vmap(mjx_math.make_frame)(n) if n.ndim == 2 else mjx_math.make_frame(n)
    return dist, pos, frame
  return collide


# The collision functions whose mesh groups are merged: MJX's wrapped function -> its per-pair routine.
_PER_PAIR = {
    collision_convex.convex_convex: _with_frames(collision_convex._convex_convex),  # pylint: disable=protected-access
    collision_convex.sphere_convex: _with_frames(collision_convex._sphere_convex),  # pylint: disable=protected-access
    collision_convex.box_box: _with_frames(collision_convex._box_box),  # pylint: disable=protected-access
}


def _topology(m, mesh_id: int) -> tuple:
  convex = m._impl.mesh_convex[mesh_id]  # pylint: disable=protected-access
  return tuple(np.shape(x) for x in (convex.vert, convex.face, convex.face_normal, convex.edge,
                                     convex.edge_face_normal))


@dataclasses.dataclass(frozen=True)
class Group:
  """One merged collision call.

  parts: (MJX group key, row indices into that group's pairs) in order; pairs [P, 2]: their geom pairs in
  the same order; culled: whether only the `max_pairs` nearest pairs are collided (object-object groups;
  pairs with the world never are)."""
  parts: tuple
  pairs: np.ndarray
  culled: bool

  @property
  def types(self) -> tuple:
    return self.parts[0][0].types

  @property
  def func(self):
    return collision_driver._COLLISION_FUNC[self.types]  # pylint: disable=protected-access


def merged_groups(m, max_pairs: int = 0) -> list[Group]:
  """MJX's collision groups of `m`, merged: pairs of one collision function whose meshes have the same
  topology run together. Pairs with a world geom (the table, the ground: body 0) and object-object pairs
  form separate groups, and object-object groups of more than `max_pairs` pairs (when > 0) are culled.
  Static (numpy) work on the model."""
  merged = {}
  body = np.asarray(m.geom_bodyid)
  for key, rows in collision_driver._geom_groups(m).items():  # pylint: disable=protected-access
    pairs = np.array(rows)[:, :2]
    if collision_driver._COLLISION_FUNC[key.types] in _PER_PAIR:  # pylint: disable=protected-access
      shapes = tuple(_topology(m, i) if t == GeomType.MESH else None for t, i in zip(key.types, key.data_ids))
      world = (body[pairs] == 0).any(1)
      for is_world in (True, False):
        if (world == is_world).any():
          mkey = (tuple(int(t) for t in key.types), int(key.condim), shapes, is_world)
          merged.setdefault(mkey, []).append((key, np.flatnonzero(world == is_world), pairs[world == is_world]))
    else:
      merged[key] = [(key, np.arange(len(pairs)), pairs)]
  groups = []
  for mkey, parts in merged.items():
    pairs = np.concatenate([p for _, _, p in parts])
    culled = isinstance(mkey, tuple) and not mkey[-1] and 0 < max_pairs < len(pairs)
    groups.append(Group(tuple((k, i) for k, i, _ in parts), pairs, culled))
  return groups


def _side_info(m, d, geom_type, geoms: np.ndarray) -> ConvexInfo | GeomInfo:
  """Per-pair geom data of one side of a merged group (leading axis: the pairs)."""
  info = GeomInfo(d.geom_xpos[geoms], d.geom_xmat[geoms], m.geom_size[geoms])
  if geom_type == GeomType.BOX:  # MJX's box as a convex: vertices and faces per pair, the rest shared
    box = mjx_mesh.box(info)
    shared = lambda x: jnp.broadcast_to(x, (len(geoms),) + x.shape)
    return box.replace(face_normal=shared(box.face_normal), edge=shared(box.edge),
                       edge_face_normal=shared(box.edge_face_normal))
  if geom_type == GeomType.MESH:
    unique, index = np.unique(np.asarray(m.geom_dataid)[geoms], return_inverse=True)
    convex = [m._impl.mesh_convex[i] for i in unique]  # pylint: disable=protected-access
    stacked = jax.tree.map(lambda *fields: jnp.stack(fields)[index], *convex)
    return ConvexInfo(info.pos, info.mat, info.size, stacked.vert, stacked.face, stacked.face_normal,
                      stacked.edge, stacked.edge_face_normal)
  return info


def bounding_distance(m, d, pairs: np.ndarray) -> jax.Array:
  """MJX's broadphase distance of geom pairs [P, 2]: centre distance minus both bounding-sphere radii and
  margins (> 0: the pair cannot touch)."""
  g1, g2 = pairs[:, 0], pairs[:, 1]
  gap = jnp.linalg.norm(d.geom_xpos[g2] - d.geom_xpos[g1], axis=-1)
  return gap - m.geom_rbound[g1] - m.geom_rbound[g2] - m.geom_margin[g1] - m.geom_margin[g2]


def near_overflow(m, d, max_pairs: int) -> jax.Array:
  """True when a culled group had more than `max_pairs` pairs within reach at `d`'s geom positions (those
  of the step that produced `d`): the cull may then have dropped a contact, and the scene is not exact."""
  counts = [(bounding_distance(m, d, g.pairs) <= 0).sum() for g in merged_groups(m, max_pairs) if g.culled]
  return jnp.any(jnp.stack(counts) > max_pairs) if counts else jnp.array(False)


def merged_collision(m, d, max_pairs: int = 0):
  """Drop-in for `collision_driver.collision` (same contacts, fewer groups): see the module docstring.

  With `max_pairs` > 0, object-object groups collide only their `max_pairs` nearest pairs (by bounding
  distance), so fewer contacts reach the solver; exact while `near_overflow` is false."""
  if d._impl.ncon == 0:  # pylint: disable=protected-access
    return d
  if collision_driver._numeric(m, "max_geom_pairs") > -1 or collision_driver._numeric(m, "max_contact_points") > -1:  # pylint: disable=protected-access
    raise ValueError("merged_collision: the model's max_geom_pairs / max_contact_points are not supported")
  params = collision_driver._contact_groups(m, d)  # pylint: disable=protected-access
  by_condim = {}
  for group in merged_groups(m, max_pairs):
    contact = jax.tree.map(lambda *x: jnp.concatenate(x), *[jax.tree.map(lambda x, i=i: x[i], params[k])
                                                              for k, i in group.parts])
    func = group.func
    if func not in _PER_PAIR:  # MJX's own call for its own group
      dist, pos, frame = func(m, d, group.parts[0][0], contact.geom)
    else:
      sides = [_side_info(m, d, group.types[i], group.pairs[:, i]) for i in (0, 1)]
      if group.culled:
        # Collide the nearest pairs only; the others keep their contact slots (the data's contact and
        # constraint layout is static) with MJX's "no contact" distance, which makes their rows zero.
        _, nearest = jax.lax.top_k(-bounding_distance(m, d, group.pairs), max_pairs)
        near = jax.vmap(_PER_PAIR[func])(*jax.tree.map(lambda x: x[nearest], sides))
        p = len(group.pairs)
        far = (jnp.full((p,) + near[0].shape[1:], jnp.finfo(near[0].dtype).max, near[0].dtype),
               jnp.zeros((p,) + near[1].shape[1:], near[1].dtype),
               jnp.broadcast_to(jnp.eye(3, dtype=near[2].dtype), (p,) + near[2].shape[1:]))
        dist, pos, frame = (f.at[nearest].set(n) for f, n in zip(far, near))
      else:
        dist, pos, frame = jax.vmap(_PER_PAIR[func])(*sides)
      if dist.ndim == 2:  # several contacts per pair, pair-major: as MJX's collider
        dist, pos, frame = (x.reshape((-1,) + x.shape[2:]) for x in (dist, pos, frame))
    if func.ncon > 1:
      contact = jax.tree.map(lambda x: jnp.repeat(x, func.ncon, axis=0), contact)
    by_condim.setdefault(int(group.parts[0][0].condim), []).append(contact.replace(dist=dist, pos=pos, frame=frame))
  contacts = sum((by_condim[c] for c in sorted(by_condim)), [])
  contact = jax.tree.map(lambda *x: jnp.concatenate(x), *contacts)
  return d.tree_replace({"_impl.contact": contact})


_PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def patched(max_pairs: int = 0):
  """While inside, MJX's forward pass (hence mjx.step / mjx.forward) collides with `merged_collision`.

  Use it around the tracing of a jitted function; the compiled function keeps the merged collision."""
  with _PATCH_LOCK:
    original = collision_driver.collision
    collision_driver.collision = functools.partial(merged_collision, max_pairs=max_pairs)
    try:
      yield
    finally:
      collision_driver.collision = original
