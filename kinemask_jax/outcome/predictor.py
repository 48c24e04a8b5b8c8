"""The outcome predictor: from the first frame and its velocity mask, what will happen, as a caption.

KineMask's inference prompt describes the coming interaction (the paper asks GPT). Ours is a small model
trained on our own data (training/outcome.py), so it works offline. Objects are named by colour (each
palette colour appears at most once in a scene), so the outcome is predicted per palette colour ("slot"):
its hit order (not hit, 1st, 2nd, ...), what it does once hit (datagen.captions.FATES), its shape (for the
caption's noun), and what the pushed object does in the end (datagen.captions.MOVER_FATES). The direction is
not predicted: it is the input velocity's.

The class lists (slots, fates, mover fates, shapes) fix the heads' sizes, so they are the predictor's
vocabulary: a field of its config (`predictor.vocabulary`, made from the data engine's tables by
configs/outcome.py), stored with every checkpoint and read from it. A checkpoint whose lists differ from the
current tables loads when the current grammar still knows every name (with a warning), and is refused with
the reason otherwise.
"""

from __future__ import annotations

import dataclasses
import types
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from datagen import captions, palette, shapes as shapes_lib, truth
from kinemask_jax.model import conditioning
from kinemask_jax.store import checkpoints


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """The predictor's classes: palette slots (colour names), fates of a hit object, fates of the pushed one,
  shape names. Index i of a head is entry i of its list."""
  slots: tuple[str, ...]
  fates: tuple[str, ...]
  mover_fates: tuple[str, ...]
  shapes: tuple[str, ...]

  @classmethod
  def current(cls) -> "Vocabulary":
    """The data engine's tables as they are now (what a new predictor is made with)."""
    return cls(palette.NAMES, tuple(captions.FATES), tuple(captions.MOVER_FATES), shapes_lib.names())

  @classmethod
  def of(cls, predictor_cfg) -> "Vocabulary":
    """The vocabulary stored in a config's `predictor` section."""
    v = predictor_cfg["vocabulary"]
    return cls(*(tuple(v[k]) for k in ("slots", "fates", "mover_fates", "shapes")))

  def as_dict(self) -> dict:
    return {k: list(v) for k, v in dataclasses.asdict(self).items()}

  def slot_of(self, rgb) -> int:
    """Slot of an object colour [3] (the nearest palette entry)."""
    return self.slots.index(palette.color_names(np.asarray(rgb)[None])[0])


def check_vocabulary(predictor_cfg: dict, where: str) -> None:
  """Refuses (CheckpointError) a stored predictor config without a vocabulary, or with a name the current
  tables do not know (its captions could not be written); warns when the lists differ otherwise."""
  stored = predictor_cfg.get("vocabulary")
  if not stored:
    raise checkpoints.CheckpointError(f"{where}: its config does not store the predictor's vocabulary "
                                      "(predictor.vocabulary), so its heads' classes cannot be named: retrain it")
  ours = Vocabulary.current()
  unknown = {k: sorted(set(stored[k]) - set(getattr(ours, k))) for k in ("slots", "fates", "mover_fates", "shapes")}
  unknown = {k: v for k, v in unknown.items() if v}
  if unknown:
    raise checkpoints.CheckpointError(f"{where}: its vocabulary has names the current caption grammar does not know "
                                      f"({unknown}), so its predictions cannot be written as captions: retrain it")
  if Vocabulary.of(predictor_cfg) != ours:
    warnings.warn(f"{where}: its vocabulary differs from the current tables (it predicts only its own classes): "
                  f"stored {stored}, now {ours.as_dict()}", stacklevel=3)


