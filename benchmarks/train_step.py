"""Where a training step's time goes: the model's step alone against the step the training runs.

  python -m benchmarks.train_step [--size=tiny] [--batch=N] [--dtype=float32] [--repeats=5] [--backend=c]

On a GPU loan a small stage-2 step took 48.6 ms at batch 64 (H200) where `benchmarks.model` times 28.6 ms
(H100); this splits the difference. Rows, each a median over --repeats after a compile-and-warm-up call (the rows after
the stage-2 step reuse its compile):
- model step: `benchmarks.model`'s train step (forward, backward, AdamW, EMA) on a synthetic batch whose
  condition is already made (no curriculum, no flow loss);
- stage-2 step: the step `kinemask_jax.express` and the training loop run, on one fixed raw batch of real
  videos: the curriculum's masks, the conditioning and the loss targets made on the device from the data
  engine's arrays, the model's output head as configured (small and tiny: warp, with its flow loss);
- + batch draw: `express.RandomBatches`' gather of a random batch from the videos held on the device, then
  that step, as each step of the express run (without its metric fetches, every 25 steps);
- batch draw: the gather alone.
TFLOP/s counts the model's matrix FLOPs only (kinemask_jax/model/cost.py), the same for every step row, so a
lower figure is time spent outside the model's matrices. The videos come from the data engine first
(2 x batch, --backend physics; MuJoCo C by default, no MJX compile).
"""

from __future__ import annotations

import argparse
import platform
import time

import jax

from benchmarks import model as model_bench
from configs import stage2 as stage2_configs
from kinemask_jax import express
from kinemask_jax.model import cost
from kinemask_jax.model import dit
from kinemask_jax.model import text
from kinemask_jax.training import video


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="tiny", choices=["tiny", "small", "base", "large"])
  parser.add_argument("--batch", type=int, default=0, help="default: the stage config's")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--backend", default="c", choices=["c", "mjx"], help="physics of the videos")
  parser.add_argument("--output", default="", choices=["", *dit.OUTPUT_MODES],
                      help="the model's output head (default: the size's recipe, configs/train.py)")
  args = parser.parse_args()
  if args.batch < 0 or args.repeats < 1:
    parser.error(f"--batch must be >= 0 and --repeats >= 1, got --batch={args.batch} --repeats={args.repeats}")
  config = stage2_configs.get_config(args.size)
  config.model.dtype = args.dtype
  if args.output:
    config.model.output = args.output
  if args.batch:
    config.batch_size = args.batch
  batch = config.batch_size
  _, s2 = express.stage_configs(config)
  device = jax.devices()[0]
  print(f"# device: {device.device_kind} ({jax.default_backend()}), host {platform.node()}, jax {jax.__version__}; "
        f"{args.size}, batch {batch}, {args.dtype}, output {s2.model.output}", flush=True)

  data_cfg = s2.data.copy_and_resolve_references()
  data_cfg.batch_size = min(int(data_cfg.batch_size), 2 * batch)
  examples = express.generate(data_cfg, "train", 2 * batch, args.backend, express.Clock(1e9), float("inf"))
  arrays = express.raw_arrays(examples, text.Tokenizer.from_config(s2.model.text))
  del examples
  flops = cost.TRAIN_FACTOR * cost.forward_flops(s2.model, s2.data.num_frames, s2.data.height, s2.data.width) * batch

  rows = []
  plain = video.trainer(s2)
  plain_state = {"state": plain.init(0)}
  synthetic = model_bench.synthetic_batch(s2, batch)
  plain_step = plain.jit_step(plain_state["state"], synthetic)

  def model_step():
    plain_state["state"], metrics = plain_step(plain_state["state"], synthetic)
    return metrics["loss"]
  rows.append(("model step (condition made)", *model_bench.timed(model_step, args.repeats), flops))
  del plain_state["state"]

  start = time.perf_counter()
  trainer, step = express.compile_stage(s2, express.batch_like(arrays, batch))
  compile_s = time.perf_counter() - start
  holder = {"state": trainer.init(s2.seed)}
  batches = express.RandomBatches(arrays, batch, 0, trainer.batch_sharding(express.batch_like(arrays, batch)))
  fixed = next(batches)

  def stage2_step(draw: bool):
    holder["state"], metrics = step(holder["state"], next(batches) if draw else fixed)
    return metrics["loss"]
  first, median = model_bench.timed(lambda: stage2_step(False), args.repeats)
  rows.append(("stage-2 step (raw batch)", compile_s + first, median, flops))
  rows.append(("+ batch draw", *model_bench.timed(lambda: stage2_step(True), args.repeats), flops))
  rows.append(("batch draw", *model_bench.timed(lambda: next(batches), args.repeats), None))

  print("| step | compile + first call s | ms/step | model TFLOP/s |")
  print("|---|---|---|---|")
  for name, first, median, f in rows:
    tflops = "-" if f is None else f"{f / median / 1e12:.3f}"
    print(f"| {name} | {first:.1f} | {1e3 * median:.2f} | {tflops} |", flush=True)


if __name__ == "__main__":
  main()
