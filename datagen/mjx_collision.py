"""MJX collision for the canonical model: per-mesh groups merged, object pairs culled to the nearest.

MJX (mujoco.mjx 3.17, JAX backend) runs one collision call per (geom types, mesh ids, condim) group, since
its convex routines take a mesh's arrays as static. The canonical model (mjcf.canonical_xml) gives every
object slot its own cylinder mesh, so that each scene can size each slot's cylinder: 6 slots make 31
groups, 27 of them of one to seven pairs (15 cylinder-cylinder groups of one pair each). And every pair is
collided every step, although only one geom of each slot is real and few objects are near each other.

`merged_collision(m, d, cull)`:
- merges: one call per collision routine for pairs whose meshes share a topology (equal array shapes: the
  slots' cylinders are one prism, scaled), each pair gathering its own mesh's vertices, faces and normals;
  pairs with the world (table, ground) and object-object pairs are separate calls. Per pair it is the same
  MJX routine on the same inputs as `collision_driver.collision`, so the contacts are the same, in another
  order (by routine rather than by mesh);
- culls (`Cull.objects`, `Cull.world` > 0): a call collides only its nearest pairs by `reach_distance`
  (bounding spheres between objects, MJX's broadphase; a world box against the object's bounding sphere),
  and the data is laid out for those contacts alone (`condim`, which `patched` hands to mjx.make_data), so
  the constraint solver has fewer rows too (small: 423 -> 179 contacts culling object pairs to 4, -> 107
  culling the world's too). This is exact while no call has more pairs within reach than it keeps;
  `near_overflow` says when it had, and physics.rollout_mjx then simulates that scene again with MuJoCo C;
- budgets (`Cull.batch_objects`, `Cull.batch_world` > 0), under vmap only: the routine runs on the kept
  pairs within reach across the whole batch, at most `budget * batch` of them, rather than on every kept
  pair of every scene (most are out of reach: over 32 small scenes, 0.1-0.3 object pairs per call and
  scene and 1.2-1.6 pairs with the world were within reach at a step). The others get no contact, as
  they would have (a pair out of reach cannot touch); a scene whose pair within reach fell beyond the
  budget is marked by `near_overflow` as above. `jax.custom_batching.custom_vmap` gives the collision
  this view of the batch; unbatched (CPU's lax.map) every kept pair is collided;
- compacts (`Cull.contacts` > 0): of the contacts the calls emit, the data keeps the deepest few (by
  distance minus margin), so the constraint solver works on those rows alone (small: 107 contacts, of which
  at most 25 touched at once over 64 scenes). Exact while fewer touch than it keeps (a contact not
  touching has no force: MJX zeroes its rows, and warm-starts from accelerations, not per-contact forces,
  so the order may change from step to step); `near_overflow` says when every kept contact touched.
On this repository's 2-core CPU (small scenes), a step went from 3.9 to 2.7 ms merged and to 1.2 ms culled
to 4 pairs, and the rollout's compile from 27 to 15 s (README, "One GPU loan").

`patched(cull)` makes MJX's forward pass use it, and mjx.make_data lay out its contacts, while a
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
class Cull:
  """What the collision skips (module docstring). objects / world: pairs kept per scene and call, between
  objects / with the world (0: every pair); batch_objects / batch_world: under vmap, pairs within reach
  collided per scene and call on average over the batch (0: every kept pair); contacts: contacts the data
  keeps per scene, the deepest (0: every one the calls emit)."""
  objects: int = 0
  world: int = 0
  batch_objects: float = 0.0
  batch_world: float = 0.0
  contacts: int = 0

  @classmethod
  def of(cls, physics_cfg) -> "Cull":
    """From a data config's `physics` fields mjx_max_pairs, mjx_max_world_pairs, mjx_batch_pairs and
    mjx_max_contacts. A config stored before the last three existed (the shipped weights' data configs)
    collides as it did then: every pair with the world, no budget, every contact."""
    batch_objects, batch_world = (float(x) for x in physics_cfg.get("mjx_batch_pairs", (0.0, 0.0)))
    return cls(int(physics_cfg.mjx_max_pairs), int(physics_cfg.get("mjx_max_world_pairs", 0)), batch_objects,
               batch_world, int(physics_cfg.get("mjx_max_contacts", 0)))


@dataclasses.dataclass(frozen=True)
class Group:
  """One merged collision call.

  parts: (MJX group key, row indices into that group's pairs) in order; pairs [P, 2]: their geom pairs in
  the same order; keep: pairs collided per scene, the nearest (P: every pair); budget: under vmap, pairs
  collided per scene on average over the batch (0: every kept pair)."""
  parts: tuple
  pairs: np.ndarray
  keep: int
  budget: float = 0.0

  @property
  def culled(self) -> bool:
    return self.keep < len(self.pairs)

  @property
  def types(self) -> tuple:
    return self.parts[0][0].types

  @property
  def func(self):
    return collision_driver._COLLISION_FUNC[self.types]  # pylint: disable=protected-access


def merged_groups(m, cull: Cull = Cull()) -> list[Group]:
  """MJX's collision groups of `m`, merged: pairs of one collision function whose meshes have the same
  topology run together. Pairs with a world geom (the table, the ground: body 0) and object-object pairs
  form separate groups, culled and budgeted by `cull`. Static (numpy) work on the model."""
  groups, merged = [], {}  # merged: (with the world, routine, condim, mesh shapes) -> [(MJX key, rows, pairs)]
  body = np.asarray(m.geom_bodyid)
  for key, rows in collision_driver._geom_groups(m).items():  # pylint: disable=protected-access
    pairs = np.array(rows)[:, :2]
    if collision_driver._COLLISION_FUNC[key.types] not in _PER_PAIR:  # pylint: disable=protected-access
      groups.append(Group(((key, np.arange(len(pairs))),), pairs, len(pairs)))  # MJX's own call, as it is
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
    limit, budget = (cull.world, cull.batch_world) if with_world else (cull.objects, cull.batch_objects)
    keep = limit if 0 < limit < len(pairs) else len(pairs)
    groups.append(Group(tuple((k, i) for k, i, _ in parts), pairs, keep, budget))
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


def reach_distance(m, d, pairs: np.ndarray) -> jax.Array:
  """A lower bound of the distance between the geoms of pairs [P, 2], margins included (> 0: the pair
  cannot touch). Between objects MJX's broadphase distance: centre distance minus both bounding-sphere
  radii. A world box (the table, the ground: finite boxes far larger than their bounding spheres'
  use) against an object: the distance from the box to the object's centre minus its bounding radius."""
  g1, g2 = pairs[:, 0], pairs[:, 1]
  margins = m.geom_margin[g1] + m.geom_margin[g2]
  sphere = jnp.linalg.norm(d.geom_xpos[g2] - d.geom_xpos[g1], axis=-1) - m.geom_rbound[g1] - m.geom_rbound[g2]
  body, kind = np.asarray(m.geom_bodyid), np.asarray(m.geom_type)
  first = body[g1] == 0
  box, other = np.where(first, g1, g2), np.where(first, g2, g1)
  world_box = (body[box] == 0) & (kind[box] == GeomType.BOX)
  if not world_box.any():
    return sphere - margins
  local = jnp.einsum("pji,pj->pi", d.geom_xmat[box], d.geom_xpos[other] - d.geom_xpos[box])  # box frame
  outside = jnp.linalg.norm(jnp.maximum(jnp.abs(local) - m.geom_size[box], 0.0), axis=-1) - m.geom_rbound[other]
  return jnp.where(world_box, outside, sphere) - margins


def _kept(group: Group, dist: jax.Array) -> tuple[jax.Array | np.ndarray, jax.Array]:
  """The pairs a group collides in this scene, given its pairs' `reach_distance` [P]: their rows into
  group.pairs [keep], nearest first when culled, and whether each is within reach [keep]."""
  if not group.culled:
    return np.arange(len(group.pairs)), dist <= 0
  neg, rows = jax.lax.top_k(-dist, group.keep)
  return rows, neg >= 0


def _budget_slots(budget: float, batch: int, keep: int) -> int:
  return min(batch * keep, max(1, int(np.ceil(budget * batch))))


def _chosen(within_bk: jax.Array, budget: float) -> jax.Array:
  """Which of a batch's kept pairs [B, keep] within reach the budget collides: the first
  `_budget_slots` of them in scene order."""
  b, keep = within_bk.shape
  flat = within_bk.reshape(-1)
  return (flat & (jnp.cumsum(flat) <= _budget_slots(budget, b, keep))).reshape(b, keep)


def _batched(args, in_batched, axis_size: int):
  return jax.tree.map(lambda x, batched: x if batched else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x)),
                      args, in_batched)


