"""Redraws docs/sample_strips.png from the shipped weights: `python docs/make_figures.py [--pretrained=tiny]`.

Three held-out test scenes (the first ones with a collision and a pushed object of at least 6 pixels), each
sampled exactly as `python -m kinemask_jax.sample --pretrained=NAME --point=... --velocity=...` does (no text),
drawn as the CLI's strip (the input with the velocity arrow, then the frames) above the simulator's video.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datagen import engine  # noqa: E402
from kinemask_jax import sample  # noqa: E402
from kinemask_jax.evaluation import score  # noqa: E402
from kinemask_jax.sampling import api, media  # noqa: E402


def scenes(data_cfg, num: int = 3) -> list[dict]:
  out = []
  for e in engine.generate_split("test", 200, data_cfg):
    ks = score.controlled_objects(e)
    if ks and (np.asarray(e["collisions"])[:, 0] >= 0).any() and (e["instance_ids"][0] == ks[0] + 1).sum() >= 6:
      out.append(e)
    if len(out) == num:
      return out
  return out


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--pretrained", default="tiny", choices=api.pretrained_names())
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_strips.png"))
  args = parser.parse_args()
  pipe = api.KineMaskPipeline.from_pretrained(args.pretrained)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for i, e in enumerate(scenes(pipe.config.data)):
      k = score.controlled_objects(e)[0]
      ys, xs = np.nonzero(e["instance_ids"][0] == k + 1)
      j = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
      image = os.path.join(tmp, f"{i}.png")
      Image.fromarray(e["video"][0]).save(image)
      v = e["velocity_cam"][0, k]
      result = sample.run(None, image, os.path.join(tmp, f"{i}.gif"), point=f"{xs[j]},{ys[j]}",
                          velocity=f"{v[0]},{v[1]},{v[2]}", prompt="", pretrained=args.pretrained)
      strip = sample.strip_with_arrows(pipe, result)
      scale = strip.shape[0] // e["video"].shape[1]
      truth = np.concatenate([np.zeros_like(e["video"][:1]), e["video"]])  # blank under the input panel
      truth_strip = media.strip(media.upscale(truth, scale), target_height=strip.shape[0])
      rows += [strip, truth_strip[:, :strip.shape[1]], np.full((4, strip.shape[1], 3), 255, np.uint8)]
  media.save_png(args.out, np.concatenate(rows[:-1], axis=0))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
