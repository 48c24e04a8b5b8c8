"""MJX collision for the canonical model: per-mesh groups merged, object pairs culled to the nearest.

MJX (mujoco.mjx 3.17, JAX backend) runs one collision call per (geom types, mesh ids, condim) group, since
its convex routines take a mesh's arrays as static. The canonical model (mjcf.canonical_xml) gives every
object slot its own cylinder mesh, so that each scene can size each slot's cylinder: 6 slots make 31
groups, 27 of them of one to seven pairs (15 cylinder-cylinder groups of one pair each). And every pair is
collided every step, although only one geom of each slot is real and few objects are near each other.

`merged_collision(m, d, max_pairs)`:
- merges: one call per collision routine for pairs whose meshes share a topology (equal array shapes: the
  slots' cylinders are one prism, scaled), each pair gathering its own mesh's vertices, faces and normals;
  pairs with the world (table, ground) and object-object pairs are separate calls. Per pair it is the same
  MJX routine on the same inputs as `collision_driver.collision`, so the contacts are the same, in another
  order (by routine rather than by mesh);
- culls (max_pairs > 0): an object-object call collides only its `max_pairs` nearest pairs by bounding
  sphere (MJX's broadphase distance), and the data is laid out for those contacts alone (`condim`, which
  `patched` hands to mjx.make_data), so the constraint solver has fewer rows too (small: 423 -> 179
  contacts). This is exact while no call has more than `max_pairs` pairs within reach; `near_overflow`
  says when it had, and physics.rollout_mjx then simulates that scene again with MuJoCo C.
On this repository's 2-core CPU (small scenes), a step went from 3.9 to 2.7 ms merged and to 1.2 ms culled
to 4 pairs, and the rollout's compile from 27 to 15 s (README, "One GPU loan").

`patched(max_pairs)` makes MJX's forward pass use it, and mjx.make_data lay out its contacts, while a
function is traced (MJX looks both up on their module at call time): physics.py traces its rollout inside
it. A data laid out otherwise is refused (ValueError), never collided into the wrong rows. This
reaches into MJX's private modules, so mujoco and mujoco-mjx are pinned (requirements.txt), and
tests/test_mjx_collision.py checks the contacts against MJX's own collision and a planted overflow.
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


# The collision routines merged and culled: MJX's wrapped function -> its per-pair routine.
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
  groups, merged = [], {}  # merged: (with the world, routine, condim, mesh shapes) -> [(MJX key, rows, pairs)]
  body = np.asarray(m.geom_bodyid)
  for key, rows in collision_driver._geom_groups(m).items():  # pylint: disable=protected-access
    pairs = np.array(rows)[:, :2]
    if collision_driver._COLLISION_FUNC[key.types] not in _PER_PAIR:  # pylint: disable=protected-access
      groups.append(Group(((key, np.arange(len(pairs))),), pairs, False))  # MJX's own call, never culled
      continue
    shapes = tuple(_topology(m, i) if t == GeomType.MESH else None for t, i in zip(key.types, key.data_ids))
    world = (body[pairs] == 0).any(1)
    for with_world in (True, False):
      rows_here = np.flatnonzero(world == with_world)
      if len(rows_here):
        mkey = (with_world, tuple(int(t) for t in key.types), int(key.condim), shapes)
        merged.setdefault(mkey, []).append((key, rows_here, pairs[rows_here]))
  for (with_world, *_), parts in merged.items():
    pairs = np.concatenate([p for _, _, p in parts])
    culled = not with_world and 0 < max_pairs < len(pairs)
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
  """Drop-in for `collision_driver.collision` (same contacts, fewer calls): see the module docstring.

  With `max_pairs` > 0, object-object calls collide only their `max_pairs` nearest pairs (by bounding
  distance): exact while `near_overflow` is false."""
  if d._impl.ncon == 0:  # pylint: disable=protected-access
    return d
  numeric = collision_driver._numeric  # pylint: disable=protected-access
  if numeric(m, "max_geom_pairs") > -1 or numeric(m, "max_contact_points") > -1:
    raise ValueError("merged_collision: the model's max_geom_pairs / max_contact_points are not supported")
  expected = len(condim(m, max_pairs))  # static: checked before any work, so a wrong layout fails at once
  if expected != d._impl.ncon:  # pylint: disable=protected-access
    raise ValueError(f"merged_collision: max_pairs={max_pairs} makes {expected} contacts, but the data was made "
                     f"for {d._impl.ncon}; make the data inside mjx_collision.patched() with the same "  # pylint: disable=protected-access
                     "max_pairs")
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
      if group.culled:  # the nearest pairs only: the data's contact layout has room for them alone
        _, nearest = jax.lax.top_k(-bounding_distance(m, d, group.pairs), max_pairs)
        sides = jax.tree.map(lambda x: x[nearest], sides)
        contact = jax.tree.map(lambda x: x[nearest], contact)
      dist, pos, frame = jax.vmap(_PER_PAIR[func])(*sides)
      if dist.ndim == 2:  # several contacts per pair, pair-major: as MJX's collider
        dist, pos, frame = (x.reshape((-1,) + x.shape[2:]) for x in (dist, pos, frame))
    if func.ncon > 1:
      contact = jax.tree.map(lambda x: jnp.repeat(x, func.ncon, axis=0), contact)
    contact = contact.replace(dist=dist, pos=pos, frame=frame)
    by_condim.setdefault(int(group.parts[0][0].condim), []).append(contact)
  contacts = sum((by_condim[c] for c in sorted(by_condim)), [])
  contact = jax.tree.map(lambda *x: jnp.concatenate(x), *contacts)
  assert contact.dist.shape[0] == expected, (contact.dist.shape[0], expected)  # condim() describes this layout
  # `dim` and `efc_address` are static (numpy) fields: the data's layout, carried through unchanged.
  return d.tree_replace({"_impl.contact": contact})


def condim(m, max_pairs: int = 0) -> np.ndarray:
  """The contact layout of `merged_collision` (drop-in for `collision_driver.make_condim`): each contact's
  condim, grouped by condim in increasing order, as the collision emits them. Culled calls emit
  `max_pairs` pairs' contacts, so the data (and the constraint solver) carry fewer contact rows."""
  counts = {}
  for group in merged_groups(m, max_pairs):
    pairs = max_pairs if group.culled else len(group.pairs)
    c = int(group.parts[0][0].condim)
    counts[c] = counts.get(c, 0) + pairs * group.func.ncon
  return np.array(sum(([c] * counts[c] for c in sorted(counts)), []), dtype=int)


_PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def patched(max_pairs: int = 0):
  """While inside, MJX's forward pass (hence mjx.step / mjx.forward) collides with `merged_collision`, and
  mjx.make_data lays out contacts and constraints for it (`condim`).

  Use it around the tracing of a jitted function that makes its data and steps it; the compiled function
  keeps the merged collision."""
  with _PATCH_LOCK:
    original = collision_driver.collision, collision_driver.make_condim
    collision_driver.collision = functools.partial(merged_collision, max_pairs=max_pairs)
    collision_driver.make_condim = lambda m, impl=None: condim(m, max_pairs)
    try:
      yield
    finally:
      collision_driver.collision, collision_driver.make_condim = original
