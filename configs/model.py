"""Model configs: `get_config("tiny" | "small" | "base" | "large")`.

Each size names the data size it trains on (configs/data.py), the video DiT, the diffusion objective and
sampler, the optimizer, and the mesh with its logical sharding rules. The stage configs of the trainer
build on these. `python -m kinemask_jax.model_info` prints every size's parameter count and FLOPs.

| size  | data  | video      | patch | tokens | width | depth | heads | control blocks |
| tiny  | tiny  | 8x32x32    | 2x4x4 | 256    | 64    | 4     | 4     | 2              |
| small | small | 16x64x64   | 2x8x8 | 512    | 256   | 8     | 4     | 4              |
| base  | base  | 24x128x128 | 2x8x8 | 3072   | 1024  | 16    | 8     | 4              |
| large | base  | 24x128x128 | 2x8x8 | 3072   | 1536  | 24    | 12    | 6              |
"""

import math

import ml_collections

from configs import data as data_configs
from datagen import captions
from kinemask_jax.model import text

# data size, patch, width, depth, heads, n_control, text (width, depth, heads), batch size
_SIZES = {
    "tiny": ("tiny", (2, 4, 4), 64, 4, 4, 2, (64, 1, 4), 8),
    "small": ("small", (2, 8, 8), 256, 8, 4, 4, (128, 2, 4), 8),
    "base": ("base", (2, 8, 8), 1024, 16, 8, 4, (256, 2, 4), 16),
    "large": ("base", (2, 8, 8), 1536, 24, 12, 6, (512, 4, 8), 16),
}

# Logical axis -> mesh axes. FSDP shards parameters' `embed` dimension and the batch; tensor parallelism
# shards heads and MLP features.
SHARDING_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("length", None),
    ("vocab", None),
    ("patch", None),
)


SIZES = tuple(_SIZES)
V_MAX_MPS = 2.0  # speed shown as full intensity in a velocity mask (the video model's and the outcome predictor's)


