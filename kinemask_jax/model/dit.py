"""Image-to-video diffusion transformer with a velocity ControlNet and text cross-attention.

Inputs of one call (B examples, video T x H x W, text length L):
  x_t   [B,T,H,W,3]  noisy video at flow time t (frame 0: the clean first frame)
  t     [B]          flow time in [0, 1] (1 = pure noise)
  cond  kinemask_jax.conditioning.Condition: first_frame [B,H,W,3] in [-1, 1], velocity_mask [B,T,H,W,3]
        (zero where absent), mask_present [B,T], text_ids [B,L] int32, text_lengths [B] int32
Output [B,T,H,W,3] float32: the clean video (`prediction="x"`) or the flow velocity ("v");
kinemask_jax/diffusion.predict turns either into a velocity.

How conditioning enters (kinemask_jax/model/conditioning.py builds the Condition and the input channels):
- Image: frame 0 is given, never generated: x_t's frame 0 is the clean first frame (kinemask_jax/model/diffusion.py
  puts it there and skips it in the loss). The first frame is also concatenated channel-wise to every frame
  (`first_frame="all"`, as SVD does; "frame0" puts it in frame 0 only), with a channel that is 1 on frame 0
  and, with `mask0_all`, frame 0's velocity mask in every frame. With `output="delta"` the network predicts
  the change from the first frame (x_0 = first frame + output), so a still scene is a zero output.
- Velocity masks (`control="controlnet"`): the mask and `mask_present` (as a fourth channel) are patch-
  embedded and added to the hidden states that enter a copy of the first `n_control` blocks; after backbone
  block i the copy's output goes through a zero-initialised projection and is added to the backbone's hidden
  states, so at initialisation the prediction does not depend on the mask. The copy starts from the
  backbone's weights (ControlNet). `control="concat"` instead concatenates the four channels to the input
  (ablation); `control="none"` ignores them (ablation: no velocity conditioning).
- Text: token states from the text encoder through cross-attention in every block; the pooled text state
  plus the timestep embedding drive adaLN-zero modulation.
- Self-conditioning (`self_condition`): a previous clean-video estimate `x0_prev` [B,T,H,W,3] is concatenated
  to every frame's input (zeros: none; kinemask_jax/model/diffusion.py decides what is passed).
- Denoising skip (`denoise_skip`, output "video", "delta", "warp" or "splat"): the clean video is the inverse-variance
  mean of the network's own and the noisy input x_t / (1 - t), by a per-pixel scale the head writes
  (`denoise_skip` below), so what x_t shows at low noise is kept without passing through the patches.

Attention is full spatio-temporal, or with `attention="factorised"` alternates between spatial (within a
frame patch) and temporal (across frame patches at one spatial position) from block to block.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datagen import cli
from kinemask_jax.model import conditioning
from kinemask_jax.model import sharding as shd
from kinemask_jax.model import text as text_lib
from kinemask_jax.model import layers

Array = jax.Array
CONTROL_MODES = ("controlnet", "concat", "none")
ATTENTION_MODES = ("full", "factorised")
FIRST_FRAME_MODES = ("all", "frame0")
OUTPUT_MODES = ("delta", "video", "warp", "splat")
# The outputs that build x_0 from the first frame moved by a displacement the head writes: they return it
# (`return_flow`) and are taught it (diffusion.object_flow, forward for "splat").
DISPLACEMENT_OUTPUTS = ("warp", "splat")
HEAD_MODES = ("linear", "conv")


def patchify(x: Array, patch: tuple[int, int, int]) -> Array:
  """[B,T,H,W,C] -> [B, (T/pt)(H/ph)(W/pw), pt*ph*pw*C], tokens in (time, row, column) order."""
  b, t, h, w, c = x.shape
  pt, ph, pw = patch
  x = x.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, (t // pt) * (h // ph) * (w // pw), pt * ph * pw * c)


def unpatchify(x: Array, patch: tuple[int, int, int], grid: tuple[int, int, int], channels: int) -> Array:
  """Inverse of `patchify`: [B, N, pt*ph*pw*C] -> [B,T,H,W,C]."""
  b = x.shape[0]
  (pt, ph, pw), (gt, gh, gw) = patch, grid
  x = x.reshape(b, gt, gh, gw, pt, ph, pw, channels).transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, gt * pt, gh * ph, gw * pw, channels)


class PatchEmbed(nnx.Module):
  """3D patch embedding: non-overlapping pt x ph x pw patches of C channels -> width."""

  def __init__(self, patch, channels: int, width: int, dtype, rngs: nnx.Rngs):
    self.patch = tuple(patch)
    self.proj = layers.Dense(int(np.prod(patch)) * channels, width, ("patch", shd.EMBED), dtype, rngs)

  def __call__(self, x: Array) -> Array:
    return self.proj(patchify(x, self.patch))


class DiTBlock(nnx.Module):
  """adaLN-zero block: self-attention, text cross-attention, MLP; attention over `mode` token groups."""

  def __init__(self, width: int, heads: int, mlp_ratio: float, text_width: int, mode: str, dtype, impl: str,
               rngs: nnx.Rngs):
    self.mode = mode
    self.norm1 = layers.norm(width, rngs, affine=False)
    self.attn = layers.Attention(width, heads, dtype, impl, rngs)
    self.norm_cross = layers.norm(width, rngs)
    self.cross = layers.Attention(width, heads, dtype, impl, rngs, kv_width=text_width)
    self.norm2 = layers.norm(width, rngs, affine=False)
    self.mlp = layers.MLP(width, mlp_ratio, dtype, rngs)
    self.modulation = layers.Dense(width, (6, width), (shd.EMBED, None, shd.MLP), dtype, rngs, zero=True)
    self.dtype = dtype

  def _self_attention(self, h: Array, grid: tuple[int, int, int]) -> Array:
    b, n, d = h.shape
    gt, gh, gw = grid
    if self.mode == "spatial":
      return self.attn(h.reshape(b * gt, gh * gw, d)).reshape(b, n, d)
    if self.mode == "temporal":
      h = h.reshape(b, gt, gh * gw, d).transpose(0, 2, 1, 3).reshape(b * gh * gw, gt, d)
      y = self.attn(h)
      return y.reshape(b, gh * gw, gt, d).transpose(0, 2, 1, 3).reshape(b, n, d)
    return self.attn(h)

  def __call__(self, x: Array, cond: Array, text: Array, text_lengths: Array, grid) -> Array:
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.moveaxis(self.modulation(jax.nn.silu(cond)), 1, 0)
    h = layers.modulate(self.norm1(x), shift1, scale1).astype(self.dtype)
    x = x + gate1[:, None, :] * self._self_attention(h, grid)
    x = x + self.cross(self.norm_cross(x).astype(self.dtype), text, text_lengths)
    h = layers.modulate(self.norm2(x), shift2, scale2).astype(self.dtype)
    x = x + gate2[:, None, :] * self.mlp(h)
    return shd.constrain(x, (shd.BATCH, shd.LENGTH, shd.EMBED))


# output "warp": per pixel, the displacement (dx, dy) in units of WARP_PIXELS, a gate and a residual RGB
# (then, with model.warp_plate, a second gate: the background plate's).
WARP_CHANNELS = 2 + 1 + 3
WARP_PIXELS = 8.0  # pixels of displacement per unit of the head's output (tiny objects move up to ~20 px)
# output "splat": per frame-0 pixel, the displacement (dx, dy) in units of WARP_PIXELS that carries it to frame f,
# and per output pixel a residual RGB.
SPLAT_CHANNELS = 2 + 3
# Where splatted pixels overlap, each weighs exp(SPLAT_DEPTH x tanh(|displacement|^2 / 1 px^2)): what moves lands
# in front of what stays (a pixel moved by 1 px weighs 100x a still one, by 0.3 px 1.7x).
SPLAT_DEPTH = 6.0
# model.denoise_skip: the prediction's uncertainty per pixel is SKIP_SCALE x exp(the head's last channel), so
# SKIP_SCALE at initialisation (the head starts at zero).
SKIP_SCALE = 0.1


def denoise_skip(prediction: Array, x_t: Array, t: Array, log_scale: Array) -> Array:
  """The clean video from the network's `prediction` P [B,T,H,W,3] and the noisy video x_t at flow times t
  [B] (x_t = (1 - t) x_0 + t noise), read as two measurements of x_0 (EDM's skip connection, per pixel):
  P with error scale s = SKIP_SCALE exp(log_scale) [B,T,H,W,1] and x_t / (1 - t) with noise scale t / (1 - t).
  Their inverse-variance mean is P + k (x_t / (1 - t) - P) with k = s^2 / (s^2 + (t / (1 - t))^2), written
  without the division by 1 - t: P at t = 1, x_t at t = 0, and in between as much of x_t as P's scale says.
  So the network need not carry every noisy pixel through its patches to reproduce what x_t already shows at
  low noise, and where it is unsure (a moving object) it says so by a larger s."""
  tb = t.astype(jnp.float32)[:, None, None, None, None]
  s2 = jnp.square(SKIP_SCALE * jnp.exp(log_scale))
  return prediction + s2 * (1 - tb) * (x_t - (1 - tb) * prediction) / (s2 * jnp.square(1 - tb) + jnp.square(tb)
                                                                       + 1e-12)


def head_of(cfg) -> tuple[str, int]:
  """(model.head, features per pixel the tokens write: 3 for "linear" (WARP_CHANNELS with output "warp",
  SPLAT_CHANNELS with "splat"), one
  more with model.denoise_skip (its last), model.head_channels for "conv"); a config stored before the head
  existed reads as "linear"."""
  head = cfg.get("head", "linear")
  if head != "linear":
    return head, int(cfg.get("head_channels", 16))
  skip = 1 if cfg.get("denoise_skip", False) else 0
  if cfg.output == "warp":
    return head, WARP_CHANNELS + (1 if cfg.get("warp_plate", False) else 0) + skip
  if cfg.output == "splat":
    return head, SPLAT_CHANNELS + skip
  return head, 3 + skip


def warp(image: Array, flow: Array) -> Array:
  """image [B,H,W,C] read at every pixel plus its displacement flow [B,T,H,W,2] ((dx, dy) pixels):
  [B,T,H,W,C], bilinear (jax.scipy's map_coordinates, as conditioning.slide_prior), edge pixels repeated
  outside the image; differentiable in both."""
  h, w = image.shape[1:3]
  ys, xs = jnp.mgrid[0:h, 0:w].astype(jnp.float32)

  def one(channel, f):  # [H,W], [H,W,2] -> [H,W]
    return jax.scipy.ndimage.map_coordinates(channel, [ys + f[..., 1], xs + f[..., 0]], order=1, mode="nearest")
  per_frame = jax.vmap(jax.vmap(one, in_axes=(-1, None), out_axes=-1), in_axes=(None, 0))
  return jax.vmap(per_frame)(image, flow)


def splat(image: Array, flow: Array) -> tuple[Array, Array]:
  """Forward warp: every pixel of image [B,H,W,C] carried by its displacement flow [B,T,H,W,2] ((dx, dy)
  pixels, one field per frame, indexed by the frame-0 pixel) and spread bilinearly onto the 4 pixels around
  where it lands. Returns (colour [B,T,H,W,C], coverage [B,T,H,W]): per output pixel the mean colour of what
  landed there, each landed pixel weighted by its bilinear share x exp(SPLAT_DEPTH x tanh(|d|^2)) (what moves
  covers what stays; the weight's gradient is stopped), and the sum of the bilinear shares (0 where nothing
  landed: the floor a moved object left; about 1 where one pixel did). Colour is the image's own where
  nothing landed. Differentiable in the image and the displacement; what lands outside the frame is dropped."""
  b, h, w, c = image.shape
  ys, xs = jnp.mgrid[0:h, 0:w].astype(jnp.float32)

  def one(img, f):  # [H,W,C], [H,W,2] -> [H,W,C], [H,W]
    x, y = xs + f[..., 0], ys + f[..., 1]
    x0, y0 = jnp.floor(x), jnp.floor(y)
    fx, fy = x - x0, y - y0
    depth = jnp.exp(SPLAT_DEPTH * jnp.tanh(jax.lax.stop_gradient(jnp.square(f).sum(-1))))
    num = jnp.zeros((h * w, c), jnp.float32)
    den = jnp.zeros((h * w,), jnp.float32)
    cover = jnp.zeros((h * w,), jnp.float32)
    for dx, dy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                          (1, 1, fx * fy)):
      cx, cy = x0 + dx, y0 + dy
      inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
      share = jnp.where(inside, share, 0.0).reshape(-1)
      index = (jnp.clip(cy, 0, h - 1) * w + jnp.clip(cx, 0, w - 1)).astype(jnp.int32).reshape(-1)
      weighted = share * depth.reshape(-1)
      num = num.at[index].add(weighted[:, None] * img.reshape(-1, c))
      den = den.at[index].add(weighted)
      cover = cover.at[index].add(share)
    landed = den > 1e-6
    colour = jnp.where(landed[:, None], num / jnp.where(landed, den, 1.0)[:, None], img.reshape(-1, c))
    return colour.reshape(h, w, c), cover.reshape(h, w)

  per_frame = jax.vmap(one, in_axes=(None, 0))
  return jax.vmap(per_frame)(image.astype(jnp.float32), flow.astype(jnp.float32))


# model.splat_rigid: how many pushed objects (distinct velocities in frame 0's mask) get one shared displacement;
# the pixels of any further ones keep their own.
RIGID_GROUPS = 4


def rigid_pushed(flow: Array, mask0: Array, groups: int = RIGID_GROUPS) -> Array:
  """flow [B,T,H,W,2] with every pushed object's frame-0 pixels given one displacement per frame, the mean of
  theirs: a pushed object is carried whole (a rigid translation) instead of spread along its track. The pushed
  objects are read from frame 0's velocity mask [B,H,W,3]: a pushed object's pixels are the nonzero ones that
  share its mask velocity exactly (the mask is drawn from one velocity per object), up to `groups` objects per
  example (taken in raster order of their first pixel; pixels of any further ones keep their own
  displacement). Pixels outside the mask, and every pixel of an example whose mask is absent (all zero),
  keep theirs."""
  m = mask0.astype(jnp.float32)
  remaining = jnp.abs(m).sum(-1) > 0  # [B,H,W]
  b, h, w = remaining.shape
  out = flow
  for _ in range(groups):
    flat = remaining.reshape(b, -1)
    first = jnp.argmax(flat, axis=1)  # the first pushed pixel not yet grouped (0 when none is left)
    key = jnp.take_along_axis(m.reshape(b, -1, 3), first[:, None, None], axis=1)[:, 0]  # [B,3]
    member = remaining & (jnp.abs(m - key[:, None, None]).max(-1) <= 1e-6)  # [B,H,W]
    weight = member.astype(jnp.float32)[:, None, ..., None]  # [B,1,H,W,1]
    mean = (flow * weight).sum((2, 3), keepdims=True) / jnp.maximum(weight.sum((2, 3), keepdims=True), 1.0)
    out = jnp.where(weight > 0, mean, out)
    remaining = remaining & ~member
  return out


def control_blocks(cfg) -> int:
  """How many ControlNet blocks a `model` config builds: `n_control` under `control="controlnet"`, else 0."""
  return cfg.n_control if cfg.control == "controlnet" else 0


def check_config(cfg, video_thw: tuple[int, int, int] | None = None) -> None:
  """Raises cli.ConfigError naming the first `model` field (of a config's `model` section) out of its range;
  with `video_thw`, also that the patch divides the video."""
  def require(ok, field, message):
    cli.require(ok, f"model.{field}", message)
  require(cfg.control in CONTROL_MODES, "control", f"must be one of {CONTROL_MODES}, got {cfg.control!r}")
  require(cfg.attention in ATTENTION_MODES, "attention", f"must be one of {ATTENTION_MODES}, got {cfg.attention!r}")
  n_control = control_blocks(cfg)
  require(0 <= n_control <= cfg.depth, "n_control", f"must be in [0, depth={cfg.depth}], got {cfg.n_control}")
  require(not cfg.get("freeze_backbone", False) or n_control >= 1, "freeze_backbone",
          "trains only the ControlNet, so it needs model.control='controlnet' and model.n_control >= 1 "
          f"(got control={cfg.control!r}, n_control={cfg.n_control}: nothing would train)")
  require(cfg.prediction in ("x", "v"), "prediction", f"must be 'x' (clean video) or 'v' (velocity), got {cfg.prediction!r}")
  require(cfg.first_frame in FIRST_FRAME_MODES, "first_frame", f"must be one of {FIRST_FRAME_MODES}, got {cfg.first_frame!r}")
  require(cfg.output in OUTPUT_MODES, "output", f"must be one of {OUTPUT_MODES}, got {cfg.output!r}")
  if cfg.get("slide_prior", False):
    for field in ("slide_widths_per_frame", "slide_decel"):
      require(float(cfg.get(field) or 0.0) > 0, field, f"must be > 0 with model.slide_prior, got {cfg.get(field)!r}")
  require(cfg.get("head", "linear") in HEAD_MODES, "head", f"must be one of {HEAD_MODES}, got {cfg.get('head')!r}")
  require(int(cfg.get("head_channels", 16)) >= 1, "head_channels", f"must be >= 1, got {cfg.get('head_channels')!r}")
  require(cfg.output not in ("delta", *DISPLACEMENT_OUTPUTS) or cfg.prediction == "x", "output",
          f"{cfg.output!r} (x_0 built from the first frame) needs model.prediction='x'")
  require(cfg.output not in DISPLACEMENT_OUTPUTS or cfg.get("head", "linear") == "linear", "output",
          f"{cfg.output!r} needs model.head='linear', got {cfg.get('head')!r}")
  require(not cfg.get("warp_plate", False) or cfg.output == "warp", "warp_plate",
          f"gates the background plate into the warp output, so it needs model.output='warp', got {cfg.output!r}")
  require(not cfg.get("splat_fill", False) or cfg.output == "splat", "splat_fill",
          f"fills what the splat output leaves uncovered, so it needs model.output='splat', got {cfg.output!r}")
  require(not cfg.get("splat_gate", False) or cfg.output == "splat", "splat_gate",
          f"gates the splat output's residual by what lands, so it needs model.output='splat', got {cfg.output!r} "
          "(with another output set model.splat_gate=False; the tiny recipe turns it on)")
  require(not cfg.get("splat_rigid", False) or cfg.output == "splat", "splat_rigid",
          f"gives each pushed object one displacement in the splat output, so it needs model.output='splat', "
          f"got {cfg.output!r}")
  require(not cfg.get("denoise_skip", False) or (cfg.prediction == "x" and cfg.get("head", "linear") == "linear"),
          "denoise_skip", "mixes the noisy video into a clean-video prediction written by the linear head, so it "
          f"needs model.prediction='x' and model.head='linear', got {cfg.prediction!r} and {cfg.get('head')!r}")
  for field in ("width", "depth", "heads", "time_features"):
    require(int(cfg[field]) >= 1, field, f"must be >= 1, got {cfg[field]!r}")
  require(cfg.width % cfg.heads == 0, "heads", f"must divide model.width={cfg.width}, got {cfg.heads}")
  require(cfg.text.width % cfg.text.heads == 0, "text.heads", f"must divide model.text.width={cfg.text.width}, "
          f"got {cfg.text.heads}")
  require(cfg.mlp_ratio > 0, "mlp_ratio", f"must be > 0, got {cfg.mlp_ratio!r}")
  require(0 < cfg.min_time < 1, "min_time", f"must be in (0, 1), got {cfg.min_time!r}")
  require(cfg.dtype in ("float32", "bfloat16"), "dtype", f"must be float32 or bfloat16, got {cfg.dtype!r}")
  patch = tuple(cfg.patch)
  require(len(patch) == 3 and min(patch) >= 1, "patch", f"expected 3 positive sizes (t, h, w), got {patch!r}")
  if video_thw is not None:
    require(all(v % p == 0 for v, p in zip(video_thw, patch)), "patch",
            f"{patch} must divide the video's (num_frames, height, width) = {tuple(video_thw)}")


class VideoDiT(nnx.Module):
  """The KineMask video diffusion transformer; `cfg` is the `model` section of a config (configs/model.py)."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    check_config(cfg)
    n_control = control_blocks(cfg)
    self.first_frame = cfg.first_frame
    self.output = cfg.output
    self.warp_plate = bool(cfg.get("warp_plate", False))
    self.splat_fill = bool(cfg.get("splat_fill", False))
    self.splat_gate = bool(cfg.get("splat_gate", False))
    self.splat_rigid = bool(cfg.get("splat_rigid", False))
    self.denoise_skip = bool(cfg.get("denoise_skip", False))
    self.mask0_all = bool(cfg.mask0_all)
    self.push_geometry = bool(cfg.push_geometry)
    self.slide = ((float(cfg.slide_widths_per_frame), float(cfg.slide_decel)) if cfg.get("slide_prior", False)
                  else None)
    self.prediction = cfg.prediction
    self.min_time = cfg.min_time
    self.self_condition = bool(cfg.get("self_condition", False))
    dtype = jnp.dtype(cfg.dtype)
    width, tw = cfg.width, cfg.text.width
    self.patch = tuple(cfg.patch)
    self.control = cfg.control
    self.remat = cfg.remat
    self.dtype = dtype
    self.text_encoder = text_lib.TextEncoder(
        len(cfg.text.vocabulary), cfg.text.max_len, tw, cfg.text.depth, cfg.text.heads, cfg.mlp_ratio, dtype,
        cfg.attention_impl, rngs=rngs)
    self.embed = PatchEmbed(self.patch, conditioning.image_channels(cfg), width, dtype, rngs)
    self.time_mlp = nnx.Sequential(
        layers.Dense(cfg.time_features, width, (None, shd.EMBED), dtype, rngs), jax.nn.silu,
        layers.Dense(width, width, (shd.MLP, shd.EMBED), dtype, rngs))
    self.time_features = cfg.time_features
    self.text_pool = layers.Dense(tw, width, (None, shd.EMBED), dtype, rngs)
    modes = [self._mode(cfg.attention, i) for i in range(cfg.depth)]
    block = lambda mode: DiTBlock(width, cfg.heads, cfg.mlp_ratio, tw, mode, dtype, cfg.attention_impl, rngs)
    self.blocks = nnx.List([block(m) for m in modes])
    self.final_norm = layers.norm(width, rngs, affine=False)
    self.final_modulation = layers.Dense(width, (2, width), (shd.EMBED, None, shd.MLP), dtype, rngs, zero=True)
    # head "linear": each token's output is its patch's pixels (zero-initialised: a still scene at first).
    # "conv": each token's output is `head_channels` features per pixel; two 3x3 convolutions per frame read
    # them with the pixel's noisy value and first-frame colour and write the pixels (the last zero-initialised).
    self.head, per_pixel = head_of(cfg)
    self.final = layers.Dense(width, int(np.prod(self.patch)) * per_pixel, (shd.EMBED, "patch"), dtype, rngs,
                              zero=self.head == "linear")
    if self.head == "conv":
      self.head_convs = nnx.List([layers.conv3x3(per_pixel + 2 * conditioning.RGB, per_pixel, dtype, rngs),
                                  layers.conv3x3(per_pixel, 3, dtype, rngs, zero=True)])
    self.n_control = n_control
    if n_control:
      self.control_embed = PatchEmbed(self.patch, conditioning.MASK_CHANNELS, width, dtype, rngs)
      self.control_blocks = nnx.List([block(m) for m in modes[:n_control]])
      for copy, original in zip(self.control_blocks, self.blocks):
        nnx.update(copy, jax.tree.map(jnp.copy, nnx.state(original)))
      self.control_proj = nnx.List([layers.Dense(width, width, (shd.MLP, shd.EMBED), dtype, rngs, zero=True)
                                    for _ in range(n_control)])

  @staticmethod
  def _mode(attention: str, i: int) -> str:
    if attention == "full":
      return "full"
    return "spatial" if i % 2 == 0 else "temporal"

  def _run(self, block: DiTBlock, *args) -> Array:
    if self.remat:
      return nnx.remat(lambda blk, *a: blk(*a), static_argnums=(5,))(block, *args)
    return block(*args)

  def __call__(self, x_t: Array, t: Array, cond: conditioning.Condition, x0_prev: Array | None = None,
               return_flow: bool = False) -> Array | tuple[Array, Array]:
    """The prediction for x_t at times t; `x0_prev`: the previous clean-video estimate, read only with
    self_condition (None there: zeros, no estimate). With `return_flow` (output "warp" or "splat") also the
    displacement [B,T,H,W,2] (pixels): "warp", where each pixel of frame f reads the first frame; "splat", where
    each pixel of the first frame goes in frame f."""
    if return_flow and self.output not in DISPLACEMENT_OUTPUTS:
      raise ValueError(f"return_flow needs model.output 'warp' or 'splat', this model's is {self.output!r}")
    _, nt, h, w, _ = x_t.shape
    pt, ph, pw = self.patch
    if nt % pt or h % ph or w % pw:
      raise ValueError(f"video {nt}x{h}x{w} is not divisible by the patch {self.patch}")
    grid = (nt // pt, h // ph, w // pw)
    dtype = self.dtype
    pos = jnp.asarray(layers.position_embedding_3d(grid, self.embed.proj.kernel.shape[-1]), dtype)
    estimate = None  # what the input gets: nothing without self_condition, else the estimate (zeros: none)
    if self.self_condition:
      estimate = jnp.zeros_like(x_t) if x0_prev is None else x0_prev
    inputs = conditioning.image_input(x_t, cond, self.first_frame, self.mask0_all, self.push_geometry,
                                      self.control == "concat", dtype, self.slide, estimate)
    x = self.embed(inputs) + pos
    x = shd.constrain(x, (shd.BATCH, shd.LENGTH, shd.EMBED))

    text_lengths = cond.text_lengths
    text, pooled = self.text_encoder(cond.text_ids, text_lengths)
    t_emb = self.time_mlp(layers.sinusoid(t.astype(jnp.float32) * 1000.0, self.time_features).astype(dtype))
    modulation = t_emb + self.text_pool(pooled)

    if self.n_control:
      xc = x + self.control_embed(conditioning.mask_input(cond, dtype))
    for i, block in enumerate(self.blocks):
      x = self._run(block, x, modulation, text, text_lengths, grid)
      if i < self.n_control:
        xc = self._run(self.control_blocks[i], xc, modulation, text, text_lengths, grid)
        x = x + self.control_proj[i](xc)

    shift, scale = jnp.moveaxis(self.final_modulation(jax.nn.silu(modulation)), 1, 0)
    y = self.final(layers.modulate(self.final_norm(x), shift, scale).astype(dtype))
    y = unpatchify(y, self.patch, grid, y.shape[-1] // int(np.prod(self.patch)))
    if self.head == "conv":
      first = jnp.broadcast_to(cond.first_frame[:, None], x_t.shape).astype(dtype)
      y = jnp.concatenate([y.astype(dtype), x_t.astype(dtype), first], axis=-1)
      y = self.head_convs[1](jax.nn.silu(self.head_convs[0](y)))
    y = y.astype(jnp.float32)
    first = cond.first_frame.astype(jnp.float32)
    log_scale = None
    if self.denoise_skip:
      y, log_scale = y[..., :-1], y[..., -1:]
    flow = None
    if self.output == "warp":
      # x_0 = first frame + residual + gate x (first frame read at the displacement - first frame): a moved
      # object is copied whole from frame 0 instead of drawn pixel by pixel. All zero at initialisation (a
      # still scene); the flow loss (diffusion.loss) teaches the displacement, which opens the gate.
      flow = y[..., :2] * WARP_PIXELS
      out = first[:, None] + y[..., 3:6] + y[..., 2:3] * (warp(first, flow) - first[:, None])
      if self.warp_plate:
        # + gate x (background plate - first frame): nonzero only where a pushed object stands in frame 0, so
        # the floor it uncovers is copied, not painted (zero at initialisation like the other gate).
        plate = conditioning.background_plate(cond.velocity_mask[:, 0], first)
        out = out + y[..., 6:7] * (plate - first)[:, None]
      y = out
    elif self.output == "splat":
      # x_0 = residual + coverage x frame 0 carried forward + (1 - coverage) x what is behind: each frame-0
      # pixel is moved by its own displacement, so an object whose pixels share one displacement arrives whole,
      # wherever the network puts it; the floor it leaves (nothing lands there) is what is behind (the first
      # frame, or with splat_fill the background plate) plus the residual's paint. All zero at initialisation:
      # every pixel lands on itself (coverage 1), a still scene.
      flow = y[..., :2] * WARP_PIXELS
      if self.splat_rigid:
        # With splat_rigid each pushed object's frame-0 pixels move together, by the mean of their displacements.
        flow = rigid_pushed(flow, cond.velocity_mask[:, 0])
      carried, cover = splat(first, flow)
      # With splat_fill, what shows where nothing landed is the background plate (the first frame with the
      # pushed objects painted out) instead of the first frame: the floor a pushed object leaves is copied.
      behind = conditioning.background_plate(cond.velocity_mask[:, 0], first) if self.splat_fill else first
      covered = jnp.clip(cover, 0.0, 1.0)[..., None]
      residual = y[..., 2:5]
      if self.splat_gate:
        # With splat_gate the residual paints only where nothing lands: x_0 = c x carried + (1 - c) x (behind +
        # residual), so a pixel that lands whole (a still object, the floor, a moved object's body) is exactly
        # its frame-0 colour, and the paint goes to the floor a moved object uncovers.
        residual = (1 - covered) * residual
      y = residual + covered * carried + (1 - covered) * behind[:, None]
    elif self.output == "delta":
      y = y + first[:, None]
    if log_scale is not None:
      y = denoise_skip(y, x_t.astype(jnp.float32), t, log_scale)
    return (y, flow) if return_flow else y


def trainable_filter(cfg):
  """nnx filter of the parameters that train: all of them, or only the ControlNet's with freeze_backbone."""
  if cfg.freeze_backbone:
    check_config(cfg)
    return nnx.All(nnx.Param, nnx.Any(nnx.PathContains("control_embed"), nnx.PathContains("control_blocks"),
                                      nnx.PathContains("control_proj")))
  return nnx.Param
