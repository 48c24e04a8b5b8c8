"""The sampling API: an image, the objects to push and their velocities -> a video.

  from kinemask_jax import KineMaskPipeline
  pipe = KineMaskPipeline.from_checkpoint("runs/stage2")
  result = pipe.generate(image, object_mask, velocity=(0.8, -0.3), seed=0)
  result.video  # uint8 [T,H,W,3]

Units: a velocity is in metres per second in the camera frame, (right, down, forward), the dataset's
`velocity_cam`. Two components (right, down) are completed with the forward component of motion along the
table top, seen from the middle of the data's camera elevations; `velocity_from_arrow` turns an arrow drawn
on the image into such a velocity. Only frame 0's velocity is given, as at the end of the curriculum.

Images of another size than the model's are resized (bilinear; masks nearest) with a warning, and the video
comes out at the model's size. Weights are found and loaded by kinemask_jax/store/models.py (their stored
config, vocabulary included, is the model's); prompt="auto" asks the outcome predictor (kinemask_jax/outcome/).
Nothing here imports training or evaluation code.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from datagen import truth
from kinemask_jax import model as model_lib
from kinemask_jax.model import conditioning, diffusion, text
from kinemask_jax.sampling.segmentation import mask_from_point
from kinemask_jax.sampling.units import InputError, Units
from kinemask_jax.store import models
from kinemask_jax.store.checkpoints import CheckpointError

__all__ = ["KineMaskPipeline", "GenerationResult", "InputError", "CheckpointError", "mask_from_point",
           "initial_noise", "model_config", "pretrained_names"]
model_config = models.model_config
pretrained_names = models.pretrained_names


@dataclasses.dataclass(frozen=True)
class GenerationResult:
  """What `KineMaskPipeline.generate` returns.

  video: uint8 [T,H,W,3] ([B,T,H,W,3] for a batched call); prompt: the text used (a list when batched);
  first_frame: uint8 [H,W,3] (or [B,...]) the conditioning image at the model's size; object_masks: bool
  [K,H,W] (or a list of them) at the model's size; velocities: float32 [K,3] (or a list) in m/s, camera frame.
  """
  video: np.ndarray
  prompt: str | list[str]
  first_frame: np.ndarray
  object_masks: np.ndarray | list[np.ndarray]
  velocities: np.ndarray | list[np.ndarray]


def _load_describer(describer: str | None, config):
  """The outcome predictor of the workdir `describer` (or None), checked against the video model's size."""
  if not describer:
    return None
  from kinemask_jax.outcome.predictor import OutcomePredictor
  predictor = OutcomePredictor.from_checkpoint(describer, label=f"describer {describer!r}")
  ours, theirs = config.data, predictor.config.data
  if (ours.num_frames, ours.height, ours.width) != (theirs.num_frames, theirs.height, theirs.width):
    raise CheckpointError(f"describer {describer!r} reads {theirs.height}x{theirs.width} images, the video model "
                          f"{ours.height}x{ours.width}")
  return predictor


