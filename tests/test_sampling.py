"""Sampling API and CLI on a tiny checkpoint: round trip, batching, seeds, every bad input, evaluation."""

import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import evaluate as evaluate_configs
from kinemask_jax import CheckpointError, InputError, KineMaskPipeline, mask_from_point, sample
from kinemask_jax.evaluation import score

STEPS = 2  # sampler steps: the tests check plumbing, not quality


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
  return KineMaskPipeline.from_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def responsive(pipe):
  """The tiny checkpoint with random values added to every weight: a 2-step model is still close to its
  zero-initialised output layers (it copies the first frame), this one responds to every input."""
  import jax
  rng = np.random.default_rng(0)
  ema = jax.tree.map(lambda x: x + np.float32(0.05) * rng.standard_normal(x.shape, np.float32), pipe._ema)
  return KineMaskPipeline(pipe.config, ema, pipe._frozen, pipe.step)


def _input(example):
  k = int(np.argmax(example["moving_at_start"]))
  return example["video"][0], example["instance_ids"][0] == k + 1, example["velocity_cam"][0, k]


def _change(a, b) -> float:
  """Mean absolute difference of two videos' generated frames (1..T-1), in grey levels."""
  return float(np.abs(a[1:].astype(int) - b[1:]).mean())


def test_generate_round_trip(responsive, tiny_examples):
  image, mask, velocity = _input(tiny_examples[0])
  result = responsive.generate(image, mask, velocity, prompt="a red ball rolls left", num_steps=STEPS, seed=0)
  assert result.video.shape == responsive.video_shape and result.video.dtype == np.uint8
  assert result.prompt == "a red ball rolls left"
  assert np.array_equal(result.first_frame, image) and result.object_masks.shape == (1,) + mask.shape
  assert np.array_equal(result.video[0], image)  # frame 0 is given
  assert _change(result.video, np.repeat(image[None], len(result.video), 0)) > 1.0  # the rest is generated
  again = responsive.generate(Image.fromarray(image), mask, velocity, prompt="a red ball rolls left",
                              num_steps=STEPS, seed=0)
  assert np.array_equal(again.video, result.video)  # PIL input, same seed: same video


def test_every_input_changes_the_video(responsive, tiny_examples):
  """Image, object mask, velocity, prompt and seed each change the generated frames; the same inputs give
  the same video."""
  e = tiny_examples[0]
  image, mask, velocity = _input(e)
  others = [k for k in range(int(e["num_objects"])) if (e["instance_ids"][0] == k + 1).sum() >= 4
            and not (e["instance_ids"][0] == k + 1)[mask].any()]
  other_mask = e["instance_ids"][0] == others[0] + 1
  other_image = next(x["video"][0] for x in tiny_examples[1:] if (x["video"][0] != image).any())
  base = dict(image=image, object_mask=mask, velocity=velocity, prompt="a red ball rolls to the left",
              num_steps=STEPS, seed=0)
  reference = responsive.generate(**base).video
  assert np.array_equal(responsive.generate(**base).video, reference)
  changes = {}
  for name, override in (("image", dict(image=other_image)), ("mask", dict(object_mask=other_mask)),
                         ("velocity", dict(velocity=-np.asarray(velocity))),
                         ("prompt", dict(prompt="a blue cube slides away and hits nothing")),
                         ("seed", dict(seed=1))):
    changes[name] = _change(responsive.generate(**{**base, **override}).video, reference)
  assert min(changes.values()) > 0.3, changes


def test_batch_item_i_is_a_single_call_with_seed_plus_i(responsive, tiny_examples):
  """What the docstring promises, checked on every item: seed s gives item i the video of a single call with
  seed s + i; a list of seeds gives item i the single call with seed[i]."""
  inputs = [_input(e) for e in tiny_examples[:3]]
  prompts = ["", "a cube", "a red ball rolls to the left"]
  batched = lambda seed: responsive.generate([i[0] for i in inputs], [i[1] for i in inputs], [i[2] for i in inputs],
                                             prompt=prompts, num_steps=STEPS, seed=seed)
  for seed, seeds in ((3, [3, 4, 5]), ([9, 2, 9], [9, 2, 9])):
    batch = batched(seed)
    assert batch.video.shape == (3,) + responsive.video_shape and batch.prompt == prompts
    for i, (image, mask, velocity) in enumerate(inputs):
      single = responsive.generate(image, mask, velocity, prompt=prompts[i], num_steps=STEPS, seed=seeds[i])
      diff = np.abs(single.video.astype(int) - batch.video[i])
      assert diff.max() <= 2 and diff.mean() < 0.05, (seed, i, diff.max(), diff.mean())
  with pytest.raises(InputError, match="seed: a list of seeds"):
    responsive.generate(inputs[0][0], inputs[0][1], inputs[0][2], num_steps=STEPS, seed=[1, 2])


