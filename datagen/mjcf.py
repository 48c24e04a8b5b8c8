"""Scene -> MJCF.

Two forms of the same physics:
- `scene_xml(scene)`: one compact model per scene (only its real objects), for the MuJoCo C engine.
- `canonical_xml(cfg)`: one model for a whole batch, for MJX, whose static structure (geom types, contact
  pairs, mesh topology) cannot vary inside a vmap. Every object slot carries a box, a sphere and a
  cylinder mesh; per scene, `physics.mjx_batch_model` moves the two unused geoms of each slot far above
  the scene (geom_pos is traced) and scales the cylinder's vertices, so one compile serves every scene.

Cylinders are convex meshes (a prism of `physics.cylinder_sides` sides) in both forms: MJX's JAX backend
has no cylinder-box or cylinder-sphere collision. Inertials are explicit and analytic in both forms, so
the two backends simulate the same bodies.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np

from datagen import scenes as scenes_lib

# Unused geoms of slot k, shape j wait at this height above their body: far apart from each other and
# from anything real, so they never touch.
PARK_HEIGHT_M = 100.0
PARK_TINY_M = 1e-3
# The ground below the table is a finite box, not a plane: an infinite plane would meet parked geoms.
GROUND_HALF_M = 10.0


def object_inertia(shape: int, size: np.ndarray, mass_kg: float) -> np.ndarray:
  """Principal moments [3] (kg m^2) of a solid box / sphere / cylinder with half-extents `size`."""
  a, b, c = (float(x) for x in size)
  if shape == scenes_lib.BOX:
    return mass_kg / 3.0 * np.array([b * b + c * c, a * a + c * c, a * a + b * b])
  if shape == scenes_lib.SPHERE:
    return np.full(3, 0.4 * mass_kg * a * a)
  side = mass_kg * (3 * a * a + 4 * c * c) / 12.0
  return np.array([side, side, 0.5 * mass_kg * a * a])


def cylinder_vertices(sides: int, radius: float = 1.0, half_height: float = 1.0) -> np.ndarray:
  """[2*sides, 3] vertices of the prism that stands in for a cylinder (circumscribes the true circle's
  area: the polygon's area equals pi r^2)."""
  ang = np.arange(sides) * 2 * math.pi / sides
  # Scale the polygon so that its area matches the circle's.
  scale = math.sqrt(math.pi / (0.5 * sides * math.sin(2 * math.pi / sides)))
  ring = np.stack([np.cos(ang), np.sin(ang)], 1) * radius * scale
  return np.concatenate([np.c_[ring, -half_height * np.ones(sides)], np.c_[ring, half_height * np.ones(sides)]])


def _fmt(values) -> str:
  return " ".join(f"{float(v):.9g}" for v in np.ravel(values))


def _header(cfg: ml_collections.ConfigDict, scene_table_half=None, table_height=None) -> str:
  p, s = cfg.physics, cfg.scene
  tx, ty = scene_table_half if scene_table_half is not None else s.table_half_m
  th = table_height if table_height is not None else s.table_height_m
  # Table and ground have zero friction: MuJoCo takes the larger of two geoms' frictions, so the
  # object's own friction decides.
  return f"""<mujoco model="kinemask_scene">
  <option timestep="{p.timestep_s}" iterations="{p.solver_iterations}" ls_iterations="{p.ls_iterations}"/>
  <visual><global offwidth="64" offheight="64"/></visual>
  <asset><material name="mat" rgba="1 1 1 1"/></asset>
  <worldbody>
    <geom name="ground" type="box" size="{GROUND_HALF_M} {GROUND_HALF_M} 0.1" pos="0 0 {-th - 0.1}" friction="0 0 0" material="mat"/>
    <geom name="table" type="box" size="{tx} {ty} {th / 2}" pos="0 0 {-th / 2}" friction="0 0 0" material="mat"/>
"""


def _body(k: int, pos, yaw: float, mass: float, inertia, geoms: str) -> str:
  return (f'    <body name="obj{k}" pos="{_fmt(pos)}" quat="{_fmt(scenes_lib.yaw_quat(yaw))}">\n'
          f'      <freejoint name="free{k}"/>\n'
          f'      <inertial pos="0 0 0" mass="{mass:.9g}" diaginertia="{_fmt(inertia)}"/>\n'
          f'{geoms}    </body>\n')


def _geom(name: str, shape: int, size, friction: float, mesh: str = "", pos=(0, 0, 0)) -> str:
  common = f'name="{name}" friction="{friction:.9g} 0.005 0.0001" material="mat" pos="{_fmt(pos)}"'
  if shape == scenes_lib.BOX:
    return f'      <geom {common} type="box" size="{_fmt(size)}"/>\n'
  if shape == scenes_lib.SPHERE:
    return f'      <geom {common} type="sphere" size="{float(size[0]):.9g}"/>\n'
  return f'      <geom {common} type="mesh" mesh="{mesh}"/>\n'


def _contact_sensors(n: int, geom_of) -> str:
  rows = [f'    <contact geom1="{geom_of(a)}" geom2="{geom_of(b)}" data="found"/>\n'
          for a, b in object_pairs(n)]
  return "  <sensor>\n" + "".join(rows) + "  </sensor>\n" if rows else ""


def object_pairs(n: int) -> list[tuple[int, int]]:
  """Object index pairs (a < b), the order of the contact sensors."""
  return [(a, b) for a in range(n) for b in range(a + 1, n)]


def scene_xml(scene: scenes_lib.Scene, cfg: ml_collections.ConfigDict) -> str:
  """Compact MJCF of one scene: bodies obj0..obj{n-1}, geoms geom0.., contact sensors per pair."""
  n = scene.num_objects
  meshes, bodies = [], []
  for k in range(n):
    shape, size = int(scene.shape[k]), scene.size[k]
    mesh = ""
    if shape == scenes_lib.CYLINDER:
      mesh = f"cyl{k}"
      verts = cylinder_vertices(cfg.physics.cylinder_sides, size[0], size[2])
      meshes.append(f'    <mesh name="{mesh}" vertex="{_fmt(verts)}"/>\n')
    geom = _geom(f"geom{k}", shape, size, float(scene.friction[k]), mesh)
    bodies.append(_body(k, scene.position[k], float(scene.yaw_rad[k]), float(scene.mass_kg[k]),
                        object_inertia(shape, size, float(scene.mass_kg[k])), geom))
  header = _header(cfg, scene.table_half_m, scene.table_height_m)
  header = header.replace("</asset>", "".join(meshes) + "  </asset>")
  return header + "".join(bodies) + "  </worldbody>\n" + _contact_sensors(n, lambda k: f"geom{k}") + "</mujoco>\n"


def canonical_xml(cfg: ml_collections.ConfigDict) -> str:
  """MJCF with `max_objects` slots, each holding geoms box{k}, sphere{k}, cyl{k} (unit sizes)."""
  n = cfg.scene.max_objects
  meshes = "".join(f'    <mesh name="cylmesh{k}" vertex="{_fmt(cylinder_vertices(cfg.physics.cylinder_sides))}"/>\n'
                   for k in range(n))
  bodies = []
  for k in range(n):
    geoms = "".join(_geom(f"{name}{k}", shape, (0.05, 0.05, 0.05), 0.5, f"cylmesh{k}")
                    for shape, name in enumerate(("box", "sphere", "cyl")))
    bodies.append(_body(k, (0, 0, 1 + k), 0.0, 1.0, (1e-3, 1e-3, 1e-3), geoms))
  header = _header(cfg).replace("</asset>", meshes + "  </asset>")
  return header + "".join(bodies) + "  </worldbody>\n</mujoco>\n"
