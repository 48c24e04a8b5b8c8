"""Rectified flow: the training objective, the ODE samplers and classifier-free guidance.

Convention: x_t = (1 - t) * x_0 + t * noise with t in [0, 1] (t = 1 is pure noise); the model predicts the
flow velocity v = noise - x_0, so dx/dt = v and sampling integrates from t = 1 down to t = 0. Training
times are logit-normal, t = sigmoid(mean + std * N(0, 1)). Videos are scaled to [-1, 1].

The loss is always on the velocity, but the network may output the clean video instead ("x-prediction",
the default; Li & He, "Back to Basics: Let Denoising Generative Models Denoise", 2025): a pixel-space patch
(2x8x8x3 = 384 values) is wider than a small model's tokens, and a noise-like output cannot pass through that
bottleneck while a clean video, which lies near a low-dimensional manifold, can.

Self-conditioning (a model with `self_condition`; Chen et al., "Analog Bits", 2022): the model also reads a
previous clean-video estimate. The sampler passes the last step's (zeros at the first step); training passes,
in a random half of the batches, the model's own estimate from a first pass without gradient, else zeros.

Frame 0 is given, never generated: `with_given_frame` puts the clean first frame into frame 0 of every x_t
the model sees (training and sampling), its predicted velocity there is zero, so the sampler keeps it
exactly, and the loss covers frames 1..T-1 only.

Guidance has separate scales for the velocity mask and the text, composed as in InstructPix2Pix:
  v = v(none) + mask_scale * (v(mask) - v(none)) + text_scale * (v(mask, text) - v(mask))
where "none" drops both conditions and "mask" drops the text; with both scales 1 this is exactly the
conditional prediction v(mask, text).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kinemask_jax.model.conditioning import Condition
from kinemask_jax.model.dit import WARP_PIXELS

Array = jax.Array


def with_given_frame(x: Array, cond: Condition) -> Array:
  """x [B,T,H,W,3] with frame 0 replaced by the clean first frame."""
  return x.at[:, 0].set(cond.first_frame.astype(x.dtype))


def predict(model, x_t: Array, t: Array, cond: Condition, x0_prev: Array | None = None,
            return_flow: bool = False) -> Array | tuple[Array, Array]:
  """The flow velocity [B,T,H,W,3] for noisy video x_t at times t [B]; zero on the given frame 0.

  A model with `prediction == "x"` outputs the clean video x_0, turned into v = (x_t - x_0) / t with t
  floored at `min_time`; with "v" it outputs v itself. `x0_prev` (a previous clean-video estimate, None:
  none) reaches only a model with `self_condition`. With `return_flow` (a model with output "warp" or "splat") also its
  displacement [B,T,H,W,2].
  """
  x_t = with_given_frame(x_t, cond)
  args = (x_t, t, cond, x0_prev) if self_conditioned(model) else (x_t, t, cond)
  out = model(*args, return_flow=True) if return_flow else model(*args)
  out, flow = out if return_flow else (out, None)
  if model.prediction == "v":
    v = out
  else:
    v = (x_t - out) / jnp.maximum(t, model.min_time)[:, None, None, None, None]
  v = v.at[:, 0].set(0.0)
  return (v, flow) if return_flow else v


def self_conditioned(model) -> bool:
  """Whether `model` reads a previous clean-video estimate (`self_condition`)."""
  return bool(getattr(model, "self_condition", False))


def clean_estimate(x_t: Array, t: Array, v: Array) -> Array:
  """The clean video x_t - t v implied by velocity v at (x_t, t [B]) (the x-prediction itself for t >=
  min_time)."""
  return x_t - t[:, None, None, None, None] * v


def self_condition_input(model, x_t: Array, t: Array, cond: Condition, rng: Array) -> Array | None:
  """Training's previous estimate for a self-conditioned model (None for another): with probability 1/2 (one
  draw per batch) the model's own clean-video estimate from x_t, without gradient, else zeros (computed only
  when drawn)."""
  if not self_conditioned(model):
    return None
  zeros = jnp.zeros_like(x_t)
  estimate = lambda: jax.lax.stop_gradient(clean_estimate(x_t, t, predict(model, x_t, t, cond, zeros)))
  return jax.lax.cond(jax.random.bernoulli(rng), estimate, lambda: zeros)


def to_uint8(x: Array) -> Array:
  """float video in [-1, 1] -> uint8 (clipped)."""
  return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def sample_times(rng: Array, batch: int, mean: float, std: float) -> Array:
  """Logit-normal training times [B] in (0, 1)."""
  return jax.nn.sigmoid(mean + std * jax.random.normal(rng, (batch,)))


LOSS_WEIGHTINGS = ("velocity", "clean")
# The displacement loss of output "warp" or "splat" (`loss`): "squared" error (its minimiser under doubt is the mean
# displacement) or "abs", the length of the error vector (the spatial median: an object that is hit in fewer
# than half of the cases the network cannot tell apart gets displacement 0, not a fraction of the hit's).
FLOW_LOSSES = ("squared", "abs")
FLOW_ABS_EPS = 0.1 / WARP_PIXELS  # "abs" is sqrt(e^2 + eps^2) - eps: smooth at 0, linear beyond 0.1 px


def loss(model, x0: Array, cond: Condition, rng: Array, time_mean: float, time_std: float,
         weighting: str = "velocity", pixel_weight: Array | None = None,
         flow: tuple[Array, Array] | None = None, flow_weight: float = 1.0,
         flow_loss: str = "squared") -> tuple[Array, dict]:
  """(loss, parts): the mean squared error of the predicted flow velocity over frames 1..T-1; x0 [B,T,H,W,3]
  in [-1, 1].

  weighting "velocity": the plain velocity error; "clean": times t^2, which for an x-predicting model is
  the error of its clean video (x_0 - x_0_pred = t (v_pred - v)): every noise level weighs the same,
  instead of the low-noise steps (weight 1 / t^2 on the clean error) dominating. pixel_weight (broadcast
  against [B,T,H,W,3], e.g. [B,T,H,W,1]): each pixel's error times it (`object_pixel_weight`).
  flow (a model with output "warp" or "splat"): (target [B,T,H,W,2] pixels, weight [B,T,H,W]) from `object_flow`; adds
  flow_weight x the weighted mean error of the model's displacement (in units of its WARP_PIXELS) over frames
  1..T-1: squared, or with flow_loss "abs" the error vector's length (FLOW_LOSSES). parts: "flow_error", the
  displacement's RMS error in pixels on weighted pixels.
  """
  if weighting not in LOSS_WEIGHTINGS:
    raise ValueError(f"diffusion.loss_weighting must be one of {LOSS_WEIGHTINGS}, got {weighting!r}")
  if flow_loss not in FLOW_LOSSES:
    raise ValueError(f"diffusion.flow_loss must be one of {FLOW_LOSSES}, got {flow_loss!r}")
  rng_t, rng_n, rng_s = jax.random.split(rng, 3)
  t = sample_times(rng_t, x0.shape[0], time_mean, time_std)
  noise = jax.random.normal(rng_n, x0.shape, jnp.float32)
  tb = t[:, None, None, None, None]
  x_t = (1 - tb) * x0 + tb * noise
  x0_prev = self_condition_input(model, with_given_frame(x_t, cond), t, cond, rng_s)
  v, predicted_flow = (predict(model, x_t, t, cond, x0_prev, return_flow=True) if flow is not None
                       else (predict(model, x_t, t, cond, x0_prev), None))
  err = jnp.square(v - (noise - x0))
  if weighting == "clean":
    err = err * jnp.square(tb)
  if pixel_weight is not None:
    err = err * pixel_weight
  total = jnp.mean(err[:, 1:])
  if flow is None:
    return total, {}
  target, weight = flow
  sq = (jnp.square(predicted_flow - target).sum(-1) * weight)[:, 1:]
  total = total + flow_weight * jnp.mean(flow_penalty(predicted_flow, target, weight, flow_loss)[:, 1:])
  return total, dict(flow_error=jnp.sqrt(jnp.sum(sq) / jnp.maximum(jnp.sum(weight[:, 1:]), 1.0)))


def flow_penalty(predicted: Array, target: Array, weight: Array, kind: str = "squared") -> Array:
  """Per pixel [B,T,H,W]: weight x the displacement error (predicted - target [B,T,H,W,2], pixels) in units
  of WARP_PIXELS, squared ("squared") or its length, smoothed at 0 by FLOW_ABS_EPS ("abs")."""
  sq = jnp.square(predicted - target).sum(-1) / WARP_PIXELS ** 2
  if kind == "squared":
    return sq * weight
  if kind == "abs":
    return (jnp.sqrt(sq + FLOW_ABS_EPS ** 2) - FLOW_ABS_EPS) * weight
  raise ValueError(f"diffusion.flow_loss must be one of {FLOW_LOSSES}, got {kind!r}")


def object_flow(instance_ids: Array, num_objects: int, background_weight: float = 0.0,
                forward: bool = False, controlled: Array | None = None,
                other_weight: float = 0.0) -> tuple[Array, Array]:
  """Where in frame 0 each object pixel's content was: (target [B,T,H,W,2], weight [B,T,H,W]) from instance
  ids [B,T,H,W] (0: no object, k: object k <= num_objects). A pixel of object k in frame f gets the
  (dx, dy) pixels from it to where it was in frame 0 under the move of k's pixel centroid from frame 0 to
  frame f (translation only), weight 1. A pixel that is background both in frame f and in frame 0 (the camera
  is still, so it shows the same floor) gets target 0 and weight `background_weight`; every other pixel (the
  floor an object left, or an object with no pixel in frame 0) gets weight 0. The displacement target of a
  model with output "warp".

  `forward` (output "splat"): the field is indexed by the frame-0 pixel instead: a pixel of object k in frame 0
  gets, in frame f, the (dx, dy) pixels to where it goes (k's centroid move from frame 0 to frame f), weight 1
  if k has pixels in frame f, else 0; floor in frame 0 gets target 0 and weight `background_weight`.

  `other_weight` with `controlled` (bool [B,N], the pushed objects: the data's `moving_at_start`): the pixels
  of every object that is not pushed (the ones that are hit and the ones that must stay) weigh 1 + other_weight
  instead of 1, in either direction; the pushed objects' and the floor's weights are unchanged."""
  ids = jnp.asarray(instance_ids).astype(jnp.int32)
  h, w = ids.shape[2:]
  one_hot = (ids[..., None] == jnp.arange(1, num_objects + 1)).astype(jnp.float32)  # [B,T,H,W,N]
  count = one_hot.sum((2, 3))  # [B,T,N]
  ys, xs = jnp.mgrid[0:h, 0:w].astype(jnp.float32)
  centroid = jnp.stack([jnp.einsum("bthwn,hw->btn", one_hot, xs), jnp.einsum("bthwn,hw->btn", one_hot, ys)],
                       -1) / jnp.maximum(count, 1.0)[..., None]  # [B,T,N,2]
  valid = ((count > 0) & (count[:, :1] > 0)).astype(jnp.float32)  # [B,T,N]
  shift = (centroid[:, :1] - centroid) * valid[..., None]
  if other_weight:
    if controlled is None:
      raise ValueError("object_flow: other_weight needs the controlled flags [B, N]")
    others = 1.0 - jnp.asarray(controlled)[:, :num_objects].astype(jnp.float32)  # [B,N]
    per_object = valid * (1.0 + other_weight * others[:, None, :])  # [B,T,N]
  else:
    per_object = valid
  if forward:
    first = one_hot[:, 0]  # [B,H,W,N]
    weight = jnp.einsum("bhwn,btn->bthw", first, per_object)
    if background_weight:
      weight = weight + background_weight * (ids[:, :1] == 0).astype(jnp.float32)
    return jnp.einsum("bhwn,btnc->bthwc", first, -shift), weight
  weight = jnp.einsum("bthwn,btn->bthw", one_hot, per_object)
  if background_weight:
    weight = weight + background_weight * (~object_now_or_in_frame_0(ids)).astype(jnp.float32)
  return jnp.einsum("bthwn,btnc->bthwc", one_hot, shift), weight


def object_now_or_in_frame_0(instance_ids: Array) -> Array:
  """bool [B,T,H,W]: an object is at the pixel in frame f or was there in frame 0 (instance ids [B,T,H,W], 0:
  none): where an object goes and the floor it leaves. Its complement is floor in both frames."""
  ids = jnp.asarray(instance_ids)
  return (ids > 0) | (ids[:, :1] > 0)


def object_pixel_weight(instance_ids: Array, object_weight: float) -> Array:
  """Per-pixel loss weight [B,T,H,W,1] from instance ids [B,T,H,W] (0: no object): 1 + object_weight where an
  object is in frame f or was in frame 0 (so both where an object goes and the floor it leaves), else 1.
  Objects cover a few percent of a frame, so with the plain mean the background's error dominates."""
  on_object = object_now_or_in_frame_0(instance_ids)
  return (1.0 + object_weight * on_object.astype(jnp.float32))[..., None]


def guided_velocity(model, x_t: Array, t: Array, cond: Condition, text_scale: float, mask_scale: float,
                    always_batch: bool = False, x0_prev: Array | None = None) -> Array:
  """Classifier-free-guided velocity; one model call on a 3B batch (none, mask, mask + text).

  With both scales 1 the guided velocity is the conditional one, computed directly unless `always_batch`.
  `x0_prev`: the previous clean-video estimate of a self-conditioned model (every branch gets it).
  """
  if text_scale == 1.0 and mask_scale == 1.0 and not always_batch:
    return predict(model, x_t, t, cond, x0_prev)
  conds = [cond.drop(text=True, mask=True), cond.drop(text=True), cond]
  stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *conds)
  prev = None if x0_prev is None else jnp.concatenate([x0_prev] * 3)
  v = predict(model, jnp.concatenate([x_t] * 3), jnp.concatenate([t] * 3), stacked, prev)
  v_none, v_mask, v_full = jnp.split(v, 3)
  return v_none + mask_scale * (v_mask - v_none) + text_scale * (v_full - v_mask)


def time_grid(num_steps: int, shift: float = 1.0) -> np.ndarray:
  """num_steps + 1 times from 1 to 0, warped by `shift` (> 1 spends more steps at high noise)."""
  if num_steps < 1:
    raise ValueError(f"num_steps must be at least 1, got {num_steps}")
  if shift <= 0:
    raise ValueError(f"time shift must be positive, got {shift}")
  t = np.linspace(1.0, 0.0, num_steps + 1)
  return (shift * t / (1 + (shift - 1) * t)).astype(np.float32)


def sample(model, cond: Condition, rng: Array, video_shape: tuple[int, ...], num_steps: int,
           method: str = "euler", text_scale: float = 1.0, mask_scale: float = 1.0,
           shift: float = 1.0, noise: Array | None = None) -> Array:
  """Integrates the flow ODE from noise to a video [B,T,H,W,3] in [-1, 1].

  `method` is "euler" (one model call per step) or "heun" (two, except the last step, which is Euler).
  The starting noise is `noise` when given (e.g. drawn per example, so that an example's video does not
  depend on the rest of the batch), else drawn from `rng`. Call it inside jax.jit; the steps run in a
  lax.scan. A self-conditioned model gets at every step the clean-video estimate of the step before (the
  guided one, from the step's first model call; zeros at the first step).
  """
  if method not in ("euler", "heun"):
    raise ValueError(f"sampler method must be 'euler' or 'heun', got {method!r}")
  b = video_shape[0]
  ts = jnp.asarray(time_grid(num_steps, shift))
  velocity = lambda x, t, prev: guided_velocity(model, x, jnp.full((b,), t), cond, text_scale, mask_scale,
                                                x0_prev=prev)
  self_cond = self_conditioned(model)

  def step(carry, t_pair):
    x, prev = carry
    t, t_next = t_pair
    v = velocity(x, t, prev)
    if self_cond:
      prev = clean_estimate(x, jnp.full((b,), t), v)
    x_euler = x + (t_next - t) * v
    if method == "euler":
      return (x_euler, prev), None
    v_next = velocity(x_euler, t_next, prev)
    x_heun = x + (t_next - t) * 0.5 * (v + v_next)
    return (jnp.where(t_next > 0, x_heun, x_euler), prev), None

  x1 = jax.random.normal(rng, video_shape, jnp.float32) if noise is None else noise
  x1 = with_given_frame(x1, cond)
  (x0, _), _ = jax.lax.scan(step, (x1, jnp.zeros_like(x1) if self_cond else None), (ts[:-1], ts[1:]))
  return jnp.clip(x0, -1.0, 1.0)  # frame 0 is still the given frame: its velocity is 0 at every step
