"""Point-to-mask segmentation for the sampling API and its tools: our stand-in for SAM.

The scenes' objects have saturated palette colours and the table, floor and sky do not (datagen/palette.py),
so a colour flood fill from a clicked pixel finds the object under it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from datagen import palette
from kinemask_jax.sampling.units import InputError


def mask_from_point(image, x: int, y: int, max_chroma_distance: float = 0.06,
                    max_saturation_ratio: float = 0.35, max_area_fraction: float = 0.15) -> np.ndarray:
  """The object under pixel (x, y) as a bool mask [H,W]: a colour flood fill (our stand-in for SAM).

  Grows 4-connected from (x, y) over pixels whose chromaticity is within `max_chroma_distance` of the seed's
  and whose saturation is within `max_saturation_ratio` (relative) of it, so shading does not stop the fill
  but the table does. Refuses (InputError) a point on a pixel no object can show (desaturated or dark: the
  table, floor or sky: datagen/palette.py's rule) and a fill over more than `max_area_fraction` of the image
  (it leaked into the background: give a mask instead).
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise InputError(f"image: expected uint8 [H,W,3], got {image.dtype} {image.shape}")
  h, w = image.shape[:2]
  if not (0 <= x < w and 0 <= y < h):
    raise InputError(f"point: ({x}, {y}) lies outside the {w}x{h} image")
  chroma, sat, value = palette.chromaticity(image)
  if not palette.shows_object(sat[y, x], value[y, x]):
    raise InputError(f"point: ({x}, {y}) is a grey or dark pixel (RGB {image[y, x].tolist()}: saturation "
                     f"{sat[y, x]:.2f} < {palette.MIN_SATURATION} or brightness < {palette.MIN_VALUE}), the "
                     "table, floor or background, not an object: click on a coloured object")
  close = np.linalg.norm(chroma - chroma[y, x], axis=-1) <= max_chroma_distance
  close &= np.abs(sat - sat[y, x]) <= max_saturation_ratio * max(sat[y, x], 1e-3)
  labels, _ = ndimage.label(close)
  mask = labels == labels[y, x]
  if mask.mean() > max_area_fraction:
    raise InputError(f"point: the fill from ({x}, {y}) covers {mask.mean():.0%} of the image, more than an object's "
                     f"plausible share ({max_area_fraction:.0%}): it leaked into the background; give a mask")
  ys, xs = np.nonzero(mask)
  if xs.max() - xs.min() + 1 >= 0.9 * w or ys.max() - ys.min() + 1 >= 0.9 * h:
    raise InputError(f"point: the fill from ({x}, {y}) spans the image from side to side (the table's edge or the "
                     "background, not an object); give a mask")
  return mask
