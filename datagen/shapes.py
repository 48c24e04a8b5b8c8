"""The object shapes: one table, read by every stage of the data engine and by the outcome predictor.

A `Shape` entry holds everything a stage needs to know of one shape: how the scene sampler draws its size
(and which config ranges it reads), its footprint and inertia, its MJCF geom (and convex mesh, where MuJoCo
needs one), how MJX sizes its geom in the batched model, the renderer's solid (a quadric and three slabs),
and the words captions use for it. A shape's index in the table is its id in a scene and in the dataset's
`shape` feature, so entries are only ever appended. Adding a shape is `register(Shape(...))` with its
functions; tests/test_scenes.py registers an ellipsoid and runs it through sampling, physics, rendering and
captions.

Sizes are half-extents [3] in the body frame: box (a, b, c), sphere (r, r, r), cylinder (r, r, h).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Shape:
  """One shape of the table (see the module docstring)."""
  name: str  # the config's scene.shapes entry and the dataset metadata's shape name
  nouns: tuple[str, str]  # what captions call it; the first is the plain one ("the red cube")
  verbs: tuple[str, str]  # how captions say it moves when pushed
  rolls: bool  # round: starts rolling without slipping when pushed, "rolls" when hit, never topples
  turns: bool  # placed at a random yaw (False: symmetric about its vertical axis, yaw 0)
  size_fields: tuple[str, ...]  # the scene config's (min, max) ranges that sample_size reads
  sample_size: Callable  # (rng, scene config) -> float [3]
  max_radius: Callable  # scene config -> the largest footprint radius its ranges allow
  footprint_radius: Callable  # size [3] -> radius of the footprint circle in the floor plane (any yaw)
  inertia: Callable  # (size [3], mass) -> principal moments [3] of the solid (kg m^2)
  geom_xml: Callable  # (common attributes, size [3], mesh name) -> MJCF <geom> attributes
  geom_size: Callable  # size [3] -> MJX geom_size [3]
  rbound: Callable  # size [3] -> MJX bounding-sphere radius
  solid: Callable  # size jnp [N,3] -> renderer's (quadric a [N,3], radius^2 [N], slab half-extents [N,3], inf: none)
  mesh: Callable | None = None  # (sides, size [3]) -> convex mesh vertices [V,3]; None: a MuJoCo primitive
  mesh_scale: Callable | None = None  # size [3] -> scale [3] of the unit mesh (MJX)


SHAPES: dict[str, Shape] = {}


def register(shape: Shape) -> int:
  """Appends `shape` to the table; returns its id. A name already there is an error."""
  if shape.name in SHAPES:
    raise ValueError(f"shape {shape.name!r} is already registered")
  if (shape.mesh is None) != (shape.mesh_scale is None):
    raise ValueError(f"shape {shape.name!r}: give both mesh and mesh_scale, or neither")
  SHAPES[shape.name] = shape
  return len(SHAPES) - 1


def unregister(name: str) -> None:
  """Removes the LAST entry (ids of the others must not change); for tests that register one."""
  if list(SHAPES)[-1] != name:
    raise ValueError(f"only the last shape can be removed, not {name!r}")
  del SHAPES[name]


def names() -> tuple[str, ...]:
  """Shape names by id."""
  return tuple(SHAPES)


def by_id(shape_id: int) -> Shape:
  """The entry of a shape id (a scene's `shape` value)."""
  return list(SHAPES.values())[int(shape_id)]


def id_of(name: str) -> int:
  return list(SHAPES).index(name)


def _full(size, value):
  return jnp.full_like(size[:, 0], value)


# -- box ------------------------------------------------------------------------------------------------
def _box_inertia(size, mass):
  a, b, c = (float(x) for x in size)
  return mass / 3.0 * np.array([b * b + c * c, a * a + c * c, a * a + b * b])


def _box_solid(size):
  return jnp.zeros_like(size), _full(size, 1.0), size


BOX = register(Shape(
    name="box", nouns=("cube", "block"), verbs=("slides", "moves"), rolls=False, turns=True, size_fields=("box_half_m",),
    sample_size=lambda rng, s: rng.uniform(*s.box_half_m, size=3),
    max_radius=lambda s: math.sqrt(2) * s.box_half_m[1],
    footprint_radius=lambda size: float(math.hypot(size[0], size[1])),
    inertia=_box_inertia,
    geom_xml=lambda common, size, mesh: f'{common} type="box" size="{" ".join(f"{float(v):.9g}" for v in size)}"',
    geom_size=lambda size: np.asarray(size, np.float64),
    rbound=lambda size: float(np.linalg.norm(size)),
    solid=_box_solid))


# -- sphere ---------------------------------------------------------------------------------------------
def _sphere_solid(size):
  return jnp.ones_like(size), size[:, 0] ** 2, jnp.full_like(size, jnp.inf)


SPHERE = register(Shape(
    name="sphere", nouns=("ball", "sphere"), verbs=("rolls", "moves"), rolls=True, turns=False, size_fields=("sphere_radius_m",),
    sample_size=lambda rng, s: np.full(3, rng.uniform(*s.sphere_radius_m)),
    max_radius=lambda s: s.sphere_radius_m[1],
    footprint_radius=lambda size: float(size[0]),
    inertia=lambda size, mass: np.full(3, 0.4 * mass * float(size[0]) ** 2),
    geom_xml=lambda common, size, mesh: f'{common} type="sphere" size="{float(size[0]):.9g}"',
    geom_size=lambda size: np.array([size[0], 0.0, 0.0]),
    rbound=lambda size: float(size[0]),
    solid=_sphere_solid))


# -- cylinder (upright; a convex prism in the physics: MJX has no cylinder-box or cylinder-sphere collision) --
def cylinder_vertices(sides: int, radius: float = 1.0, half_height: float = 1.0) -> np.ndarray:
  """[2*sides, 3] vertices of the prism that stands in for a cylinder (its polygon has the circle's area)."""
  ang = np.arange(sides) * 2 * math.pi / sides
  scale = math.sqrt(math.pi / (0.5 * sides * math.sin(2 * math.pi / sides)))
  ring = np.stack([np.cos(ang), np.sin(ang)], 1) * radius * scale
  return np.concatenate([np.c_[ring, -half_height * np.ones(sides)], np.c_[ring, half_height * np.ones(sides)]])


def _cylinder_size(rng, s):
  r = rng.uniform(*s.cylinder_radius_m)
  return np.array([r, r, rng.uniform(*s.cylinder_half_height_m)])


def _cylinder_inertia(size, mass):
  a, c = float(size[0]), float(size[2])
  side = mass * (3 * a * a + 4 * c * c) / 12.0
  return np.array([side, side, 0.5 * mass * a * a])


def _cylinder_solid(size):
  a = jnp.broadcast_to(jnp.array([1.0, 1.0, 0.0]), size.shape)
  slab = jnp.stack([_full(size, jnp.inf), _full(size, jnp.inf), size[:, 2]], -1)
  return a, size[:, 0] ** 2, slab


CYLINDER = register(Shape(
    name="cylinder", nouns=("cylinder", "cylinder"), verbs=("slides", "moves"), rolls=False, turns=False,
    size_fields=("cylinder_radius_m", "cylinder_half_height_m"),
    sample_size=_cylinder_size,
    max_radius=lambda s: s.cylinder_radius_m[1],
    footprint_radius=lambda size: float(size[0]),
    inertia=_cylinder_inertia,
    geom_xml=lambda common, size, mesh: f'{common} type="mesh" mesh="{mesh}"',
    geom_size=lambda size: np.asarray(size, np.float64),
    rbound=lambda size: float(np.linalg.norm(size)),
    solid=_cylinder_solid,
    mesh=lambda sides, size: cylinder_vertices(sides, size[0], size[2]),
    mesh_scale=lambda size: np.array([size[0], size[0], size[2]])))
