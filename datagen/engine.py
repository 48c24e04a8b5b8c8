"""The data engine: seeds -> examples of the data contract (simulate, render, truth, events, caption)."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import ml_collections

from datagen import captions
from datagen import physics
from datagen import render
from datagen import scenes as scenes_lib
from datagen import truth as truth_lib


# Example i of a split is the scene of seed SPLIT_SEED_BASE[split] + i: splits never share a scene.
SPLIT_SEED_BASE = {"train": 0, "validation": 1_000_000_000, "test": 2_000_000_000}


def generate_split(split: str, num: int, cfg: ml_collections.ConfigDict, backend: str | None = None,
                   start: int = 0):
  """Yields examples start..num-1 of `split`, simulated and rendered cfg.batch_size scenes at a time.

  A helper thread samples the next batch's scenes and prepares its physics while this one simulates.
  """
  if split not in SPLIT_SEED_BASE:
    raise ValueError(f"unknown split {split!r}; expected one of {list(SPLIT_SEED_BASE)}")
  starts = list(range(start, num, cfg.batch_size))
  seeds = [SPLIT_SEED_BASE[split] + np.arange(s, min(num, s + cfg.batch_size)) for s in starts]
  if not seeds:
    return
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    future = pool.submit(prepare_batch, seeds[0], cfg, backend)
    for i in range(len(seeds)):
      prepared = future.result()
      if i + 1 < len(seeds):
        future = pool.submit(prepare_batch, seeds[i + 1], cfg, backend)
      yield from generate_batch(seeds[i], cfg, backend, prepared)


def prepare_batch(seeds, cfg: ml_collections.ConfigDict, backend: str | None = None):
  """The host-side first half of `generate_batch`: the scenes of `seeds`, padded to cfg.batch_size with
  copies of the last one (one compiled shape for every batch), and their physics preparation."""
  return prepare_scenes([scenes_lib.sample_scene(int(s), cfg) for s in seeds], cfg, backend)


def prepare_scenes(scenes: list, cfg: ml_collections.ConfigDict, backend: str | None = None):
  """`prepare_batch` for given scenes (e.g. edited by scenes.with_pushes)."""
  padded = scenes + [scenes[-1]] * (-len(scenes) % cfg.batch_size)
  return scenes, padded, physics.prepare(padded, cfg, backend)


def simulate(scenes: list, cfg: ml_collections.ConfigDict, backend: str | None = None) -> list[dict]:
  """Examples of the data contract for given scenes (at most cfg.batch_size of them): what the simulator
  says happens, rendered."""
  return generate_batch(None, cfg, backend, prepare_scenes(list(scenes), cfg, backend))


def generate_batch(seeds, cfg: ml_collections.ConfigDict, backend: str | None = None, prepared=None) -> list[dict]:
  """Examples (dicts of numpy arrays, see kinemask_synth.features) for `seeds`, simulated together.

  The batch is padded to cfg.batch_size with copies of its last scene, so every call renders one
  compiled shape; the copies are dropped. `prepared`: `prepare_batch(seeds, ...)` if already done.
  """
  scenes, padded, physics_prep = prepared if prepared is not None else prepare_batch(seeds, cfg, backend)
  traj = physics.rollout(padded, cfg, backend, physics_prep)
  rgb, ids, depth, centroid, count = render.render(padded, traj.position, traj.quat, cfg, with_silhouettes=True)
  return [to_example(scene, traj, b, rgb[b], ids[b], depth[b], cfg, (centroid[b], count[b]))
          for b, scene in enumerate(scenes)]


def to_example(scene, traj, b, rgb, ids, depth, cfg, silhouettes=None) -> dict:
  """One example of the data contract from scene `b` of a rollout and its render (silhouettes: its
  (centroid [T,N,2], count [T,N]) when the renderer computed them, else computed here)."""
  t = truth_lib.example_truth(scene, traj, b, ids, silhouettes)
  outcome = captions.outcome_of(scene, traj.quat[b], traj.velocity[b], t["collisions"], t["fell"],
                              t["velocity_cam"])
  caption = captions.render_caption(outcome, scene, np.random.default_rng([scene.seed, 0xCA9]))
  valid = scene.valid
  example = dict(
      video=rgb, instance_ids=ids,
      num_objects=np.int32(scene.num_objects),
      shape=np.where(valid, scene.shape, -1).astype(np.int32),
      color=scene.color, size=scene.size, mass=scene.mass_kg, friction=scene.friction,
      moving_at_start=scene.moving_at_start,
      position=traj.position[b], quat=traj.quat[b],
      velocity_cam=t["velocity_cam"], centroid_px=t["centroid_px"], visible=t["visible"],
      collisions=t["collisions"], fell=t["fell"], caption=caption,
      camera_intrinsics=scene.camera.intrinsics, camera_extrinsics=scene.camera.extrinsics,
      seed=np.int64(scene.seed))
  if cfg.with_depth:
    example["depth"] = depth.astype(np.float16)
  return example
