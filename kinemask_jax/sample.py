"""Generates a video from an image: `python -m kinemask_jax.sample (--workdir=W | --pretrained=tiny)
--image=IMG --point=x,y --velocity=vx,vy --out=OUT.gif`.

The object to push is given by a mask PNG (--mask, nonzero = object) or by a point on it (--point, segmented
by colour flood fill: kinemask_jax.sampling.segmentation.mask_from_point). The velocity is in m/s in the camera frame
(--velocity=right,down[,forward]) or an arrow in image pixels (--arrow=dx,dy: where the object would be one
second later). The text is --prompt, by default "auto": the outcome predictor of --describer describes what
will happen. Writes the GIF, optionally an MP4 (--mp4), and a strip PNG of the frames with the velocity
arrow drawn on the input image in front (--strip, default OUT with .png).
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from datagen import cli

FLAGS = flags.FLAGS


def _numbers(flag: str, value: str, counts: tuple[int, ...]) -> tuple[float, ...]:
  try:
    out = tuple(float(x) for x in value.split(","))
  except ValueError:
    raise cli.UsageError(f"--{flag}={value}: expected {' or '.join(map(str, counts))} comma-separated numbers")
  if len(out) not in counts or not np.isfinite(out).all():
    raise cli.UsageError(f"--{flag}={value}: expected {' or '.join(map(str, counts))} comma-separated finite numbers")
  return out


def _writable(flag: str, path: str) -> None:
  """Makes the folder of an output path and checks that a file can be written there (before any work)."""
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise cli.UsageError(f"--{flag}={path}: cannot make its folder ({e.strerror})")
  if os.path.isdir(path) or not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
    raise cli.UsageError(f"--{flag}={path}: not a writable file path")


def _read_image(path: str, flag: str, mode: str | None = None) -> np.ndarray:
  from PIL import Image, UnidentifiedImageError
  if not os.path.isfile(path):
    raise cli.UsageError(f"--{flag}={path}: no such file")
  try:
    image = Image.open(path)
    image.load()
  except (UnidentifiedImageError, OSError) as e:
    raise cli.UsageError(f"--{flag}={path}: not a readable image ({e})")
  return np.asarray(image.convert(mode) if mode else image)


def run(workdir: str, image_path: str, out: str, mask_path: str | None = None, point: str | None = None,
        velocity: str | None = None, arrow: str | None = None, prompt: str = "auto", num_steps: int | None = None,
        seed: int = 0, step: int | None = None, mp4: str | None = None, strip_path: str | None = None,
        describer: str | None = None, pretrained: str | None = None):
  """The command's work (flags as arguments); returns the GenerationResult."""
  from kinemask_jax.sampling import api, media
  from kinemask_jax.sampling.units import Units
  # Every flag is checked before the weights load.
  if (workdir is None) == (pretrained is None):
    raise cli.UsageError("give exactly one of --workdir and --pretrained")
  if pretrained is not None and pretrained not in api.pretrained_names():
    raise cli.UsageError(f"--pretrained={pretrained}: no such shipped weights; shipped: {api.pretrained_names()}")
  if (mask_path is None) == (point is None):
    raise cli.UsageError("give exactly one of --mask and --point")
  if (velocity is None) == (arrow is None):
    raise cli.UsageError("give exactly one of --velocity and --arrow")
  if num_steps is not None and num_steps < 1:
    raise cli.UsageError(f"--num_steps: must be >= 1, got {num_steps}")
  arrow_px = _numbers("arrow", arrow, (2,)) if arrow is not None else None
  vel = _numbers("velocity", velocity, (2, 3)) if velocity is not None else None
  image = _read_image(image_path, "image")
  if image.ndim != 3 or image.shape[-1] not in (3, 4):
    raise cli.UsageError(f"--image={image_path}: expected an RGB image, got shape {image.shape}")
  image = np.ascontiguousarray(image[..., :3])
  if mask_path is not None:
    mask = _read_image(mask_path, "mask", "L") > 0
  else:
    x, y = _numbers("point", point, (2,))
    try:
      mask = api.mask_from_point(image, int(x), int(y))
    except api.InputError as e:
      raise cli.UsageError(f"--point={point}: {e}")
  strip_path = strip_path or os.path.splitext(out)[0] + ".png"
  for flag, path in (("out", out), ("mp4", mp4), ("strip", strip_path)):  # after the inputs: a bad one makes no folder
    if path:
      _writable(flag, path)
  units = Units(api.model_config(pretrained, workdir, step))  # the config alone: no weights yet
  if arrow_px is not None:
    ys, xs = np.nonzero(mask)
    start = (xs.mean(), ys.mean())
    vel = units.velocity_from_arrow(start, (start[0] + arrow_px[0], start[1] + arrow_px[1]), image.shape[:2])
  try:
    units.check_velocity(vel)
  except api.InputError as e:
    raise cli.UsageError(f"--{'arrow' if arrow_px is not None else 'velocity'}: {e}")
  if pretrained is not None:
    pipe = api.KineMaskPipeline.from_pretrained(pretrained, describer=describer)
  else:
    pipe = api.KineMaskPipeline.from_checkpoint(workdir, step, describer=describer)
  print(f"checkpoint step {pipe.step}; object of {int(mask.sum())} pixels; velocity "
        f"{[round(float(x), 3) for x in pipe.complete_velocity(vel)]} m/s (camera frame)", flush=True)
  result = pipe.generate(image, mask, vel, prompt=prompt or None, num_steps=num_steps, seed=seed)
  media.save_gif(out, result.video, pipe.fps)
  written = [out]
  if mp4:
    media.save_mp4(mp4, result.video, pipe.fps)
    written.append(mp4)
  media.save_png(strip_path, strip_with_arrows(pipe, result))
  written.append(strip_path)
  print(f"prompt: {result.prompt!r}", flush=True)
  print("wrote " + ", ".join(written), flush=True)
  return result