class OutcomeNet(nnx.Module):
  """Object-centric: a conv trunk over the image, the velocity mask and the push's geometry gives per-pixel
  features; each palette slot pools them over the pixels of its colour; a shared MLP reads each slot (with the
  scene's and the pushed object's pooled features) into its hit order [B,S,R+1], fate [B,S,F] and shape
  [B,S,shapes] logits (F, shapes: the vocabulary's fates and shapes), and the context into the pushed object's fate [B,M]. Slots generalise across scenes because
  every colour is read by the same weights."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    vocab = Vocabulary.of(cfg)
    convs, c_in = [], INPUT_CHANNELS
    for c in cfg.channels:
      convs.append(nnx.Conv(c_in, c, (3, 3), rngs=rngs))
      c_in = c
    self.convs = nnx.List(convs)
    context = 2 * c_in
    self.slot_mlp = nnx.Linear(c_in + 1 + context, cfg.hidden, rngs=rngs)
    self.slot_mlp2 = nnx.Linear(cfg.hidden, cfg.hidden, rngs=rngs)
    self.slot_head = nnx.Linear(cfg.hidden, cfg.max_rank + 1 + len(vocab.fates) + len(vocab.shapes), rngs=rngs)
    self.mover_mlp = nnx.Linear(context, cfg.hidden, rngs=rngs)
    self.mover_head = nnx.Linear(cfg.hidden, len(vocab.mover_fates), rngs=rngs)
    self.max_rank = cfg.max_rank
    self.num_fates = len(vocab.fates)

  def __call__(self, x: jax.Array, slots: jax.Array, mover: jax.Array) -> dict:
    """x [B,H,W,INPUT_CHANNELS]; slots [B,H,W,S] each colour's pixels; mover [B,H,W] the pushed pixels."""
    for conv in self.convs:
      x = jax.nn.gelu(conv(x))
    pool = lambda w: jnp.einsum("bhws,bhwc->bsc", w, x) / jnp.maximum(w.sum((1, 2))[..., None], 1.0)
    slot_feat = pool(slots)  # [B,S,C]
    area = jnp.log1p(slots.sum((1, 2)))[..., None]  # [B,S,1]
    context = jnp.concatenate([x.mean((1, 2)), pool(mover[..., None])[:, 0]], -1)  # [B,2C]
    h = jnp.concatenate([slot_feat, area, jnp.broadcast_to(context[:, None], slot_feat.shape[:2] + context.shape[-1:])],
                        -1)
    h = jax.nn.gelu(self.slot_mlp2(jax.nn.gelu(self.slot_mlp(h))))
    rank, fate, shape = jnp.split(self.slot_head(h), np.cumsum([self.max_rank + 1, self.num_fates]), axis=-1)
    return dict(rank=rank, fate=fate, shape=shape, mover=self.mover_head(jax.nn.gelu(self.mover_mlp(context))))


def build(predictor_cfg, seed: int) -> "OutcomeNet":
  """A freshly initialised OutcomeNet of a config's `predictor` section."""
  return OutcomeNet(predictor_cfg, rngs=nnx.Rngs(seed))


INPUT_CHANNELS = 10  # image 3, velocity mask 3, along / across / distance from the push's line, "pushed" 1


