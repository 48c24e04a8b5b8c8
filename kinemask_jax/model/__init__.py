"""The KineMask video model: what a checkpoint's parameters are and how they turn noise into a video.

  dit.py            the video diffusion transformer (VideoDiT) with its velocity ControlNet
  layers.py         its blocks: attention, MLP, adaLN-zero modulation
  text.py           the word tokenizer (its vocabulary is a config field) and the text encoder
  conditioning.py   the Condition: first frame, velocity masks, text; the network's input channels
  velocity_mask.py  per-frame velocity masks from instance ids and velocities
  diffusion.py      rectified flow: the training loss and the Euler / Heun sampler with guidance
  sharding.py       logical axis names of parameters and activations, and the device mesh
  cost.py           parameter count and FLOPs, from the config alone

A model is fixed by its config section (configs/model.py): nothing here reads a file or the data engine's tables
(only the config errors of datagen/cli.py).
"""

from __future__ import annotations

from flax import nnx

from kinemask_jax.model.dit import VideoDiT, trainable_filter

__all__ = ["VideoDiT", "trainable_filter", "build", "abstract_weights"]


def build(model_cfg, seed: int) -> VideoDiT:
  """A freshly initialised VideoDiT of a config's `model` section."""
  return VideoDiT(model_cfg, rngs=nnx.Rngs(seed))


def abstract_weights(model_cfg):
  """(graphdef, params, frozen) of the model, shapes only (nothing allocated): `params` are the weights that
  train (the EMA holds their average), `frozen` the rest. What a loader fills and `nnx.merge` joins."""
  return nnx.split(nnx.eval_shape(lambda: build(model_cfg, 0)), trainable_filter(model_cfg), ...)
