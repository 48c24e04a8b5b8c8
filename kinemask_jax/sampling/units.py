"""Units of the sampling API, from a model config alone (no weights): velocities in metres per second in
the camera frame (right, down, forward), arrows in image pixels, and the model's speed range.

`KineMaskPipeline` is a `Units` of its config; a command can check a velocity with `Units(config)` before it
loads any weights.
"""

from __future__ import annotations

import math

import numpy as np

from datagen import scenes


class InputError(ValueError):
  """An argument of the sampling API that cannot be used; the message names it."""


class Units:
  """Shapes and units of the model described by `config` (a video-model config, e.g. a checkpoint's)."""

  def __init__(self, config):
    self.config = config

  @property
  def video_shape(self) -> tuple[int, int, int, int]:
    """(T, H, W, 3) of the generated videos."""
    d = self.config.data
    return (d.num_frames, d.height, d.width, 3)

  @property
  def fps(self) -> float:
    return float(self.config.data.fps)

  def _nominal_camera(self) -> tuple[float, float, float]:
    """(focal length px, object depth m, elevation rad): the middle of the data engine's camera ranges."""
    s = self.config.data.scene
    focal = scenes.focal_length_px(self.config.data.width, s.camera_fov_deg)
    return focal, float(np.mean(s.camera_distance_m)), math.radians(float(np.mean(s.camera_elevation_deg)))

  def complete_velocity(self, velocity) -> np.ndarray:
    """(right, down) or (right, down, forward) m/s -> float32 [3]; see the module docstring."""
    v = np.asarray(velocity, np.float64).reshape(-1)
    if v.size == 2:
      _, _, elevation = self._nominal_camera()
      v = np.array([v[0], v[1], -v[1] / math.tan(elevation)])  # on the table: further away = up the image
    return v.astype(np.float32)

  def velocity_from_arrow(self, start_xy, end_xy, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """A camera-frame velocity float32 [3] (m/s) from an arrow drawn on the image.

    The arrow goes from the object (start_xy, pixels) to where it would be one second later if nothing
    stopped it (end_xy). image_size (H, W) is the size of the image the arrow was drawn on (default: the
    model's). Approximate: it assumes the object at the typical camera distance and moving on the table.
    """
    h, w = image_size or self.video_shape[1:3]
    focal, depth, _ = self._nominal_camera()
    dx = (end_xy[0] - start_xy[0]) * self.config.data.width / w
    dy = (end_xy[1] - start_xy[1]) * self.config.data.height / h
    return self.complete_velocity((dx * depth / focal, dy * depth / focal))

  def arrow_from_velocity(self, velocity) -> tuple[float, float]:
    """Inverse of `velocity_from_arrow` at the model's size: the pixel displacement (dx, dy) in one second."""
    focal, depth, _ = self._nominal_camera()
    v = self.complete_velocity(velocity)
    return float(v[0] * focal / depth), float(v[1] * focal / depth)

  def check_velocity(self, velocity, name: str = "velocity") -> np.ndarray:
    """A velocity as `generate` takes it -> float32 [3] m/s (camera frame), or InputError naming `name`
    (not 2 or 3 finite numbers, or a component beyond the model's conditioning.v_max_mps)."""
    try:
      v = np.asarray(velocity, np.float64)
    except (TypeError, ValueError) as e:
      raise InputError(f"{name}: expected 2 or 3 numbers (m/s, camera frame), got {velocity!r}") from e
    if v.shape not in ((2,), (3,)):
      raise InputError(f"{name}: expected 2 (right, down) or 3 (right, down, forward) numbers in m/s, got shape "
                       f"{v.shape}")
    if not np.isfinite(v).all():
      raise InputError(f"{name}: must be finite, got {v.tolist()}")
    v = self.complete_velocity(v)
    v_max = self.config.conditioning.v_max_mps
    if np.abs(v).max() > v_max * (1 + 1e-6):
      raise InputError(f"{name}: {[round(float(x), 3) + 0.0 for x in v]} m/s has a component beyond the model's range of "
                       f"+-{v_max} m/s (conditioning.v_max_mps; the mask would clip it)")
    return v
