"""KineMask velocity masks: the one function that turns physical truth into the control signal.

Inside the silhouette of each controlled object (the objects moving at the start of the video), the pixel
holds that object's camera-frame velocity (right, down, forward in m/s) divided by `v_max` and clipped to
[-1, 1]; every other pixel is zero (mid-grey when shown as an image). Static objects do not appear. The input
pipeline and the sampling API both call `velocity_mask`, so training and inference see the same encoding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def velocity_mask(instance_ids, velocity_cam, controlled, v_max: float):
  """Velocity mask float32 [T,H,W,3] (or batched [B,T,H,W,3] with batched inputs).

  instance_ids uint8/int [T,H,W]: 0 background, k for object k (1-based).
  velocity_cam float [T,N,3]: per frame and object, m/s in the camera frame (right, down, forward).
  controlled bool [N]: which objects are given (moving at start).
  v_max: speed in m/s that maps to +-1; must be positive.
  """
  if not v_max > 0:
    raise ValueError(f"v_max must be a positive speed in m/s, got {v_max}")
  ids = jnp.asarray(instance_ids)
  vel = jnp.asarray(velocity_cam, jnp.float32)
  ctrl = jnp.asarray(controlled, bool)
  if ids.ndim == 4:
    return jax.vmap(lambda i, v, c: velocity_mask(i, v, c, v_max))(ids, vel, ctrl)
  if ids.ndim != 3 or vel.ndim != 3 or vel.shape[-1] != 3 or ctrl.ndim != 1:
    raise ValueError(f"expected instance_ids [T,H,W], velocity_cam [T,N,3], controlled [N]; got "
                     f"{ids.shape}, {vel.shape}, {ctrl.shape}")
  t, n = vel.shape[:2]
  if ids.shape[0] != t or ctrl.shape[0] != n:
    raise ValueError(f"frame or object counts disagree: instance_ids {ids.shape}, velocity_cam {vel.shape}, "
                     f"controlled {ctrl.shape}")
  # Row 0 is the background; row k the (zeroed unless controlled) velocity of object k.
  table = jnp.concatenate([jnp.zeros((t, 1, 3)), jnp.where(ctrl[None, :, None], vel, 0.0)], axis=1)
  table = jnp.clip(table / v_max, -1.0, 1.0)
  ids = ids.astype(jnp.int32)
  ids = jnp.where((ids < 0) | (ids > n), 0, ids)  # ids the engine never writes read as background
  return jnp.take_along_axis(table[:, :, None, :], ids.reshape(t, -1, 1, 1), axis=1).reshape(*ids.shape, 3)


def keep_first_frames(mask, k):
  """The curriculum's cut: masks of frames >= k zeroed; returns (mask, mask_present float [..., T]).

  mask [T,H,W,3] or [B,T,H,W,3]; k an int or an int array [B] (1 <= k <= T).
  """
  mask = jnp.asarray(mask)
  t = mask.shape[-4]
  present = (jnp.arange(t) < jnp.asarray(k)[..., None]).astype(jnp.float32)
  return mask * present[..., None, None, None], present

