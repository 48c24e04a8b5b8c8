"""Evaluation metrics: physics from tracks, and pixels. One table, `METRICS`, says what is measured.

Each entry is a `Metric`: its key in the results, its column and sentence in the report, and how it is
measured: `per_video` reads a `Comparison` (one generated video tracked against the simulator's truth of
its example) and `pool` turns a split's per-video values into the number. Entries without `per_video` are
measured per method by kinemask_jax/evaluation/score.py (the speed sweep, text following) and are in the
table for the report. Adding a metric is one `register(Metric(...))` (tests/test_tracking.py registers
one). Pixel distances are in pixels of the dataset's resolution; frame 0 is the given image and is left out
of every per-video average.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage, stats

from datagen import truth
from kinemask_jax.evaluation import tracking


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


def spearman(x, y) -> float:
  """Rank correlation; 0 when either side is constant (no response is no evidence of causality)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if np.ptp(x) == 0 or np.ptp(y) == 0:
    return 0.0
  return float(stats.spearmanr(x, y).statistic)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """A generated video tracked against its example's truth: what every per-video metric reads.

  video, truth_video uint8 [T,H,W,3]; tracks (tracking.Tracks of the video's objects, by frame 0's masks);
  truth_centroid [T,N,2], truth_visible [T,N], truth_area [T,N]; per object [N]: trackable (visible and
  coloured in frame 0), controlled (pushed), hit (in a collision and moved by the simulator), others
  (trackable, never hit, not pushed), moved (moved in the generated video), truth_moved (moved by the
  simulator, any object); centroid [T,N,2] (the tracked centroid carried over frames where the object is not
  found); truth_ids [T,H,W] (the simulator's instance ids: 0 background, k + 1 object k)."""
  video: np.ndarray
  truth_video: np.ndarray
  tracks: tracking.Tracks
  truth_centroid: np.ndarray
  truth_visible: np.ndarray
  truth_area: np.ndarray
  trackable: np.ndarray
  controlled: np.ndarray
  hit: np.ndarray
  others: np.ndarray
  moved: np.ndarray
  truth_moved: np.ndarray
  centroid: np.ndarray
  truth_ids: np.ndarray

  @property
  def frames(self) -> np.ndarray:
    """The frames the per-video averages run over: 1 .. T-1 (frame 0 is the given image)."""
    return np.arange(1, self.video.shape[0])

  @property
  def shown(self) -> np.ndarray:
    """bool [T-1,N]: trackable objects in frames 1.. where the simulator shows them."""
    return self.truth_visible[self.frames] & self.trackable[None]

  @property
  def both(self) -> np.ndarray:
    """bool [T-1,N]: shown and found in the generated video."""
    return self.shown & self.tracks.found[self.frames]

  def displacement(self) -> tuple[np.ndarray, np.ndarray]:
    """(generated, simulated) displacement from frame 0 [T,N,2] (0 where unknown / not visible)."""
    return _displacements(self.centroid, self.truth_centroid, self.truth_visible)

  @functools.cached_property
  def region_error_sums(self) -> dict[str, tuple[float, int]]:
    """Per region of `regions` (REGIONS): (sum over its pixels and channels of |video - simulator| in 0-255
    levels, number of values), computed once for the four region metrics."""
    err = np.abs(self.video[self.frames].astype(np.float64) - self.truth_video[self.frames].astype(np.float64))
    return {name: (float(err[inside].sum()), int(inside.sum()) * err.shape[-1])
            for name, inside in regions(self).items()}


def _displacements(centroid, truth_centroid, truth_visible) -> tuple[np.ndarray, np.ndarray]:
  """(generated, simulated) displacement from frame 0 [T,N,2]: 0 where the generated centroid is unknown or
  the simulator does not show the object."""
  gen = centroid - centroid[:1]
  sim = truth_centroid - truth_centroid[:1]
  return np.where(np.isfinite(gen), gen, 0.0), np.where(truth_visible[..., None], sim, 0.0)


