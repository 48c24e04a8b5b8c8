"""Object tracker: each object's centroid, area and colour per frame, found by the object colours of frame 0.

A pixel's chromaticity tells which object it shows whatever the lighting (datagen/palette.py): a pixel
belongs to the object whose frame-0 chromaticity is nearest, if that is within palette.MAX_CHROMA_DISTANCE
and the pixel can show an object (palette.shows_object). The evaluation (kinemask_jax/evaluation/) tracks
generated videos this way; on ground-truth renders it recovers the simulator's silhouette centroids
(tests/test_tracking.py), with the same per-label statistics (datagen.truth.label_statistics).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from datagen import palette, truth

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


def _check(video: np.ndarray, masks: np.ndarray) -> None:
  if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
    raise ValueError(f"video: expected uint8 [T,H,W,3], got {video.dtype} {video.shape}")
  if masks.ndim != 3 or masks.shape[1:] != video.shape[1:3]:
    raise ValueError(f"masks: expected bool [K,H,W] with H,W = {video.shape[1:3]}, got {masks.shape}")


def reference_chromaticity(frame: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each object's chromaticity [K,3] and colour [K,3] in `frame` [H,W,3]: medians over its saturated mask
  pixels (NaN for an object with none, which then cannot be tracked)."""
  chroma, sat, value = palette.chromaticity(frame)
  usable = palette.shows_object(sat, value)
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
  chroma, sat, value = palette.chromaticity(video)
  valid = np.isfinite(ref_chroma).all(-1)
  if not valid.any():
    return np.zeros(video.shape[:-1], np.int32)
  ref = np.where(valid[:, None], ref_chroma, 1e3)  # untrackable objects are never nearest
  dist = np.linalg.norm(chroma[..., None, :] - ref, axis=-1)  # [T,H,W,K]
  nearest = dist.argmin(-1)
  ok = (np.take_along_axis(dist, nearest[..., None], -1)[..., 0] <= palette.MAX_CHROMA_DISTANCE)
  ok &= palette.shows_object(sat, value)
  return np.where(ok, nearest + 1, 0).astype(np.int32)


def track(video: np.ndarray, masks: np.ndarray, reference_frame: np.ndarray | None = None) -> Tracks:
  """Tracks the K objects given by their frame-0 masks through `video`.

  video uint8 [T,H,W,3]; masks bool [K,H,W] (frame 0's pixels of each object, e.g. datagen.truth.masks_from_ids of the
  dataset's instance_ids[0], or the sampling API's object masks); reference_frame uint8 [H,W,3], the image
  the masks belong to and the object colours are read from (default: video[0]; for a generated video, the
  input image, so that a video that lost its objects from frame 0 on is scored as such).
  """
  video = np.asarray(video)
  masks = np.asarray(masks, bool)
  _check(video, masks)
  k = masks.shape[0]
  reference_frame = video[0] if reference_frame is None else np.asarray(reference_frame)
  if reference_frame.shape != video.shape[1:]:
    raise ValueError(f"reference_frame: expected shape {video.shape[1:]}, got {reference_frame.shape}")
  ref_chroma, ref_rgb = reference_chromaticity(reference_frame, masks)
  labels = label_pixels(video, ref_chroma)
  centroid, area, color = truth.label_statistics(labels, k, video)
  return Tracks(centroid=centroid.astype(np.float32), area=area, color=color.astype(np.float32),
                reference_color=ref_rgb, labels=labels)