def slide_constants(data) -> tuple[float, float]:
  """(image widths moved per frame at mask speed 1, mask units of speed lost per frame) of a slide on the
  data config's nominal camera (mid distance, its field of view) at its frame rate, under the mid friction
  coefficient: what conditioning.slide_prior needs. On 400 tiny training videos the pushed object's centroid
  moves 7.9 px per mask unit of velocity by frame 1, the prior's 8.1 (README, "How conditioning enters")."""
  distance = sum(data.scene.camera_distance_m) / 2
  view_width = 2 * distance * math.tan(math.radians(data.scene.camera_fov_deg) / 2)  # metres across the image
  friction = sum(data.scene.friction) / 2
  return V_MAX_MPS / data.fps / view_width, friction * 9.81 / V_MAX_MPS / data.fps


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
  """Returns the model config for size `arg`."""
  if arg not in _SIZES:
    raise ValueError(f"configs/model.py: unknown size {arg!r}; expected one of {sorted(_SIZES)}")
  data_size, patch, width, depth, heads, n_control, (tw, td, th), batch = _SIZES[arg]
  c = ml_collections.ConfigDict()
  c.size = arg
  c.data = data_configs.get_config(data_size)
  c.batch_size = batch

  m = c.model = ml_collections.ConfigDict()
  m.patch = patch
  m.width = width
  m.depth = depth
  m.heads = heads
  m.mlp_ratio = 4.0
  m.attention = "full"  # or "factorised": blocks alternate spatial and temporal attention
  # Conditioning layout (kinemask_jax/model/conditioning.py). Frame 0 is always given, never generated.
  m.first_frame = "all"  # the first frame concatenated to every frame's input ("frame0": to frame 0 only)
  # The network predicts the change from the first frame ("video": the frame itself; "warp": a displacement
  # at which each pixel reads the first frame, a gate and a residual, dit.VideoDiT, with diffusion.flow_weight;
  # "splat": a displacement that carries each pixel of the first frame forward, and a residual, dit.splat).
  m.output = "delta"
  # Output "warp" only: a second gate mixes in the first frame with the pushed objects painted out
  # (conditioning.background_plate), so the floor a pushed object uncovers is copied, not painted.
  m.warp_plate = False
  # Output "splat" only: where nothing lands (the floor a pushed object leaves), the background plate shows
  # instead of the first frame (no gate: x_0 = residual + coverage x carried + (1 - coverage) x plate).
  # Off: at full length with the tiny recipe's gate it beat the shipped weights on motion error, stillness,
  # causality and fragmented, but hit F1 fell on one noise draw (README, Ablation, 2026-12-07).
  # With splat_rigid as well: the lowest motion error yet, but hit F1 and causality fell (same section).
  m.splat_fill = False
  # Output "splat" only: the residual is gated by what lands (x_0 = c x carried + (1 - c) x (behind + residual),
  # c the coverage), so a pixel that lands whole is its frame-0 colour and the residual paints only the floor
  # that nothing covers.
  m.splat_gate = False
  # Output "splat" only: each pushed object's frame-0 pixels (frame 0's velocity mask) share one displacement
  # per frame, the mean of the network's over them (dit.rigid_pushed): the pushed object moves whole.
  # Off: at full length on the tiny recipe it lowered the motion error but also stillness, causality and PSNR
  # (README, Ablation, 2026-12-07); with splat_fill as well, hit F1 and causality fell (same section).
  m.splat_rigid = False
  # The clean-video prediction is mixed per pixel with the noisy input, by how unsure the network says it is
  # there (dit.denoise_skip: EDM's skip connection with a learned scale), so low-noise steps keep what x_t shows.
  m.denoise_skip = False
  m.mask0_all = True  # frame 0's velocity mask concatenated to every frame's input
  m.push_geometry = True  # every frame gets its position along / across the push line and the push speed
  # Every frame gets where the pushed object would be if it slid alone (conditioning.slide_prior), with the
  # data's nominal camera, frame rate and friction (slide_constants).
  m.slide_prior = False
  m.slide_widths_per_frame, m.slide_decel = slide_constants(c.data)
  # Self-conditioning (Chen et al. 2022, "Analog Bits"): every frame also gets the model's own previous
  # clean-video estimate (the sampler's last step; in training, half the batches, from a first pass without
  # gradient), zeros when there is none (diffusion.self_condition_input).
  m.self_condition = False
  # Output head (kinemask_jax/model/dit.py): "linear" (a token's output is its patch's pixels) or "conv"
  # (head_channels features per pixel, then two 3x3 convolutions per frame with the pixel's input; README, Ablation).
  m.head = "linear"
  m.head_channels = 16
  m.control = "controlnet"  # or "concat" (ablation), "none" (no velocity conditioning)
  m.n_control = n_control
  m.freeze_backbone = False  # train only the ControlNet (with a pretrained backbone)
  m.prediction = "x"  # network outputs the clean video ("x") or the velocity ("v"); the loss is on velocity
  m.min_time = 0.05  # floor of t when turning an x-prediction into a velocity
  m.time_features = 256
  # Compute dtype (parameters stay float32): bf16 for the accelerator sizes.
  m.dtype = "bfloat16" if arg in ("base", "large") else "float32"
  m.remat = False  # recompute each block's activations in the backward pass
  m.attention_impl = "auto"  # cuDNN flash attention on GPU in bf16, else XLA
  # The vocabulary belongs to the checkpoint (the embedding's rows): a new model's is every word of the
  # caption grammar (datagen/captions.py); it is stored with the config, so a checkpoint keeps reading its own
  # words when the grammar changes (kinemask_jax/store/models.py says so when they differ).
  m.text = ml_collections.ConfigDict(dict(width=tw, depth=td, heads=th, max_len=64,
                                          vocabulary=text.vocabulary(captions.phrases())))

  c.conditioning = ml_collections.ConfigDict()
  c.conditioning.v_max_mps = V_MAX_MPS

  d = c.diffusion = ml_collections.ConfigDict()
  d.time_mean = 0.0  # logit-normal training times
  d.time_std = 1.0
  d.loss_weighting = "clean"  # velocity error x t^2 = clean-video error; "velocity": unweighted (diffusion.loss)
  # Loss weight of object pixels (in frame f or frame 0) is 1 + object_weight, the rest 1 (diffusion.object_pixel_weight).
  d.object_weight = 0.0
  # Weight of the displacement loss of output "warp" or "splat" (diffusion.loss; target: diffusion.object_flow).
  d.flow_weight = 1.0
  # That loss's form (diffusion.FLOW_LOSSES): "squared", or "abs" (the error's length: the median displacement
  # under doubt, so an object that is probably not hit is left still instead of nudged).
  d.flow_loss = "squared"
  # Weight, within that loss, of floor pixels (displacement 0; "warp": floor in frame f and in frame 0, "splat":
  # floor in frame 0), object pixels 1.
  # Off: 0.25 gained 0.3 px of motion error at tiny's short length but none at full length (README, "Ablation").
  d.flow_background_weight = 0.0
  # Within that loss, the pixels of objects that are not pushed (hit or staying) weigh 1 + flow_other_weight
  # (diffusion.object_flow): more of the loss on whether the neighbours move. Off: 3 with the gated splat at full
  # length raised hit F1 by 0.07 but left seed 0 stillness one object under 0.90 (README, "Ablation", 2026-12-07).
  d.flow_other_weight = 0.0
  d.sampler = "euler"  # or "heun"
  d.num_steps = 25
  d.time_shift = 1.0
  d.text_scale = 1.0
  d.mask_scale = 1.0

  o = c.optim = ml_collections.ConfigDict()
  o.learning_rate = 3e-4
  o.warmup_steps = 200
  o.decay_steps = 10_000  # cosine decay length after warmup
  o.weight_decay = 0.01
  o.b1 = 0.9
  o.b2 = 0.99
  o.grad_clip = 1.0
  o.ema_decay = 0.999  # reached after warm-up: decay = min(ema_decay, (1 + step) / (10 + step))

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 = all remaining devices
  c.sharding_rules = SHARDING_RULES
  return c