def compare(video: np.ndarray, example: dict, move_threshold_px: float) -> Comparison:
  """Tracks `video` uint8 [T,H,W,3] by the objects of `example` (a dataset example: video, instance_ids,
  centroid_px, visible, moving_at_start, collisions, num_objects) and lines it up with the truth."""
  n = int(example["num_objects"])
  ids = np.asarray(example["instance_ids"])
  truth_video = np.asarray(example["video"])
  tr = tracking.track(video, truth.masks_from_ids(ids[0], n), truth_video[0])
  truth_c = np.asarray(example["centroid_px"])[:, :n]
  truth_vis = np.asarray(example["visible"])[:, :n]
  truth_area = np.stack([(ids == k + 1).sum((1, 2)) for k in range(n)], -1)
  trackable = np.isfinite(tr.reference_color).all(-1) & truth_vis[0]
  controlled = np.asarray(example["moving_at_start"])[:n] & trackable
  collided = hit_objects(np.asarray(example["collisions"]), n) & ~controlled & trackable
  gen_c = carry_forward(tr.centroid, tr.found)
  gen_disp, truth_disp = _displacements(gen_c, truth_c, truth_vis)
  moved = np.linalg.norm(gen_disp, axis=-1).max(0) > move_threshold_px
  truth_moved = np.linalg.norm(truth_disp, axis=-1).max(0) > move_threshold_px
  # "Hit": in a collision and moved by the simulator; objects merely touched count in neither class.
  hit = collided & truth_moved
  return Comparison(video=np.asarray(video), truth_video=truth_video, tracks=tr, truth_centroid=truth_c,
                    truth_visible=truth_vis, truth_area=truth_area, trackable=trackable, controlled=controlled,
                    hit=hit, others=trackable & ~controlled & ~collided, moved=moved, truth_moved=truth_moved,
                    centroid=gen_c, truth_ids=ids)


@dataclasses.dataclass(frozen=True)
class Metric:
  """One measured quantity; see the module docstring. `higher_is_better` draws the arrow in the header."""
  key: str
  header: str
  fmt: str
  about: str
  higher_is_better: bool
  per_video: Callable[[Comparison], Any] | None = None
  pool: Callable[[list], Any] | None = None


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
  """Adds a metric to the table (and so to every score, report and table); its key must be new."""
  if metric.key in METRICS:
    raise ValueError(f"metric {metric.key!r} is already registered")
  if (metric.per_video is None) != (metric.pool is None):
    raise ValueError(f"metric {metric.key!r}: give both per_video and pool, or neither (measured elsewhere)")
  METRICS[metric.key] = metric
  return metric


def unregister(key: str) -> None:
  del METRICS[key]


def _mean(values: list) -> float:
  return float(np.mean(values)) if len(values) else float("nan")


def _flat_mean(lists: list) -> float:
  return _mean([v for values in lists for v in values])


def _ratio(pairs: list) -> float:
  """Pools (numerator, denominator) pairs into sum / sum (NaN over nothing)."""
  num, den = (sum(x) for x in zip(*pairs)) if pairs else (0, 0)
  return num / den if den else float("nan")


def _motion_error(c: Comparison) -> np.ndarray:
  """Per frame [T]: the controlled objects' mean centroid error, px (NaN where none is visible). An object
  never found in the generated video is as far off as the image is wide."""
  err = np.linalg.norm(c.centroid - c.truth_centroid, axis=-1)
  err = np.where(c.truth_visible, err, np.nan)
  err = np.where(c.truth_visible & ~np.isfinite(c.centroid[..., 0]), float(c.video.shape[2]), err)
  return _nanmean(np.where(c.controlled[None], err, np.nan), axis=1)


def _interaction(c: Comparison) -> tuple[int, int, int, int]:
  """(tp, fn, fp, tn) of "moved in the video" against "hit", over hit and never-hit objects."""
  return (int((c.hit & c.moved).sum()), int((c.hit & ~c.moved).sum()), int((c.others & c.moved).sum()),
          int((c.others & ~c.moved).sum()))


