"""The model's conditioning: the one place where physical truth or user input becomes a `Condition`.

Training (kinemask_jax/data.model_batch), the trainer's sample GIFs, the sampling API and the outcome
predictor all build their conditioning here, so the four cannot drift apart:
  - `from_truth`: a raw dataset batch (frame 0, instance ids, camera-frame velocities, controlled flags,
    tokenized caption) with the first k frames' masks kept (the curriculum's cut);
  - `from_user`: an image, the pushed objects' frame-0 silhouettes (as instance ids) and their velocities,
    which is the training case k = 1 (tests/test_conditioning.py checks that both give the same Condition);
  - `velocity_masks`: the velocity masks and `mask_present` alone (the outcome predictor reads frame 0's).
Channel counts of the model's inputs also live here (`MASK_CHANNELS`, `image_channels`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from kinemask_jax.model import velocity_mask as vm

Array = jax.Array

VELOCITY_CHANNELS = 3  # (right, down, forward) / v_max, kinemask_jax/model/velocity_mask.py
MASK_CHANNELS = VELOCITY_CHANNELS + 1  # the velocity mask and the per-frame mask_present flag
RGB = 3


@struct.dataclass
class Condition:
  """Everything the model is conditioned on, batched over B examples.

  first_frame [B,H,W,3] in [-1, 1] (the given frame 0); velocity_mask [B,T,H,W,3]; mask_present [B,T] float;
  text_ids [B,L] int32; text_lengths [B] int32.
  """
  first_frame: Array
  velocity_mask: Array
  mask_present: Array
  text_ids: Array
  text_lengths: Array

  def drop(self, text: Array | bool = False, mask: Array | bool = False) -> "Condition":
    """This condition with the text (to `<bos>` alone) and/or the velocity mask removed, per example.

    `text` and `mask` are bools or bool arrays [B]; a dropped mask is zero with mask_present 0. The first
    frame is never dropped: it is part of the video, not a guidance signal.
    """
    b = self.text_ids.shape[0]
    text = jnp.broadcast_to(jnp.asarray(text, bool), (b,))
    mask = jnp.broadcast_to(jnp.asarray(mask, bool), (b,))
    keep_token = jnp.arange(self.text_ids.shape[1])[None, :] < 1
    ids = jnp.where(text[:, None] & ~keep_token, 0, self.text_ids)
    lengths = jnp.where(text, 1, self.text_lengths)
    vel = jnp.where(mask[:, None, None, None, None], 0, self.velocity_mask)
    present = jnp.where(mask[:, None], 0, self.mask_present)
    return self.replace(velocity_mask=vel, mask_present=present, text_ids=ids, text_lengths=lengths)


def to_model_space(uint8: Array) -> Array:
  """uint8 pixels -> float32 in [-1, 1]."""
  return jnp.asarray(uint8).astype(jnp.float32) / 127.5 - 1.0


def velocity_masks(instance_ids: Array, velocity_cam: Array, controlled: Array, k, v_max: float
                   ) -> tuple[Array, Array]:
  """(velocity mask [B,T,H,W,3], mask_present [B,T]) with the masks of frames >= k removed.

  instance_ids [B,T,H,W] (0 background, j for object j), velocity_cam [B,T,N,3] m/s, controlled [B,N] bool,
  k an int or int [B] in [1, T].
  """
  mask = vm.velocity_mask(instance_ids, velocity_cam, controlled, v_max)
  return vm.keep_first_frames(mask, jnp.broadcast_to(jnp.asarray(k, jnp.int32), mask.shape[:1]))


def from_truth(raw: dict, k, v_max: float) -> Condition:
  """The Condition of a raw batch (kinemask_jax/training/input_pipeline.py: video uint8 [B,T,H,W,3], instance_ids,
  velocity_cam, moving_at_start, text_ids, text_lengths) keeping the first k frames' masks."""
  mask, present = velocity_masks(raw["instance_ids"], raw["velocity_cam"], raw["moving_at_start"], k, v_max)
  return Condition(to_model_space(raw["video"][:, 0]), mask, present, jnp.asarray(raw["text_ids"]),
                   jnp.asarray(raw["text_lengths"]))


def from_user(first_frame: Array, ids0: Array, velocities: Array, text_ids: Array, text_lengths: Array,
              num_frames: int, v_max: float) -> Condition:
  """The inference Condition: frame 0 uint8 [B,H,W,3], the pushed objects' frame-0 silhouettes as ids
  [B,H,W] (0 nothing, j for the j-th object) and their velocities [B,K,3] (m/s, camera frame).

  Only frame 0 carries a mask: this is `from_truth` with k = 1 (later frames' ids are never read).
  """
  b = ids0.shape[0]
  ids = jnp.zeros((b, num_frames) + ids0.shape[1:], ids0.dtype).at[:, 0].set(ids0)
  vel = jnp.broadcast_to(velocities[:, None], (b, num_frames) + velocities.shape[1:])
  controlled = jnp.ones(velocities.shape[:2], bool)
  mask, present = velocity_masks(ids, vel, controlled, jnp.ones((b,), jnp.int32), v_max)
  return Condition(to_model_space(first_frame), mask, present, jnp.asarray(text_ids), jnp.asarray(text_lengths))