_NO_CONTACT_M = 1.0  # the distance given to a pair the budget did not collide: out of reach, no contact


def _budgeted(routine, budget: float):
  """vmap(routine) over a scene's kept pairs; under an outer vmap, over the batch's kept pairs within
  reach, at most `_budget_slots` of them, the rest given no contact (module docstring)."""
  @jax.custom_batching.custom_vmap
  def collide(sides, within):
    del within  # unbatched: every kept pair
    return jax.vmap(routine)(*sides)

  @collide.def_vmap
  def collide_batch(axis_size, in_batched, sides, within):
    sides, within = (_batched(x, b, axis_size) for x, b in zip((sides, within), in_batched))
    b, keep = within.shape
    slots = _budget_slots(budget, b, keep)
    rows = jnp.nonzero(_chosen(within, budget).reshape(-1), size=slots, fill_value=b * keep)[0]
    picked = jax.tree.map(lambda x: x.reshape((b * keep,) + x.shape[2:]).at[rows].get(mode="clip"), sides)
    dist, pos, frame = jax.vmap(routine)(*picked)
    out = []
    for x, empty in ((dist, _NO_CONTACT_M), (pos, 0.0), (frame, None)):
      base = (jnp.broadcast_to(jnp.eye(3, dtype=x.dtype), (b * keep,) + x.shape[1:]) if empty is None
              else jnp.full((b * keep,) + x.shape[1:], empty, x.dtype))
      out.append(base.at[rows].set(x, mode="drop").reshape((b, keep) + x.shape[1:]))
    return tuple(out), (True, True, True)

  return collide