def _counts(scores: list) -> tuple[int, int, int, int]:
  return tuple(sum(s[i] for s in scores) for i in range(4)) if scores else (0, 0, 0, 0)


def _precision(scores: list) -> float:
  tp, fn, fp, tn = _counts(scores)
  return tp / (tp + fp) if tp + fp else float("nan")


def _recall(scores: list) -> float:
  tp, fn, fp, tn = _counts(scores)
  return tp / (tp + fn) if tp + fn else float("nan")


def _f1(scores: list) -> float:
  tp, fn, fp, tn = _counts(scores)
  return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def _hit_disp_err(c: Comparison) -> list[float]:
  gen, sim = c.displacement()
  err = np.linalg.norm(gen - sim, axis=-1)[c.frames]
  err = np.where(c.truth_visible[c.frames], err, np.nan)
  return [float(_nanmean(err[:, j])) for j in np.flatnonzero(c.hit) if c.truth_visible[c.frames, j].any()]


def _still(c: Comparison) -> tuple[int, int]:
  return int((c.others & ~c.moved).sum()), int(c.others.sum())


def _area_err(c: Comparison) -> list[float]:
  tr = c.tracks
  err = np.abs(tr.area[c.frames] - c.truth_area[c.frames]) / np.maximum(c.truth_area[c.frames], 1)
  return err[c.both].tolist()


def _color_drift(c: Comparison) -> list[float]:
  tr = c.tracks
  return np.linalg.norm(tr.color[c.frames] - tr.reference_color[None], axis=-1)[c.both].tolist()


def _vanished(c: Comparison) -> tuple[int, int]:
  return int((c.shown & ~c.tracks.found[c.frames]).sum()), int(c.shown.sum())


def _fragmented(c: Comparison) -> tuple[int, int]:
  n = c.trackable.shape[0]
  pieces = (np.stack([fragments(c.tracks.labels, k) for k in range(n)], -1)[c.frames] if n
            else np.zeros((len(c.frames), 0)))
  return int((pieces[c.both] > 1).sum()), int(c.shown.sum())


REGIONS = ("floor", "still", "moving", "uncovered")


def regions(c: Comparison) -> dict[str, np.ndarray]:
  """The simulator's frames 1.. split into four disjoint regions that cover every pixel, bool [T-1,H,W] by
  name (REGIONS): "floor", background there and in frame 0; "still", objects the simulator does not move
  (by more than the move threshold); "moving", objects it moves, where it shows them; "uncovered", background
  that an object covered in frame 0 (the floor a moving object leaves)."""
  ids = c.truth_ids[c.frames]
  background = ids == 0
  under0 = c.truth_ids[0] > 0
  moving_ids = np.concatenate([[False], c.truth_moved])  # by id: 0 is the background
  moving = moving_ids[ids] & ~background
  return dict(floor=background & ~under0[None], still=~background & ~moving, moving=moving,
              uncovered=background & under0[None])


def _region_error(name: str) -> Callable[[Comparison], tuple[float, int]]:
  """Per video: the region's (error sum, number of values) of Comparison.region_error_sums, pooled by _ratio
  into the mean over every pixel of the region in the split."""
  return lambda c: c.region_error_sums[name]


