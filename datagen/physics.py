"""Physics rollouts: scenes -> per-frame poses, velocities and object-object contacts.

Two backends simulate the same MJCF physics (see mjcf.py):
- "c": the MuJoCo C engine via `mujoco.rollout` (threads). The fast path on CPU.
- "mjx": MuJoCo XLA, jit + vmap over a batch of scenes on one canonical model. The fast path on GPU/TPU.
  Its collision is MJX's, regrouped and culled to the nearest object pairs (datagen/mjx_collision.py);
  a scene the cull cannot keep exact is simulated again with MuJoCo C.

Known trap (jax 0.10.x on a 2-core CPU): a jitted vmap of mjx.step hangs inside XLA's CPU runtime at
batch 32 or more with a small model, and already at batch 8 with our 6-slot canonical model (4 ran).
On the CPU backend `rollout_mjx` therefore never vmaps mjx.step: one jitted `lax.map` runs the scenes
one after another (the C engine is the fast CPU path anyway); accelerators vmap the whole batch.
tests/test_physics.py runs a batch of 32 through the CPU path under a timeout to catch a regression.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import logging
import math

import jax
import jax.numpy as jnp
import ml_collections
import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

from datagen import mjcf
from datagen import mjx_collision
from datagen import scenes as scenes_lib
from datagen import shapes as shapes_lib


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """Per-frame physical state of a batch of scenes (object axis padded to max_objects)."""
  position: np.ndarray  # float32 [B,T,N,3] body centre, world, metres
  quat: np.ndarray  # float32 [B,T,N,4] body orientation (w, x, y, z), world
  velocity: np.ndarray  # float32 [B,T,N,3] linear velocity of the centre, world, m/s
  contact: np.ndarray  # bool [B,T,N,N] objects a, b touched during the interval ending at frame t
  # bool [B]: scenes the MJX backend handed to MuJoCo C (its collision cull could not be exact); None: C
  resimulated: np.ndarray | None = None


def steps_per_frame(cfg: ml_collections.ConfigDict) -> int:
  return int(round(1.0 / (cfg.fps * cfg.physics.timestep_s)))


def resolve_backend(cfg: ml_collections.ConfigDict) -> str:
  """'auto' -> 'mjx' on an accelerator, 'c' on CPU."""
  backend = cfg.physics.backend
  if backend == "auto":
    return "c" if jax.default_backend() == "cpu" else "mjx"
  return backend


def prepare(scenes: list[scenes_lib.Scene], cfg: ml_collections.ConfigDict, backend: str | None = None):
  """The host-side preparation of a rollout (MJX: the batch's model arrays; C: nothing), which the data
  engine runs for the next batch while the accelerator simulates this one."""
  backend = backend or resolve_backend(cfg)
  if backend == "mjx":
    canon = _canonical(json.dumps(cfg.to_dict(), sort_keys=True))
    return mjx_batch_params(scenes, cfg, canon)
  return None


def rollout(scenes: list[scenes_lib.Scene], cfg: ml_collections.ConfigDict, backend: str | None = None,
            prepared=None) -> Trajectory:
  """Simulates `scenes` for cfg.num_frames frames with the chosen backend (`prepared`: `prepare`'s result)."""
  backend = backend or resolve_backend(cfg)
  if backend == "c":
    return rollout_c(scenes, cfg)
  if backend == "mjx":
    return rollout_mjx(scenes, cfg, prepared)
  raise ValueError(f"physics backend must be 'c' or 'mjx', got {backend!r}")


def _initial_qpos_qvel(scene: scenes_lib.Scene, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Free-joint qpos [7n] and qvel [6n] for the first n slots (qvel angular part is in the body frame)."""
  qpos = np.concatenate([scene.position[:n], scenes_lib.yaw_quat(scene.yaw_rad[:n])], 1)
  c, s = np.cos(scene.yaw_rad[:n]), np.sin(scene.yaw_rad[:n])
  w = scene.angular_velocity_rps[:n]
  w_body = np.stack([c * w[:, 0] + s * w[:, 1], -s * w[:, 0] + c * w[:, 1], w[:, 2]], 1)
  qvel = np.concatenate([scene.velocity_mps[:n], w_body], 1)
  return qpos.ravel(), qvel.ravel()


def _frames(x: np.ndarray, spf: int) -> np.ndarray:
  """[B, nstep, ...] per-step values -> [B, T-1, ...] values after each frame's last step."""
  return x[:, spf - 1::spf]


def _contact_frames(found: np.ndarray, spf: int) -> np.ndarray:
  """[B, nstep, P] per-step contact -> [B, T, P]: any contact in each frame's interval (frame 0: none)."""
  b, nstep, p = found.shape
  per_frame = found.reshape(b, nstep // spf, spf, p).any(2)
  return np.concatenate([np.zeros((b, 1, p), bool), per_frame], 1)


def _pairs_to_matrix(flags: np.ndarray, n: int, n_max: int) -> np.ndarray:
  """[B, T, P] pair flags (mjcf.object_pairs order) -> symmetric [B, T, n_max, n_max]."""
  out = np.zeros(flags.shape[:2] + (n_max, n_max), bool)
  for p, (a, b) in enumerate(mjcf.object_pairs(n)):
    out[:, :, a, b] = out[:, :, b, a] = flags[:, :, p]
  return out


def rollout_c(scenes: list[scenes_lib.Scene], cfg: ml_collections.ConfigDict) -> Trajectory:
  """MuJoCo C engine: one compact model per scene, scenes with equal object counts rolled out together."""
  spf, t_frames, n_max = steps_per_frame(cfg), cfg.num_frames, cfg.scene.max_objects
  nstep = (t_frames - 1) * spf
  out = {k: np.zeros((len(scenes), t_frames, n_max) + tail, dt) for k, tail, dt in
         (("position", (3,), np.float32), ("quat", (4,), np.float32), ("velocity", (3,), np.float32),
          ("contact", (n_max,), bool))}
  spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
  threads = max(1, cfg.physics.threads)
  # Compiling a model (~3 ms, convex hulls of the cylinders) releases the GIL: compile on every thread.
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    compiled = list(pool.map(lambda s: mujoco.MjModel.from_xml_string(mjcf.scene_xml(s, cfg)), scenes))
  for n in sorted({s.num_objects for s in scenes}):
    idx = [i for i, s in enumerate(scenes) if s.num_objects == n]
    models = [compiled[i] for i in idx]
    state0 = np.zeros((len(idx), mujoco.mj_stateSize(models[0], spec)))
    for row, (i, model) in enumerate(zip(idx, models)):
      data = mujoco.MjData(model)
      data.qpos[:], data.qvel[:] = _initial_qpos_qvel(scenes[i], n)
      mujoco.mj_forward(model, data)
      mujoco.mj_getState(model, data, state0[row], spec)
    datas = [mujoco.MjData(models[0]) for _ in range(threads)]
    state, sensors = mj_rollout.rollout(models, datas, state0, nstep=nstep)
    nq = models[0].nq
    qpos = np.concatenate([state0[:, None, 1:1 + nq], _frames(state[..., 1:1 + nq], spf)], 1)
    qvel = np.concatenate([state0[:, None, 1 + nq:1 + nq + 6 * n], _frames(state[..., 1 + nq:1 + nq + 6 * n], spf)], 1)
    qpos = qpos.reshape(len(idx), t_frames, n, 7)
    qvel = qvel.reshape(len(idx), t_frames, n, 6)
    out["position"][idx, :, :n] = qpos[..., :3]
    out["quat"][idx, :, :n] = qpos[..., 3:]
    out["velocity"][idx, :, :n] = qvel[..., :3]
    out["contact"][idx] = _pairs_to_matrix(_contact_frames(sensors > 0, spf), n, n_max)
  return Trajectory(**out)


# ---------------------------------------------------------------------------------------------- MJX


@dataclasses.dataclass(frozen=True)
class _Canonical:
  mjx_model: object
  geom_slot: np.ndarray  # int [ngeom] object slot of each geom, -1 for table / ground
  geom_kind: np.ndarray  # int [ngeom] shape id (datagen/shapes.py) of object geoms, -1 otherwise
  unit_mesh: tuple  # per mesh of the model: (vertices [V,3], face vertex coordinates [F,K,3]) at unit size
  mesh_of: dict  # (slot, shape id) -> index into unit_mesh, for the mesh shapes
  step_fn: object  # jitted (params [B], qpos0 [B], qvel0 [B]) -> per-frame arrays, overflow [B]


@functools.lru_cache(maxsize=4)
def _canonical(cfg_json: str, vmap: bool | None = None) -> _Canonical:
  """The compiled canonical model of a data config (given as JSON: hashable, so compiles are cached); its
  step function vmaps the batch (None: on accelerators; on the CPU a `lax.map`, see the module docstring)."""
  from mujoco import mjx  # imported lazily: it pulls in its GPU backends' probes
  cfg = ml_collections.ConfigDict(json.loads(cfg_json))
  model = mujoco.MjModel.from_xml_string(mjcf.canonical_xml(cfg))
  mx = mjx.put_model(model)
  geom_slot = model.geom_bodyid.astype(int) - 1
  # Object geoms are named <shape><slot> (mjcf.canonical_xml); the ground and the table are not.
  table = shapes_lib.names()
  kind_of = lambda g: table.index(model.geom(g).name[:-len(str(geom_slot[g]))]) if geom_slot[g] >= 0 else -1
  geom_kind = np.array([kind_of(g) for g in range(model.ngeom)])
  unit = tuple((np.asarray(c.vert), np.asarray(c.face)) for c in mx._impl.mesh_convex)
  mesh_names = [model.mesh(m).name for m in range(model.nmesh)]
  mesh_of = {(k, i): mesh_names.index(mjcf.canonical_mesh_name(name, k))
             for k in range(cfg.scene.max_objects) for i, name in enumerate(table)
             if shapes_lib.SHAPES[name].mesh is not None}
  spf, t_frames, n_max = steps_per_frame(cfg), cfg.num_frames, cfg.scene.max_objects
  cull = mjx_collision.Cull.of(cfg.physics)
  slot_j = jnp.asarray(geom_slot)

  def one_scene(params, qpos0, qvel0):
    # MJX keeps a convex mesh's faces as vertex coordinates, so both scale. Side normals do not change
    # under an (r, r, h) scaling of an upright prism.
    convex = tuple(c.replace(vert=v, face=f) for c, (v, f) in zip(mx._impl.mesh_convex, params["mesh"]))
    m = mx.tree_replace({k: v for k, v in params.items() if k != "mesh"})
    m = m.tree_replace({"_impl.mesh_convex": convex})
    d = mjx.make_data(m).replace(qpos=qpos0, qvel=qvel0)
    d = mjx.forward(m, d)

    def substep(carry, _):
      d, overflow = carry
      d = mjx.step(m, d)
      con = d._impl.contact
      a, b = slot_j[con.geom1], slot_j[con.geom2]
      touching = (con.dist < 0) & (a >= 0) & (b >= 0)
      flags = jnp.zeros((n_max, n_max), bool).at[jnp.maximum(a, 0), jnp.maximum(b, 0)].max(touching)
      overflow = overflow | mjx_collision.near_overflow(m, d, cull)
      return (d, overflow), flags | flags.T

    def frame(carry, _):
      carry, flags = jax.lax.scan(substep, carry, None, length=spf)
      return carry, (carry[0].qpos, carry[0].qvel, flags.any(0))

    (_, overflow), (qpos, qvel, contact) = jax.lax.scan(frame, (d, jnp.array(False)), None, length=t_frames - 1)
    return qpos, qvel, contact, overflow

  def traced(fn):  # the merged (and culled) collision is what the rollout compiles: mjx_collision.py
    def wrapped(*args):
      with mjx_collision.patched(cull):
        return fn(*args)
    return wrapped

  if vmap or (vmap is None and jax.default_backend() != "cpu"):
    step_fn = jax.jit(traced(jax.vmap(one_scene)))
  else:
    step_fn = jax.jit(traced(lambda p, q, v: jax.lax.map(lambda x: one_scene(*x), (p, q, v))))
  return _Canonical(mx, geom_slot, geom_kind, unit, mesh_of, step_fn)


def mjx_batch_params(scenes: list[scenes_lib.Scene], cfg: ml_collections.ConfigDict, canon: _Canonical):
  """Per-scene model arrays for the canonical model: geom placement and size, masses, mesh vertices.

  In each slot, the geom of the object's shape sits at the body origin, sized by its shape-table entry; the
  others shrink and wait PARK_HEIGHT_M * (slot + 1) + 10 * shape id metres away from it (the ground and the table are finite boxes,
  so a parked geom swung round by a rolling body never reaches them). Empty slots free-fall far away.
  """
  m0 = canon.mjx_model
  n_max = cfg.scene.max_objects
  b = len(scenes)
  geom_pos = np.tile(np.asarray(m0.geom_pos), (b, 1, 1))
  geom_size = np.tile(np.asarray(m0.geom_size), (b, 1, 1))
  geom_friction = np.tile(np.asarray(m0.geom_friction), (b, 1, 1))
  geom_rbound = np.tile(np.asarray(m0.geom_rbound), (b, 1))
  geom_aabb = np.tile(np.asarray(m0.geom_aabb), (b, 1, 1))
  body_mass = np.tile(np.asarray(m0.body_mass), (b, 1))
  body_inertia = np.tile(np.asarray(m0.body_inertia), (b, 1, 1))
  body_invweight0 = np.tile(np.asarray(m0.body_invweight0), (b, 1, 1))
  dof_invweight0 = np.tile(np.asarray(m0.dof_invweight0), (b, 1))
  meshes = [(np.tile(v, (b, 1, 1)), np.tile(f, (b, 1, 1, 1))) for v, f in canon.unit_mesh]
  qpos0 = np.zeros((b, 7 * n_max))
  qvel0 = np.zeros((b, 6 * n_max))
  for i, scene in enumerate(scenes):
    n = scene.num_objects
    for k in range(n_max):
      real = k < n
      shape = int(scene.shape[k]) if real else shapes_lib.BOX
      size = scene.size[k] if real else np.full(3, 0.02)
      mass = float(scene.mass_kg[k]) if real else 1.0
      entry = shapes_lib.by_id(shape)
      inertia = entry.inertia(size, mass)
      for g in np.flatnonzero(canon.geom_slot == k):
        kind = canon.geom_kind[g]
        if kind == shape:
          geom_pos[i, g] = 0.0
          geom_size[i, g] = entry.geom_size(size)
          geom_rbound[i, g] = entry.rbound(size)
          geom_aabb[i, g] = np.r_[0, 0, 0, size]
          geom_friction[i, g, 0] = scene.friction[k] if real else 0.5
        else:
          geom_pos[i, g] = (0, 0, mjcf.PARK_HEIGHT_M * (k + 1) + 10.0 * kind)
          geom_size[i, g] = mjcf.PARK_TINY_M
          geom_rbound[i, g] = math.sqrt(3) * mjcf.PARK_TINY_M
          geom_aabb[i, g] = np.r_[0, 0, 0, np.full(3, mjcf.PARK_TINY_M)]
        if (k, kind) in canon.mesh_of:
          m = canon.mesh_of[(k, kind)]
          scale = entry.mesh_scale(size) if kind == shape else mjcf.PARK_TINY_M
          meshes[m][0][i] = canon.unit_mesh[m][0] * scale
          meshes[m][1][i] = canon.unit_mesh[m][1] * scale
      body_mass[i, k + 1] = mass
      body_inertia[i, k + 1] = inertia
      # What mj_setConst computes for a free body whose inertial frame is its origin.
      body_invweight0[i, k + 1] = (1 / mass, np.mean(1 / inertia))
      dof_invweight0[i, 6 * k:6 * k + 6] = [1 / mass] * 3 + [np.mean(1 / inertia)] * 3
    if n:
      qpos0[i, :7 * n], qvel0[i, :6 * n] = _initial_qpos_qvel(scene, n)
    for k in range(n, n_max):  # empty slots fall through empty space, far apart and far from the table
      qpos0[i, 7 * k:7 * k + 7] = (1000.0 * (k + 1), 0, 0, 1, 0, 0, 0)
  params = dict(geom_pos=geom_pos, geom_size=geom_size, geom_friction=geom_friction, geom_rbound=geom_rbound,
                geom_aabb=geom_aabb, body_mass=body_mass, body_inertia=body_inertia,
                body_invweight0=body_invweight0, dof_invweight0=dof_invweight0, mesh=tuple(meshes))
  return params, qpos0, qvel0


def rollout_mjx(scenes: list[scenes_lib.Scene], cfg: ml_collections.ConfigDict, prepared=None,
                vmap: bool | None = None) -> Trajectory:
  """MJX: one jit over the batch (`vmap` None: vmap on accelerators, sequential on CPU: see the module
  docstring; tests and benchmarks force either).

  Scenes in which the collision cull or budget (cfg.physics.mjx_max_pairs, mjx_max_world_pairs,
  mjx_batch_pairs; datagen/mjx_collision.py) met more pairs within reach than it collides, or in which every
  contact kept for the solver touched (mjx_max_contacts), are simulated again with MuJoCo C, so no contact is
  ever dropped; `Trajectory.resimulated` marks them."""
  canon = _canonical(json.dumps(cfg.to_dict(), sort_keys=True), vmap)
  params, qpos0, qvel0 = prepared if prepared is not None else mjx_batch_params(scenes, cfg, canon)
  b = len(scenes)
  as_f32 = lambda x: jnp.asarray(x, jnp.float32)
  qpos, qvel, contact, overflow = jax.device_get(
      canon.step_fn(jax.tree.map(as_f32, params), as_f32(qpos0), as_f32(qvel0)))
  qpos = np.concatenate([qpos0[:, None], qpos], 1).reshape(b, cfg.num_frames, -1, 7)
  qvel = np.concatenate([qvel0[:, None], qvel], 1).reshape(b, cfg.num_frames, -1, 6)
  contact = np.concatenate([np.zeros((b, 1) + contact.shape[2:], bool), contact], 1)
  valid = np.stack([s.valid for s in scenes])[:, None, :]
  zero = lambda x: np.where(valid[..., None], x, 0).astype(np.float32)
  contact = contact & valid[..., :, None] & valid[..., None, :]
  out = dict(position=zero(qpos[..., :3]), quat=zero(qpos[..., 3:]), velocity=zero(qvel[..., :3]), contact=contact)
  again = np.flatnonzero(overflow)
  if len(again):
    exact = rollout_c([scenes[i] for i in again], cfg)
    for field in out:
      out[field][again] = getattr(exact, field)
    logging.info("physics: %d of %d scenes had more pairs within reach than the MJX collision collides, or "
                 "more touching contacts than it keeps (%s); simulated with MuJoCo C", len(again), b,
                 mjx_collision.Cull.of(cfg.physics))
  return Trajectory(**out, resimulated=np.asarray(overflow, bool))
