"""The two-stage curriculum: how many frames keep their velocity mask, and guidance dropout.

Stage 1 keeps every frame's mask (k = T). Stage 2 keeps the first k frames, with k moving linearly from T
to 1 over `anneal_steps` (rounded up, so the last step of the ramp reaches 1), and with probability
`floor_prob` per example k = 1, the inference case, from the first step on. Both are pure functions of the
step and a key, so a resumed run draws the same k as an uninterrupted one. `model_batch` applies them to a
raw batch (training/input_pipeline.py) inside the jitted train step: the video model's batch preparation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kinemask_jax.model import conditioning, diffusion, dit


def scheduled_k(step, num_frames: int, stage: int, anneal_steps: int):
  """The schedule's k at `step` (int32 scalar): T in stage 1; T -> 1 over anneal_steps in stage 2."""
  if stage not in (1, 2):
    raise ValueError(f"stage must be 1 or 2, got {stage}")
  if stage == 1:
    return jnp.asarray(num_frames, jnp.int32)
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(anneal_steps, 1), 0.0, 1.0)
  return jnp.ceil(num_frames - (num_frames - 1) * progress - 1e-6).astype(jnp.int32)


def sample_k(step, rng: jax.Array, batch: int, num_frames: int, stage: int, anneal_steps: int,
             floor_prob: float) -> jax.Array:
  """Per-example k int32 [batch] in [1, T]: the scheduled k, or 1 with probability floor_prob."""
  floor = jax.random.bernoulli(rng, floor_prob, (batch,))
  return jnp.where(floor, 1, scheduled_k(step, num_frames, stage, anneal_steps)).astype(jnp.int32)


def guidance_dropout(rng: jax.Array, batch: int, drop_text_prob: float, drop_mask_prob: float):
  """(drop_text, drop_mask) bool [batch], independent per example."""
  rng_t, rng_m = jax.random.split(rng)
  return (jax.random.bernoulli(rng_t, drop_text_prob, (batch,)),
          jax.random.bernoulli(rng_m, drop_mask_prob, (batch,)))


def model_batch(raw: dict, step, rng: jax.Array, config) -> tuple[dict, dict]:
  """The train step's batch {"video": float [B,T,H,W,3] in [-1, 1], "cond": Condition} from a raw batch:
  the curriculum's k, the Condition (kinemask_jax/model/conditioning.py) and the guidance dropout, plus
  "pixel_weight" [B,T,H,W,1] when `diffusion.object_weight` > 0 (diffusion.object_pixel_weight), "flow" (the
  displacement target, diffusion.object_flow) for a model with output "warp" or "splat"; and the curriculum's metrics
  (mean k, fraction of k = 1)."""
  b, t = raw["video"].shape[:2]
  rng_k, rng_drop = jax.random.split(rng)
  cur = config.curriculum
  k = sample_k(step, rng_k, b, t, config.stage, cur.anneal_steps, cur.floor_prob)
  cond = conditioning.from_truth(raw, k, config.conditioning.v_max_mps)
  drop_text, drop_mask = guidance_dropout(rng_drop, b, cur.drop_text_prob, cur.drop_mask_prob)
  batch = dict(video=conditioning.to_model_space(raw["video"]), cond=cond.drop(text=drop_text, mask=drop_mask))
  object_weight = config.diffusion.get("object_weight", 0.0)
  if object_weight:
    batch["pixel_weight"] = diffusion.object_pixel_weight(raw["instance_ids"], object_weight)
  if config.model.output in dit.DISPLACEMENT_OUTPUTS:
    batch["flow"] = diffusion.object_flow(raw["instance_ids"], raw["velocity_cam"].shape[2],
                                          config.diffusion.get("flow_background_weight", 0.0),
                                          forward=config.model.output == "splat",
                                          controlled=raw["moving_at_start"],
                                          other_weight=config.diffusion.get("flow_other_weight", 0.0))
  return batch, dict(curriculum_k=jnp.mean(k.astype(jnp.float32)), k1_fraction=jnp.mean(k == 1))