def test_warm_and_batch_bucket_run_one_compiled_sampler(responsive, tiny_examples):
  """What the loan run (kinemask_jax/express.py) relies on: after `warm(n)`, batched calls padded to
  `batch_bucket` n compile nothing more, whatever their size up to n; the padding is dropped and the videos
  are those of unpadded calls; another pipeline of the same model graph shares the compiled sampler."""
  import logging
  import jax
  inputs = [_input(e) for e in tiny_examples[:3]]
  args = [[i[k] for i in inputs] for k in range(3)]
  plain = responsive.generate(*args, prompt="", num_steps=STEPS, seed=5).video
  other = KineMaskPipeline(responsive.config, responsive._ema, responsive._frozen)
  other.batch_bucket = 4
  assert other.warm(4, num_steps=STEPS) > 0
  messages = []
  handler = logging.Handler()
  handler.emit = lambda record: messages.append(record.getMessage())
  logging.getLogger("jax").addHandler(handler)
  try:
    with jax.log_compiles():
      jax.jit(lambda x: x + 1)(np.float32(0))  # a fresh function: its compile shows the log is seen
      padded = [other.generate(*[a[:n] for a in args], prompt="", num_steps=STEPS, seed=5).video for n in (3, 2, 1)]
  finally:
    logging.getLogger("jax").removeHandler(handler)
  assert any("compilation of jit(<lambda>)" in m for m in messages)
  assert not [m for m in messages if "compilation of jit(sample)" in m]
  for n, video in zip((3, 2, 1), padded):
    assert video.shape == (n,) + responsive.video_shape
    diff = np.abs(video.astype(int) - plain[:n])
    assert diff.max() <= 2 and diff.mean() < 0.05, (n, diff.max(), diff.mean())
  with pytest.raises(InputError, match="batch_size"):
    other.warm(0)


def test_seed_sets_the_noise(responsive, tiny_examples):
  image, mask, velocity = _input(tiny_examples[0])
  a, b, a2 = (responsive.generate(image, mask, velocity, num_steps=STEPS, seed=s).video for s in (0, 1, 0))
  assert np.array_equal(a, a2) and _change(a, b) > 1.0


def test_several_objects_and_two_component_velocities(pipe, tiny_examples):
  e = tiny_examples[0]
  masks = [e["instance_ids"][0] == k + 1 for k in range(int(e["num_objects"]))
           if (e["instance_ids"][0] == k + 1).any()][:2]
  result = pipe.generate(e["video"][0], masks, [(0.5, 0.2), (-0.3, 0.0, 0.1)], num_steps=STEPS)
  assert result.velocities.shape == (2, 3)
  # (right, down) on the table: moving down the image comes towards the camera.
  assert result.velocities[0, 2] < 0 and result.velocities[1, 2] == pytest.approx(0.1)


def test_two_component_velocity_matches_the_data(pipe, tiny_examples):
  """The forward component inferred from (right, down) has the simulator's sign for table-top motion."""
  agree = total = 0
  for e in tiny_examples:
    for k in np.flatnonzero(e["moving_at_start"]):
      v = e["velocity_cam"][0, k]
      if abs(v[1]) > 0.2:
        total += 1
        agree += np.sign(pipe.complete_velocity(v[:2])[2]) == np.sign(v[2])
  assert total and agree == total


def test_arrow_round_trip(pipe):
  v = pipe.velocity_from_arrow((10, 12), (22, 7))
  assert pipe.arrow_from_velocity(v) == pytest.approx((12.0, -5.0), abs=1e-4)
  # The same arrow on an image twice as large is half as fast.
  h, w = pipe.video_shape[1:3]
  half = pipe.velocity_from_arrow((20, 24), (44, 14), image_size=(2 * h, 2 * w))
  assert half[:2] == pytest.approx(v[:2], abs=1e-6)


