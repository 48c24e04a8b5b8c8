"""Tracker and metrics against the simulator's truth (independent of the tracker: silhouettes from the ids)."""

import numpy as np
import pytest

from datagen import truth as truth_lib
from kinemask_jax.evaluation import baselines, metrics, tracking


def test_tracker_recovers_simulator_centroids_and_areas(tiny_examples):
  errors, area_errors, missed, shown = [], [], 0, 0
  for e in tiny_examples:
    n = int(e["num_objects"])
    masks = truth_lib.masks_from_ids(e["instance_ids"][0], n)
    tr = tracking.track(e["video"], masks)
    vis = e["visible"][:, :n] & masks.any((1, 2))[None]  # tracked from frame 0, so visible there
    missed += int((vis & ~tr.found).sum())
    shown += int(vis.sum())
    ok = vis & tr.found
    errors.append(np.linalg.norm(tr.centroid - e["centroid_px"][:, :n], axis=-1)[ok])
    truth_area = np.stack([(e["instance_ids"] == k + 1).sum((1, 2)) for k in range(n)], -1)
    area_errors.append((np.abs(tr.area - truth_area) / np.maximum(truth_area, 1))[ok])
  errors = np.concatenate(errors)
  assert shown > 50 and missed / shown < 0.02
  assert errors.mean() < 0.5, f"mean centroid error {errors.mean():.3f} px"
  assert np.concatenate(area_errors).mean() < 0.05


def test_tracker_reads_colours_from_the_reference_frame(tiny_examples):
  e = tiny_examples[0]
  masks = truth_lib.masks_from_ids(e["instance_ids"][0], int(e["num_objects"]))
  grey = np.full_like(e["video"], 128)
  assert not tracking.track(grey, masks, e["video"][0]).found.any()
  assert tracking.track(e["video"], masks, e["video"][0]).found[0].all()
  with pytest.raises(ValueError, match="reference_frame"):
    tracking.track(e["video"], masks, e["video"][0, :8])
  with pytest.raises(ValueError, match="video"):
    tracking.track(e["video"].astype(np.float32), masks)


def test_psnr_and_ssim():
  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
  other = video.copy()
  other[1:] = np.clip(other[1:].astype(int) + 5, 0, 255).astype(np.uint8)
  mse = np.mean((other[1:].astype(float) - video[1:]) ** 2)
  assert metrics.psnr(other, video) == pytest.approx(10 * np.log10(255 ** 2 / mse), rel=1e-3)
  assert metrics.ssim(video, video) == pytest.approx(1.0)
  noisy = np.clip(video.astype(int) + rng.normal(0, 40, video.shape), 0, 255).astype(np.uint8)
  assert metrics.ssim(noisy, video) < 0.9
  # Frame 0 is the given image: it never counts.
  changed0 = video.copy()
  changed0[0] = 0
  assert metrics.psnr(changed0, video) == 100.0


def test_spearman_and_hit_objects():
  assert metrics.spearman([1, 2, 3], [2, 5, 9]) == pytest.approx(1.0)
  assert metrics.spearman([1, 2, 3], [9, 5, 2]) == pytest.approx(-1.0)
  assert metrics.spearman([1, 2, 3], [0, 0, 0]) == 0.0
  rows = np.array([[3, 1, 2], [5, 2, 4], [-1, -1, -1]])
  assert metrics.hit_objects(rows, 5).tolist() == [True, True, False, True, False]


def test_scores_of_truth_and_of_the_baselines(tiny_examples):
  threshold = 0.04 * tiny_examples[0]["video"].shape[2]
  truth = metrics.summarize([metrics.score_video(e["video"], e, threshold) for e in tiny_examples])
  assert truth["motion_error_px"] == 0.0 and truth["vanished_fraction"] == 0.0
  assert truth["psnr"] == 100.0 and truth["ssim"] == pytest.approx(1.0)
  if truth["hit_objects"]:
    assert truth["interaction_recall"] == 1.0
  copy = metrics.summarize([metrics.score_video(baselines.copy_first_frame(e), e, threshold)
                            for e in tiny_examples])
  assert copy["motion_error_px"] > 0.5
  if copy["hit_objects"]:
    assert copy["interaction_recall"] == 0.0 and copy["interaction_f1"] == 0.0
  assert copy["still_fraction"] == 1.0