class KineMaskPipeline(Units):
  """A trained KineMask video model (its EMA weights) ready to sample; see the module docstring. Its units
  (video_shape, fps, velocity_from_arrow, check_velocity, ...) are those of kinemask_jax.units.Units."""

  def __init__(self, config: ml_collections.ConfigDict, ema, frozen, step: int | None = None, describer=None,
               graphdef=None):
    super().__init__(config)
    self.step = step
    self.describer = describer  # a kinemask_jax.outcome.predictor.OutcomePredictor for prompt="auto", or None
    # The graph the weights merge into (a loader has it already; otherwise made from the config).
    self._graphdef = graphdef if graphdef is not None else model_lib.abstract_weights(config.model)[0]
    self._ema, self._frozen = ema, frozen
    self.tokenizer = text.Tokenizer.from_config(config.model.text)
    self._sample = _sampler(self._graphdef, float(config.diffusion.time_shift))
    # Batched calls pad their batch up to a multiple of this many examples (copies of the last one, dropped
    # from the result), so that batches of any size run one compiled sampler (see `warm`); None: no padding.
    self.batch_bucket: int | None = None

  @classmethod
  def from_stored(cls, stored: models.Stored, describer: str | None = None) -> "KineMaskPipeline":
    """A pipeline of a loaded model (kinemask_jax/store/models.py)."""
    return cls(stored.config, stored.ema, stored.frozen, stored.step, _load_describer(describer, stored.config),
               stored.graphdef)

  @classmethod
  def from_pretrained(cls, name: str, describer: str | None = None) -> "KineMaskPipeline":
    """The weights shipped in this repository (kinemask_jax/pretrained/NAME): "tiny" (8x32x32, trained on a
    2-core CPU) or "small" (16x64x64, trained on one GPU). See `from_weights`."""
    return cls.from_stored(models.load_pretrained(name), describer)

  @classmethod
  def from_weights(cls, directory: str, describer: str | None = None) -> "KineMaskPipeline":
    """Loads a weights folder written by kinemask_jax.store.weights.save (config.json and EMA shards). Weights
    exported in bfloat16 compute in float32 on a CPU (bf16 matrix products are slow there)."""
    return cls.from_stored(models.load_weights(directory), describer)

  @classmethod
  def from_checkpoint(cls, workdir: str, step: int | None = None, describer: str | None = None
                      ) -> "KineMaskPipeline":
    """Loads the EMA weights of the latest (or the given) checkpoint of a training workdir, and the outcome
    predictor of the workdir `describer` (kinemask_jax.train_outcome) that writes prompt="auto" descriptions."""
    return cls.from_stored(models.load_run(workdir, step), describer)

  # -- validation ---------------------------------------------------------------------------------------
  def _image(self, image, name: str) -> np.ndarray:
    if hasattr(image, "mode") and hasattr(image, "size"):  # PIL
      if image.mode != "RGB":
        raise InputError(f"{name}: expected an RGB image, got a PIL image in mode {image.mode!r} "
                         f"(convert it with .convert('RGB'))")
      image = np.asarray(image)
    image = np.asarray(image)
    if image.dtype != np.uint8:
      raise InputError(f"{name}: expected dtype uint8 (values 0-255), got {image.dtype}")
    if image.ndim != 3 or image.shape[-1] != 3:
      raise InputError(f"{name}: expected shape [H,W,3] (RGB), got {image.shape}")
    return image

  def _mask(self, mask, shape: tuple[int, int], name: str) -> np.ndarray:
    if hasattr(mask, "mode") and hasattr(mask, "size"):
      mask = np.asarray(mask)
    mask = np.asarray(mask)
    if mask.dtype != bool:
      if mask.dtype.kind not in "iu" or not np.isin(mask, (0, 1)).all():
        raise InputError(f"{name}: expected a bool mask [H,W] (or integers 0/1), got {mask.dtype} with values "
                         f"{np.unique(mask)[:5].tolist()}")
      mask = mask.astype(bool)
    if mask.ndim != 2:
      raise InputError(f"{name}: expected shape [H,W], got {mask.shape}")
    if mask.shape != shape:
      raise InputError(f"{name}: shape {mask.shape} differs from the image's {shape}")
    if not mask.any():
      raise InputError(f"{name}: the mask is empty (no pixel selects the object)")
    return mask

  def _resize(self, image: np.ndarray, masks: list[np.ndarray], name: str):
    h, w = self.video_shape[1:3]
    if image.shape[:2] == (h, w):
      return image, masks
    from PIL import Image
    warnings.warn(f"{name}: size {image.shape[:2]} differs from the model's {(h, w)}; resizing the image "
                  f"(bilinear) and the masks (nearest)", stacklevel=3)
    image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    resized = []
    for i, m in enumerate(masks):
      r = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
      if not r.any():
        raise InputError(f"object_mask[{i}] of {name}: the object vanishes when resized to {(h, w)}")
      resized.append(r)
    return image, resized

  def _example(self, image, object_mask, velocity, where: str):
    """One input -> (image [H,W,3], masks [K,H,W], velocities [K,3]) at the model's size, validated."""
    image = self._image(image, f"image{where}")
    many = isinstance(object_mask, (list, tuple))
    masks = list(object_mask) if many else [object_mask]
    if not masks:
      raise InputError(f"object_mask{where}: an empty list (give at least one object)")
    vels = list(velocity) if many else [velocity]
    if many and (not isinstance(velocity, (list, tuple)) or len(vels) != len(masks)):
      raise InputError(f"velocity{where}: with {len(masks)} object masks give a list of {len(masks)} velocities, "
                       f"got {velocity!r}")
    masks = [self._mask(m, image.shape[:2], f"object_mask{where}" + (f"[{i}]" if many else ""))
             for i, m in enumerate(masks)]
    vels = [self.check_velocity(v, f"velocity{where}" + (f"[{i}]" if many else "")) for i, v in enumerate(vels)]
    overlap = np.sum(masks, axis=0) > 1
    if overlap.any():
      raise InputError(f"object_mask{where}: the masks overlap at {int(overlap.sum())} pixels (one object each)")
    image, masks = self._resize(image, masks, f"image{where}")
    return image, np.stack(masks), np.stack(vels)

  def _prompt(self, prompt, where: str, example) -> str:
    if prompt is None:
      return ""
    if prompt == "auto":
      if self.describer is None:
        warnings.warn(f"prompt{where}='auto' but no outcome predictor is loaded (from_checkpoint(..., describer=DIR)); "
                      "generating without text", stacklevel=3)
        return ""
      image, masks, velocities = example
      return self.describer.predict(image, masks, velocities).caption
    if not isinstance(prompt, str):
      raise InputError(f"prompt{where}: expected a string, got {type(prompt).__name__}")
    unknown = sorted({w for w in text.words(prompt) if w not in self.tokenizer.vocabulary})
    if unknown:
      warnings.warn(f"prompt{where}: words outside the caption vocabulary read as <unk>: {unknown}", stacklevel=3)
    return prompt

  # -- sampling -----------------------------------------------------------------------------------------
  def _settings(self, num_steps, method, text_scale, mask_scale) -> dict:
    """The sampler's static settings from generate's arguments (None: the config's), checked."""
    d = self.config.diffusion
    num_steps = d.num_steps if num_steps is None else num_steps
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
      raise InputError(f"num_steps: expected a positive integer, got {num_steps!r}")
    method = method or d.sampler
    if method not in ("euler", "heun"):
      raise InputError(f"method: expected 'euler' or 'heun', got {method!r}")
    return dict(num_steps=int(num_steps), method=method,
                text_scale=float(d.text_scale if text_scale is None else text_scale),
                mask_scale=float(d.mask_scale if mask_scale is None else mask_scale))

  def warm(self, batch_size: int, num_steps: int | None = None, method: str | None = None,
           text_scale: float | None = None, mask_scale: float | None = None) -> float:
    """Compiles the sampler for batched calls of `batch_size` examples with these settings (None: the
    config's), so that such a `generate` call starts at once; e.g. on a helper thread while something else
    runs. With `batch_bucket` set, a multiple of it covers every smaller batch. Pipelines of the same model
    graph share their compiled samplers. Returns the seconds it took."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise InputError(f"batch_size: expected a positive integer, got {batch_size!r}")
    start = time.perf_counter()
    t, h, w, _ = self.video_shape
    blank = (np.zeros((h, w, 3), np.uint8), np.zeros((1, h, w), bool), np.zeros((1, 3), np.float32))
    cond = self._condition([blank] * int(batch_size), [""] * int(batch_size))
    noise = jax.ShapeDtypeStruct((int(batch_size), t, h, w, 3), jnp.float32)
    self._sample.lower(jax.tree.map(_abstract, self._ema), jax.tree.map(_abstract, self._frozen),
                       jax.tree.map(_abstract, cond), noise,
                       **self._settings(num_steps, method, text_scale, mask_scale)).compile()
    return time.perf_counter() - start

  def generate(self, image, object_mask, velocity, prompt: str | Sequence[str] | None = "auto",
               num_steps: int | None = None, seed: int | Sequence[int] = 0, text_scale: float | None = None,
               mask_scale: float | None = None, method: str | None = None) -> GenerationResult:
    """Generates the video of `image` with the masked object(s) set moving at `velocity`.

    image: uint8 [H,W,3] (numpy or PIL RGB); object_mask: bool [H,W], or a list of masks (one per object)
    with `velocity` a list of the same length; velocity: (right, down[, forward]) m/s in the camera frame.
    Batched: give image as a list of images (or a uint8 [B,H,W,3] array) and object_mask, velocity and
    prompt as lists of the per-image entries. prompt: "auto" (default) for the outcome predictor's description
    of what will happen (the first object is the one it calls the pushed one), a description of your own, or
    None / "" for no text.
    num_steps, text_scale, mask_scale, method (euler | heun): the sampler, default from the config.
    seed: the noise seed. In a batch, example i uses seed + i (or seed[i] when a list is given), so item i of
    a batched call is the video of a single call with that seed (up to float rounding of the batched
    computation: at most a grey level or two), whatever the batch holds.
    """
    batched = isinstance(image, (list, tuple)) or (isinstance(image, np.ndarray) and image.ndim == 4)
    if batched:
      n = len(image)
      for name, value in (("object_mask", object_mask), ("velocity", velocity)):
        if not isinstance(value, (list, tuple)) or len(value) != n:
          raise InputError(f"{name}: with a batch of {n} images give a list of {n} entries, got {type(value).__name__}"
                           + (f" of length {len(value)}" if isinstance(value, (list, tuple)) else ""))
      prompts = prompt if isinstance(prompt, (list, tuple)) else [prompt] * n
      if len(prompts) != n:
        raise InputError(f"prompt: with a batch of {n} images give {n} prompts (or one string), got {len(prompts)}")
      examples = [self._example(image[i], object_mask[i], velocity[i], f"[{i}]") for i in range(n)]
      seeds = _seeds(seed, n)
      prompts = [self._prompt(p, f"[{i}]", examples[i]) for i, p in enumerate(prompts)]
    else:
      examples = [self._example(image, object_mask, velocity, "")]
      prompts = [self._prompt(prompt, "", examples[0])]
      seeds = _seeds(seed, None)
    videos = self._run(examples, prompts, seeds, self._settings(num_steps, method, text_scale, mask_scale))
    frames = [e[0] for e in examples]
    masks = [e[1] for e in examples]
    vels = [e[2] for e in examples]
    if batched:
      return GenerationResult(videos, prompts, np.stack(frames), masks, vels)
    return GenerationResult(videos[0], prompts[0], frames[0], masks[0], vels[0])

  def _condition(self, examples, prompts) -> conditioning.Condition:
    """The Condition of validated examples (image, masks [K,H,W], velocities [K,3]) and their prompts."""
    k_max = max(e[1].shape[0] for e in examples)
    b = len(examples)
    t = self.video_shape[0]
    ids0 = np.stack([truth.ids_from_masks(masks) for _, masks, _ in examples])
    velocities = np.zeros((b, k_max, 3), np.float32)
    for i, (_, _, vels) in enumerate(examples):
      velocities[i, :len(vels)] = vels  # padding objects have no pixels, so their zero velocity is unused
    text_ids, text_lengths = self.tokenizer.encode_batch(prompts)
    frames = np.stack([e[0] for e in examples])
    return conditioning.from_user(frames, ids0, velocities, text_ids, text_lengths, t,
                                  self.config.conditioning.v_max_mps)

  def auto_prompt(self, image, object_mask, velocity) -> str | None:
    """What prompt="auto" would use for these inputs (validated as by `generate`): the outcome predictor's
    description, or None when no predictor is loaded."""
    example = self._example(image, object_mask, velocity, "")
    if self.describer is None:
      return None
    return self.describer.predict(*example).caption

  def condition(self, image, object_mask, velocity, prompt: str | None = None) -> conditioning.Condition:
    """The model's Condition (batch of one) for these inputs, as `generate` builds it (validated the same way;
    `prompt` is used as given: None or "" for no text)."""
    example = self._example(image, object_mask, velocity, "")
    return self._condition([example], [prompt or ""])

  def _run(self, examples, prompts, seeds, settings: dict) -> np.ndarray:
    n = len(examples)
    pad = -n % self.batch_bucket if self.batch_bucket else 0
    examples, prompts, seeds = examples + examples[-1:] * pad, prompts + prompts[-1:] * pad, seeds + seeds[-1:] * pad
    cond = self._condition(examples, prompts)
    noise = jnp.stack([initial_noise(s, self.video_shape) for s in seeds])
    out = self._sample(self._ema, self._frozen, cond, noise, **settings)
    return np.asarray(jax.device_get(out))[:n]


@functools.lru_cache(maxsize=8)
def _sampler(graphdef, time_shift: float):
  """The jitted sampler (weights, condition, noise -> uint8 videos) of a model graph, shared by every pipeline
  of that graph: stage 1 and stage 2 of one model compile it once."""
  def sample(ema, frozen, cond, noise, *, num_steps, method, text_scale, mask_scale):
    model = nnx.merge(graphdef, ema, frozen)
    x = diffusion.sample(model, cond, None, noise.shape, num_steps, method, text_scale, mask_scale, time_shift,
                         noise=noise)
    return diffusion.to_uint8(x)
  return jax.jit(sample, static_argnames=("num_steps", "method", "text_scale", "mask_scale"))


def _abstract(x):
  """The shape, dtype and (for an array placed on devices) sharding of an array, for compiling ahead."""
  sharding = x.sharding if isinstance(x, jax.Array) and x.committed else None
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def initial_noise(seed: int, video_shape) -> jax.Array:
  """The sampler's starting noise float32 [T,H,W,3] for one example of `seed` (the batch never enters it)."""
  return jax.random.normal(jax.random.key(seed), tuple(video_shape), jnp.float32)


def _seeds(seed, n: int | None) -> list[int]:
  """Per-example seeds: [seed] for a single call; seed + i, or the list `seed`, for a batch of n."""
  if isinstance(seed, (list, tuple, np.ndarray)):
    if n is None or len(seed) != n:
      raise InputError(f"seed: a list of seeds needs a batch of the same length, got {len(seed)} seeds for "
                       f"{'a single call' if n is None else f'a batch of {n}'}")
    seeds = list(seed)
  else:
    seeds = [seed + i for i in range(n or 1)]
  for s in seeds:
    if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or not 0 <= s < 2 ** 32:
      raise InputError(f"seed: expected integers in [0, 2**32), got {s!r}")
  return [int(s) for s in seeds]