def _dropped(within: jax.Array, budget: float) -> jax.Array:
  """Whether the budget left a kept pair within reach of this scene uncollided (only ever under vmap)."""
  @jax.custom_batching.custom_vmap
  def dropped(within):
    return jnp.zeros((), bool)

  @dropped.def_vmap
  def dropped_batch(axis_size, in_batched, within):
    within = _batched(within, in_batched[0], axis_size)
    return (within & ~_chosen(within, budget)).any(1), True

  return dropped(within)


def near_overflow(m, d, cull: Cull) -> jax.Array:
  """True when a culled group had more pairs within reach than it keeps at `d`'s geom positions (those of
  the step that produced `d`), or (under vmap) the budget skipped one of them, or every contact the data
  kept touches (with `Cull.contacts`, for `d` made by `merged_collision`): a contact may have been dropped,
  and the scene is not exact."""
  flags = []
  if _compacted(m, cull):
    contact = d._impl.contact  # pylint: disable=protected-access
    flags.append((contact.dist < contact.includemargin).all())
  for group in merged_groups(m, cull):
    if not group.culled and group.budget == 0:
      continue
    dist = reach_distance(m, d, group.pairs)
    if group.culled:
      flags.append((dist <= 0).sum() > group.keep)
    if group.budget > 0:
      flags.append(_dropped(_kept(group, dist)[1], group.budget))
  return jnp.any(jnp.stack(flags)) if flags else jnp.array(False)