def test_other_image_sizes_are_resized_with_a_warning(pipe, tiny_examples):
  image, mask, velocity = _input(tiny_examples[0])
  big = np.repeat(np.repeat(image, 2, 0), 2, 1)
  big_mask = np.repeat(np.repeat(mask, 2, 0), 2, 1)
  with pytest.warns(UserWarning, match="resizing"):
    result = pipe.generate(big, big_mask, velocity, num_steps=STEPS)
  assert result.video.shape == pipe.video_shape and np.array_equal(result.object_masks[0], mask)


def _bad_inputs(image, mask, velocity):
  rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], -1)
  return {
      "empty mask": (dict(object_mask=np.zeros_like(mask)), "object_mask.*empty"),
      "mask size": (dict(object_mask=mask[:-2]), "object_mask.*differs from the image"),
      "mask dtype": (dict(object_mask=mask.astype(np.float32) * 0.5), "object_mask.*bool"),
      "NaN velocity": (dict(velocity=(math.nan, 0.1)), "velocity.*finite"),
      "absurd velocity": (dict(velocity=(40.0, 0.0)), "velocity.*v_max_mps"),
      "velocity length": (dict(velocity=(1.0,)), "velocity.*2 \\(right, down\\) or 3"),
      "image dtype": (dict(image=image.astype(np.float32)), "image.*uint8"),
      "image channels": (dict(image=rgba), "image.*\\[H,W,3\\]"),
      "PIL mode": (dict(image=Image.fromarray(image).convert("L")), "image.*RGB"),
      "overlapping masks": (dict(object_mask=[mask, mask], velocity=[velocity, velocity]), "overlap"),
      "lists of different lengths": (dict(object_mask=[mask, mask], velocity=[velocity]), "velocity.*list of 2"),
      "num_steps": (dict(num_steps=0), "num_steps"),
      "batch lists": (dict(image=[image, image]), "object_mask.*batch of 2"),
  }


@pytest.mark.parametrize("case", list(_bad_inputs(np.zeros((2, 2, 3), np.uint8), np.ones((2, 2), bool), (0, 0))))
def test_bad_input_gets_a_clear_error(pipe, tiny_examples, case):
  image, mask, velocity = _input(tiny_examples[0])
  overrides, message = _bad_inputs(image, mask, velocity)[case]
  args = dict(image=image, object_mask=mask, velocity=velocity, num_steps=STEPS)
  args.update(overrides)
  with pytest.raises(InputError, match=message):
    pipe.generate(**args)


def test_missing_and_incompatible_checkpoints(tiny_checkpoint, tmp_path):
  with pytest.raises(CheckpointError, match="no such directory"):
    KineMaskPipeline.from_checkpoint(str(tmp_path / "nope"))
  with pytest.raises(CheckpointError, match="no checkpoints"):
    KineMaskPipeline.from_checkpoint(str(tmp_path))
  # A checkpoint whose config describes another model than its arrays hold.
  wrong = tmp_path / "wrong"
  shutil.copytree(tiny_checkpoint, wrong)
  (config_path,) = [os.path.join(d, "metadata") for d, _, files in os.walk(wrong / "checkpoints")
                    if d.endswith("config") and "metadata" in files]
  with open(config_path) as f:
    config = json.load(f)
  config["model"]["width"] *= 2
  with open(config_path, "w") as f:
    json.dump(config, f)
  with pytest.raises(CheckpointError, match="does not match the model"):
    KineMaskPipeline.from_checkpoint(str(wrong))
  # Checkpoints of an earlier version: another conditioning layout, or no stored vocabulary.
  for key, match in (("push_geometry", "older kinemask-jax.*conditioning layout.*model.push_geometry"),
                     ("first_frame", "model.first_frame.*first frame enters every frame")):
    old = json.loads(json.dumps(config))
    del old["model"][key]
    with open(config_path, "w") as f:
      json.dump(old, f)
    with pytest.raises(CheckpointError, match=match):
      KineMaskPipeline.from_checkpoint(str(wrong))
  old = json.loads(json.dumps(config))
  del old["model"]["text"]["vocabulary"]
  with open(config_path, "w") as f:
    json.dump(old, f)
  with pytest.raises(CheckpointError, match="vocabulary"):
    KineMaskPipeline.from_checkpoint(str(wrong))
  del config["model"]["control"]
  with open(config_path, "w") as f:
    json.dump(config, f)
  with pytest.raises(CheckpointError, match="not a KineMask video-model checkpoint"):
    KineMaskPipeline.from_checkpoint(str(wrong))


