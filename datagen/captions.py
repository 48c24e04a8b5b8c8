"""Captions from events and object attributes: the caption grammar and its word table.

`outcome_of` turns a simulated example into a structured `Outcome` (who moves where, whom it hits and in
which order, what each hit object does); `render_caption` writes it as text with a template and synonyms
picked by the example's seed, so the text encoder does not learn one sentence pattern; `parse_caption` reads
it back. Every phrase a caption can say is in one place, `PHRASES` (objects are named by the palette's
colour names, datagen/palette.py, and the shape table's nouns and verbs, datagen/shapes.py); `phrases()`
lists them all, which is what a new model's vocabulary is made from (configs/model.py).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from datagen import palette
from datagen import scenes as scenes_lib
from datagen import shapes as shapes_lib
from datagen import truth as truth_lib

# Fate of a hit object, each with synonyms.
FATES = {
    "falls": ("falls off the table", "drops off the edge of the table"),
    "topples": ("topples over", "tips over"),
    "rolls": ("rolls away", "rolls off"),
    "slides": ("slides away", "is pushed away"),
    "stops": ("barely moves", "stays almost still"),
}
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
  rolls = shapes_lib.by_id(scene.shape[k]).rolls
  if not rolls and truth_lib.tilt_deg(quat[:, k]).max() > truth_lib.TOPPLE_TILT_DEG:
    return "topples"
  moved = np.linalg.norm(velocity[:, k, :2], axis=-1).max() > 2 * truth_lib.STOP_SPEED_MPS
  if not moved:
    return "stops"
  return "rolls" if rolls else "slides"


def outcome_of(scene: scenes_lib.Scene, quat: np.ndarray, velocity: np.ndarray, collisions: np.ndarray,
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


# How the mover ends, said after its collisions: falls off the table, comes to a stop, or keeps going.
MOVER_FATES = {
    "falls": ("falls off the table", "drops off the edge of the table"),
    "stops": ("comes to a stop", "stops"),
    "moves": ("keeps moving", "carries on"),
}
# The same without any collision (the caption then says so).
ALONE_FATES = {
    "falls": ("and falls off the table", "and drops off the edge of the table"),
    "stops": ("and comes to a stop", "without hitting anything and stops"),
    "moves": ("without hitting anything", "and hits nothing"),
}
HIT_VERBS = ("hits", "collides with", "knocks into")
NEXT_HIT_VERBS = ("then hits", "then strikes")
TEMPLATES = 3  # sentence patterns of render_caption
# Words of render_caption's patterns that are not in the tables above.
TEMPLATE_WORDS = "a an the and which is pushed . , then"
_WORD = re.compile(r"[a-z]+|[.,]")


def words(text: str) -> list[str]:
  """Lower-case words and the punctuation marks `.` and `,` of `text`, in order (how the parser reads)."""
  return _WORD.findall(text.lower())


# The word table: every phrase group a caption is made of (the synonym tables above, the fixed phrases).
PHRASES = {
    "templates": (TEMPLATE_WORDS, "hits nothing"),
    "directions": DIRECTIONS,
    "hit verbs": HIT_VERBS + NEXT_HIT_VERBS,
    "fates": FATES,
    "mover fates": MOVER_FATES,
    "alone fates": ALONE_FATES,
}


def phrases() -> list[str]:
  """Every phrase a caption can contain: the word table's, the palette's colour names and the shape table's
  nouns and verbs."""
  out = list(palette.NAMES)
  for group in PHRASES.values():
    for entry in (group.values() if isinstance(group, dict) else (group,)):
      out.extend(entry)
  for shape in shapes_lib.SHAPES.values():
    out.extend(shape.nouns + shape.verbs)
  return out


def _noun(scene, k, rng, article: str) -> str:
  """ "a red cube", "an orange ball", "the red block"."""
  name = scene.color_name[k]
  if article == "a" and name[0] in "aeiou":
    article = "an"
  return f"{article} {name} {shapes_lib.by_id(scene.shape[k]).nouns[rng.integers(2)]}"


def render_caption(outcome: Outcome, scene: scenes_lib.Scene, rng: np.random.Generator) -> str:
  """Text of an outcome in one of `TEMPLATES` sentence patterns with synonyms, e.g.
  "A red cube slides to the left and hits a blue cylinder, which topples over. The red cube comes to a stop."
  Every field of the outcome is said, so `parse_caption` recovers it."""
  pick = lambda options: options[rng.integers(len(options))]
  verb = pick(shapes_lib.by_id(scene.shape[outcome.mover]).verbs)
  template = int(rng.integers(TEMPLATES))
  article = "a" if template == 0 else "the"
  mover = _noun(scene, outcome.mover, rng, article)
  if template == 0:
    head = f"{mover[0].upper()}{mover[1:]} {verb} {outcome.direction}"
  elif template == 1:
    head = f"{mover[0].upper()}{mover[1:]} is pushed {outcome.direction}"
  else:
    head = f"Pushed {outcome.direction}, {mover}"
  if not outcome.hits:
    if template == 2:  # "Pushed to the left, the red cube comes to a stop."
      return f"{head} {pick(MOVER_FATES[outcome.mover_fate]) if outcome.mover_fate != 'moves' else 'hits nothing'}."
    return f"{head} {pick(ALONE_FATES[outcome.mover_fate])}."
  clauses = []
  for i, (k, fate) in enumerate(zip(outcome.hits, outcome.fates)):
    hit = pick(HIT_VERBS) if i == 0 else pick(NEXT_HIT_VERBS)
    clauses.append(f"{hit} {_noun(scene, k, rng, article)}, which {pick(FATES[fate])}")
  joiner = " " if template == 2 else " and "
  colour = scene.color_name[outcome.mover]
  tail = f" The {colour} {shapes_lib.by_id(scene.shape[outcome.mover]).nouns[0]} {pick(MOVER_FATES[outcome.mover_fate])}."
  return head + joiner + ", and ".join(clauses) + "." + tail


def _phrases(table: dict) -> list[tuple[list[str], str]]:
  """(words, key) of every phrase of a synonym table, longest first (so "rolls off" beats "rolls")."""
  out = [(words(p), key) for key, options in table.items() for p in options]
  return sorted(out, key=lambda x: -len(x[0]))


class CaptionParseError(ValueError):
  """A text that is not a caption of the data engine's grammar."""


