"""Per-pixel maths between integer images and the flow's floats: the one place each
formula of the `tfp_glow.data` docstring lives.

Bit reduction, dequantisation (and its inverse for viewing) and the translation
augmentation, all free of any dataset or pipeline knowledge, so the pipelines, the
training loop and the tools share one definition of each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    'reduce_bits',
    'dequantize_images',
    'postprocess',
    'to_bins',
    'random_translate',
]

# u is kept this far inside (0, 1): at u within ~1e-5 of a bin edge, float32 rounding of
# (x_int + u) / n_bins - 0.5 can land in the neighbouring bin (measured for n_bins up to
# 256). Clipping moves a 2e-4 share of the noise by at most 1e-4 of a bin, far below
# anything that shows in bits/dim, and makes floor((x + 0.5) * n_bins) == x_int exact.
_EDGE = 1e-4


def _check_n_bits(n_bits: Any) -> None:
  """Raises unless `n_bits` is None or an int in 1..8 (bits kept of 8-bit data)."""
  if n_bits is None:
    return
  if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)):
    raise TypeError(f'n_bits must be an int in 1..8 or None, got {n_bits!r}')
  if not 1 <= n_bits <= 8:
    raise ValueError(f'n_bits must be in 1..8 (bits kept of 8-bit data), got {n_bits}')


def reduce_bits(x8: tf.Tensor, n_bits: int | None) -> tf.Tensor:
  """Keeps the top `n_bits` bits of uint8 images: `floor(x8 / 2^(8 - n_bits))`."""
  _check_n_bits(n_bits)
  x8 = tf.convert_to_tensor(x8)
  if n_bits is None or n_bits == 8:
    return x8
  return tf.bitwise.right_shift(x8, tf.constant(8 - n_bits, x8.dtype))


def dequantize_images(x_int: tf.Tensor, n_bins: int, *, noise: bool = True,
                      seed: tf.Tensor | None = None) -> tf.Tensor:
  """Maps integer images in {0..n_bins-1} to float32 in [-0.5, 0.5).

  `x = (x_int + u) / n_bins - 0.5`, with `u ~ U(0, 1)` per dimension when `noise`, else
  `u = 1/2`. The noise keeps a distance of 1e-4 from the bin edges so that
  `floor((x + 0.5) * n_bins) == x_int` holds exactly in float32.

  Args:
    x_int: integer images, any shape.
    n_bins: levels per dimension (>= 2).
    noise: uniform dequantisation noise (training) or bin centres (deterministic).
    seed: optional stateless seed (shape [2] int) for reproducible noise; without it the
      global random generator is used.
  """
  x = tf.cast(x_int, tf.float32)
  if noise:
    if seed is None:
      u = tf.random.uniform(tf.shape(x), dtype=tf.float32)
    else:
      u = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=tf.float32)
    u = tf.clip_by_value(u, _EDGE, 1.0 - _EDGE)
  else:
    u = 0.5
  return (x + u) / float(n_bins) - 0.5


def to_bins(x: Any, n_bins: int) -> tf.Tensor:
  """The bin index `k = clip(floor((x + 0.5) * n_bins), 0, n_bins - 1)` (float32)
  of model images in [-0.5, 0.5]: the inverse of dequantisation."""
  x = tf.cast(tf.convert_to_tensor(x), tf.float32)
  return tf.clip_by_value(tf.floor((x + 0.5) * float(n_bins)), 0.0, float(n_bins - 1))


def postprocess(x: Any, n_bins: int) -> tf.Tensor:
  """Maps model images in [-0.5, 0.5] to uint8 in [0, 255] for viewing and PNGs.

  The value is first quantised to its bin, `k = clip(floor((x + 0.5) * n_bins), 0,
  n_bins - 1)` (the inverse of dequantisation; samples outside [-0.5, 0.5] are clipped),
  then spread over the full 8-bit range, `round(k * 255 / (n_bins - 1))`, so 17-level
  digits and 5-bit images still span black to white. For 256 bins this is the identity
  on the original 8-bit data.

  Returns:
    A uint8 tensor of the same shape (`.numpy()` for PIL); works inside `tf.function`.
  """
  if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
    raise ValueError(f'n_bins must be an int >= 2, got {n_bins!r}')
  k = to_bins(x, n_bins)
  return tf.cast(tf.round(k * (255.0 / (n_bins - 1))), tf.uint8)


def random_translate(images: tf.Tensor, max_shift: int, seed: tf.Tensor,
                     prob: float = 1.0) -> tf.Tensor:
  """Shifts integer images `[N, H, W, C]` by random whole-pixel offsets.

  Each example, with probability `prob`, gets its own offset, uniform in
  `-max_shift..max_shift` on each axis (so (0, 0) is among them); the others stay
  as they are. The pixels shifted in are 0 (the darkest level). Data augmentation
  only: it acts on the data before dequantisation, never inside the flow.
  """
  max_shift = int(max_shift)
  if max_shift <= 0:
    return images
  shape = tf.shape(images)
  n, h, w = shape[0], shape[1], shape[2]
  padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]])
  seeds = tf.random.experimental.stateless_split(seed, 2)
  offsets = tf.random.stateless_uniform([n, 2], seeds[0], 0, 2 * max_shift + 1,
                                        dtype=tf.int32)
  moved = tf.random.stateless_uniform([n], seeds[1]) < prob
  offsets = tf.where(moved[:, None], offsets, max_shift)
  rows = offsets[:, :1] + tf.range(h)[None, :]
  cols = offsets[:, 1:] + tf.range(w)[None, :]
  out = tf.gather(padded, rows, axis=1, batch_dims=1)
  return tf.gather(out, cols, axis=2, batch_dims=1)
