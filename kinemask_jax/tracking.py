"""Object tracker: each object's centroid, area and colour per frame, found by the object colours of frame 0.

The scenes' objects have saturated palette colours and the table, floor and sky are desaturated (see
datagen/scenes.py), and the renderer only scales an object's colour by its shading. So a pixel's
chromaticity (rgb / (r + g + b)) tells which object it shows whatever the lighting: a pixel belongs to the
object whose frame-0 chromaticity is nearest, if that is within `MAX_CHROMA_DISTANCE` and the pixel is
saturated and bright enough. The evaluation suite (kinemask_jax/evaluate.py) tracks generated videos this
way; on ground-truth renders it recovers the simulator's silhouette centroids (tests/test_tracking.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# A pixel can show an object only if its saturation (max - min) / max reaches this (the floor's tiles stay
# at or below datagen.scenes.FLOOR_MAX_SATURATION = 0.22; the palette's least saturated colour, pink, is 0.46)
MIN_SATURATION = 0.3
# ... and its brightest channel reaches this (chromaticity is noise in near-black pixels).
MIN_VALUE = 24
# Largest chromaticity distance from an object's frame-0 chromaticity (palette colours are >= 0.15 apart).
MAX_CHROMA_DISTANCE = 0.08


@dataclasses.dataclass(frozen=True)
class Tracks:
  """Per frame and object: centroid [T,K,2] (x, y in pixels, pixel centres at +0.5; NaN where the object is
  not found), area [T,K] (pixels), colour [T,K,3] (mean RGB of its pixels; NaN where not found), and each
  object's frame-0 reference colour [K,3]; labels int [T,H,W], k + 1 where a pixel shows object k, else 0."""
  centroid: np.ndarray
  area: np.ndarray
  color: np.ndarray
  reference_color: np.ndarray
  labels: np.ndarray

  @property
  def found(self) -> np.ndarray:
    """bool [T,K]: the object has at least one pixel in the frame."""
    return self.area > 0


def chromaticity(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """uint8 [..., 3] -> chromaticity [..., 3] (sums to 1), saturation [...] and value (max channel) [...]."""
  x = np.asarray(rgb, np.float32)
  total = np.maximum(x.sum(-1, keepdims=True), 1.0)
  hi, lo = x.max(-1), x.min(-1)
  return x / total, (hi - lo) / np.maximum(hi, 1.0), hi


def masks_from_ids(instance_ids_hw: np.ndarray, num_objects: int) -> np.ndarray:
  """instance ids [H,W] (0 background, k object k) -> bool masks [num_objects, H, W]."""
  ids = np.asarray(instance_ids_hw)
  return ids[None] == np.arange(1, num_objects + 1)[:, None, None]


def _check(video: np.ndarray, masks: np.ndarray) -> None:
  if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
    raise ValueError(f"video: expected uint8 [T,H,W,3], got {video.dtype} {video.shape}")
  if masks.ndim != 3 or masks.shape[1:] != video.shape[1:3]:
    raise ValueError(f"masks: expected bool [K,H,W] with H,W = {video.shape[1:3]}, got {masks.shape}")


def reference_chromaticity(frame: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each object's chromaticity [K,3] and colour [K,3] in `frame` [H,W,3]: medians over its saturated mask
  pixels (NaN for an object with none, which then cannot be tracked)."""
  chroma, sat, value = chromaticity(frame)
  usable = (sat >= MIN_SATURATION) & (value >= MIN_VALUE)
  ref_chroma = np.full((masks.shape[0], 3), np.nan, np.float32)
  ref_rgb = np.full((masks.shape[0], 3), np.nan, np.float32)
  for k, mask in enumerate(masks):
    pick = mask & usable
    if pick.any():
      ref_chroma[k] = np.median(chroma[pick], axis=0)
      ref_rgb[k] = np.median(frame[pick].astype(np.float32), axis=0)
  return ref_chroma, ref_rgb


def label_pixels(video: np.ndarray, ref_chroma: np.ndarray) -> np.ndarray:
  """int [T,H,W]: k + 1 where a pixel shows object k (nearest usable reference chromaticity), else 0."""
  chroma, sat, value = chromaticity(video)
  valid = np.isfinite(ref_chroma).all(-1)
  if not valid.any():
    return np.zeros(video.shape[:-1], np.int32)
  ref = np.where(valid[:, None], ref_chroma, 1e3)  # untrackable objects are never nearest
  dist = np.linalg.norm(chroma[..., None, :] - ref, axis=-1)  # [T,H,W,K]
  nearest = dist.argmin(-1)
  ok = (np.take_along_axis(dist, nearest[..., None], -1)[..., 0] <= MAX_CHROMA_DISTANCE)
  ok &= (sat >= MIN_SATURATION) & (value >= MIN_VALUE)
  return np.where(ok, nearest + 1, 0).astype(np.int32)


def track(video: np.ndarray, masks: np.ndarray, reference_frame: np.ndarray | None = None) -> Tracks:
  """Tracks the K objects given by their frame-0 masks through `video`.

  video uint8 [T,H,W,3]; masks bool [K,H,W] (frame 0's pixels of each object, e.g. `masks_from_ids` of the
  dataset's instance_ids[0], or the sampling API's object masks); reference_frame uint8 [H,W,3], the image
  the masks belong to and the object colours are read from (default: video[0]; for a generated video, the
  input image, so that a video that lost its objects from frame 0 on is scored as such).
  """
  video = np.asarray(video)
  masks = np.asarray(masks, bool)
  _check(video, masks)
  t, h, w, _ = video.shape
  k = masks.shape[0]
  reference_frame = video[0] if reference_frame is None else np.asarray(reference_frame)
  if reference_frame.shape != video.shape[1:]:
    raise ValueError(f"reference_frame: expected shape {video.shape[1:]}, got {reference_frame.shape}")
  ref_chroma, ref_rgb = reference_chromaticity(reference_frame, masks)
  labels = label_pixels(video, ref_chroma)
  # One pass over the pixels: bin each by (frame, label); bin 0 is "no object".
  key = (np.arange(t)[:, None, None] * (k + 1) + labels).ravel()
  bins = lambda weights=None: np.bincount(key, weights, minlength=t * (k + 1)).reshape(t, k + 1)[:, 1:]
  ys, xs = np.mgrid[0:h, 0:w] + 0.5
  area = bins().astype(np.int64)
  with np.errstate(invalid="ignore", divide="ignore"):
    cx = bins(np.broadcast_to(xs, labels.shape).ravel()) / area
    cy = bins(np.broadcast_to(ys, labels.shape).ravel()) / area
    color = np.stack([bins(video[..., c].astype(np.float64).ravel()) / area for c in range(3)], -1)
  return Tracks(centroid=np.stack([cx, cy], -1).astype(np.float32), area=area, color=color.astype(np.float32),
                reference_color=ref_rgb, labels=labels)
