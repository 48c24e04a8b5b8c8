"""The object colours: one table, read by every stage, and the rule that tells an object's pixel.

`PALETTE` names each colour (the name is what captions say: colours are unique in a scene, so a colour names
an object) and gives its RGB. The scene sampler draws from it (with a small jitter that keeps the name
true), floors use desaturated colours only, and the renderer only scales a colour by its shading. So a
pixel's chromaticity (rgb / (r + g + b)) says which object it shows whatever the lighting, if the pixel is
saturated and bright enough (`shows_object`): the evaluation's tracker, the sampling API's point-to-mask
segmentation and the outcome predictor's colour slots all read objects that way. Adding a colour is one
entry here (keep it saturated and at least MAX_CHROMA_DISTANCE x 2 from the others in chromaticity).
"""

from __future__ import annotations

import numpy as np

PALETTE = (
    ("red", (215, 35, 35)),
    ("orange", (240, 125, 20)),
    ("yellow", (235, 210, 25)),
    ("green", (35, 170, 55)),
    ("cyan", (25, 195, 205)),
    ("blue", (35, 75, 225)),
    ("purple", (125, 45, 200)),
    ("magenta", (215, 35, 185)),
    ("pink", (250, 135, 175)),
)
NAMES = tuple(name for name, _ in PALETTE)
COLOR_JITTER = 10  # +- per channel of a sampled object colour; keeps the palette name true

# Floors and table use colours of at most this saturation, so an object's colour never matches theirs.
FLOOR_MAX_SATURATION = 0.22
# A pixel can show an object only if its saturation (max - min) / max reaches this (floors stay at or below
# FLOOR_MAX_SATURATION; the palette's least saturated colour, pink, is 0.46) ...
MIN_SATURATION = 0.3
# ... and its brightest channel reaches this (chromaticity is noise in near-black pixels).
MIN_VALUE = 24
# Largest chromaticity distance of a pixel from its object's colour (palette colours are >= 0.15 apart).
MAX_CHROMA_DISTANCE = 0.08


def rgb() -> np.ndarray:
  """The palette's colours, uint8 [S,3] in table order."""
  return np.array([c for _, c in PALETTE], np.uint8)


def color_names(colors: np.ndarray) -> list[str]:
  """Palette name of each colour [N,3] (the nearest palette entry: the jitter keeps names true)."""
  palette = rgb().astype(np.int64)
  return [NAMES[int(np.argmin(np.abs(palette - np.asarray(c, np.int64)).sum(-1)))] for c in colors]


def chromaticity(colors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """uint8 [..., 3] -> chromaticity [..., 3] (sums to 1), saturation [...] and value (max channel) [...]."""
  x = np.asarray(colors, np.float32)
  total = np.maximum(x.sum(-1, keepdims=True), 1.0)
  hi, lo = x.max(-1), x.min(-1)
  return x / total, (hi - lo) / np.maximum(hi, 1.0), hi


def shows_object(saturation, value):
  """Whether pixels of this saturation and value can show an object (not the table, floor or sky). Works on
  numpy and jax arrays alike."""
  return (saturation >= MIN_SATURATION) & (value >= MIN_VALUE)


def palette_chromaticity() -> np.ndarray:
  """float32 [S,3]: the chromaticity of each palette colour."""
  return chromaticity(rgb())[0]
