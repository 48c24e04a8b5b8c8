"""Evaluation metrics (../shared/DESIGN.md, "Evaluation protocol"): physics from tracks, and pixels.

`score_video` compares one generated video with the simulator's truth of its example and returns per-example
quantities; `summarize` pools them over a split into the report's numbers. Pixel distances are in pixels of
the dataset's resolution. Frame 0 is the given image and is left out of every per-video average.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage, stats

from kinemask_jax import tracking


def _nanmean(a, axis=None):
  """np.nanmean that returns NaN for all-NaN slices without a warning (nothing measured there)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmean(a, axis=axis)


def psnr(video: np.ndarray, truth: np.ndarray) -> float:
  """Mean over frames 1.. of the per-frame PSNR (dB) of uint8 videos [T,H,W,3]; identical frames count 100."""
  err = (video[1:].astype(np.float64) - truth[1:].astype(np.float64)) ** 2
  mse = err.reshape(err.shape[0], -1).mean(1)
  return float(np.mean(np.where(mse > 0, 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12)), 100.0)))


def ssim(video: np.ndarray, truth: np.ndarray, window: int = 7) -> float:
  """Mean SSIM over frames 1.. and channels of uint8 videos [T,H,W,3] (Wang et al. 2004, uniform
  `window` x `window` statistics with sample covariances, K1 = 0.01, K2 = 0.03, data range 255)."""
  x = video[1:].astype(np.float64)
  y = truth[1:].astype(np.float64)
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  size = (1, window, window, 1)
  mean = lambda a: ndimage.uniform_filter(a, size=size, mode="reflect")
  n = window * window
  mx, my = mean(x), mean(y)
  cov = n / (n - 1)
  vx = cov * (mean(x * x) - mx * mx)
  vy = cov * (mean(y * y) - my * my)
  vxy = cov * (mean(x * y) - mx * my)
  s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
  pad = window // 2  # as skimage: leave out the border where the window leaves the image
  return float(s[:, pad:-pad or None, pad:-pad or None].mean())


def carry_forward(centroid: np.ndarray, found: np.ndarray) -> np.ndarray:
  """centroid [T,K,2] with frames where an object is not found replaced by its last found position (NaN
  before it is first found)."""
  out = centroid.copy()
  for t in range(1, out.shape[0]):
    out[t] = np.where(found[t, :, None], out[t], out[t - 1])
  return out


def fragments(labels: np.ndarray, k: int) -> np.ndarray:
  """int [T]: connected pieces (4-connected, at least 2 pixels) of object k's pixels in each frame."""
  out = np.zeros(labels.shape[0], np.int64)
  for t, frame in enumerate(labels):
    pieces, n = ndimage.label(frame == k + 1)
    if n:
      out[t] = int((np.bincount(pieces.ravel())[1:] >= 2).sum())
  return out


def hit_objects(collisions: np.ndarray, num_objects: int) -> np.ndarray:
  """bool [N]: objects in any object-object collision (rows (frame, a, b), 1-based, padded with -1)."""
  hit = np.zeros(num_objects, bool)
  for frame, a, b in collisions:
    if frame >= 0 and a > 0 and b > 0:
      hit[[a - 1, b - 1]] = True
  return hit


