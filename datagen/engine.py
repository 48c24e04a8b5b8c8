"""The data engine: seeds -> examples of the data contract (simulate, render, truth, events, caption)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time

import numpy as np
import ml_collections

from datagen import captions
from datagen import physics
from datagen import render
from datagen import scenes as scenes_lib
from datagen import truth as truth_lib


# Example i of a split is the scene of seed SPLIT_SEED_BASE[split] + i: splits never share a scene.
SPLIT_SEED_BASE = {"train": 0, "validation": 1_000_000_000, "test": 2_000_000_000}


@dataclasses.dataclass
class Timings:
  """Where a `generate_split` spent its time: seconds of each stage on the thread that runs it (the stages
  of different batches overlap, so they add up to more than the wall time), and what the consumer's thread
  waited for. Each field is written by one thread only."""
  videos: int = 0
  batches: int = 0
  wall_s: float = 0.0  # from the first call to the last example handed out
  prepare_s: float = 0.0  # helper thread: scene sampling and the physics' host preparation (MJX: model arrays)
  physics_s: float = 0.0  # simulation thread: the rollout (MJX on the accelerator, or MuJoCo C threads)
  render_s: float = 0.0  # simulation thread: rendering, silhouettes, the transfer to the host
  examples_s: float = 0.0  # consumer's thread: truth, events, captions, the example dicts
  waited_s: float = 0.0  # consumer's thread: waiting for the simulation thread

  def as_dict(self) -> dict:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in dataclasses.asdict(self).items()}

  def summary(self) -> str:
    """One line: videos/s, then each stage's ms per video."""
    per = lambda s: f"{1e3 * s / max(self.videos, 1):.2f}"
    return (f"{self.videos} videos in {self.wall_s:.1f} s ({self.videos / max(self.wall_s, 1e-9):.1f} videos/s); "
            f"ms per video: physics {per(self.physics_s)}, render {per(self.render_s)} (simulation thread), "
            f"examples {per(self.examples_s)}, waiting for the simulation {per(self.waited_s)} (consumer), "
            f"prepare {per(self.prepare_s)} (helper)")


@dataclasses.dataclass(frozen=True)
class Simulated:
  """A batch simulated and rendered, before its examples are made (`finish_batch`)."""
  scenes: list  # the batch's scenes (without the padding copies)
  traj: physics.Trajectory
  rendered: tuple  # render.render's (rgb, ids, depth, centroid, count), padded batch


def generate_split(split: str, num: int, cfg: ml_collections.ConfigDict, backend: str | None = None,
                   start: int = 0, timings: Timings | None = None, deadline: float | None = None):
  """Yields examples start..num-1 of `split`, simulated and rendered cfg.batch_size scenes at a time.

  Three threads overlap: a helper samples and prepares batch i + 2, the simulation thread simulates and
  renders batch i + 1 (on an accelerator it mostly waits for the device), and the caller's thread makes
  batch i's examples (truth, captions) while they run. So a consumer that stops early leaves one batch
  simulated for nothing. `timings`: filled in as it goes. `deadline` (a `time.perf_counter()` value): no
  batch starts simulating after it; the ones started are still handed out, then the generator ends.
  """
  if split not in SPLIT_SEED_BASE:
    raise ValueError(f"unknown split {split!r}; expected one of {list(SPLIT_SEED_BASE)}")
  starts = list(range(start, num, cfg.batch_size))
  seeds = [SPLIT_SEED_BASE[split] + np.arange(s, min(num, s + cfg.batch_size)) for s in starts]
  if not seeds:
    return
  timings = timings if timings is not None else Timings()
  began = time.perf_counter()

  def prepare(i):
    t = time.perf_counter()
    prepared = prepare_batch(seeds[i], cfg, backend)
    timings.prepare_s += time.perf_counter() - t
    return prepared

  def simulate_next(prepared_future):
    return simulate_prepared(prepared_future.result(), cfg, backend, timings)

  with concurrent.futures.ThreadPoolExecutor(1, "prepare") as helper, \
       concurrent.futures.ThreadPoolExecutor(1, "simulate") as simulation:
    prepared = [helper.submit(prepare, i) for i in range(min(2, len(seeds)))]
    running = simulation.submit(simulate_next, prepared[0])
    for i in range(len(seeds)):
      if i + 2 < len(seeds):
        prepared.append(helper.submit(prepare, i + 2))
      t = time.perf_counter()
      done = running.result()
      timings.waited_s += time.perf_counter() - t
      more = i + 1 < len(seeds) and (deadline is None or time.perf_counter() < deadline)
      if more:
        running = simulation.submit(simulate_next, prepared[i + 1])
      prepared[i] = None  # the list does not keep a handed-out batch's arrays alive
      yield from _handed_out(finish_batch(done, cfg, timings), timings, began)
      if not more:
        return