def merged_collision(m, d, cull: Cull = Cull()):
  """Drop-in for `collision_driver.collision` (same contacts, fewer calls): see the module docstring.

  Culled calls collide only their nearest pairs (by `reach_distance`), budgeted ones under vmap only the
  batch's pairs within reach up to the budget: exact while `near_overflow` is false."""
  if d._impl.ncon == 0:  # pylint: disable=protected-access
    return d
  numeric = collision_driver._numeric  # pylint: disable=protected-access
  if numeric(m, "max_geom_pairs") > -1 or numeric(m, "max_contact_points") > -1:
    raise ValueError("merged_collision: the model's max_geom_pairs / max_contact_points are not supported")
  expected = len(condim(m, cull))  # static: checked before any work, so a wrong layout fails at once
  if expected != d._impl.ncon:  # pylint: disable=protected-access
    raise ValueError(f"merged_collision: {cull} makes {expected} contacts, but the data was made "
                     f"for {d._impl.ncon}; make the data inside mjx_collision.patched() with the same "  # pylint: disable=protected-access
                     "cull")
  params = collision_driver._contact_groups(m, d)  # pylint: disable=protected-access
  by_condim = {}
  for group in merged_groups(m, cull):
    contact = jax.tree.map(lambda *x: jnp.concatenate(x), *[jax.tree.map(lambda x, i=i: x[i], params[k])
                                                              for k, i in group.parts])
    func = group.func
    if func not in _PER_PAIR:  # MJX's own call for its own group
      dist, pos, frame = func(m, d, group.parts[0][0], contact.geom)
    else:
      sides = [_side_info(m, d, group.types[i], group.pairs[:, i]) for i in (0, 1)]
      rows, within = _kept(group, reach_distance(m, d, group.pairs))
      if group.culled:  # the nearest pairs only: the data's contact layout has room for them alone
        sides, contact = jax.tree.map(lambda x: x[rows], (sides, contact))
      if group.budget > 0:
        dist, pos, frame = _budgeted(_PER_PAIR[func], group.budget)(sides, within)
      else:
        dist, pos, frame = jax.vmap(_PER_PAIR[func])(*sides)
      if dist.ndim == 2:  # several contacts per pair, pair-major: as MJX's collider
        dist, pos, frame = (x.reshape((-1,) + x.shape[2:]) for x in (dist, pos, frame))
    if func.ncon > 1:
      contact = jax.tree.map(lambda x: jnp.repeat(x, func.ncon, axis=0), contact)
    contact = contact.replace(dist=dist, pos=pos, frame=frame)
    by_condim.setdefault(int(group.parts[0][0].condim), []).append(contact)
  contacts = sum((by_condim[c] for c in sorted(by_condim)), [])
  contact = jax.tree.map(lambda *x: jnp.concatenate(x), *contacts)
  emitted = len(_emitted_condim(m, cull))
  assert contact.dist.shape[0] == emitted, (contact.dist.shape[0], emitted)  # _emitted_condim's layout
  if expected < emitted:  # compacted: the deepest contacts, in the data's layout (one condim: `condim`)
    _, rows = jax.lax.top_k(contact.includemargin - contact.dist, cull.contacts)
    laid_out = d._impl.contact  # pylint: disable=protected-access
    contact = jax.tree.map(lambda x: x[rows], contact)
    contact = contact.replace(dim=laid_out.dim, efc_address=laid_out.efc_address)
  # `dim` and `efc_address` are static (numpy) fields, the data's layout: the calls' (tree_map carries them
  # through unchanged), or, compacted, the data's own.
  return d.tree_replace({"_impl.contact": contact})


def _emitted_condim(m, cull: Cull) -> np.ndarray:
  """Each contact's condim as the collision calls emit them, grouped by condim in increasing order. Culled
  calls emit their kept pairs' contacts only."""
  counts = {}
  for group in merged_groups(m, cull):
    c = int(group.parts[0][0].condim)
    counts[c] = counts.get(c, 0) + group.keep * group.func.ncon
  return np.array(sum(([c] * counts[c] for c in sorted(counts)), []), dtype=int)


def _compacted(m, cull: Cull) -> bool:
  """Whether `cull` keeps fewer contacts than the calls emit (static)."""
  return 0 < cull.contacts < len(_emitted_condim(m, cull))


def condim(m, cull: Cull = Cull()) -> np.ndarray:
  """The contact layout of `merged_collision` (drop-in for `collision_driver.make_condim`): each contact's
  condim, grouped by condim in increasing order. Culled calls emit their kept pairs' contacts, and
  `Cull.contacts` keeps fewer still, so the data (and the constraint solver) carry fewer contact rows."""
  emitted = _emitted_condim(m, cull)
  if not _compacted(m, cull):
    return emitted
  if len(set(emitted.tolist())) > 1:
    raise ValueError(f"physics.mjx_max_contacts: keeping the deepest {cull.contacts} contacts needs contacts of "
                     f"one condim, but the model's have condims {sorted(set(emitted.tolist()))}")
  return emitted[:cull.contacts]


_PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def patched(cull: Cull = Cull()):
  """While inside, MJX's forward pass (hence mjx.step / mjx.forward) collides with `merged_collision`, and
  mjx.make_data lays out contacts and constraints for it (`condim`).

  Use it around the tracing of a jitted function that makes its data and steps it; the compiled function
  keeps the merged collision."""
  with _PATCH_LOCK:
    original = collision_driver.collision, collision_driver.make_condim
    collision_driver.collision = functools.partial(merged_collision, cull=cull)
    collision_driver.make_condim = lambda m, impl=None: condim(m, cull)
    try:
      yield
    finally:
      collision_driver.collision, collision_driver.make_condim = original
