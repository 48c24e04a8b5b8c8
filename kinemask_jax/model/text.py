"""Text path: a word tokenizer and a small text transformer.

The vocabulary fixes the embedding's rows, so it belongs to the model: it is a field of the model config
(`model.text.vocabulary`), stored with every checkpoint and weights folder and read back from there. A new
model's vocabulary is made by `vocabulary(phrases)` from the phrases a caption can contain (configs/model.py
takes them from the data engine's caption table, datagen/captions.py): `<pad>`, `<bos>`, `<unk>`, then the
sorted words. Free text works: unknown words map to `<unk>`. Every sequence starts with `<bos>`, so an empty
prompt (the classifier-free-guidance "no text" case) is one valid token and cross-attention never sees an
all-padding key set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kinemask_jax.model import sharding as shd
from kinemask_jax.model import layers

PAD, BOS, UNK = "<pad>", "<bos>", "<unk>"
SPECIAL = (PAD, BOS, UNK)
_WORD = re.compile(r"[a-z]+|[.,]")


def words(text: str) -> list[str]:
  """The tokenizer's split: lower-case words and the punctuation marks `.` and `,` of `text`, in order."""
  return _WORD.findall(text.lower())


def vocabulary(phrases: Iterable[str]) -> tuple[str, ...]:
  """A vocabulary for a new model: the special tokens (ids 0, 1, 2), then every word of `phrases`, sorted."""
  return (*SPECIAL, *sorted({w for p in phrases for w in words(p)}))


class Tokenizer:
  """Maps text to fixed-length int32 ids `[max_len]` (`<bos>`, words, `<pad>`...) and a valid length."""

  def __init__(self, max_len: int, vocabulary: Sequence[str]):
    if max_len < 2:
      raise ValueError(f"text max_len must be at least 2 (<bos> and one word), got {max_len}")
    if tuple(vocabulary[:3]) != SPECIAL:
      raise ValueError(f"a vocabulary starts with {SPECIAL}, got {tuple(vocabulary[:3])}")
    self.vocabulary = tuple(vocabulary)
    self.max_len = max_len
    self._ids = {w: i for i, w in enumerate(self.vocabulary)}
    self.unk_id = self._ids[UNK]

  @classmethod
  def from_config(cls, text_cfg) -> "Tokenizer":
    """The tokenizer of a model's `text` config section (its max_len and its stored vocabulary)."""
    return cls(text_cfg.max_len, text_cfg.vocabulary)

  @property
  def vocab_size(self) -> int:
    return len(self.vocabulary)

  def encode(self, text: str) -> tuple[np.ndarray, int]:
    """ids int32 [max_len] and the number of valid tokens; words past max_len - 1 are cut off."""
    ids = [self._ids[BOS]] + [self._ids.get(w, self.unk_id) for w in words(text)][: self.max_len - 1]
    out = np.zeros(self.max_len, np.int32)
    out[: len(ids)] = ids
    return out, len(ids)

  def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """ids int32 [B, max_len] and lengths int32 [B]."""
    pairs = [self.encode(t) for t in texts]
    return np.stack([p[0] for p in pairs]), np.asarray([p[1] for p in pairs], np.int32)

  def decode(self, ids: np.ndarray, length: int) -> str:
    """The words of `ids[1:length]` joined by spaces (for inspection)."""
    return " ".join(self.vocabulary[int(i)] for i in ids[1:length])


class TextEncoder(nnx.Module):
  """Token ids [B,L] -> token states [B,L,width] and pooled state [B,width] (mean over valid tokens)."""

  def __init__(self, vocab_size: int, max_len: int, width: int, depth: int, heads: int, mlp_ratio: float,
               dtype, attention_impl: str, *, rngs: nnx.Rngs):
    self.embed = nnx.Embed(vocab_size, width, dtype=dtype, rngs=rngs,
                           embedding_init=shd.param_init(nnx.initializers.normal(0.02), ("vocab", shd.EMBED)))
    self.position = shd.param(0.02 * jax.random.normal(rngs.params(), (max_len, width)), (None, shd.EMBED))
    self.blocks = nnx.List([layers.EncoderBlock(width, heads, mlp_ratio, dtype, attention_impl, rngs=rngs)
                            for _ in range(depth)])
    self.norm = layers.norm(width, rngs)
    self.dtype = dtype

  def __call__(self, ids: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = self.embed(ids) + self.position[: ids.shape[1]].astype(self.dtype)
    x = shd.constrain(x, (shd.BATCH, None, shd.EMBED))
    for block in self.blocks:
      x = block(x, lengths)
    x = self.norm(x).astype(self.dtype)
    valid = (jnp.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(jnp.float32)
    pooled = jnp.einsum("bl,bld->bd", valid, x.astype(jnp.float32)) / jnp.maximum(valid.sum(1), 1)[:, None]
    return x, pooled.astype(self.dtype)
