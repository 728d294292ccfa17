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

__all__ = ['MIN_TILE_PIXELS', 'default_scale', 'save_grid_png']

# A tile's shorter side is upscaled to at least this many pixels by default: 8x8 digits
# at their native size make a grid too small to see on a screen.
MIN_TILE_PIXELS = 64


def default_scale(height: int, width: int) -> int:
  """The smallest integer factor bringing a `height` x `width` tile to `MIN_TILE_PIXELS`
  on its shorter side; 1 for tiles already that big."""
  return max(1, math.ceil(MIN_TILE_PIXELS / max(1, min(height, width))))


def _umask() -> int:
  """The process umask.

  Linux reports it in /proc/self/status, which leaves it untouched; elsewhere reading
  it means setting it, so it is set to 0 and put back at once (a thread creating a
  file in between would see umask 0, hence the /proc route first).
  """
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  old = os.umask(0)
  os.umask(old)
  return old


def save_grid_png(images: Any, path: str, nrow: int | None = None, *, padding: int = 1,
                  pad_value: int = 0, scale: int | None = None) -> str:
  """Writes uint8 images `[N, H, W, C]` (C = 1 or 3, or `[N, H, W]`) as one grid PNG.

  Args:
    images: uint8 images, e.g. `tfp_glow.data.postprocess(samples, n_bins)`.
    path: the PNG to write; parent folders are created. Written to a temporary file in
      the same folder and renamed, so a reader never sees a half-written PNG. The file
      gets mode `0o666 & ~umask` (0o644 under the usual umask 022), as any file the user
      writes, not the 0o600 of a temporary file.
    nrow: images per row; default `ceil(sqrt(N))`.
    padding: pixels between and around the tiles, in the written PNG: the padding is
      not scaled, so tiles stay separated by thin lines at any `scale`.
    pad_value: grey value of the padding.
    scale: integer factor each tile is enlarged by (nearest neighbour, so every pixel
      becomes a `scale` x `scale` block and no level is invented). None (the default)
      takes the smallest factor that makes a tile at least 64 pixels on its shorter
      side (8 for 8x8 digits), and 1 for tiles already that big; pass 1 for the native
      size.

  Returns:
    `path`.

  Raises:
    TypeError: images that are not uint8.
    ValueError: images of a shape other than `[N, H, W, C]` (C = 1 or 3) or `[N, H, W]`,
      or an `nrow`, `padding` or `scale` out of range (the bad value is named).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(f'save_grid_png wants uint8 images, got dtype {images.dtype}; map '
                    'model output with tfp_glow.data.postprocess(x, n_bins) first.')
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] < 1:
    raise ValueError('save_grid_png wants images shaped [N, H, W, C] with N >= 1 and '
                     f'C in (1, 3), got {images.shape}')
  if scale is None:
    scale = default_scale(images.shape[1], images.shape[2])
  elif (isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or
        scale < 1):
    raise ValueError(f'scale must be an int >= 1 or None, got {scale!r}')
  if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or \
      padding < 0:
    raise ValueError(f'padding must be an int >= 0, got {padding!r}')
  scale, padding = int(scale), int(padding)
  if scale > 1:
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
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
    # mkstemp makes the file 0o600 whatever the umask; give it a new file's usual mode
    # before it appears under its real name.
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path