def inputs(config, image, ids, velocity, controlled) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The network's inputs for frame 0 uint8 [B,H,W,3] with instance ids [B,H,W] and velocities [B,N,3] of the
  controlled objects [B,N]: pixels [B,H,W,INPUT_CHANNELS], each palette colour's pixels [B,H,W,S] (by
  chromaticity: datagen/palette.py's rule) and the pushed pixels [B,H,W].

  The pixel channels are the image in [-1, 1], its velocity mask (kinemask_jax/model/velocity_mask.py, as the video
  model's) and where each pixel lies relative to the push: along and across the image-plane line from the
  pushed pixels' centroid in the direction of their (right, down) velocity, and the distance, in image widths.
  """
  b, h, w, _ = image.shape
  mask = conditioning.velocity_masks(ids[:, None], velocity[:, None], controlled, 1,
                                     config.conditioning.v_max_mps)[0][:, 0]
  pushed = (jnp.abs(mask).sum(-1) > 0).astype(jnp.float32)
  ys, xs = jnp.mgrid[0:h, 0:w] + 0.5
  count = jnp.maximum(pushed.sum((1, 2)), 1.0)
  cx = (pushed * xs).sum((1, 2)) / count
  cy = (pushed * ys).sum((1, 2)) / count
  direction = (mask[..., :2] * pushed[..., None]).sum((1, 2)) / count[:, None]
  direction = direction / jnp.maximum(jnp.linalg.norm(direction, axis=-1, keepdims=True), 1e-6)
  dx = (xs[None] - cx[:, None, None]) / w
  dy = (ys[None] - cy[:, None, None]) / w
  along = dx * direction[:, None, None, 0] + dy * direction[:, None, None, 1]
  across = dx * direction[:, None, None, 1] - dy * direction[:, None, None, 0]
  geometry = jnp.stack([along, across, jnp.sqrt(dx * dx + dy * dy), pushed], -1)
  rgb = image.astype(jnp.float32)
  chroma = rgb / jnp.maximum(rgb.sum(-1, keepdims=True), 1.0)
  hi, lo = rgb.max(-1), rgb.min(-1)
  usable = palette.shows_object((hi - lo) / jnp.maximum(hi, 1.0), hi)
  slot_chroma = palette.palette_chromaticity()[[palette.NAMES.index(n) for n in Vocabulary.of(config.predictor).slots]]
  dist = jnp.linalg.norm(chroma[..., None, :] - jnp.asarray(slot_chroma), axis=-1)  # [B,H,W,S]
  slots = ((dist == dist.min(-1, keepdims=True)) & (dist <= 2 * palette.MAX_CHROMA_DISTANCE) & usable[..., None])
  x = jnp.concatenate([rgb / 127.5 - 1.0, mask, geometry], axis=-1)
  return x, slots.astype(jnp.float32), pushed


@dataclasses.dataclass(frozen=True)
class Prediction:
  """A predicted outcome: `outcome` over palette slots (datagen.captions.Outcome, objects = slots), the
  slots' shape ids (datagen/shapes.py), and the caption that says it."""
  outcome: captions.Outcome
  shapes: tuple[int, ...]
  caption: str


class OutcomePredictor:
  """A trained outcome predictor (EMA weights): `predict` gives the outcome and caption of each input."""

  def __init__(self, config, graphdef, params, frozen):
    self.config = config
    self.vocabulary = Vocabulary.of(config.predictor)
    self._graphdef, self._params, self._frozen = graphdef, params, frozen
    self._logits = jax.jit(lambda p, f, x: nnx.merge(graphdef, p, f)(*x))

  @classmethod
  def from_checkpoint(cls, workdir: str, step: int | None = None, label: str | None = None) -> "OutcomePredictor":
    """The EMA weights of an outcome-predictor workdir's latest (or given) checkpoint. Its config says what
    fixes the parameter shapes (its vocabulary included, checked by `check_vocabulary`)."""
    label = label or f"workdir {workdir!r}"
    ckpts, stored, step = checkpoints.open_run(workdir, "a kinemask_jax.train_outcome workdir", step, label)
    if stored.get("kind") != "outcome_predictor":
      raise checkpoints.CheckpointError(f"{label}: not an outcome-predictor checkpoint (config kind "
                                        f"{stored.get('kind')!r})")
    check_vocabulary(stored.get("predictor", {}), label)
    config = ml_collections.ConfigDict(stored)
    graphdef, params, frozen = nnx.split(nnx.eval_shape(lambda: build(config.predictor, 0)), nnx.Param, ...)
    ema, frozen = ckpts.restore_weights(params, frozen, step)
    return cls(config, graphdef, ema, frozen)

  def logits(self, image, ids, velocity, controlled) -> dict:
    x = inputs(self.config, jnp.asarray(image), jnp.asarray(ids), jnp.asarray(velocity, jnp.float32),
               jnp.asarray(controlled))
    return {k: np.asarray(v) for k, v in self._logits(self._params, self._frozen, x).items()}

  def decode(self, logits: dict, mover_slot: int, direction: str, seed: int = 0) -> Prediction:
    """One example's logits (no batch axis) -> Prediction."""
    rank = logits["rank"].argmax(-1)
    rank[mover_slot] = 0
    hit = np.flatnonzero(rank > 0)
    # Hit order: by predicted rank, ties by the probability of being hit first.
    p_first = jax.nn.softmax(logits["rank"], -1)[:, 1]
    order = sorted(hit, key=lambda s: (rank[s], -float(p_first[s])))
    v = self.vocabulary
    fates = tuple(v.fates[int(logits["fate"][s].argmax())] for s in order)
    outcome = captions.Outcome(int(mover_slot), direction, tuple(int(s) for s in order), fates,
                               v.mover_fates[int(logits["mover"].argmax())])
    shapes = tuple(shapes_lib.id_of(v.shapes[int(i)]) for i in logits["shape"].argmax(-1))
    scene = types.SimpleNamespace(color_name=v.slots, shape=np.asarray(shapes))
    return Prediction(outcome, shapes, captions.render_caption(outcome, scene, np.random.default_rng(seed)))

  def predict(self, image, object_masks, velocities) -> Prediction:
    """The outcome of pushing the masked object(s) (the first one is the caption's mover).

    image uint8 [H,W,3]; object_masks bool [K,H,W]; velocities [K,3] m/s (camera frame).
    """
    masks = np.asarray(object_masks, bool)
    ids = truth.ids_from_masks(masks)
    vel = np.asarray(velocities, np.float32)
    logits = self.logits(image[None], ids[None], vel[None], np.ones((1, len(masks)), bool))
    image = np.asarray(image)
    _, sat, value = palette.chromaticity(image)
    coloured = masks[0] & palette.shows_object(sat, value)
    mover_slot = self.vocabulary.slot_of(np.median(image[coloured if coloured.any() else masks[0]], axis=0))
    return self.decode({k: v[0] for k, v in logits.items()}, mover_slot, captions.direction_name(vel[0]))