GEOMETRY_CHANNELS = 3  # along and across the push line (image widths), and the push speed / v_max
SLIDE_CHANNELS = 1 + RGB  # occupancy, and the pushed object's first-frame colours where it would be


def image_channels(model_cfg) -> int:
  """Channels of the video branch's input per frame: the noisy video, the first frame, the frame-0
  indicator, frame 0's velocity mask when `model.mask0_all`, the push geometry when `model.push_geometry`,
  the slide prior when `model.slide_prior`, the mask channels under `control="concat"`, and the previous
  clean-video estimate when `model.self_condition`."""
  return (RGB + RGB + 1 + (VELOCITY_CHANNELS if model_cfg.mask0_all else 0)
          + (GEOMETRY_CHANNELS if model_cfg.push_geometry else 0)
          + (SLIDE_CHANNELS if model_cfg.get("slide_prior", False) else 0)
          + (MASK_CHANNELS if model_cfg.control == "concat" else 0)
          + (RGB if model_cfg.get("self_condition", False) else 0))


def _pushed(mask0: Array) -> tuple[Array, Array, Array]:
  """(pushed pixels [B,H,W] float 0/1, their count [B] (at least 1), their mean mask velocity [B,3]) of
  frame 0's velocity mask [B,H,W,3]: what the push geometry and the slide prior are computed from."""
  pushed = (jnp.abs(mask0).sum(-1) > 0).astype(jnp.float32)
  count = jnp.maximum(pushed.sum((1, 2)), 1.0)
  mean_v = (mask0.astype(jnp.float32) * pushed[..., None]).sum((1, 2)) / count[:, None]
  return pushed, count, mean_v


def slide_prior(mask0: Array, first_frame: Array, num_frames: int, widths_per_frame: float, decel: float
                ) -> Array:
  """Where the pushed object would be, and what it would look like there, if it slid alone: [B,T,H,W,4].

  From frame 0's velocity mask [B,H,W,3] and the first frame [B,H,W,3]: channel 0 is frame 0's pushed
  silhouette moved in frame t by its mean (right, down) mask velocity x tau(t) x widths_per_frame x W pixels,
  where tau(t) = m - decel m^2 / (2 |v|) with m = min(t, |v| / decel) (a constant deceleration of `decel`
  mask units per frame, which stops the slide at |v| / decel frames; |v| the 3-d mask speed); channels 1-3
  are the first frame's colours inside the silhouette, moved the same way (so the object's appearance is at
  hand where it should be drawn). Bilinear, zero outside the image; all zero where no mask is given. No
  collision is modelled: the network learns those. configs/model.py derives the two constants from the
  data's nominal camera, frame rate and friction."""
  b, h, w, _ = mask0.shape
  pushed, _, mean_v = _pushed(mask0)
  speed = jnp.maximum(jnp.linalg.norm(mean_v, axis=-1), 1e-6)  # [B]
  frames = jnp.arange(num_frames, dtype=jnp.float32)
  moving = jnp.minimum(frames[None], (speed / decel)[:, None])  # [B,T]
  tau = moving - decel * moving ** 2 / (2.0 * speed[:, None])
  shift = mean_v[:, None, :2] * tau[..., None] * widths_per_frame * w  # [B,T,2] pixels (right, down)
  ys, xs = jnp.mgrid[0:h, 0:w].astype(jnp.float32)
  content = jnp.concatenate([pushed[..., None], first_frame.astype(jnp.float32) * pushed[..., None]], -1)

  def moved(image, dx, dy):  # image [H,W,C] -> [H,W,C], content moved by (dx, dy) pixels
    one = lambda c: jax.scipy.ndimage.map_coordinates(c, [ys - dy, xs - dx], order=1, mode="constant", cval=0.0)
    return jax.vmap(one, in_axes=-1, out_axes=-1)(image)

  per_frame = jax.vmap(moved, in_axes=(None, 0, 0))
  return jax.vmap(per_frame)(content, shift[..., 0], shift[..., 1])


def _box3(x: Array) -> Array:
  """Sum over each pixel's 3 x 3 neighbourhood of x [B,H,W,C] (zero outside the image)."""
  h, w = x.shape[1:3]
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(p[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))


