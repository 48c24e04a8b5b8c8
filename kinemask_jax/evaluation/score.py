"""Physics evaluation of a video model against its ablations, the baselines and the simulator.

On the first N examples of the held-out split, with only frame 0's velocity given, generates the videos of
the model, of its ablations (configs/evaluate.py) and of the baselines (evaluation/baselines.py), tracks
every object (evaluation/tracking.py) and scores them with the metric table (evaluation/metrics.py), plus
two measures per method: causality (rank correlation of the hit object's displacement with the input speed
over a sweep) and text following. The simulator's own videos are scored too, as the reference each metric
reaches on the truth. `python -m kinemask_jax.evaluate` runs `evaluate`; evaluation/report.py writes the
report.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import platform
import time
from collections.abc import Callable
from concurrent import futures

import numpy as np

from datagen import cli, datasets, palette, truth
from kinemask_jax.evaluation import baselines, metrics, report, tracking

Generate = Callable[[list, list], list]  # (examples, velocities [N,3] per example or None) -> videos


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  generate: Generate
  causal: bool = True  # takes part in the speed sweep (the simulator reference cannot re-simulate)


def controlled_objects(example: dict) -> list[int]:
  """Indices of the objects moving at start that are visible in frame 0 (the ones a user can point at)."""
  ids0 = np.asarray(example["instance_ids"])[0]
  return [k for k in range(int(example["num_objects"]))
          if example["moving_at_start"][k] and (ids0 == k + 1).any()]


def load_examples(model_config, split: str, num: int, data_dir: str = "", in_memory: bool = False,
                  generate_missing: bool = False) -> list[dict]:
  """The first `num` examples of `split` in seed order that have a controlled object visible in frame 0, as
  numpy dicts: read from the model's dataset (which must have been built from the model's data config; a
  missing one is refused unless `generate_missing`, then generated saying so), or with `in_memory` made by the
  data engine from the split's seeds (the same scenes, without writing a dataset). Both give the same
  examples in the same order (TFDS stores a split in its own record order, so the records are sorted by
  their `seed`): a subset, the noise each example gets (`seed + i`) and the sweeps' examples do not depend
  on where the examples come from."""
  if in_memory:
    from datagen import engine
    examples = []
    for example in engine.generate_split(split, 4 * num + 64, model_config.data):
      if controlled_objects(example):
        examples.append(example)
      if len(examples) == num:
        return examples
    raise ValueError(f"split {split!r}: fewer than {num} examples with a visible controlled object")
  config = model_config.copy_and_resolve_references()
  if data_dir:
    config.data_dir = data_dir
  path = datasets.dataset_path(config)
  if not generate_missing and not datasets.exists(config):
    raise DatasetMissing(f"no dataset at {path} (the model's data, {config.data.name}): pass --config.data_dir=DIR "
                         "where it was generated, --config.in_memory=True to make the split's scenes with the "
                         "data engine, or --config.generate_missing=True to generate it there first")
  source = datasets.source(config, split, asker="the model's data config")
  examples = []
  for i in sorted(range(len(source)), key=lambda i: int(source[i]["seed"])):
    if len(examples) == num:
      break
    example = {k: np.asarray(v) if not isinstance(v, bytes) else datasets.decode_text(v) for k, v in source[i].items()}
    if controlled_objects(example):
      examples.append(example)
  if not examples:
    raise ValueError(f"split {split!r} of {config.data_dir} has no example with a visible controlled object")
  return examples


def generation_inputs(example: dict, velocities=None) -> tuple[np.ndarray, list, list]:
  """The sampling API's inputs for an example: frame 0, the controlled objects' frame-0 masks and their
  velocities (frame 0's, or `velocities` [N,3] when given)."""
  v = np.asarray(example["velocity_cam"])[0] if velocities is None else velocities
  ks = controlled_objects(example)
  ids0 = np.asarray(example["instance_ids"])[0]
  return np.asarray(example["video"])[0], [ids0 == k + 1 for k in ks], [v[k] for k in ks]


def largest_displacement(video: np.ndarray, example: dict, k: int) -> float:
  """How far object k's tracked centroid gets from its frame-0 position in `video` (px; 0 if never found)."""
  masks = truth.masks_from_ids(np.asarray(example["instance_ids"])[0], int(example["num_objects"]))
  tr = tracking.track(video, masks, np.asarray(example["video"])[0])
  c = metrics.carry_forward(tr.centroid, tr.found)[:, k]
  d = np.linalg.norm(c - c[:1], axis=-1)
  return float(np.nanmax(d)) if np.isfinite(d).any() else 0.0


def model_method(name: str, pipe, eval_config, prompt: str) -> Method:
  """A Method generating with `pipe` from frame 0, the controlled objects' masks and velocities; text: the
  example's caption ("caption"), the outcome predictor's ("auto") or none ("none")."""
  num_steps = eval_config.num_steps or None

  def generate(examples, velocities):
    from tqdm import tqdm
    videos = []
    for start in tqdm(range(0, len(examples), eval_config.batch_size), desc=name, unit="batch", leave=False):
      chunk = range(start, min(start + eval_config.batch_size, len(examples)))
      images, masks, vels, prompts = [], [], [], []
      for i in chunk:
        e = examples[i]
        image, object_masks, object_vels = generation_inputs(e, velocities[i])
        images.append(image)
        masks.append(object_masks)
        vels.append(object_vels)
        prompts.append({"caption": e["caption"], "auto": "auto", "none": None}[prompt])
      result = pipe.generate(images, masks, vels, prompt=prompts, num_steps=num_steps,
                             seed=eval_config.seed * 1_000_003 + start)
      videos.extend(result.video)
    return videos
  return Method(name, generate)


def _methods(eval_config, pipe, extra: dict | None = None) -> list[Method]:
  """The methods to score: the reference, the model, its ablations (config paths, or `extra` name ->
  pipeline for models held in memory), and the baselines."""
  from kinemask_jax.sampling import api
  prompt = eval_config.prompt
  if prompt not in ("caption", "auto", "none"):
    raise ValueError(f"config.prompt must be 'caption', 'auto' or 'none', got {prompt!r}")
  if prompt == "auto" and pipe.describer is None:
    raise ValueError("config.prompt='auto' needs an outcome predictor: --config.describer=DIR")
  fps = pipe.fps
  methods = [Method("simulator (reference)", lambda ex, vel: [np.asarray(e["video"]) for e in ex], causal=False),
             model_method("KineMask", pipe, eval_config, prompt)]
  ab = eval_config.ablations
  if ab.no_text and prompt != "none":
    methods.append(model_method("no text", pipe, eval_config, "none"))
  stage1 = ab.stage1_only
  if stage1 == "auto":  # the stage-1 workdir a stage-2 run started from, when it is there
    stage1 = pipe.config.get("init_from", "") if pipe.config.get("stage") == 2 else ""
    stage1 = stage1 if stage1 and os.path.isdir(stage1) else ""
  for name, path in (("stage 1 only", stage1), ("no velocity", ab.no_velocity)):
    if path:
      methods.append(model_method(name, api.KineMaskPipeline.from_checkpoint(path, describer=eval_config.describer),
                                  eval_config, prompt))
  for name, other in (extra or {}).items():
    methods.append(model_method(name, other, eval_config, prompt))
  for name in eval_config.baselines:
    methods.append(Method(name.replace("_", " "), functools.partial(BASELINES[name], fps=fps)))
  return methods


def _causality_inputs(examples: list[dict], speeds, num: int) -> list[tuple[dict, int, list]]:
  """(example, first-hit object, velocities [N,3] per speed) for up to `num` examples with a hit object."""
  out = []
  for e in examples:
    if len(out) >= num:
      break
    ks = controlled_objects(e)
    target = next((int(x) - 1 for row in np.asarray(e["collisions"]) if row[0] >= 0
                   for x in row[1:] if x > 0 and int(x) - 1 not in ks), None)
    if target is None:
      continue
    v0 = np.asarray(e["velocity_cam"])[0].astype(np.float64)
    sweeps = []
    for s in speeds:
      v = v0.copy()
      for k in ks:
        v[k] = v0[k] / max(np.linalg.norm(v0[k]), 1e-9) * s
      sweeps.append(v.astype(np.float32))
    out.append((e, target, sweeps))
  return out


def causality(method: Method, inputs, speeds) -> dict:
  """Per example, the hit object's largest displacement (px) at each speed and their rank correlation."""
  if not inputs:
    return dict(causality_rho=float("nan"), causality_displacement_px=[float("nan")] * len(speeds))
  examples = [e for e, _, sweeps in inputs for _ in sweeps]
  videos = method.generate(examples, [v for _, _, sweeps in inputs for v in sweeps])
  disp = np.zeros((len(inputs), len(speeds)))
  for i, (e, target, _) in enumerate(inputs):
    for j in range(len(speeds)):
      disp[i, j] = largest_displacement(videos[i * len(speeds) + j], e, target)
  rho = [metrics.spearman(speeds, row) for row in disp]
  return dict(causality_rho=float(np.mean(rho)), causality_displacement_px=disp.mean(0).tolist())


def text_following(pipe, examples: list[dict], eval_config) -> dict:
  """Does the generated outcome follow the text? For each example whose pushed object hits another, two
  descriptions of the same image and velocity: the simulator's outcome ("... hits the blue ball, which rolls
  away") and the same push hitting nothing. The video follows the text when the first-hit object moves more
  under the first than under the second (ties count half); chance is 0.5. Returns the rate, the number of
  pairs and the one-sided binomial p-value against chance."""
  import types
  from scipy import stats
  from datagen import captions
  pairs = []
  for e in examples:
    n = int(e["num_objects"])
    names = palette.color_names(e["color"][:n])
    try:
      outcome = captions.parse_caption(e["caption"], names)
    except captions.CaptionParseError:
      continue  # a dataset written before the caption grammar said the mover's fate
    if not outcome.hits:
      continue
    scene = types.SimpleNamespace(color_name=names, shape=np.asarray(e["shape"][:n]))
    alone = dataclasses.replace(outcome, hits=(), fates=(), mover_fate="moves")
    texts = [captions.render_caption(o, scene, np.random.default_rng(i)) for i, o in enumerate((outcome, alone))]
    pairs.append((e, outcome.hits[0], texts))
    if len(pairs) == eval_config.text_following.num:
      break
  if not pairs:
    return dict(text_following_rate=float("nan"), text_following_pairs=0, text_following_p=float("nan"))
  videos = []
  for start in range(0, len(pairs), max(eval_config.batch_size // 2, 1)):
    chunk = pairs[start:start + max(eval_config.batch_size // 2, 1)]
    images, masks, vels, prompts = [], [], [], []
    for e, _, texts in chunk:
      image, object_masks, object_vels = generation_inputs(e)
      for t in texts:
        images.append(image)
        masks.append(object_masks)
        vels.append(object_vels)
        prompts.append(t)
    videos.extend(pipe.generate(images, masks, vels, prompt=prompts, num_steps=eval_config.num_steps or None,
                                seed=eval_config.seed + start).video)
  score = 0.0
  for i, (e, target, _) in enumerate(pairs):
    disp = [largest_displacement(video, e, target) for video in videos[2 * i: 2 * i + 2]]
    score += 1.0 if disp[0] > disp[1] else 0.5 if disp[0] == disp[1] else 0.0
  p = stats.binomtest(int(round(score)), len(pairs), 0.5, alternative="greater").pvalue
  return dict(text_following_rate=score / len(pairs), text_following_pairs=len(pairs), text_following_p=float(p))


# Baselines by config name: (examples, velocities, fps) -> videos.
BASELINES = {
    "copy_first_frame": lambda ex, vel, fps: [baselines.copy_first_frame(e) for e in ex],
    "constant_velocity": lambda ex, vel, fps: [baselines.constant_velocity(e, fps, v) for e, v in zip(ex, vel)],
}


class DatasetMissing(FileNotFoundError):
  """The evaluation's dataset does not exist (and generating it was not asked for)."""


def validate_config(c) -> None:
  """Raises cli.ConfigError naming the first evaluation-config field out of its range."""
  require = cli.require
  require(c.split in ("train", "validation", "test"), "split", f"expected train, validation or test, got {c.split!r}")
  for field in ("num", "batch_size"):
    require(int(c[field]) >= 1, field, f"must be >= 1, got {c[field]!r}")
  for field in ("num_steps", "num_strips", "causality.num", "text_following.num"):
    require(int(c[field]) >= 0, field, f"must be >= 0, got {c[field]!r}")
  require(c.prompt in ("caption", "auto", "none"), "prompt", f"expected caption, auto or none, got {c.prompt!r}")
  require(c.prompt != "auto" or bool(c.describer), "describer", "config.prompt='auto' needs an outcome predictor "
          "workdir: --config.describer=DIR")
  require(0 < c.move_threshold_frac < 1, "move_threshold_frac", f"must be in (0, 1), got {c.move_threshold_frac!r}")
  speeds = tuple(c.causality.speeds_mps)
  require(len(speeds) >= 2 and all(v > 0 for v in speeds), "causality.speeds_mps",
          f"expected at least 2 positive speeds (a rank correlation needs them), got {speeds!r}")
  unknown = [b for b in c.baselines if b not in BASELINES]
  require(not unknown, "baselines", f"unknown {unknown}; expected some of {list(BASELINES)}")


def evaluate(eval_config, workdir: str | None, out_dir: str | None = None, pretrained: str | None = None) -> dict:
  """Scores every method on the test split of the model in `workdir` (or the shipped weights `pretrained`,
  then out_dir is required); writes out_dir/report.md (default: workdir) and out_dir/eval/; returns the
  results."""
  from kinemask_jax.sampling import api
  validate_config(eval_config)
  describer = eval_config.describer or None
  if pretrained:
    pipe = api.KineMaskPipeline.from_pretrained(pretrained, describer=describer)
  else:
    pipe = api.KineMaskPipeline.from_checkpoint(workdir, describer=describer)
  examples = load_examples(pipe.config, eval_config.split, eval_config.num, eval_config.data_dir,
                           eval_config.in_memory, eval_config.generate_missing)
  name = f"pretrained {pretrained}" if pretrained else os.path.abspath(workdir)
  return score(eval_config, pipe, examples, out_dir or workdir, name)


def score_videos(videos, examples: list[dict], threshold: float) -> list[dict]:
  """metrics.score_video of each (video, example), in order, on a thread per core (the tracking's array work
  runs outside the GIL: 1.8x on 2 cores)."""
  with futures.ThreadPoolExecutor(min(os.cpu_count() or 1, 16)) as pool:
    return list(pool.map(lambda pair: metrics.score_video(pair[0], pair[1], threshold), zip(videos, examples)))


def score(eval_config, pipe, examples: list[dict], out_dir: str, model_name: str, extra: dict | None = None
          ) -> dict:
  """Scores the model of `pipe`, its ablations (`extra`: name -> pipeline, besides the config's) and the
  baselines on `examples` (dataset examples as numpy dicts); writes out_dir/report.md and out_dir/eval/."""
  validate_config(eval_config)
  start = time.time()
  threshold = eval_config.move_threshold_frac * pipe.video_shape[2]
  speeds = tuple(eval_config.causality.speeds_mps)
  sweep = _causality_inputs(examples, speeds, eval_config.causality.num)
  methods = _methods(eval_config, pipe, extra)
  print(f"evaluating {len(methods)} methods on {len(examples)} {eval_config.split} examples "
        f"({len(sweep)} in the speed sweep at {list(speeds)} m/s)", flush=True)
  results, strips = {}, {}
  for i, method in enumerate(methods):
    t0 = time.time()
    videos = method.generate(examples, [None] * len(examples))
    summary = metrics.summarize(score_videos(videos, examples, threshold))
    if method.causal:
      summary.update(causality(method, sweep, speeds))
    if method.name == "KineMask" and eval_config.text_following.num and eval_config.prompt != "none":
      summary.update(text_following(pipe, examples, eval_config))
    results[method.name] = summary
    strips[method.name] = videos[:eval_config.num_strips]
    print(f"[{i + 1}/{len(methods)}] {method.name}: motion error {summary['motion_error_px']:.2f} px, "
          f"interaction F1 {summary['interaction_f1']:.2f}, PSNR {summary['psnr']:.2f} dB "
          f"({time.time() - t0:.0f} s)", flush=True)
  meta = dict(workdir=model_name, checkpoint_step=pipe.step, split=eval_config.split,
              examples=len(examples), video=list(pipe.video_shape), speeds_mps=list(speeds),
              causality_examples=len(sweep), move_threshold_px=threshold, prompt=eval_config.prompt,
              num_steps=eval_config.num_steps or pipe.config.diffusion.num_steps,
              machine=f"{platform.machine()} {os.cpu_count()} CPUs, jax devices: {_devices()}",
              seconds=round(time.time() - start, 1), date=datetime.date.today().isoformat())
  report.write_report(out_dir, results, meta, strips, examples[:eval_config.num_strips])
  return dict(meta=meta, results=results)


def _devices() -> str:
  import jax
  return ", ".join(sorted({d.device_kind for d in jax.devices()}))
