"""Contact sheet of a few videos, for a person to check the data.

  python -m datagen.preview --data_dir=DIR --out=sheet.png [--split=train --num=4 --scale=4]

DIR is the --out of datagen.generate (or the dataset's version folder). Per video: the frames, the
instance ids in false colour, the frames with each object's velocity drawn as an arrow from its centroid
(controlled objects in white), and the caption.
"""

from __future__ import annotations

import glob
import os

import numpy as np
from absl import flags
from PIL import Image, ImageDraw

from datagen import cli, datasets


_ID_COLOURS = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], np.uint8)
_ARROW_S = 0.4  # seconds of motion an arrow shows


def find_dataset(path: str) -> str:
  """The version folder holding dataset_info.json at or under `path`."""
  if os.path.exists(os.path.join(path, "dataset_info.json")):
    return path
  found = sorted(glob.glob(os.path.join(path, "kinemask_synth", "*", "*", "dataset_info.json")))
  found = [f for f in found if "incomplete" not in f]
  if not found:
    raise FileNotFoundError(f"no complete kinemask_synth dataset at or under {path!r}")
  return os.path.dirname(found[0])


def _velocity_overlay(frames, example, scale):
  fx = float(example["camera_intrinsics"][0])
  out = []
  for t, frame in enumerate(frames):
    img = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for k in range(int(example["num_objects"])):
      if not example["visible"][t, k]:
        continue
      vx, vy, vz = example["velocity_cam"][t, k]
      # Image motion of the velocity over _ARROW_S at the object's depth (camera z from the extrinsics).
      extr = example["camera_extrinsics"]
      depth = max(float(extr[2, :3] @ example["position"][t, k] + extr[2, 3]), 0.1)
      dx, dy = fx * vx * _ARROW_S / depth, fx * vy * _ARROW_S / depth
      cx, cy = example["centroid_px"][t, k]
      colour = (255, 255, 255) if example["moving_at_start"][k] else (20, 20, 20)
      if abs(dx) + abs(dy) > 0.2:
        draw.line([(cx * scale, cy * scale), ((cx + dx) * scale, (cy + dy) * scale)], fill=colour, width=2)
        draw.ellipse([(cx + dx) * scale - 3, (cy + dy) * scale - 3, (cx + dx) * scale + 3, (cy + dy) * scale + 3],
                     fill=colour)
    out.append(np.asarray(img))
  return np.concatenate(out, 1)


def contact_sheet(data_dir: str, split: str = "train", num: int = 4, scale: int = 4) -> Image.Image:
  """Builds the sheet image of the first `num` videos of `split`."""
  import tensorflow_datasets as tfds
  source = tfds.builder_from_directory(find_dataset(data_dir)).as_data_source(split)
  rows = []
  for i in range(min(num, len(source))):
    ex = source[i]
    video = ex["video"]
    up = lambda a: np.repeat(np.repeat(a, scale, 1), scale, 2)
    frames = np.concatenate(list(up(video)), 1)
    ids = np.concatenate(list(up(_ID_COLOURS[ex["instance_ids"] % len(_ID_COLOURS)])), 1)
    arrows = _velocity_overlay(video, ex, scale)
    caption = datasets.decode_text(ex["caption"])
    text = Image.new("RGB", (frames.shape[1], 18), (255, 255, 255))
    ImageDraw.Draw(text).text((4, 3), f"seed {int(ex['seed'])}: {caption}", fill=(0, 0, 0))
    rows += [np.asarray(text), frames, ids, arrows, np.full((6, frames.shape[1], 3), 255, np.uint8)]
  return Image.fromarray(np.concatenate(rows, 0))


def main(argv):
  del argv
  if _NUM.value < 1:
    raise cli.UsageError(f"--num: must be >= 1, got {_NUM.value}")
  if not 1 <= _SCALE.value <= 32:
    raise cli.UsageError(f"--scale: must be in [1, 32], got {_SCALE.value}")
  if not os.path.isdir(os.path.dirname(os.path.abspath(_OUT.value))):
    raise cli.UsageError(f"--out={_OUT.value}: its folder does not exist")
  contact_sheet(_DATA_DIR.value, _SPLIT.value, _NUM.value, _SCALE.value).save(_OUT.value)
  print(f"wrote {_OUT.value}")


def _define_flags():
  """Command-line flags (defined only when run as a program, so the module imports cleanly)."""
  global _DATA_DIR, _OUT, _SPLIT, _NUM, _SCALE
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset directory.", required=True)
  _OUT = flags.DEFINE_string("out", "sheet.png", "PNG to write.")
  _SPLIT = flags.DEFINE_enum("split", "train", ["train", "validation", "test"], "Split to show.")
  _NUM = flags.DEFINE_integer("num", 4, "Number of videos.")
  _SCALE = flags.DEFINE_integer("scale", 4, "Pixel magnification.")


if __name__ == "__main__":
  cli.run(main, expected=(FileNotFoundError,), define=_define_flags)
