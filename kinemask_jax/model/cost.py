"""Parameter count and FLOPs of the video DiT, counted from the config.

FLOPs are those of the matrix products (2 per multiply-add), attention's two products included; the
elementwise work (norms, softmax, activations) is left out, as in the usual MFU convention. A train step
costs 3x the forward pass (forward, and a backward pass of twice its cost).
"""

from __future__ import annotations

import math

import jax
from flax import nnx

from kinemask_jax.model import conditioning
from kinemask_jax.model import dit

TRAIN_FACTOR = 3


def param_count(model_cfg) -> int:
  """Number of parameters (all of them, ControlNet included), without allocating any."""
  abstract = nnx.eval_shape(lambda: dit.VideoDiT(model_cfg, rngs=nnx.Rngs(0)))
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))))


def _block_flops(tokens: int, attended: int, width: int, mlp_ratio: float, text_len: int, text_width: int) -> float:
  linear = 2 * tokens * width * width * (3 + 1 + 1 + 1 + 2 * mlp_ratio)  # qkv, out, cross q, cross out, mlp
  attention = 4 * tokens * attended * width + 4 * tokens * text_len * width
  cross_kv = 2 * text_len * text_width * 2 * width
  modulation = 2 * width * 6 * width
  return linear + attention + cross_kv + modulation


def forward_flops(model_cfg, num_frames: int, height: int, width: int) -> float:
  """Matrix FLOPs of one forward pass for one video of num_frames x height x width."""
  m = model_cfg
  pt, ph, pw = m.patch
  grid = (num_frames // pt, height // ph, width // pw)
  tokens = math.prod(grid)
  d, p = m.width, pt * ph * pw
  L, dt = m.text.max_len, m.text.width
  in_ch = conditioning.image_channels(m)
  attended = {"full": tokens, "spatial": grid[1] * grid[2], "temporal": grid[0]}
  modes = [dit.VideoDiT._mode(m.attention, i) for i in range(m.depth)]
  n_control = dit.control_blocks(m)

  total = 2 * tokens * p * in_ch * d  # patch embedding
  total += 2 * (m.time_features * d + d * d + dt * d)  # time MLP, pooled text
  text_block = 2 * L * dt * dt * (4 + 2 * m.mlp_ratio) + 4 * L * L * dt
  total += m.text.depth * text_block
  for i, mode in enumerate(modes):
    block = _block_flops(tokens, attended[mode], d, m.mlp_ratio, L, dt)
    total += block
    if i < n_control:
      total += block + 2 * tokens * d * d  # the ControlNet copy and its zero projection
  if n_control:
    total += 2 * tokens * p * conditioning.MASK_CHANNELS * d
  head, c = dit.head_of(m)
  total += 2 * d * 2 * d + 2 * tokens * d * p * c  # final modulation and projection (c features per pixel)
  if head == "conv":  # two 3x3 convolutions over every pixel
    total += 2 * num_frames * height * width * 9 * ((c + 2 * conditioning.RGB) * c + c * 3)
  return float(total)


def size_summary(config) -> dict:
  """Size summary of a configs/model.py config: tokens, parameters, GFLOPs per sample (forward, train)."""
  data, m = config.data, config.model
  fwd = forward_flops(m, data.num_frames, data.height, data.width)
  pt, ph, pw = m.patch
  return dict(size=config.size, video=f"{data.num_frames}x{data.height}x{data.width}", patch="x".join(map(str, m.patch)),
              tokens=(data.num_frames // pt) * (data.height // ph) * (data.width // pw),
              width=m.width, depth=m.depth, n_control=dit.control_blocks(m), params=param_count(m),
              gflops_forward=fwd / 1e9, gflops_train=TRAIN_FACTOR * fwd / 1e9)


def format_table(rows: list[dict]) -> str:
  """Markdown table of `size_summary` rows (the README's model table is this output, checked by a test)."""
  head = ("| size | video (T x H x W) | patch | tokens | width | depth | ControlNet blocks | parameters | "
          "GFLOP/sample forward | train (3x) |")
  lines = [head, "|" + "---|" * 10]
  for r in rows:
    lines.append(f"| {r['size']} | {r['video']} | {r['patch']} | {r['tokens']} | {r['width']} | {r['depth']} | "
                 f"{r['n_control']} | {r['params'] / 1e6:,.2f} M | {r['gflops_forward']:,.1f} | {r['gflops_train']:,.1f} |")
  return "\n".join(lines)