def strip_with_arrows(pipe, result, target_height: int = 128) -> np.ndarray:
  """The input image with each object's velocity arrow (its displacement in one second, shortened to fit),
  then the frames."""
  from kinemask_jax.sampling import media
  scale = max(1, target_height // result.video.shape[1])
  first = media.upscale(result.first_frame, scale)
  arrows = [np.array(pipe.arrow_from_velocity(v)) for v in result.velocities]
  # Arrows longer than 40% of the image are shortened together, keeping their directions and ratios.
  shrink = min(1.0, 0.4 * result.video.shape[2] / max(max(np.hypot(*a) for a in arrows), 1e-6))
  for mask, arrow in zip(result.object_masks, arrows):
    ys, xs = np.nonzero(mask)
    first = media.draw_arrow(first, ((xs.mean() + 0.5) * scale, (ys.mean() + 0.5) * scale),
                             arrow * shrink * scale, width=max(1, first.shape[0] // 64))
  frames = np.concatenate([first[None], media.upscale(result.video, scale)])
  return media.strip(frames, target_height=frames.shape[1])


def main(argv) -> None:
  del argv
  run(FLAGS.workdir, FLAGS.image, FLAGS.out, FLAGS.mask, FLAGS.point, FLAGS.velocity, FLAGS.arrow,
      FLAGS.prompt, FLAGS.num_steps, FLAGS.seed, FLAGS.step, FLAGS.mp4, FLAGS.strip, FLAGS.describer,
      FLAGS.pretrained)


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training workdir holding the checkpoint (or --pretrained).")
  flags.DEFINE_string("pretrained", None, "Weights shipped in the repository: tiny or small (or --workdir).")
  flags.DEFINE_string("image", None, "First frame: an RGB image file.", required=True)
  flags.DEFINE_string("mask", None, "Object mask image (nonzero = object), the size of --image.")
  flags.DEFINE_string("point", None, "x,y pixel on the object (instead of --mask).")
  flags.DEFINE_string("velocity", None, "right,down[,forward] in m/s, camera frame.")
  flags.DEFINE_string("arrow", None, "dx,dy in image pixels: the object's displacement in one second.")
  flags.DEFINE_string("prompt", "auto", "Scene description; 'auto': the --describer's prediction; '': none.")
  flags.DEFINE_string("describer", None, "Outcome-predictor workdir (kinemask_jax.train_outcome) for --prompt=auto.")
  flags.DEFINE_integer("num_steps", None, "Sampler steps (default: the checkpoint's config).")
  flags.DEFINE_integer("seed", 0, "Noise seed.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_string("out", None, "Output GIF path.", required=True)
  flags.DEFINE_string("mp4", None, "Also write an MP4 here.")
  flags.DEFINE_string("strip", None, "Strip PNG path (default: --out with .png).")


if __name__ == "__main__":
  from kinemask_jax.sampling import api as _api
  cli.run(main, expected=(_api.InputError, _api.CheckpointError), define=_define_flags)
