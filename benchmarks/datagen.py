"""Data-engine throughput: videos/s for physics, rendering and the whole engine, tiny and small sizes.

  python benchmarks/datagen.py [--sizes=tiny,small] [--batches=3] [--backend=c|mjx] [--batch_size=1024]
                               [--mjx_max_pairs=N] [--parts=physics,render,engine] [--iterations=8/8,4/4]
                               [--compare=64] [--mjx_max_world_pairs=N] [--mjx_batch_pairs=OBJECTS,WORLD]
                               [--mjx_max_contacts=N]

Prints a table. Physics and rendering are the best of --batches timed batches after one warm-up batch
(compiles). The whole engine is `engine.generate_split` over max(--batches, 2) batches after a warm-up batch,
as a dataset is made: the next batch simulates and renders while this one's examples are made (truth,
events, captions) on the caller's thread, whose time per video is the "examples" column, and the batch after
is sampled and prepared on a helper. For MJX, "first s" is the warm-up physics call
(compile included) and "to C" the scenes of that batch whose collision cull overflowed and were simulated
again with MuJoCo C (datagen/mjx_collision.py). --parts=physics times the physics alone (the loan script's
MJX run, which must fit a time cap); skipped parts print "-".

--iterations gives one row per solver/line-search iteration pair (default: the config's), to measure what
fewer iterations buy. Its price is the "vs C mm" column: for the first --compare scenes, the median and the
90th percentile over real objects of the distance between the object's last-frame centre in this row's
rollout and in MuJoCo C's at the config's iterations (C rows at the config's iterations print "-"). MJX and
C differ at equal iterations too (other contact code, float32), so the config's own MJX row is the yardstick.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import data as data_configs  # noqa: E402
from datagen import engine, physics, render, scenes  # noqa: E402


def _best(fn, repeats, warm=True):
  if warm:
    fn()  # warm-up: compiles
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--sizes", default="tiny,small")
  parser.add_argument("--batches", type=int, default=3)
  parser.add_argument("--batch_size", type=int, default=0, help="scenes per batch (default: config)")
  parser.add_argument("--backend", default=None, choices=["c", "mjx"])
  parser.add_argument("--threads", type=int, default=0, help="MuJoCo C rollout threads (default: config)")
  parser.add_argument("--mjx_max_pairs", type=int, default=-1, help="MJX collision cull (default: config; 0: off)")
  parser.add_argument("--mjx_max_world_pairs", type=int, default=-1,
                      help="MJX pairs with the table/ground kept per call (default: config; 0: off)")
  parser.add_argument("--mjx_batch_pairs", default="", help="MJX vmap budget, pairs within reach per scene "
                      "between objects,with the world, e.g. 0.75,2.5 (default: config; 0,0: off)")
  parser.add_argument("--mjx_max_contacts", type=int, default=-1,
                      help="MJX contacts kept per scene for the solver, the deepest (default: config; 0: off)")
  parser.add_argument("--scenes_per_call", type=int, default=-1,
                      help="scenes rendered at once, render.scenes_per_call (default: config; 0: the whole batch)")
  parser.add_argument("--parts", default="physics,render,engine", help="what to time, of physics,render,engine")
  parser.add_argument("--iterations", default="", help="solver/ls iteration pairs, one row each, e.g. 8/8,4/4 "
                      "(default: the config's)")
  parser.add_argument("--compare", type=int, default=64, help="scenes compared with MuJoCo C (0: no comparison)")
  args = parser.parse_args()
  parts = args.parts.split(",")
  if not parts or set(parts) - {"physics", "render", "engine"}:
    parser.error(f"--parts: expected names from physics,render,engine, got {args.parts!r}")
  if (args.batches < 1 or args.batch_size < 0 or args.threads < 0 or args.mjx_max_pairs < -1
      or args.mjx_max_world_pairs < -1 or args.mjx_max_contacts < -1 or args.compare < 0
      or args.scenes_per_call < -1):
    parser.error("--batches must be >= 1; --batch_size, --threads, --mjx_max_pairs, --mjx_max_world_pairs, "
                 "--mjx_max_contacts, --scenes_per_call, --compare must be >= 0")
  iterations = _iterations(args.iterations, parser)
  budget = None
  if args.mjx_batch_pairs:
    try:
      budget = tuple(float(x) for x in args.mjx_batch_pairs.split(","))
    except ValueError:
      budget = ()
    if len(budget) != 2 or min(budget) < 0:
      parser.error(f"--mjx_batch_pairs: expected two numbers >= 0 like 0.75,2.5, got {args.mjx_batch_pairs!r}")
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind})")
  print("| size | T x H x W | batch | backend | iterations | first s | to C | physics videos/s | render videos/s | "
        "engine videos/s | examples ms/video | vs C mm (median / p90) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for size in args.sizes.split(","):
    base = data_configs.get_config(size)
    if args.batch_size:
      base.batch_size = args.batch_size
    if args.threads:
      base.physics.threads = args.threads
    if args.scenes_per_call >= 0:
      base.render.scenes_per_call = args.scenes_per_call
    if args.mjx_max_pairs >= 0:
      base.physics.mjx_max_pairs = args.mjx_max_pairs
    if args.mjx_max_world_pairs >= 0:
      base.physics.mjx_max_world_pairs = args.mjx_max_world_pairs
    if budget is not None:
      base.physics.mjx_batch_pairs = budget
    if args.mjx_max_contacts >= 0:
      base.physics.mjx_max_contacts = args.mjx_max_contacts
    backend = args.backend or physics.resolve_backend(base)
    b = base.batch_size
    batch = [scenes.sample_scene(s, base) for s in range(b)]
    compared = batch[:args.compare]
    reference = physics.rollout_c(compared, base) if compared else None
    for solver_it, ls_it in iterations or [(base.physics.solver_iterations, base.physics.ls_iterations)]:
      cfg = base.copy_and_resolve_references()
      cfg.physics.solver_iterations, cfg.physics.ls_iterations = solver_it, ls_it
      start = time.perf_counter()
      traj = physics.rollout(batch, cfg, backend)
      first = time.perf_counter() - start
      to_c = "-" if traj.resimulated is None else int(traj.resimulated.sum())
      t_phys = _best(lambda: physics.rollout(batch, cfg, backend), args.batches, warm=False)
      t_rend = _best(lambda: render.render(batch, traj.position, traj.quat, cfg), args.batches) \
          if "render" in parts else None
      t_all, examples = (_engine(cfg, backend, max(args.batches, 2))) if "engine" in parts else (None, "-")
      rate = lambda t: "-" if t is None else f"{b / t:.1f}"
      same = backend == "c" and (solver_it, ls_it) == (base.physics.solver_iterations, base.physics.ls_iterations)
      gap = "-" if reference is None or same else _end_gap_mm(traj, reference, compared)
      print(f"| {size} | {cfg.num_frames}x{cfg.height}x{cfg.width} | {b} | {backend} | {solver_it}/{ls_it} | "
            f"{first:.1f} | {to_c} | {rate(t_phys)} | {rate(t_rend)} | {rate(t_all)} | {examples} | {gap} |", flush=True)


def _engine(cfg, backend, batches):
  """The whole engine as a dataset is made: seconds per batch of the pipelined `generate_split` over
  `batches` batches (after one warm-up batch), and its caller's ms per video making examples."""
  engine.generate_batch(range(cfg.batch_size), cfg, backend)  # warm-up: compiles
  timings = engine.Timings()
  for _ in engine.generate_split("train", batches * cfg.batch_size, cfg, backend, timings=timings):
    pass
  print(f"# engine, {cfg.name} batch {cfg.batch_size}: {timings.summary()}", flush=True)
  return timings.wall_s / batches, f"{1e3 * timings.examples_s / timings.videos:.2f}"


def _iterations(text, parser):
  """'8/8,4/4' -> [(8, 8), (4, 4)]; '' -> [] (the config's)."""
  pairs = []
  for item in filter(None, text.split(",")):
    parts = item.split("/")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
      parser.error(f"--iterations: expected solver/ls pairs of integers >= 1 such as 8/8,4/4, got {item!r}")
    pairs.append((int(parts[0]), int(parts[1])))
  return pairs


def _end_gap_mm(traj, reference, compared):
  """Median / 90th percentile over the compared scenes' real objects of the last-frame centre distance (mm)."""
  n = len(compared)
  valid = np.stack([s.valid for s in compared])
  gap = np.linalg.norm(traj.position[:n, -1] - reference.position[:, -1], axis=-1)[valid] * 1e3
  return f"{np.median(gap):.1f} / {np.percentile(gap, 90):.1f}"


if __name__ == "__main__":
  main()