def test_constant_velocity_moves_the_pushed_object_along_its_velocity(tiny_examples):
  fps = 8.0
  for e in tiny_examples:
    k = int(np.argmax(e["moving_at_start"]))
    if not (e["instance_ids"][0] == k + 1).sum() >= 4:
      continue
    video = baselines.constant_velocity(e, fps)
    du, dv = baselines.image_velocity_px(e, k, e["velocity_cam"][0, k])
    tr = tracking.track(video, truth_lib.masks_from_ids(e["instance_ids"][0], int(e["num_objects"])))
    t = 2
    if not tr.found[t, k]:
      continue
    moved = tr.centroid[t, k] - tr.centroid[0, k]
    # Whole-pixel shifts of the sprite, partly covered by nothing else: within a pixel of the projection.
    assert np.allclose(moved, [round(du * t / fps), round(dv * t / fps)], atol=1.0)
    # The projection points the way the simulator's centroid goes over the first frame (friction slows the
    # object, so the simulator's step is shorter).
    truth = e["centroid_px"][1, k] - e["centroid_px"][0, k]
    predicted = np.array([du, dv]) / fps
    if np.linalg.norm(truth) > 1.0:
      assert truth @ predicted / (np.linalg.norm(truth) * np.linalg.norm(predicted)) > 0.8
      assert 0.5 < np.linalg.norm(predicted) / np.linalg.norm(truth) < 2.0


def test_an_object_lost_in_the_video_costs_the_image_width(tiny_examples):
  """A pushed object the generated video never shows is as far off as the image is wide, in every frame
  where the simulator shows it (not a missing value that the mean would skip)."""
  checked = 0
  for e in tiny_examples:
    ks = [k for k in np.flatnonzero(e["moving_at_start"]) if (e["instance_ids"][0] == k + 1).sum() >= 4]
    if len(ks) != 1 or np.flatnonzero(e["moving_at_start"]).size != 1:
      continue
    k = ks[0]
    video = np.array(e["video"])
    video[e["instance_ids"] == k + 1] = (128, 128, 128)  # painted over in every frame
    curve = metrics.score_video(video, e, 1.0)["motion_error_px"]
    shown = e["visible"][:, k]
    assert np.all(curve[shown] == video.shape[2]), (curve, shown)
    checked += 1
  assert checked >= 2


def test_a_registered_metric_reaches_scores_summary_table_and_report(tiny_examples, tmp_path):
  """One entry in the metric table (plus its implementation) is all a new metric takes."""
  from kinemask_jax.evaluation import report
  metric = metrics.Metric("brightness_change", "brightness Δ", "{:.1f}", "Brightness Δ: how far the mean grey "
                          "level of frames 1.. is from frame 0's.", False,
                          per_video=lambda c: float(abs(c.video[1:].mean() - c.video[0].mean())),
                          pool=lambda values: float(np.mean(values)))
  metrics.register(metric)
  try:
    e = tiny_examples[0]
    still = baselines.copy_first_frame(e)
    dark = still.copy()
    dark[1:] //= 2
    scores = [metrics.score_video(v, e, 1.0) for v in (still, dark)]
    assert scores[0]["brightness_change"] == 0.0 < scores[1]["brightness_change"]
    summary = metrics.summarize(scores)
    assert summary["brightness_change"] == pytest.approx(scores[1]["brightness_change"] / 2)
    assert "brightness Δ ↓" in report.table({"a method": summary}).splitlines()[0]
    meta = dict(workdir="w", checkpoint_step=0, split="test", examples=2, video=[8, 32, 32, 3], speeds_mps=[0.5, 1.0],
                causality_examples=0, move_threshold_px=1.0, prompt="none", num_steps=1, machine="m", seconds=0.0,
                date="today")
    summary.update(causality_rho=0.0, causality_displacement_px=[0.0, 0.0])
    path = report.write_report(str(tmp_path), {"a method": summary}, meta, {"a method": [e["video"]]}, [e])
    assert "Brightness Δ: how far the mean grey level" in open(path).read()
  finally:
    metrics.unregister("brightness_change")
  assert "brightness_change" not in metrics.score_video(e["video"], e, 1.0)


