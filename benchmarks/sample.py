"""Sampling speed through the public API: seconds per video by model size, sampler steps and batch.

  python -m benchmarks.sample                                   # tiny and small, 10 and 25 steps
  python -m benchmarks.sample --sizes=base --steps=25 --batches=1,8   # on a GPU

Each row times `KineMaskPipeline.generate` end to end (input checks, mask encoding, the jitted sampler, the
copy back to the host) with random weights (speed does not depend on them), median of --repeats calls after
a compile-and-warm-up call, guidance off (text_scale = mask_scale = 1: one model call per Euler step; with
guidance a step costs one call on a 3x batch). The compile time of the first call is reported apart.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np

from configs import model as model_configs
from kinemask_jax.sampling import api
from kinemask_jax.training import video


def make_pipeline(size: str, dtype: str | None) -> api.KineMaskPipeline:
  config = model_configs.get_config(size)
  if dtype:
    config.model.dtype = dtype
  state = video.trainer(config).init(0)
  return api.KineMaskPipeline(config, state.ema, state.frozen)


def inputs(pipe: api.KineMaskPipeline, batch: int):
  _, h, w, _ = pipe.video_shape
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  mask = np.zeros((h, w), bool)
  mask[h // 3: h // 2, w // 3: w // 2] = True
  return [image] * batch, [mask] * batch, [(0.8, -0.4)] * batch


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="tiny,small")
  parser.add_argument("--steps", default="10,25")
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--dtype", default=None, help="compute dtype override (e.g. bfloat16 on a GPU)")
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, {jax.device_count()} x {device.device_kind} ({device.platform}), "
        f"jax {jax.__version__}")
  print("| size | video | steps | batch | compile s | s per call | s per video | videos/s |")
  print("|---|---|---|---|---|---|---|---|")
  for size in args.sizes.split(","):
    pipe = make_pipeline(size, args.dtype)
    t, h, w, _ = pipe.video_shape
    for steps in (int(s) for s in args.steps.split(",")):
      for batch in (int(b) for b in args.batches.split(",")):
        images, masks, vels = inputs(pipe, batch)
        run = lambda: pipe.generate(images, masks, vels, num_steps=steps, seed=0)
        start = time.perf_counter()
        run()
        first = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
          start = time.perf_counter()
          run()
          times.append(time.perf_counter() - start)
        call = statistics.median(times)
        print(f"| {size} | {t}x{h}x{w} | {steps} | {batch} | {max(first - call, 0):.1f} | {call:.3f} | "
              f"{call / batch:.3f} | {batch / call:.2f} |", flush=True)


if __name__ == "__main__":
  main()
