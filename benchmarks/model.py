"""Model speed: tokens/s and achieved TFLOP/s of a train step and a sampling step, per size.

  python -m benchmarks.model                              # tiny and small at their batch, base/large at batch 1
  python -m benchmarks.model --sizes=base --batch=16 --dtype=bfloat16   # on a GPU

FLOPs are the model's matrix FLOPs (kinemask_jax/model/cost.py): 3x forward for a train step, 1x for a
sampling step (one Euler step, guidance off). MFU is given against the device's dense bf16 peak where known.
Times are medians over --repeats runs after a compile-and-warm-up run, synthetic data on device.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import model as model_configs
from kinemask_jax.model import conditioning, diffusion, text
from kinemask_jax.training import video
from kinemask_jax.model import cost

# Dense bf16 datasheet peaks (TFLOP/s), by a substring of jax's device kind.
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
CPU_BATCH = {"base": 1, "large": 1}  # CPU default batch for the GPU sizes


def synthetic_batch(config, batch: int) -> dict:
  d = config.data
  rng = np.random.default_rng(0)
  shape = (batch, d.num_frames, d.height, d.width, 3)
  ids, lengths = text.Tokenizer.from_config(config.model.text).encode_batch(
      ["A red cube slides to the left and hits a blue ball, which rolls away."] * batch)
  video = jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32)
  cond = conditioning.Condition(video[:, 0], jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32),
                                jnp.ones(shape[:2], jnp.float32), jnp.asarray(ids), jnp.asarray(lengths))
  return dict(video=video, cond=cond)


def out_of_memory(error: Exception) -> bool:
  return isinstance(error, MemoryError) or any(s in str(error) for s in ("RESOURCE_EXHAUSTED", "Out of memory"))


def timed(fn, repeats: int) -> tuple[float, float]:
  """(first call incl. compile, median of `repeats` later calls), in seconds."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def bench(size: str, batch: int | None, dtype: str, remat: bool, repeats: int, attention: str) -> list[dict]:
  config = model_configs.get_config(size)
  config.model.dtype = dtype
  config.model.remat = remat
  config.model.attention = attention
  on_cpu = jax.default_backend() == "cpu"
  batch = batch or (CPU_BATCH.get(size, config.batch_size) if on_cpu else config.batch_size)
  info = cost.size_summary(config)
  fwd = cost.forward_flops(config.model, config.data.num_frames, config.data.height, config.data.width)
  trainer = video.trainer(config)
  state = trainer.init(0)
  data = synthetic_batch(config, batch)
  step = trainer.jit_step(state, data)
  holder = {"state": state}

  def train():
    holder["state"], metrics = step(holder["state"], data)
    return metrics["loss"]

  cond = data["cond"]

  @jax.jit
  def euler_step(params, frozen, x, cond):
    model = nnx.merge(trainer.graphdef, params, frozen)
    v = diffusion.guided_velocity(model, x, jnp.full((x.shape[0],), 0.5), cond, 1.0, 1.0)
    return x - 0.04 * v

  x = data["video"]
  rows = []
  # Sampling first: a train step that runs out of memory may leave the donated state deleted.
  for name, fn, flops in [("sampling step", lambda: euler_step(holder["state"].params, holder["state"].frozen, x, cond),
                           fwd * batch),
                          ("train step", train, cost.TRAIN_FACTOR * fwd * batch)]:
    try:
      first, median = timed(fn, repeats)
    except jax.errors.JaxRuntimeError as e:
      if not out_of_memory(e):
        raise
      rows.append(dict(size=size, what=name, batch=batch, oom=str(e).splitlines()[0][:100]))
      continue
    rows.append(dict(size=size, what=name, batch=batch, dtype=dtype, tokens=info["tokens"], params=info["params"],
                     compile_s=first, step_s=median, tokens_per_s=batch * info["tokens"] / median,
                     tflops=flops / median / 1e12))
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="tiny,small,base,large")
  parser.add_argument("--batch", type=int, default=None, help="default: the config's (1 for base/large on CPU)")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--attention", default="full", choices=["full", "factorised"])
  parser.add_argument("--remat", action="store_true")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  device = jax.devices()[0]
  peak = next((v for k, v in PEAK_BF16.items() if k in device.device_kind), None)
  print(f"# device: {device.device_kind} x{jax.device_count()} ({jax.default_backend()}), host {platform.node()}, "
        f"jax {jax.__version__}; attention {args.attention}, remat {args.remat}", flush=True)
  head = "| size | step | batch | dtype | tokens/sample | params | compile+first s | s/step | tokens/s | TFLOP/s |"
  if peak:
    head += " MFU |"
  print(head)
  print("|" + "---|" * (head.count("|") - 1), flush=True)
  for size in args.sizes.split(","):
    try:
      rows = bench(size, args.batch, args.dtype, args.remat, args.repeats, args.attention)
    except (jax.errors.JaxRuntimeError, MemoryError) as e:
      if not out_of_memory(e):
        raise
      rows = [dict(size=size, what="train state", batch=args.batch, oom=str(e).splitlines()[0][:100])]
    for r in rows:
      if "oom" in r:
        print(f"| {size} | {r['what']} | {r['batch']} | out of memory: {r['oom']} |", flush=True)
        continue
      line = (f"| {r['size']} | {r['what']} | {r['batch']} | {r['dtype']} | {r['tokens']} | {r['params'] / 1e6:.1f} M "
              f"| {r['compile_s']:.1f} | {r['step_s']:.4f} | {r['tokens_per_s']:,.0f} | {r['tflops']:.3f} |")
      if peak:
        line += f" {100 * r['tflops'] / peak:.1f}% |"
      print(line, flush=True)


if __name__ == "__main__":
  main()
