"""Per-frame truth and events from a rollout and its render (the data contract's physical fields)."""

from __future__ import annotations

import typing

import numpy as np

from datagen import scenes as scenes_lib

if typing.TYPE_CHECKING:  # physics imports MuJoCo, which the model side (captions -> text) does not need
  from datagen import physics

# Motion summaries used by captions.
STOP_SPEED_MPS = 0.05
TOPPLE_TILT_DEG = 40.0


def project(points_world: np.ndarray, camera: scenes_lib.Camera) -> tuple[np.ndarray, np.ndarray]:
  """Pinhole projection of [..., 3] world points -> pixel coordinates [..., 2] (x right, y down; pixel
  centres at +0.5) and camera depth [...]."""
  p = points_world @ camera.rotation.T + camera.translation
  fx, fy, cx, cy = camera.intrinsics
  z = p[..., 2]
  safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
  return np.stack([fx * p[..., 0] / safe + cx, fy * p[..., 1] / safe + cy], -1), z


def masks_from_ids(instance_ids_hw: np.ndarray, num_objects: int) -> np.ndarray:
  """instance ids [H,W] (0 background, k + 1 object k) -> bool masks [num_objects, H, W]."""
  ids = np.asarray(instance_ids_hw)
  return ids[None] == np.arange(1, num_objects + 1)[:, None, None]


def ids_from_masks(masks) -> np.ndarray:
  """bool masks [K,H,W] (disjoint) -> instance ids int32 [H,W], k + 1 where mask k is set, else 0."""
  masks = np.asarray(masks, bool)
  ids = np.zeros(masks.shape[1:], np.int32)
  for k, m in enumerate(masks):
    ids[m] = k + 1
  return ids


def label_statistics(labels: np.ndarray, n: int, values: np.ndarray | None = None):
  """Per frame and label of labels int [T,H,W] (0: none, k + 1: label k < n): centroid [T,n,2] (x, y, pixel
  centres at +0.5; NaN where absent), pixel count int64 [T,n] and, with `values` [T,H,W,C], their mean
  [T,n,C] over each label's pixels. One pass over the pixels (a bincount by frame and label)."""
  t, h, w = labels.shape
  if labels.max(initial=0) > n:
    raise ValueError(f"label {int(labels.max())} exceeds the {n} labels")
  key = (np.arange(t)[:, None, None] * (n + 1) + labels).ravel()
  bins = lambda weights=None: np.bincount(key, weights, minlength=t * (n + 1)).reshape(t, n + 1)[:, 1:]
  ys, xs = np.mgrid[0:h, 0:w] + 0.5
  count = bins().astype(np.int64)
  with np.errstate(invalid="ignore", divide="ignore"):
    cx = bins(np.broadcast_to(xs, labels.shape).ravel()) / count
    cy = bins(np.broadcast_to(ys, labels.shape).ravel()) / count
    means = None if values is None else np.stack(
        [bins(values[..., c].astype(np.float64).ravel()) / count for c in range(values.shape[-1])], -1)
  return np.stack([cx, cy], -1), count, means


def silhouette_centroids(ids: np.ndarray, n_max: int) -> tuple[np.ndarray, np.ndarray]:
  """ids [T,H,W] -> centroid of each object's pixels [T,N,2] (x, y; NaN if absent), pixel count [T,N]."""
  if ids.max(initial=0) > n_max:
    raise ValueError(f"instance id {int(ids.max())} exceeds max_objects={n_max}")
  centroid, count, _ = label_statistics(ids, n_max)
  return centroid, count


def collision_events(contact: np.ndarray, num_objects: int, max_events: int) -> np.ndarray:
  """contact [T,N,N] -> int32 [max_events, 3] rows (frame, a, b), 1-based a < b, the first contact of each
  object pair in time order, padded with -1."""
  rows = []
  for a in range(num_objects):
    for b in range(a + 1, num_objects):
      frames = np.flatnonzero(contact[:, a, b])
      if frames.size:
        rows.append((int(frames[0]), a + 1, b + 1))
  rows.sort()
  out = np.full((max_events, 3), -1, np.int32)
  if rows:
    out[:len(rows)] = rows[:max_events]
  return out


def fall_frames(position: np.ndarray, num_objects: int) -> np.ndarray:
  """position [T,N,3] -> int32 [N]: first frame whose centre is below the table top, -1 if never."""
  below = position[:, :, 2] < 0.0
  first = np.where(below.any(0), below.argmax(0), -1).astype(np.int32)
  first[num_objects:] = -1
  return first


def tilt_deg(quat: np.ndarray) -> np.ndarray:
  """Angle between each body's z axis and the world's z axis, degrees. quat [..., 4] (w, x, y, z)."""
  w, x, y, z = np.moveaxis(quat, -1, 0)
  zz = 1 - 2 * (x * x + y * y)  # world-z component of the body z axis
  return np.degrees(np.arccos(np.clip(zz, -1.0, 1.0)))


def example_truth(scene: scenes_lib.Scene, traj: physics.Trajectory, b: int, ids: np.ndarray,
                  silhouettes: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
  """Truth fields of scene `b` of a rollout: velocity_cam, centroid_px, visible, collisions, fell.

  silhouettes: (centroid [T,N,2], count [T,N]) of `ids` if already computed (datagen/render.silhouettes)."""
  n_max = scene.shape.shape[0]
  n = scene.num_objects
  valid = scene.valid
  position, velocity = traj.position[b], traj.velocity[b]
  velocity_cam = (velocity @ scene.camera.rotation.T) * valid[None, :, None]
  centroid, count = silhouette_centroids(ids, n_max) if silhouettes is None else silhouettes
  projected, _ = project(position, scene.camera)
  visible = (count > 0) & valid[None]
  # Where an object is hidden, its centroid is the projection of its centre (may lie off-image).
  centroid = np.where(visible[..., None], centroid, projected * valid[None, :, None])
  return dict(
      velocity_cam=velocity_cam.astype(np.float32),
      centroid_px=centroid.astype(np.float32),
      visible=visible,
      collisions=collision_events(traj.contact[b], n, n_max * (n_max - 1) // 2),
      fell=fall_frames(position, n),
  )
