"""Device mesh and logical-axis sharding rules.

The mesh has three axes declared once here, `data`, `fsdp` and `tensor`; their sizes come from the config.
Parameters carry logical axis names (`embed`, `mlp`, `heads`, ...) given where they are created
(`param_init`), activations are constrained with `constrain`, and a list of rules in the config maps
logical names to mesh axes. The same model code then runs unsharded on one device (no mesh active:
every constraint is a no-op) and sharded on any mesh.

A logical dimension whose size the mapped mesh axes do not divide is replicated instead of padded, so a
small layer (a norm scale, the 7-channel patch embedding) never blocks a mesh shape.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
# Logical names of activations; parameters use the same vocabulary.
BATCH, LENGTH, EMBED, HEADS, KV, MLP = "batch", "length", "embed", "heads", "kv", "mlp"

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

class _Active(threading.local):
  """The (mesh, rules) contexts entered by `activate`, per thread: a step traced on a helper thread (e.g.
  kinemask_jax/express.py compiling ahead) neither sees nor disturbs the main thread's."""

  def __init__(self):
    self.stack: list[tuple[Mesh, Rules]] = []


_active = _Active()


def param_init(init, names: tuple[str | None, ...]):
  """An initializer whose parameter carries logical axis `names` (one per dimension).

  Sharding is applied later from the rules (`state_shardings`), not at creation, so the same model can be
  built on one device and then placed on any mesh.
  """
  return nnx.with_partitioning(init, names, eager_sharding=False)


def param(value: jax.Array, names: tuple[str | None, ...]) -> nnx.Param:
  """A parameter holding `value` whose dimensions have logical axis `names`."""
  if len(names) != np.ndim(value):
    raise ValueError(f"{len(names)} logical names {names} for a parameter of shape {np.shape(value)}")
  return nnx.Param(value, out_sharding=tuple(names), eager_sharding=False)


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with axes (data, fsdp, tensor) of the given sizes; one size may be -1 (all remaining devices).

  Raises ValueError naming the shape and the device count when they do not fit.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = [int(s) for s in shape]
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"mesh shape needs {len(MESH_AXES)} sizes {MESH_AXES}, got {shape}")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh shape {shape}: sizes must be positive, with at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"mesh shape {shape} cannot be filled with {len(devices)} devices")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ValueError(f"mesh shape {shape} needs {math.prod(shape)} devices, {len(devices)} available")
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Within this context (while tracing), `constrain` shards activations on `mesh` by `rules`."""
  _active.stack.append((mesh, tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in rules)))
  try:
    yield
  finally:
    _active.stack.pop()


def spec_for(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules) -> PartitionSpec:
  """PartitionSpec for an array of `shape` whose dimensions have logical `names`.

  Each name maps to mesh axes by the first matching rule; an axis already used by an earlier dimension, or
  whose size does not divide the dimension, is dropped (that dimension is replicated over it).
  """
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name, dim in zip(names, shape):
    axes = table.get(name) if name is not None else None
    if axes is None:
      spec.append(None)
      continue
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    kept = []
    size = 1
    for axis in axes:
      if axis in used or dim % (size * mesh.shape[axis]):
        continue
      kept.append(axis)
      size *= mesh.shape[axis]
    used.update(kept)
    spec.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
  return PartitionSpec(*spec)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Constrains activation `x` to the sharding of its logical `names`; a no-op when no mesh is active."""
  if not _active.stack:
    return x
  mesh, rules = _active.stack[-1]
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_for(names, x.shape, mesh, rules)))


def _logical_names(variable: nnx.Variable) -> tuple[str | None, ...]:
  meta = variable.get_metadata()
  for key in ("out_sharding", "sharding_names", "sharding"):
    if meta.get(key):
      return tuple(meta[key])
  return (None,) * np.ndim(variable.get_value())


def state_shardings(state, mesh: Mesh, rules: Rules):
  """NamedShardings for every variable of an nnx.State (same tree), from its logical names and the rules."""
  def one(v):
    value = v.get_value()
    return v.replace(NamedSharding(mesh, spec_for(_logical_names(v), np.shape(value), mesh, rules)))
  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, rules: Rules, shape: Sequence[int]) -> NamedSharding:
  """Sharding of an input array of `shape` whose leading dimension is the batch (the rest replicated)."""
  return NamedSharding(mesh, spec_for((BATCH,) + (None,) * (len(shape) - 1), shape, mesh, rules))
