"""Transformer building blocks shared by the video DiT, its ControlNet and the text encoder.

Parameters are float32 and carry logical axis names (see kinemask_jax/model/sharding.py); computation runs in the
module's `dtype` (float32 or bfloat16), norms and softmax statistics in float32. Attention goes through
`jax.nn.dot_product_attention`, whose cuDNN implementation is the flash-attention path on GPUs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kinemask_jax.model import sharding as shd

Array = jax.Array
_init = nnx.initializers.xavier_uniform()
_zeros = nnx.initializers.zeros_init()


def resolve_attention_impl(impl: str, dtype, head_dim: int) -> str:
  """'auto' picks cuDNN (flash attention) on GPUs when the dtype and head size allow it, else XLA."""
  if impl in ("xla", "cudnn"):
    return impl
  if impl != "auto":
    raise ValueError(f"attention_impl must be 'auto', 'xla' or 'cudnn', got {impl!r}")
  gpu = jax.default_backend() == "gpu"
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return "cudnn" if gpu and half and head_dim % 8 == 0 and head_dim <= 128 else "xla"


def norm(width: int, rngs: nnx.Rngs, affine: bool = True) -> nnx.LayerNorm:
  """LayerNorm computed in float32, with an optional learned scale and bias over `embed`."""
  return nnx.LayerNorm(width, epsilon=1e-6, use_scale=affine, use_bias=affine, dtype=jnp.float32,
                       scale_init=shd.param_init(nnx.initializers.ones_init(), (shd.EMBED,)),
                       bias_init=shd.param_init(_zeros, (shd.EMBED,)), rngs=rngs)


class Dense(nnx.Module):
  """y = x @ W + b over the last axis of x, W [in, *out] with logical names `names` (in first)."""

  def __init__(self, in_features: int, out_shape: int | tuple[int, ...], names: tuple[str | None, ...],
               dtype, rngs: nnx.Rngs, zero: bool = False, bias: bool = True):
    out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
    init = _zeros if zero else _init
    fan = (in_features, int(np.prod(out_shape)))
    self.kernel = shd.param(init(rngs.params(), fan).reshape((in_features, *out_shape)), names)
    self.bias = shd.param(jnp.zeros(out_shape), names[1:]) if bias else None
    self.dtype = dtype

  def __call__(self, x: Array) -> Array:
    kernel = self.kernel[...].astype(self.dtype)
    y = jnp.tensordot(x.astype(self.dtype), kernel, axes=(x.ndim - 1, 0))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


def conv3x3(in_features: int, out_features: int, dtype, rngs: nnx.Rngs, zero: bool = False) -> nnx.Conv:
  """A 3x3 convolution with SAME padding over each frame of [..., H, W, C] (leading axes are batch: frames
  never mix); its kernel and bias are replicated (a pixel head is small)."""
  return nnx.Conv(in_features, out_features, (3, 3), padding="SAME", dtype=dtype,
                  kernel_init=shd.param_init(_zeros if zero else nnx.initializers.lecun_normal(), (None,) * 4),
                  bias_init=shd.param_init(_zeros, (None,)), rngs=rngs)


class RMSNorm(nnx.Module):
  """RMS norm over the last axis with a learned scale (used on queries and keys per head)."""

  def __init__(self, dim: int, rngs: nnx.Rngs):
    self.scale = shd.param(jnp.ones((dim,)), (shd.KV,))

  def __call__(self, x: Array) -> Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + 1e-6) * self.scale[...]
    return y.astype(x.dtype)


class Attention(nnx.Module):
  """Multi-head attention with RMS-normalised queries and keys.

  Self-attention when `kv_width` is None; otherwise cross-attention whose keys and values come from a
  context of width `kv_width` with per-example valid lengths.
  """

  def __init__(self, width: int, heads: int, dtype, impl: str, rngs: nnx.Rngs, kv_width: int | None = None):
    if width % heads:
      raise ValueError(f"width {width} is not divisible by heads {heads}")
    head_dim = width // heads
    self.cross = kv_width is not None
    if self.cross:
      self.q = Dense(width, (heads, head_dim), (shd.EMBED, shd.HEADS, shd.KV), dtype, rngs)
      self.kv = Dense(kv_width, (2, heads, head_dim), (shd.EMBED, None, shd.HEADS, shd.KV), dtype, rngs)
    else:
      self.qkv = Dense(width, (3, heads, head_dim), (shd.EMBED, None, shd.HEADS, shd.KV), dtype, rngs)
    self.out = Dense(heads * head_dim, width, (shd.MLP, shd.EMBED), dtype, rngs)
    self.q_norm = RMSNorm(head_dim, rngs)
    self.k_norm = RMSNorm(head_dim, rngs)
    self.impl = resolve_attention_impl(impl, dtype, head_dim)

  def __call__(self, x: Array, context: Array | None = None, context_lengths: Array | None = None) -> Array:
    """x [B,N,width] -> [B,N,width]; context [B,L,kv_width] with context_lengths [B] for cross-attention."""
    if self.cross:
      q = self.q(x)
      k, v = jnp.moveaxis(self.kv(context), 2, 0)
    else:
      q, k, v = jnp.moveaxis(self.qkv(x), 2, 0)
    names = (shd.BATCH, shd.LENGTH, shd.HEADS, shd.KV)
    q = shd.constrain(self.q_norm(q), names)
    k = shd.constrain(self.k_norm(k), names)
    v = shd.constrain(v, names)
    y = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=context_lengths, implementation=self.impl)
    return self.out(y.reshape(*y.shape[:2], -1))


class MLP(nnx.Module):
  """Two-layer GELU MLP, width -> ratio * width -> width."""

  def __init__(self, width: int, ratio: float, dtype, rngs: nnx.Rngs):
    hidden = int(width * ratio)
    self.up = Dense(width, hidden, (shd.EMBED, shd.MLP), dtype, rngs)
    self.down = Dense(hidden, width, (shd.MLP, shd.EMBED), dtype, rngs)

  def __call__(self, x: Array) -> Array:
    h = shd.constrain(jax.nn.gelu(self.up(x), approximate=True), (shd.BATCH, shd.LENGTH, shd.MLP))
    return self.down(h)


class EncoderBlock(nnx.Module):
  """Pre-norm transformer block with padding-masked self-attention (text encoder)."""

  def __init__(self, width: int, heads: int, mlp_ratio: float, dtype, impl: str, *, rngs: nnx.Rngs):
    self.norm1 = norm(width, rngs)
    self.attn = Attention(width, heads, dtype, impl, rngs, kv_width=width)
    self.norm2 = norm(width, rngs)
    self.mlp = MLP(width, mlp_ratio, dtype, rngs)
    self.dtype = dtype

  def __call__(self, x: Array, lengths: Array) -> Array:
    h = self.norm1(x).astype(self.dtype)
    x = x + self.attn(h, h, lengths)
    return x + self.mlp(self.norm2(x).astype(self.dtype))


def modulate(x: Array, shift: Array, scale: Array) -> Array:
  """adaLN: x * (1 + scale) + shift, with shift and scale [B,D] broadcast over tokens."""
  return x * (1 + scale[:, None, :]) + shift[:, None, :]


def sinusoid(positions: np.ndarray | Array, dim: int, max_period: float = 10_000.0):
  """Sinusoidal features [..., dim] of positions [...] (cos half, then sin half)."""
  half = dim // 2
  freqs = np.exp(-np.log(max_period) * np.arange(half) / half)
  xp = np if isinstance(positions, np.ndarray) else jnp
  args = positions[..., None] * freqs
  return xp.concatenate([xp.cos(args), xp.sin(args)], axis=-1)


def position_embedding_3d(grid: tuple[int, int, int], width: int) -> np.ndarray:
  """Fixed sinusoidal embedding [Tp*Hp*Wp, width] of a (time, height, width) patch grid of any size.

  A third of the channels (rounded down to even) encodes each axis; leftover channels are zero.
  """
  per_axis = 2 * (width // 6)
  axes = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in grid], indexing="ij")
  parts = [sinusoid(a.reshape(-1), per_axis) for a in axes]
  emb = np.concatenate(parts + [np.zeros((parts[0].shape[0], width - 3 * per_axis))], axis=-1)
  return emb.astype(np.float32)
