"""Scene -> MJCF.

Two forms of the same physics:
- `scene_xml(scene)`: one compact model per scene (only its real objects), for the MuJoCo C engine.
- `canonical_xml(cfg)`: one model for a whole batch, for MJX, whose static structure (geom types, contact
  pairs, mesh topology) cannot vary inside a vmap. Every object slot carries one geom of each shape of the
  table (datagen/shapes.py), named <shape><slot>; per scene, `physics.mjx_batch_params` moves the unused
  geoms of each slot far above the scene (geom_pos is traced) and scales the mesh shapes' vertices, so one
  compile serves every scene.

Each shape's geom, mesh (cylinders are convex prisms of `physics.cylinder_sides` sides in both forms: MJX's
JAX backend has no cylinder-box or cylinder-sphere collision) and analytic inertia come from its entry in
the shape table, so the two backends simulate the same bodies.
"""

from __future__ import annotations


import ml_collections
import numpy as np

from datagen import scenes as scenes_lib
from datagen import shapes as shapes_lib

# Unused geoms of slot k, shape j wait at this height above their body: far apart from each other and
# from anything real, so they never touch.
PARK_HEIGHT_M = 100.0
PARK_TINY_M = 1e-3
# The ground below the table is a finite box, not a plane: an infinite plane would meet parked geoms.
GROUND_HALF_M = 10.0


def object_inertia(shape: int, size: np.ndarray, mass_kg: float) -> np.ndarray:
  """Principal moments [3] (kg m^2) of the solid of shape id `shape` with half-extents `size`."""
  return shapes_lib.by_id(shape).inertia(size, mass_kg)


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
  return f'      <geom {shapes_lib.by_id(shape).geom_xml(common, size, mesh)}/>\n'


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
    mesh, entry = "", shapes_lib.by_id(shape)
    if entry.mesh is not None:
      mesh = f"{entry.name}{k}"
      meshes.append(f'    <mesh name="{mesh}" vertex="{_fmt(entry.mesh(cfg.physics.cylinder_sides, size))}"/>\n')
    geom = _geom(f"geom{k}", shape, size, float(scene.friction[k]), mesh)
    bodies.append(_body(k, scene.position[k], float(scene.yaw_rad[k]), float(scene.mass_kg[k]),
                        object_inertia(shape, size, float(scene.mass_kg[k])), geom))
  header = _header(cfg, scene.table_half_m, scene.table_height_m)
  header = header.replace("</asset>", "".join(meshes) + "  </asset>")
  return header + "".join(bodies) + "  </worldbody>\n" + _contact_sensors(n, lambda k: f"geom{k}") + "</mujoco>\n"


def canonical_mesh_name(shape_name: str, slot: int) -> str:
  return f"{shape_name}mesh{slot}"


def canonical_xml(cfg: ml_collections.ConfigDict) -> str:
  """MJCF with `max_objects` slots, each holding a geom <shape><slot> of every shape of the table (unit
  sizes; mesh shapes' unit meshes are named by `canonical_mesh_name`, slot by slot in table order)."""
  n = cfg.scene.max_objects
  table = list(shapes_lib.SHAPES.values())
  sides = cfg.physics.cylinder_sides
  meshes = "".join(f'    <mesh name="{canonical_mesh_name(e.name, k)}" vertex="{_fmt(e.mesh(sides, np.ones(3)))}"/>\n'
                   for k in range(n) for e in table if e.mesh is not None)
  bodies = []
  for k in range(n):
    geoms = "".join(_geom(f"{e.name}{k}", i, (0.05, 0.05, 0.05), 0.5, canonical_mesh_name(e.name, k))
                    for i, e in enumerate(table))
    bodies.append(_body(k, (0, 0, 1 + k), 0.0, 1.0, (1e-3, 1e-3, 1e-3), geoms))
  header = _header(cfg).replace("</asset>", meshes + "  </asset>")
  return header + "".join(bodies) + "  </worldbody>\n</mujoco>\n"