def background_plate(mask0: Array, first_frame: Array, iterations: int | None = None) -> Array:
  """The first frame [B,H,W,3] with the pushed objects painted out: [B,H,W,3], the floor (or wall) that a
  pushed object uncovers when it moves away.

  The hole is frame 0's pushed silhouette (from its velocity mask [B,H,W,3]) grown by one pixel (edge pixels
  mix the object's colour); it is filled from its rim inwards, each step giving the hole pixels that touch
  the filled region the mean of their filled 3 x 3 neighbours, for `iterations` steps (default: a quarter of
  the larger image side, enough for any object of the data). Pixels still unfilled after that, and every
  pixel outside the hole, keep the first frame's colour; with no mask given the plate is the first frame."""
  h, w = mask0.shape[1:3]
  pushed, _, _ = _pushed(mask0)
  hole = _box3(pushed[..., None]) > 0  # [B,H,W,1]
  known = (~hole).astype(jnp.float32)
  first = first_frame.astype(jnp.float32)
  steps = max(h, w) // 4 if iterations is None else int(iterations)

  def grow(_, state):
    image, known = state
    total, count = _box3(image * known), _box3(known)
    reached = (known == 0) & (count > 0)
    image = jnp.where(reached, total / jnp.maximum(count, 1.0), image)
    return image, jnp.maximum(known, reached.astype(jnp.float32))

  image, known = jax.lax.fori_loop(0, steps, grow, (first * known, known))
  return jnp.where(known > 0, image, first)


def push_geometry(mask0: Array) -> Array:
  """Where each pixel lies relative to the push, from frame 0's velocity mask [B,H,W,3]: [B,H,W,3] with the
  coordinate along and across the image-plane line through the masked pixels' centroid in the direction of
  their mean (right, down) velocity (image widths), and the mean speed (mask units) in every pixel.
  Zero where no mask is given. With several pushed objects the line is their average's."""
  b, h, w, _ = mask0.shape
  pushed, count, mean_v = _pushed(mask0)
  ys, xs = jnp.mgrid[0:h, 0:w] + 0.5
  cx = (pushed * xs).sum((1, 2)) / count
  cy = (pushed * ys).sum((1, 2)) / count
  plane = mean_v[:, :2]
  direction = plane / jnp.maximum(jnp.linalg.norm(plane, axis=-1, keepdims=True), 1e-6)
  dx = (xs[None] - cx[:, None, None]) / w
  dy = (ys[None] - cy[:, None, None]) / w
  along = dx * direction[:, None, None, 0] + dy * direction[:, None, None, 1]
  across = dx * direction[:, None, None, 1] - dy * direction[:, None, None, 0]
  speed = jnp.broadcast_to(jnp.linalg.norm(mean_v, axis=-1)[:, None, None], (b, h, w))
  given = (pushed.sum((1, 2)) > 0).astype(jnp.float32)[:, None, None, None]
  return jnp.stack([along, across, speed], -1) * given


def mask_input(cond: Condition, dtype) -> Array:
  """The ControlNet's input [B,T,H,W,4]: the velocity mask and mask_present as a fourth channel."""
  b, t, h, w, _ = cond.velocity_mask.shape
  present = jnp.broadcast_to(cond.mask_present.astype(dtype)[:, :, None, None, None], (b, t, h, w, 1))
  return jnp.concatenate([cond.velocity_mask.astype(dtype), present], axis=-1)


def image_input(x_t: Array, cond: Condition, first_frame: str, mask0_all: bool, geometry: bool,
                concat_mask: bool, dtype, slide: tuple[float, float] | None = None,
                x0_prev: Array | None = None) -> Array:
  """The video branch's input [B,T,H,W,image_channels]: x_t, then the first frame in every frame
  (`first_frame="all"`) or in frame 0 only ("frame0"), a channel that is 1 on frame 0, frame 0's velocity
  mask in every frame (`mask0_all`), the push geometry of frame 0's mask in every frame (`geometry`), the
  slide prior of frame 0's mask (`slide` = (widths_per_frame, decel), see `slide_prior`), the mask
  channels (`concat_mask`, for `control="concat"`), and a previous clean-video estimate [B,T,H,W,3]
  (`x0_prev`, for self-conditioning)."""
  b, t, h, w, _ = x_t.shape
  first = cond.first_frame.astype(dtype)[:, None]
  if first_frame == "all":
    image = jnp.broadcast_to(first, (b, t, h, w, RGB))
  else:
    image = jnp.zeros((b, t, h, w, RGB), dtype).at[:, :1].set(first)
  indicator = jnp.zeros((b, t, h, w, 1), dtype).at[:, 0].set(1)
  parts = [x_t.astype(dtype), image, indicator]
  if mask0_all:
    parts.append(jnp.broadcast_to(cond.velocity_mask[:, :1].astype(dtype), (b, t, h, w, VELOCITY_CHANNELS)))
  if geometry:
    parts.append(jnp.broadcast_to(push_geometry(cond.velocity_mask[:, 0])[:, None].astype(dtype),
                                  (b, t, h, w, GEOMETRY_CHANNELS)))
  if slide is not None:
    parts.append(slide_prior(cond.velocity_mask[:, 0], cond.first_frame, t, *slide).astype(dtype))
  if concat_mask:
    parts.append(mask_input(cond, dtype))
  if x0_prev is not None:
    parts.append(x0_prev.astype(dtype))
  return jnp.concatenate(parts, axis=-1)