def parse_caption(text: str, color_names) -> Outcome:
  """The structured outcome a caption says; inverse of `render_caption`.

  color_names: the scene's colour name of each object (index k = object k), which is how captions name
  objects (colours are unique in a scene). Raises CaptionParseError if the text does not follow the grammar.
  """
  w = words(text)
  index = {name: k for k, name in enumerate(color_names)}
  directions = _phrases({d: (d,) for d in DIRECTIONS})
  fates, mover_fates, alone = _phrases(FATES), _phrases(MOVER_FATES), _phrases(ALONE_FATES)

  def match(i, table):
    for phrase, key in table:
      if w[i:i + len(phrase)] == phrase:
        return key, i + len(phrase)
    return None, i

  mentions = [i for i, x in enumerate(w) if x in index]
  if not mentions:
    raise CaptionParseError(f"no object colour of {list(color_names)} in {text!r}")
  mover = index[w[mentions[0]]]
  direction = next((key for i in range(len(w)) for key in [match(i, directions)[0]] if key), None)
  if direction is None:
    raise CaptionParseError(f"no direction in {text!r}")
  hits, hit_fates, mover_fate = [], [], None
  for m in mentions[1:]:
    k = index[w[m]]
    if k == mover:  # the closing sentence about the mover: "The red cube comes to a stop."
      for i in range(m + 1, len(w)):
        mover_fate, _ = match(i, mover_fates)
        if mover_fate:
          break
      continue
    if k in hits:
      raise CaptionParseError(f"object {w[m]} is hit twice in {text!r}")
    which = next((i for i in range(m + 1, len(w)) if w[i] == "which"), None)
    fate = match(which + 1, fates)[0] if which is not None else None
    if fate is None:
      raise CaptionParseError(f"no fate after 'which' for the {w[m]} object in {text!r}")
    hits.append(k)
    hit_fates.append(fate)
  if not hits:
    for i in range(mentions[0] + 1, len(w)):
      mover_fate, _ = match(i, alone)
      if mover_fate:
        break
      # "Pushed ..., the red cube comes to a stop." / "... hits nothing."
      mover_fate, _ = match(i, mover_fates)
      if mover_fate:
        break
      if w[i:i + 2] == ["hits", "nothing"]:
        mover_fate = "moves"
        break
  if mover_fate is None:
    raise CaptionParseError(f"no fate of the moving object in {text!r}")
  return Outcome(mover, direction, tuple(hits), tuple(hit_fates), mover_fate)