def test_threaded_scoring_keeps_each_video_with_its_example(tiny_examples):
  from kinemask_jax.evaluation import score
  examples = list(tiny_examples[:6])
  videos = [np.asarray(e["video"]) if i % 2 else baselines.copy_first_frame(e) for i, e in enumerate(examples)]
  threshold = 0.02 * videos[0].shape[2]
  serial = [metrics.score_video(v, e, threshold) for v, e in zip(videos, examples)]
  threaded = score.score_videos(videos, examples, threshold)
  for a, b in zip(threaded, serial):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
  # The order matters: the scores of the videos differ.
  assert len({round(float(np.nanmean(s["motion_error_px"])), 4) for s in serial}) > 1


def test_region_errors_split_the_pixel_error_by_what_the_simulator_shows(tiny_examples):
  """The four regions cover every pixel of frames 1.. once and their pooled errors weight back to the whole
  video's error; paint put on pixels chosen from the simulator's ids and centroids (not from the regions) shows
  up in the one region it belongs to."""
  threshold = 0.04 * tiny_examples[0]["video"].shape[2]
  keys = [f"error_{name}" for name in metrics.REGIONS]
  painted = {name: 0 for name in metrics.REGIONS}

  def errors(video, e):
    scores = metrics.score_video(video, e, threshold)
    return {name: scores[f"error_{name}"][0] for name in metrics.REGIONS}

  for e in tiny_examples:
    truth = np.asarray(e["video"])
    ids = np.asarray(e["instance_ids"])
    n = int(e["num_objects"])
    regions = metrics.regions(metrics.compare(truth, e, threshold))
    assert (sum(r.astype(int) for r in regions.values()) == 1).all()
    assert all(v == 0.0 for v in errors(truth, e).values())
    changed0 = truth.copy()
    changed0[0] = 255 - changed0[0]  # frame 0 is the given image: it never counts
    assert all(v == 0.0 for v in errors(changed0, e).values())
    copy = baselines.copy_first_frame(e)
    scores = metrics.score_video(copy, e, threshold)
    total = np.abs(copy[1:].astype(float) - truth[1:].astype(float)).sum()
    assert sum(scores[k][0] for k in keys) == pytest.approx(total)
    assert sum(scores[k][1] for k in keys) == copy[1:].size
    # Independently of the regions: which objects the simulator moves, from its centroids.
    shown = e["visible"][:, :n] & e["visible"][:1, :n]
    travel = np.where(shown, np.linalg.norm(e["centroid_px"][:, :n] - e["centroid_px"][:1, :n], axis=-1), 0.0)
    for k in range(n):
      t = int(np.argmax(travel[:, k]))
      if travel[:, k].max() > 2 * threshold and t > 0:
        cases = [("moving", ids[t] == k + 1), ("uncovered", (ids[0] == k + 1) & (ids[t] == 0))]
      elif travel[:, k].max() < 0.5 * threshold and e["visible"][:, k].all():
        t = truth.shape[0] - 1
        cases = [("still", ids[t] == k + 1)]
      else:
        continue
      for name, where in cases:
        if where.sum() < 2:
          continue
        video = truth.copy()
        video[t][where] = 255 - video[t][where]
        got = errors(video, e)
        assert got[name] > 0 and all(got[other] == 0.0 for other in metrics.REGIONS if other != name), (name, got)
        painted[name] += 1
    floor = (ids == 0).all(0)
    video = truth.copy()
    video[1:, floor] = 255 - video[1:, floor]
    got = errors(video, e)
    assert got["floor"] > 0 and got["still"] == got["moving"] == got["uncovered"] == 0.0
    painted["floor"] += 1
  assert all(painted.values()), painted
  # Pooled over the split: pixel-weighted, so a region's number is its mean over every pixel of the split.
  copies = [metrics.score_video(baselines.copy_first_frame(e), e, threshold) for e in tiny_examples]
  summary = metrics.summarize(copies)
  num = sum(s["error_moving"][0] for s in copies)
  den = sum(s["error_moving"][1] for s in copies)
  assert summary["error_moving"] == pytest.approx(num / den) and summary["error_moving"] > summary["error_floor"]