def test_mask_from_point_segments_the_object(tiny_examples):
  ious = []
  for e in tiny_examples:
    ids = e["instance_ids"][0]
    for k in range(int(e["num_objects"])):
      truth = ids == k + 1
      if truth.sum() < 6:
        continue
      ys, xs = np.nonzero(truth)
      i = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)  # an object pixel near its centre
      mask = mask_from_point(e["video"][0], int(xs[i]), int(ys[i]))
      ious.append((mask & truth).sum() / (mask | truth).sum())
  assert len(ious) > 10 and np.median(ious) > 0.9
  with pytest.raises(InputError, match="outside"):
    mask_from_point(tiny_examples[0]["video"][0], 500, 0)
  # A point on the floor or table, and a fill that leaks over the image, are refused.
  e = tiny_examples[0]
  ys, xs = np.nonzero(e["instance_ids"][0] == 0)
  with pytest.raises(InputError, match="table, floor or background"):
    mask_from_point(e["video"][0], int(xs[0]), int(ys[0]))
  flat = np.zeros((16, 16, 3), np.uint8)
  flat[...] = (200, 30, 30)
  with pytest.raises(InputError, match="covers 100% of the image"):
    mask_from_point(flat, 3, 3)


def test_sample_command_writes_gif_mp4_and_strip(tiny_checkpoint, tiny_examples, tmp_path):
  image, mask, _ = _input(tiny_examples[0])
  Image.fromarray(image).save(tmp_path / "image.png")
  Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
  out = str(tmp_path / "out" / "video.gif")
  result = sample.run(tiny_checkpoint, str(tmp_path / "image.png"), out, mask_path=str(tmp_path / "mask.png"),
                      velocity="0.6,-0.4", num_steps=STEPS, mp4=str(tmp_path / "out" / "video.mp4"))
  gif = Image.open(out)
  total_ms = 0  # pillow merges identical consecutive frames and adds up their durations
  for i in range(gif.n_frames):
    gif.seek(i)
    total_ms += gif.info["duration"]
  assert total_ms == result.video.shape[0] * int(1000 / 8.0)
  assert os.path.getsize(tmp_path / "out" / "video.mp4") > 0
  strip = np.asarray(Image.open(tmp_path / "out" / "video.png"))
  assert strip.shape[1] > strip.shape[0] * result.video.shape[0]  # input + T frames side by side
  ys, xs = np.nonzero(mask)
  by_point = sample.run(tiny_checkpoint, str(tmp_path / "image.png"), out,
                        point=f"{int(np.median(xs))},{int(np.median(ys))}", arrow="8,0", num_steps=STEPS)
  assert by_point.object_masks[0][mask].mean() > 0.5 and by_point.velocities[0, 0] > 0
  with pytest.raises(Exception, match="exactly one of --mask and --point"):
    sample.run(tiny_checkpoint, str(tmp_path / "image.png"), out, velocity="1,0")
  with pytest.raises(Exception, match="no such file"):
    sample.run(tiny_checkpoint, str(tmp_path / "missing.png"), out, point="1,1", velocity="1,0")


def test_evaluate_writes_a_report_for_every_method(tiny_checkpoint, tmp_path):
  config = evaluate_configs.get_config()
  config.update(num=2, batch_size=4, num_steps=STEPS, num_strips=1)
  config.causality.update(num=1, speeds_mps=(0.6, 1.4))
  config.ablations.no_velocity = tiny_checkpoint  # any video-model workdir exercises the ablation path
  out = score.evaluate(config, tiny_checkpoint, str(tmp_path))
  names = list(out["results"])
  assert names == ["simulator (reference)", "KineMask", "no text", "no velocity", "copy first frame",
                   "constant velocity"]
  report = open(tmp_path / "report.md").read()
  for name in names:
    assert f"| {name} |" in report
  for png in ("motion_error.png", "causality.png", "samples.png"):
    assert os.path.getsize(tmp_path / "eval" / png) > 1000
  reference = out["results"]["simulator (reference)"]
  assert reference["motion_error_px"] == 0.0 and reference["psnr"] == 100.0
  assert out["results"]["copy first frame"]["motion_error_px"] > 0
  kinemask = out["results"]["KineMask"]
  assert kinemask["text_following_pairs"] == 0 or 0.0 <= kinemask["text_following_rate"] <= 1.0
  assert "Text following" in report
  assert json.load(open(tmp_path / "eval" / "metrics.json"))["meta"]["examples"] == out["meta"]["examples"]
