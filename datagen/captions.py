"""Captions from events and object attributes.

`describe` turns a simulated example into a structured `Outcome` (who moves where, whom it hits and in
which order, what each hit object does); `render_caption` writes it as text with a template and synonyms
picked by the example's seed, so the text encoder does not learn one sentence pattern.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from datagen import scenes as scenes_lib
from datagen import truth as truth_lib

SHAPE_NOUNS = {scenes_lib.BOX: ("cube", "block"), scenes_lib.SPHERE: ("ball", "sphere"),
               scenes_lib.CYLINDER: ("cylinder", "cylinder")}
# Fate of a hit object, each with synonyms.
FATES = {
    "falls": ("falls off the table", "drops off the edge of the table"),
    "topples": ("topples over", "tips over"),
    "rolls": ("rolls away", "rolls off"),
    "slides": ("slides away", "is pushed away"),
    "stops": ("barely moves", "stays almost still"),
}
MOVE_VERBS = {scenes_lib.BOX: ("slides", "moves"), scenes_lib.SPHERE: ("rolls", "moves"),
              scenes_lib.CYLINDER: ("slides", "moves")}
# Image-plane direction names, counter-clockwise from "right" in the (right, away) plane.
DIRECTIONS = ("to the right", "away and to the right", "away from the camera", "away and to the left",
              "to the left", "towards the camera and to the left", "towards the camera",
              "towards the camera and to the right")


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What happens in a video, in terms a caption can say."""
  mover: int  # index of the (first) controlled object
  direction: str  # one of DIRECTIONS
  hits: tuple[int, ...]  # objects the mover hits, in order
  fates: tuple[str, ...]  # FATES key of each hit object
  mover_fate: str  # "falls", "stops" or "moves"


def direction_name(velocity_cam: np.ndarray) -> str:
  """Names the image-plane direction of a camera-frame velocity (x right, z forward = away)."""
  angle = math.degrees(math.atan2(float(velocity_cam[2]), float(velocity_cam[0])))
  return DIRECTIONS[int(round(angle / 45.0)) % 8]


def _fate(scene, quat, velocity, fell, k) -> str:
  if fell[k] >= 0:
    return "falls"
  if scene.shape[k] != scenes_lib.SPHERE and truth_lib.tilt_deg(quat[:, k]).max() > truth_lib.TOPPLE_TILT_DEG:
    return "topples"
  moved = np.linalg.norm(velocity[:, k, :2], axis=-1).max() > 2 * truth_lib.STOP_SPEED_MPS
  if not moved:
    return "stops"
  return "rolls" if scene.shape[k] == scenes_lib.SPHERE else "slides"


def describe(scene: scenes_lib.Scene, quat: np.ndarray, velocity: np.ndarray, collisions: np.ndarray,
             fell: np.ndarray, velocity_cam: np.ndarray) -> Outcome:
  """Structured outcome of one example (quat/velocity [T,N,...], collisions [E,3], fell [N])."""
  mover = int(np.flatnonzero(scene.moving_at_start)[0])
  hits = tuple(int(b if a == mover + 1 else a) - 1 for f, a, b in collisions
               if f >= 0 and mover + 1 in (a, b))
  fates = tuple(_fate(scene, quat, velocity, fell, k) for k in hits)
  if fell[mover] >= 0:
    mover_fate = "falls"
  elif np.linalg.norm(velocity[-1, mover, :2]) < truth_lib.STOP_SPEED_MPS:
    mover_fate = "stops"
  else:
    mover_fate = "moves"
  return Outcome(mover, direction_name(velocity_cam[0, mover]), hits, fates, mover_fate)


def _noun(scene, k, rng) -> str:
  return f"{scene.color_name[k]} {SHAPE_NOUNS[int(scene.shape[k])][rng.integers(2)]}"


def render_caption(outcome: Outcome, scene: scenes_lib.Scene, rng: np.random.Generator) -> str:
  """Text of an outcome, e.g. "A red cube slides to the left and hits a blue cylinder, which topples over."."""
  pick = lambda options: options[rng.integers(len(options))]
  mover = _noun(scene, outcome.mover, rng)
  verb = pick(MOVE_VERBS[int(scene.shape[outcome.mover])])
  head = f"A {mover} {verb} {outcome.direction}"
  if not outcome.hits:
    tail = {"falls": " and falls off the table.", "stops": " and comes to a stop.",
            "moves": " without hitting anything."}[outcome.mover_fate]
    return head + tail
  clauses = []
  for i, (k, fate) in enumerate(zip(outcome.hits, outcome.fates)):
    hit = pick(("hits", "collides with", "knocks into")) if i == 0 else pick(("then hits", "then strikes"))
    clauses.append(f"{hit} a {_noun(scene, k, rng)}, which {pick(FATES[fate])}")
  text = head + " and " + ", and ".join(clauses) + "."
  if outcome.mover_fate == "falls":
    text += f" The {scene.color_name[outcome.mover]} {SHAPE_NOUNS[int(scene.shape[outcome.mover])][0]} " \
            "falls off the table."
  return text