for _metric in (
    Metric("motion_error_px", "motion err px", "{:.2f}", "Motion error: the controlled object's tracked centroid "
           "against the simulator's, pixels, mean over frames 1.. (an object never found counts as one image "
           "width off).", False, _motion_error,
           lambda curves: float(_nanmean(np.stack(curves)[:, 1:])) if curves else float("nan")),
    Metric("interaction_precision", "hit P", "{:.2f}", "Hit: objects the simulator moves through a collision "
           "(more than the move threshold); P / R / F1 of \"moved in the video\" against \"hit\", over hit "
           "and never-hit objects.", True, _interaction, _precision),
    Metric("interaction_recall", "hit R", "{:.2f}", "", True, _interaction, _recall),
    Metric("interaction_f1", "hit F1", "{:.2f}", "", True, _interaction, _f1),
    Metric("hit_displacement_error_px", "hit disp err px", "{:.2f}", "Hit disp err: the hit objects' "
           "displacement error, px.", False, _hit_disp_err, _flat_mean),
    Metric("still_fraction", "never-hit still", "{:.2f}", "Never-hit still: share of never-hit objects that "
           "stay put.", True, _still, _ratio),
    Metric("causality_rho", "causality ρ", "{:.2f}", "Causality: rank correlation of the first-hit object's "
           "displacement with the input speed over the sweep's speeds (0 when nothing responds).", True),
    Metric("text_following_rate", "text follow", "{:.2f}", "Text follow: share of description pairs whose "
           "video follows its own description (below).", True),
    Metric("area_error", "area err", "{:.2f}", "Area err: relative area error against the simulator's "
           "silhouettes.", False, _area_err, _flat_mean),
    Metric("color_drift", "colour drift", "{:.1f}", "Colour drift: RGB distance of an object's mean colour from "
           "its frame-0 colour (the reference row shows what shading alone gives).", False, _color_drift,
           _flat_mean),
    Metric("vanished_fraction", "vanished", "{:.2f}", "Vanished / fragmented: share of shown object-frames where "
           "the object is not found / falls into pieces.", False, _vanished, _ratio),
    Metric("fragmented_fraction", "fragmented", "{:.2f}", "", False, _fragmented, _ratio),
    Metric("psnr", "PSNR", "{:.2f}", "PSNR, SSIM over frames 1.. against the simulator's render.", True,
           lambda c: psnr(c.video, c.truth_video), _mean),
    Metric("ssim", "SSIM", "{:.3f}", "", True, lambda c: ssim(c.video, c.truth_video), _mean),
    Metric("error_floor", "err floor", "{:.1f}", "Err floor / still / moving / uncovered: mean |video - "
           "simulator| (0-255 levels, frames 1..) over the floor that stays floor, the objects the simulator "
           "leaves still, the objects it moves (where it shows them) and the floor an object uncovers.", False,
           _region_error("floor"), _ratio),
    Metric("error_still", "err still", "{:.1f}", "", False, _region_error("still"), _ratio),
    Metric("error_moving", "err moving", "{:.1f}", "", False, _region_error("moving"), _ratio),
    Metric("error_uncovered", "err uncovered", "{:.1f}", "", False, _region_error("uncovered"), _ratio),
):
  register(_metric)


def score_video(video: np.ndarray, example: dict, move_threshold_px: float) -> dict:
  """Every per-video metric of the table for a generated `video` uint8 [T,H,W,3] against the truth in
  `example`, by key, pooled by `summarize`; with, per object [N] (for a person reading one video, e.g. the
  demo), `moved` (in the generated video) and `truth_hit` (in a collision and moved in the simulator's)."""
  c = compare(video, example, move_threshold_px)
  out = {m.key: m.per_video(c) for m in METRICS.values() if m.per_video is not None}
  out.update(moved=c.moved.tolist(), truth_hit=c.hit.tolist(), interaction=_interaction(c))
  return out


def summarize(scores: list[dict]) -> dict:
  """Pools per-video scores (of `score_video`) over a split into the table's numbers (NaN where nothing was
  measured), with the per-frame motion error curve and the numbers of examples and of hit / never-hit objects."""
  out = {m.key: m.pool([s[m.key] for s in scores]) for m in METRICS.values() if m.pool is not None}
  curves = [s["motion_error_px"] for s in scores]
  tp, fn, fp, tn = _counts([s["interaction"] for s in scores])
  out.update(motion_error_curve=_nanmean(np.stack(curves), axis=0).tolist() if curves else [],
             examples=len(scores), hit_objects=tp + fn, never_hit_objects=fp + tn)
  return out