def _handed_out(examples: list[dict], timings: Timings, began: float):
  for example in examples:
    timings.videos += 1
    yield example
  timings.batches += 1
  timings.wall_s = time.perf_counter() - began


def prepare_batch(seeds, cfg: ml_collections.ConfigDict, backend: str | None = None):
  """The host-side first stage of a batch: the scenes of `seeds`, padded to cfg.batch_size with copies of
  the last one (one compiled shape for every batch), and their physics preparation."""
  return prepare_scenes([scenes_lib.sample_scene(int(s), cfg) for s in seeds], cfg, backend)


def prepare_scenes(scenes: list, cfg: ml_collections.ConfigDict, backend: str | None = None):
  """`prepare_batch` for given scenes (e.g. edited by scenes.with_pushes)."""
  padded = scenes + [scenes[-1]] * (-len(scenes) % cfg.batch_size)
  return scenes, padded, physics.prepare(padded, cfg, backend)


def simulate_prepared(prepared, cfg: ml_collections.ConfigDict, backend: str | None = None,
                      timings: Timings | None = None) -> Simulated:
  """The device stage of a batch (`prepare_batch`'s result): physics, then rendering with silhouettes."""
  scenes, padded, physics_prep = prepared
  t = time.perf_counter()
  traj = physics.rollout(padded, cfg, backend, physics_prep)
  t1 = time.perf_counter()
  rendered = render.render(padded, traj.position, traj.quat, cfg, with_silhouettes=True)
  if timings is not None:
    timings.physics_s += t1 - t
    timings.render_s += time.perf_counter() - t1
  return Simulated(scenes, traj, rendered)


def finish_batch(simulated: Simulated, cfg: ml_collections.ConfigDict, timings: Timings | None = None) -> list[dict]:
  """The host stage of a batch: one example of the data contract per scene (the padding copies dropped)."""
  t = time.perf_counter()
  rgb, ids, depth, centroid, count = simulated.rendered
  examples = [to_example(scene, simulated.traj, b, rgb[b], ids[b], depth[b], cfg, (centroid[b], count[b]))
              for b, scene in enumerate(simulated.scenes)]
  if timings is not None:
    timings.examples_s += time.perf_counter() - t
  return examples


def simulate(scenes: list, cfg: ml_collections.ConfigDict, backend: str | None = None) -> list[dict]:
  """Examples of the data contract for given scenes (at most cfg.batch_size of them): what the simulator
  says happens, rendered."""
  return generate_batch(None, cfg, backend, prepare_scenes(list(scenes), cfg, backend))


def generate_batch(seeds, cfg: ml_collections.ConfigDict, backend: str | None = None, prepared=None) -> list[dict]:
  """Examples (dicts of numpy arrays, see kinemask_synth.features) for `seeds`, simulated together, in one
  thread. The batch is padded to cfg.batch_size with copies of its last scene, so every call renders one
  compiled shape; the copies are dropped. `prepared`: `prepare_batch(seeds, ...)` if already done."""
  prepared = prepared if prepared is not None else prepare_batch(seeds, cfg, backend)
  return finish_batch(simulate_prepared(prepared, cfg, backend), cfg)


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
