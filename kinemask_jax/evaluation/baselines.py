"""Baselines the evaluation scores with the same code as the model: videos from the same inputs.

- `copy_first_frame`: nothing moves.
- `constant_velocity`: the pushed objects slide across the image at their initial velocity, projected with
  the example's camera intrinsics and frame-0 depth (information the model does not get), through and over
  everything else: motion without interaction.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def copy_first_frame(example: dict, velocities: np.ndarray | None = None) -> np.ndarray:
  """uint8 [T,H,W,3]: frame 0 repeated. `velocities` is accepted (and ignored) like every baseline's."""
  video = np.asarray(example["video"])
  return np.repeat(video[:1], video.shape[0], axis=0)


def image_velocity_px(example: dict, k: int, velocity_cam: np.ndarray) -> tuple[float, float]:
  """Pixels per second (du, dv) of object k's frame-0 centroid moving at `velocity_cam` (m/s, camera frame):
  the time derivative of the pinhole projection at the centroid, with the object's median frame-0 depth."""
  if "depth" not in example:
    raise ValueError("constant_velocity needs the dataset's depth feature (generate with data.with_depth=True)")
  fx, fy, cx, cy = np.asarray(example["camera_intrinsics"], np.float64)
  mask = np.asarray(example["instance_ids"])[0] == k + 1
  ys, xs = np.nonzero(mask)
  u, v = xs.mean() + 0.5, ys.mean() + 0.5
  z = float(np.median(np.asarray(example["depth"])[0][mask].astype(np.float64)))
  vx, vy, vz = np.asarray(velocity_cam, np.float64)
  return (fx * vx - (u - cx) * vz) / z, (fy * vy - (v - cy) * vz) / z


def constant_velocity(example: dict, fps: float, velocities: np.ndarray | None = None,
                      fill_ring_px: int = 2) -> np.ndarray:
  """uint8 [T,H,W,3]: each object moving at start translated by its projected velocity, frame after frame.

  velocities float [N,3] (m/s, camera frame) replaces the example's frame-0 velocities when given. The
  pixels an object leaves are filled with the median colour of the background ring `fill_ring_px` wide
  around it.
  """
  video = np.asarray(example["video"])
  t, h, w, _ = video.shape
  n = int(example["num_objects"])
  ids0 = np.asarray(example["instance_ids"])[0]
  vel = np.asarray(example["velocity_cam"])[0] if velocities is None else np.asarray(velocities)
  pushed = [k for k in range(n) if example["moving_at_start"][k] and (ids0 == k + 1).any()]
  background = video[0].copy()
  sprites = []
  for k in pushed:
    mask = ids0 == k + 1
    ring = ndimage.binary_dilation(mask, iterations=fill_ring_px) & (ids0 == 0)
    fill = np.median(video[0][ring], axis=0) if ring.any() else np.median(video[0][ids0 == 0], axis=0)
    background[mask] = fill.astype(np.uint8)
    sprites.append((mask, image_velocity_px(example, k, vel[k])))
  out = np.repeat(background[None], t, axis=0)
  ys, xs = np.mgrid[0:h, 0:w]
  for i in range(t):
    for mask, (du, dv) in sprites:
      sy, sx = ys[mask] + int(round(dv * i / fps)), xs[mask] + int(round(du * i / fps))
      inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
      out[i, sy[inside], sx[inside]] = video[0][mask][inside]
  return out