def score_video(video: np.ndarray, example: dict, move_threshold_px: float) -> dict:
  """Physics and pixel scores of a generated `video` uint8 [T,H,W,3] against the truth in `example` (a
  dataset example: video, instance_ids, centroid_px, visible, moving_at_start, collisions, num_objects).

  Returns per-example arrays and counts, pooled by `summarize`.
  """
  n = int(example["num_objects"])
  ids = np.asarray(example["instance_ids"])
  truth_video = np.asarray(example["video"])
  masks = tracking.masks_from_ids(ids[0], n)
  tr = tracking.track(video, masks, truth_video[0])
  truth_c = np.asarray(example["centroid_px"])[:, :n]
  truth_vis = np.asarray(example["visible"])[:, :n]
  truth_area = np.stack([(ids == k + 1).sum((1, 2)) for k in range(n)], -1)
  trackable = np.isfinite(tr.reference_color).all(-1) & truth_vis[0]  # visible and coloured in frame 0
  controlled = np.asarray(example["moving_at_start"])[:n] & trackable
  collided = hit_objects(np.asarray(example["collisions"]), n) & ~controlled & trackable
  others = trackable & ~controlled & ~collided
  gen_c = carry_forward(tr.centroid, tr.found)
  frames = np.arange(1, video.shape[0])

  err = np.linalg.norm(gen_c - truth_c, axis=-1)  # [T,N]; NaN where never found
  err = np.where(truth_vis, err, np.nan)
  lost = ~np.isfinite(gen_c[..., 0])
  # An object never found in the generated video is as far off as the image is wide.
  err = np.where(truth_vis & lost, float(video.shape[2]), err)
  motion_curve = _nanmean(np.where(controlled[None], err, np.nan), axis=1)

  gen_disp = gen_c - gen_c[:1]
  gen_disp = np.where(np.isfinite(gen_disp), gen_disp, 0.0)
  truth_disp = truth_c - truth_c[:1]
  moved = np.linalg.norm(gen_disp, axis=-1).max(0) > move_threshold_px  # [N]
  # "Hit": in a collision and moved by the simulator; objects merely touched count in neither class.
  truth_moved = np.linalg.norm(np.where(truth_vis[..., None], truth_disp, 0.0), axis=-1).max(0) > move_threshold_px
  hit = collided & truth_moved
  disp_err = np.linalg.norm(gen_disp - truth_disp, axis=-1)[frames]
  disp_err = np.where(truth_vis[frames], disp_err, np.nan)
  hit_disp_err = [float(_nanmean(disp_err[:, j])) for j in np.flatnonzero(hit) if truth_vis[frames, j].any()]
  still_disp = [float(np.linalg.norm(gen_disp[:, j], axis=-1).max()) for j in np.flatnonzero(others)]

  # Consistency, over trackable objects and frames 1.. where the simulator shows them.
  shown = truth_vis[frames] & trackable[None]
  found = tr.found[frames]
  both = shown & found
  area_err = np.abs(tr.area[frames] - truth_area[frames]) / np.maximum(truth_area[frames], 1)
  color_drift = np.linalg.norm(tr.color[frames] - tr.reference_color[None], axis=-1)
  pieces = np.stack([fragments(tr.labels, k) for k in range(n)], -1)[frames] if n else np.zeros((len(frames), 0))
  return dict(
      motion_curve=motion_curve,
      interaction=dict(tp=int((hit & moved).sum()), fn=int((hit & ~moved).sum()),
                       fp=int((others & moved).sum()), tn=int((others & ~moved).sum())),
      hit_disp_err=hit_disp_err,
      still_disp=still_disp,
      still_count=int((others & ~moved).sum()),
      area_err=area_err[both].tolist(),
      color_drift=color_drift[both].tolist(),
      vanished=int((shown & ~found).sum()),
      shown=int(shown.sum()),
      fragmented=int((pieces[both] > 1).sum()),
      psnr=psnr(video, truth_video),
      ssim=ssim(video, truth_video),
      # Per object [N] (for a person reading one video, e.g. the demo): moved in the generated video, and hit
      # (in a collision and moved) in the simulator's.
      moved=moved.tolist(), truth_hit=hit.tolist(),
  )


def spearman(x, y) -> float:
  """Rank correlation; 0 when either side is constant (no response is no evidence of causality)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if np.ptp(x) == 0 or np.ptp(y) == 0:
    return 0.0
  return float(stats.spearmanr(x, y).statistic)


def summarize(scores: list[dict]) -> dict:
  """Pools per-example scores into the report's numbers (NaN where nothing was measured)."""
  nan = float("nan")
  mean = lambda xs: float(np.mean(xs)) if len(xs) else nan
  curves = np.stack([s["motion_curve"] for s in scores])
  c = {k: sum(s["interaction"][k] for s in scores) for k in ("tp", "fn", "fp", "tn")}
  precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else nan
  recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else nan
  f1 = 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"]) if c["tp"] + c["fp"] + c["fn"] else nan
  flat = lambda key: [v for s in scores for v in s[key]]
  still_total = sum(len(s["still_disp"]) for s in scores)
  shown = sum(s["shown"] for s in scores)
  curve = _nanmean(curves, axis=0)
  motion = float(_nanmean(curves[:, 1:]))
  return dict(
      motion_error_px=motion,
      motion_error_curve=curve.tolist(),
      interaction_precision=precision, interaction_recall=recall, interaction_f1=f1,
      hit_displacement_error_px=mean(flat("hit_disp_err")),
      still_displacement_px=mean(flat("still_disp")),
      still_fraction=sum(s["still_count"] for s in scores) / still_total if still_total else nan,
      area_error=mean(flat("area_err")),
      color_drift=mean(flat("color_drift")),
      vanished_fraction=sum(s["vanished"] for s in scores) / shown if shown else nan,
      fragmented_fraction=sum(s["fragmented"] for s in scores) / shown if shown else nan,
      psnr=mean([s["psnr"] for s in scores]),
      ssim=mean([s["ssim"] for s in scores]),
      examples=len(scores),
      hit_objects=c["tp"] + c["fn"], never_hit_objects=c["fp"] + c["tn"],
  )
