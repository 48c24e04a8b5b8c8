"""The demo's state and work, independent of HTTP (`kinemask_jax.demo` serves it as a web page): the scenes
of the page (repository examples, new data-engine scenes, uploads), object selection and velocity arrows
through the sampling API, and a one-worker job queue that generates, and for a data-engine scene simulates
the same pushes and scores both videos."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import itertools
import json
import os
import tempfile
import threading
import time

import numpy as np

from kinemask_jax.sampling.units import InputError  # a request the demo cannot serve: shown in the page

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
MOVE_THRESHOLD_FRAC = 0.04  # as the evaluation: an object "moved" beyond this share of the image width
# An arrow on the page shows this many seconds of motion (the API's arrows show one second, which at the
# data's 0.8-2 m/s would reach past a small image's edge).
ARROW_S = 0.25
KEEP_JOBS = 50  # the videos of this many newest jobs are kept (in memory) for the page and its links


@dataclasses.dataclass
class Scene:
  """A scene of the page: its first frame at the model's size and, for a data-engine scene, the engine's
  Scene (to simulate the user's pushes) and its first frame's instance ids."""
  name: str
  image: np.ndarray
  engine_scene: object | None = None
  ids0: np.ndarray | None = None


@dataclasses.dataclass
class Job:
  id: str
  request: dict
  created: float
  stage: str = "queued"
  started: float | None = None
  finished: float | None = None
  result: dict | None = None
  error: str | None = None


class DemoSession:
  """The demo's state and work, independent of HTTP: scenes by id, segmentation and arrows through the
  pipeline, and a one-worker job queue."""

  def __init__(self, pipe, examples_dir: str = EXAMPLES, model_name: str = "model"):
    self.pipe = pipe
    self.model_name = model_name
    self.data_cfg = pipe.config.data.copy_and_resolve_references()
    self.data_cfg.batch_size = 1  # one scene at a time, not padded to the engine's batch
    self.examples = self._example_seeds(examples_dir)
    self.scenes: dict[str, Scene] = {}
    self.jobs: dict[str, Job] = {}
    self._ids = itertools.count(1)
    self._lock = threading.Lock()
    self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-job")
    self._seconds_per_step: float | None = None
    # The videos of the newest KEEP_JOBS jobs, in memory: (job id, file name) -> bytes. Nothing is left on
    # disk when the server stops, however it stops.
    self.files: dict[tuple[str, str], bytes] = {}

  # -- scenes ----------------------------------------------------------------------------------------
  def _example_seeds(self, examples_dir: str) -> dict[str, int]:
    """Repository examples at the model's size (examples/scenes.json: name -> engine seed)."""
    path = os.path.join(examples_dir, "scenes.json")
    if not os.path.exists(path):
      return {}
    with open(path) as f:
      table = json.load(f)
    prefix = self.data_cfg.name + "_"
    return {name: int(v["seed"]) for name, v in sorted(table.items()) if name.startswith(prefix)}

  def _add(self, scene: Scene) -> tuple[str, Scene]:
    with self._lock:
      scene_id = f"s{next(self._ids)}"
      self.scenes[scene_id] = scene
    return scene_id, scene

  def engine_scene(self, seed: int, name: str) -> tuple[str, Scene]:
    """The data engine's scene of `seed` at the model's size (its first frame rendered)."""
    from datagen import engine, scenes
    scene = scenes.sample_scene(int(seed), self.data_cfg)
    example = engine.simulate([scene], self.data_cfg)[0]
    return self._add(Scene(name, np.asarray(example["video"][0]), scene, np.asarray(example["instance_ids"][0])))

  def example(self, name: str) -> tuple[str, Scene]:
    if name not in self.examples:
      raise InputError(f"example {name!r}: not one of {list(self.examples)}")
    return self.engine_scene(self.examples[name], f"example {name}")

  def random_scene(self, seed: int | None = None) -> tuple[str, Scene]:
    """A new held-out scene: a test-split seed of the engine (the model never trained on it)."""
    from datagen import engine
    if seed is not None and (not isinstance(seed, int) or seed < 0):
      raise InputError(f"seed: expected a non-negative integer or nothing, got {seed!r}")
    seed = engine.SPLIT_SEED_BASE["test"] + int(np.random.default_rng(seed).integers(0, 1_000_000))
    return self.engine_scene(seed, f"engine scene {seed}")

  def upload(self, data: bytes, filename: str = "upload") -> tuple[str, Scene]:
    """An uploaded image, resized to the model's size (bilinear); no simulator truth."""
    from PIL import Image, UnidentifiedImageError
    try:
      image = Image.open(io.BytesIO(data))
      image.load()
    except (UnidentifiedImageError, OSError, ValueError) as e:
      raise InputError(f"upload {filename!r}: not an image ({type(e).__name__})") from None
    h, w = self.pipe.video_shape[1:3]
    image = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR))
    return self._add(Scene(f"upload {filename}", image))

  def scene(self, scene_id: str) -> Scene:
    if scene_id not in self.scenes:
      raise InputError(f"scene {scene_id!r}: unknown (reload the page)")
    return self.scenes[scene_id]

  def describe_scene(self, scene_id: str) -> dict:
    s = self.scene(scene_id)
    h, w = s.image.shape[:2]
    return dict(id=scene_id, name=s.name, width=w, height=h, has_truth=s.engine_scene is not None,
                image=s.image.tolist())

  # -- objects and velocities ------------------------------------------------------------------------
  def select(self, scene_id: str, x: int, y: int) -> dict:
    """The object under pixel (x, y): its mask (mask_from_point) and a label."""
    from kinemask_jax.sampling import api
    s = self.scene(scene_id)
    mask = api.mask_from_point(s.image, int(x), int(y))
    label = "object"
    if s.ids0 is not None:  # an engine scene knows its objects: the fill must be mostly one of them
      k = self._object_of(s, mask)
      if k < 0:
        raise InputError(f"point: ({x}, {y}) is on the table or background of this scene, not on an object")
      label = self._name(s, k)
    ys, xs = np.nonzero(mask)
    return dict(mask=mask.astype(np.uint8).tolist(), label=label, pixels=int(mask.sum()),
                centroid=[float(xs.mean() + 0.5), float(ys.mean() + 0.5)])

  @staticmethod
  def _object_of(s: Scene, mask: np.ndarray) -> int:
    """The engine object (index) most of the mask's pixels show, or -1 for the table or background."""
    return int(np.bincount(s.ids0[mask]).argmax()) - 1

  @staticmethod
  def _name(s: Scene, k: int) -> str:
    return f"{s.engine_scene.color_name[k]} {('block', 'ball', 'cylinder')[int(s.engine_scene.shape[k])]}"

  def velocity_from_arrow(self, start_xy, end_xy) -> dict:
    """The velocity of an arrow drawn on the page (pixels of the model's image; ARROW_S seconds of motion)."""
    (x0, y0), (x1, y1) = start_xy, end_xy
    one_second = (x0 + (x1 - x0) / ARROW_S, y0 + (y1 - y0) / ARROW_S)
    v = self.pipe.check_velocity(self.pipe.velocity_from_arrow((x0, y0), one_second), "velocity (the arrow)")
    return dict(velocity=[round(float(x), 3) + 0.0 for x in v])

  def arrow_from_velocity(self, velocity) -> dict:
    """A typed velocity (m/s, camera frame), checked, and its arrow on the page (pixels over ARROW_S)."""
    v = self.pipe.check_velocity(velocity)
    dx, dy = self.pipe.arrow_from_velocity(v)
    return dict(velocity=[round(float(x), 3) + 0.0 for x in v], arrow=[dx * ARROW_S, dy * ARROW_S])

  def _inputs(self, scene_id: str, objects: list[dict]):
    from kinemask_jax.sampling import api
    s = self.scene(scene_id)
    if not objects:
      raise InputError("objects: select at least one object (click on it) and drag its velocity arrow")
    masks = [api.mask_from_point(s.image, int(o["x"]), int(o["y"])) for o in objects]
    velocities = [self.pipe.check_velocity(o["velocity"], f"velocity of object {i + 1}") for i, o in enumerate(objects)]
    return s, masks, velocities

  def auto_prompt(self, scene_id: str, objects: list[dict]) -> dict:
    s, masks, velocities = self._inputs(scene_id, objects)
    caption = self.pipe.auto_prompt(s.image, masks, velocities)
    return dict(prompt=caption, note=None if caption is not None else
                "no outcome predictor loaded (--describer=DIR): 'auto' generates without text")

  # -- jobs ------------------------------------------------------------------------------------------
  def submit(self, request: dict) -> str:
    """Queues a generation; validates what can be checked at once (scene, objects, velocities, steps, seed)."""
    self._inputs(request.get("scene_id", ""), request.get("objects") or [])
    steps, seed = request.get("steps"), request.get("seed", 0)
    if not isinstance(steps, int) or not 1 <= steps <= 200:
      raise InputError(f"steps: expected an integer in [1, 200], got {steps!r}")
    if not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
      raise InputError(f"seed: expected an integer in [0, 2**32), got {seed!r}")
    with self._lock:
      job = Job(f"j{next(self._ids)}", request, time.time())
      self.jobs[job.id] = job
    self._worker.submit(self._run, job)
    return job.id

  def status(self, job_id: str) -> dict:
    if job_id not in self.jobs:
      raise InputError(f"job {job_id!r}: unknown")
    job = self.jobs[job_id]
    ahead = sum(1 for j in self.jobs.values() if j.stage == "queued" and j.created < job.created)
    running = any(j.stage not in ("queued", "done", "error") for j in self.jobs.values() if j is not job)
    now = time.time()
    estimate = (self._seconds_per_step * job.request["steps"] if self._seconds_per_step else None)
    return dict(id=job.id, stage=job.stage, queue_position=ahead + (1 if running and job.stage == "queued" else 0),
                elapsed=round((job.finished or now) - (job.started or now), 1),
                estimate=round(estimate, 1) if estimate else None, result=job.result, error=job.error)

  def _run(self, job: Job) -> None:
    job.started = time.time()
    try:
      job.result = self._generate(job)
      job.stage = "done"
    except InputError as e:
      job.error, job.stage = str(e), "error"
    except Exception as e:  # the server keeps serving; the page shows what happened
      job.error, job.stage = f"server error: {type(e).__name__}: {e}", "error"
    job.finished = time.time()

  def _generate(self, job: Job) -> dict:
    r = job.request
    job.stage = "segmenting"
    s, masks, velocities = self._inputs(r["scene_id"], r["objects"])
    prompt = r.get("prompt", "auto")
    if prompt == "auto":
      prompt = self.pipe.auto_prompt(s.image, masks, velocities) or ""
    job.stage = "generating"
    start = time.time()
    result = self.pipe.generate(s.image, masks, velocities, prompt=prompt or None, num_steps=r["steps"],
                                seed=r.get("seed", 0))
    self._seconds_per_step = (time.time() - start) / r["steps"]
    out = dict(prompt=result.prompt, frames=int(result.video.shape[0]), fps=self.pipe.fps,
               generated=self._save(job.id, "generated", result.video))
    if s.engine_scene is not None:
      job.stage = "simulating"
      out.update(self._truth(job.id, s, masks, result.velocities, result.video))
    return out

  def _save(self, job_id: str, name: str, video: np.ndarray) -> dict:
    from kinemask_jax.sampling import media
    with tempfile.TemporaryDirectory(prefix="kinemask_demo_") as folder:
      for ext, save in (("gif", media.save_gif), ("mp4", media.save_mp4)):
        path = os.path.join(folder, f"{name}.{ext}")
        save(path, video, self.pipe.fps)
        with open(path, "rb") as f:
          self.files[(job_id, f"{name}.{ext}")] = f.read()
    with self._lock:
      old_jobs = sorted({j for j, _ in self.files}, key=lambda j: int(j[1:]))[:-KEEP_JOBS]
      for key in [k for k in self.files if k[0] in old_jobs]:
        del self.files[key]
    return dict(gif=f"/api/files/{job_id}/{name}.gif", mp4=f"/api/files/{job_id}/{name}.mp4")

  def _truth(self, job_id: str, s: Scene, masks, velocities_cam, video) -> dict:
    """The simulator's video of the same pushes (camera-frame velocities turned into the scene's world frame,
    horizontal), and both videos scored against it."""
    from datagen import engine, scenes
    from kinemask_jax.evaluation import metrics
    rotation = np.asarray(s.engine_scene.camera.rotation, np.float64)  # world -> camera
    pushes = {}
    for mask, v in zip(masks, velocities_cam):
      k = self._object_of(s, mask)
      if k < 0:
        raise InputError("a selected region is no object of the engine's scene (the table?): select objects only")
      pushes[k] = rotation.T @ np.asarray(v, np.float64)
    truth = engine.simulate([scenes.with_pushes(s.engine_scene, pushes)], self.data_cfg)[0]
    threshold = MOVE_THRESHOLD_FRAC * video.shape[2]
    mine, theirs = (metrics.score_video(v, truth, threshold) for v in (video, np.asarray(truth["video"])))
    n = int(truth["num_objects"])
    names = [self._name(s, k) for k in range(n)]
    hit = lambda moved: [names[k] for k in range(n) if moved[k] and k not in pushes]
    curve = np.asarray(mine["motion_error_px"], np.float64)[1:]
    return dict(truth=self._save(job_id, "truth", np.asarray(truth["video"])),
                motion_error_px=round(float(np.nanmean(curve)), 2) if np.isfinite(curve).any() else None,
                moved_generated=hit(mine["moved"]), moved_truth=hit(theirs["moved"]),
                pushed=[names[k] for k in pushes])
