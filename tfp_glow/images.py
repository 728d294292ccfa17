"""Writing images to disk: grids of samples, data and interpolations as one PNG.

Kept apart from `tfp_glow.data` (which reads and prepares data) so that tools that only
write pictures need no input pipeline, and the data package needs no image writer.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import numpy as np

__all__ = ['save_grid_png']


def save_grid_png(images: Any, path: str, nrow: int | None = None, *, padding: int = 1,
                  pad_value: int = 0) -> str:
  """Writes uint8 images `[N, H, W, C]` (C = 1 or 3, or `[N, H, W]`) as one grid PNG.

  Args:
    images: uint8 images, e.g. `tfp_glow.data.postprocess(samples, n_bins)`.
    path: the PNG to write; parent folders are created. Written to a temporary file in
      the same folder and renamed, so a reader never sees a half-written PNG.
    nrow: images per row; default `ceil(sqrt(N))`.
    padding: pixels between and around images.
    pad_value: grey value of the padding.

  Returns:
    `path`.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(f'save_grid_png wants uint8 images, got dtype {images.dtype}; map '
                    'model output with postprocess(x, n_bins) first.')
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] < 1:
    raise ValueError('save_grid_png wants images shaped [N, H, W, C] with N >= 1 and '
                     f'C in (1, 3), got {images.shape}')
  n, h, w, c = images.shape
  nrow = int(math.ceil(math.sqrt(n))) if nrow is None else int(nrow)
  if nrow < 1:
    raise ValueError(f'nrow must be >= 1, got {nrow}')
  ncol_rows = int(math.ceil(n / nrow))
  grid = np.full((ncol_rows * (h + padding) + padding, nrow * (w + padding) + padding, c),
                 pad_value, np.uint8)
  for i in range(n):
    r, q = divmod(i, nrow)
    top, left = padding + r * (h + padding), padding + q * (w + padding)
    grid[top:top + h, left:left + w] = images[i]
  picture = Image.fromarray(grid[..., 0] if c == 1 else grid)

  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path),
                             suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      picture.save(f, format='PNG')
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path
