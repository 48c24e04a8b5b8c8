"""The data engine: seeds -> examples of the data contract (simulate, render, truth, events, caption)."""

from __future__ import annotations

import numpy as np
import ml_collections

from datagen import captions
from datagen import physics
from datagen import render
from datagen import scenes as scenes_lib
from datagen import truth as truth_lib


def generate_batch(seeds, cfg: ml_collections.ConfigDict, backend: str | None = None) -> list[dict]:
  """Examples (dicts of numpy arrays, see kinemask_synth.features) for `seeds`, simulated together.

  The batch is padded to cfg.batch_size with copies of its last scene, so every call renders one
  compiled shape; the copies are dropped.
  """
  seeds = [int(s) for s in seeds]
  scenes = [scenes_lib.sample_scene(s, cfg) for s in seeds]
  padded = scenes + [scenes[-1]] * (-len(scenes) % cfg.batch_size)
  traj = physics.rollout(padded, cfg, backend)
  rgb, ids, depth = render.render(padded, traj.position, traj.quat, cfg)
  return [to_example(scene, traj, b, rgb[b], ids[b], depth[b], cfg) for b, scene in enumerate(scenes)]


def to_example(scene, traj, b, rgb, ids, depth, cfg) -> dict:
  """One example of the data contract from scene `b` of a rollout and its render."""
  t = truth_lib.example_truth(scene, traj, b, ids)
  outcome = captions.describe(scene, traj.quat[b], traj.velocity[b], t["collisions"], t["fell"],
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
