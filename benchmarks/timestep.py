"""What the physics timestep buys and costs: MuJoCo C rollouts of the same test scenes at several timesteps,
against the finest.

  python benchmarks/timestep.py [--size=small] [--num=128] [--timesteps_ms=0.625,1.25,2.5,5,6.25]

Every figure compares a rollout with the rollout at the finest timestep (the reference, near the continuous
physics: MuJoCo's contacts are soft springs of a fixed 20 ms time constant while the step stays under half of
it, so the timestep changes only how finely the same physics is integrated), over the objects that move in
the reference (their centre ever 1 cm from its start): the distance between last-frame centres (mm), the
distance between their centres projected into the video's camera over every frame (pixels; points within
10 cm of the camera plane left out), the share of object-frames more than 1 px apart, and the scenes whose
object collisions (the pairs and the frame each first touched: the hit truth the evaluation scores) and
falls off the table are the same. The last row is the simulation's own sensitivity: the data config's
timestep with every initial velocity scaled by 1 + 1e-4, against the same timestep unscaled. Speed is the C
engine's videos/s for physics alone on this machine's threads (the MJX step's cost is linear in the steps
too). A timestep must give a whole number of at least 10 steps per frame (configs/data.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs import data as data_configs  # noqa: E402
from datagen import cli, engine, physics, scenes, truth  # noqa: E402

MOVED_M = 0.01
NEAR_CAMERA_M = 0.1


def compare(batch, traj, ref, moved) -> dict:
  """Gaps between two rollouts of `batch` over the moving objects `moved` [B, N] (see the module docstring)."""
  valid = moved & np.stack([s.valid for s in batch])
  end_mm = np.linalg.norm(traj.position[:, -1] - ref.position[:, -1], axis=-1)[valid] * 1e3
  gaps_px = []
  for i, scene in enumerate(batch):
    (a, za), (b, zb) = truth.project(traj.position[i], scene.camera), truth.project(ref.position[i], scene.camera)
    seen = valid[i][None] & (za > NEAR_CAMERA_M) & (zb > NEAR_CAMERA_M)
    gaps_px.append(np.linalg.norm(a - b, axis=-1)[seen])
  px = np.concatenate(gaps_px)

  def events(t, i):
    n = batch[i].num_objects
    return truth.collision_events(t.contact[i], n, n * (n - 1) // 2).tolist(), \
        truth.fall_frames(t.position[i], n)[:n].tolist()
  same = np.array([[x == y for x, y in zip(events(traj, i), events(ref, i))] for i in range(len(batch))])
  return dict(end_mm=end_mm, px=px, same_collisions=same[:, 0].mean(), same_falls=same[:, 1].mean())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="small", choices=data_configs.SIZES)
  parser.add_argument("--num", type=int, default=128, help="test scenes")
  parser.add_argument("--timesteps_ms", default="0.625,1.25,2.5,5,6.25", help="the finest is the reference")
  parser.add_argument("--threads", type=int, default=0, help="MuJoCo C threads (default: every core)")
  args = parser.parse_args()
  if args.num < 1 or args.threads < 0:
    parser.error(f"--num must be >= 1 and --threads >= 0, got --num={args.num} --threads={args.threads}")
  try:
    steps_ms = sorted(float(x) for x in args.timesteps_ms.split(","))
  except ValueError:
    parser.error(f"--timesteps_ms: expected numbers such as 1.25,2.5,5, got {args.timesteps_ms!r}")
  if len(steps_ms) < 2:
    parser.error(f"--timesteps_ms: give at least two timesteps (the finest is the reference), got {args.timesteps_ms!r}")
  base = data_configs.get_config(args.size)
  base.physics.threads = args.threads or os.cpu_count()
  configs = {}
  for ms in steps_ms:
    cfg = base.copy_and_resolve_references()
    cfg.physics.timestep_s = ms / 1e3
    try:
      scenes.validate_config(cfg)
    except cli.ConfigError as e:
      parser.error(f"--timesteps_ms: {ms} ms: {e}")
    configs[ms] = cfg

  print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, MuJoCo C on {base.physics.threads} threads; "
        f"{args.size}, {args.num} test scenes; reference {steps_ms[0]} ms; data config {base.physics.timestep_s * 1e3} ms")
  batch = [scenes.sample_scene(engine.SPLIT_SEED_BASE["test"] + i, base) for i in range(args.num)]
  rollouts, rate = {}, {}
  for ms, cfg in configs.items():
    start = time.perf_counter()
    rollouts[ms] = physics.rollout_c(batch, cfg)
    rate[ms] = args.num / (time.perf_counter() - start)
  ref = rollouts[steps_ms[0]]
  moved = np.linalg.norm(ref.position - ref.position[:, :1], axis=-1).max(1) > MOVED_M
  print(f"# moving objects: {int((moved & np.stack([s.valid for s in batch])).sum())}")
  print("| timestep ms | steps per frame | C physics videos/s | end gap mm (median / p90) | "
        "centre gap px, all frames (median / p90 / p99) | object-frames > 1 px | same collisions | same falls |")
  print("|---|---|---|---|---|---|---|---|")

  def row(name, spf, speed, gaps):
    end, px = gaps["end_mm"], gaps["px"]
    print(f"| {name} | {spf} | {speed} | {np.median(end):.1f} / {np.percentile(end, 90):.1f} | "
          f"{np.median(px):.2f} / {np.percentile(px, 90):.2f} / {np.percentile(px, 99):.1f} | {np.mean(px > 1):.3f} | "
          f"{gaps['same_collisions']:.3f} | {gaps['same_falls']:.3f} |", flush=True)

  for ms in steps_ms[1:]:
    row(f"{ms:g}", physics.steps_per_frame(configs[ms]), f"{rate[ms]:.0f}", compare(batch, rollouts[ms], ref, moved))
  own = base.physics.timestep_s * 1e3
  cfg = base.copy_and_resolve_references()
  nudged = [dataclasses.replace(s, velocity_mps=s.velocity_mps * (1 + 1e-4)) for s in batch]
  own_roll = rollouts[own] if own in rollouts else physics.rollout_c(batch, cfg)
  row(f"{own:g}, v0 x (1 + 1e-4), against {own:g}", physics.steps_per_frame(cfg), "-",
      compare(batch, physics.rollout_c(nudged, cfg), own_roll, moved))


if __name__ == "__main__":
  main()
