"""What every source of `tfp_glow.data` shares: names, argument checks, `DatasetInfo`,
and `_finish`, the tail that turns integer examples into float batches.

It sits below the sources (digits, TFDS, folders) and above `quantize`, so that each
source hands its integer `(image, label)` examples to one tail and the noise, flips and
translations are drawn the same way whatever the images came from.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from tfp_glow.data.quantize import _check_n_bits
from tfp_glow.data.quantize import dequantize_images
from tfp_glow.data.quantize import random_translate

__all__ = [
    'DATASETS',
    'SPLITS',
    'FOLDER_PREFIX',
    'DEFAULT_VALIDATION_FRACTION',
    'DIGITS_N_BINS',
    'DatasetInfo',
    'n_bins_for',
]

DATASETS = (
    'digits',
    'photos',
    'mnist',
    'cifar10',
    'svhn_cropped',
    'celeb_a',
    'imagenet_resized/32x32',
    'imagenet_resized/64x64',
)
SPLITS = ('train', 'validation', 'test', 'train_full')
FOLDER_PREFIX = 'folder:'

DEFAULT_VALIDATION_FRACTION = 0.1

# The digits' native levels (0..16). Here rather than in `digits` because `n_bins_for`
# answers for every source and `digits` builds on this module.
DIGITS_N_BINS = 17


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and the bits/dim formula need to know about a loaded split.

  Attributes:
    name: the dataset name as passed to `load` (`'folder:PATH'` for folders).
    split: the split name as passed.
    image_shape: `(H, W, C)` of the images the pipeline yields.
    n_bins: levels per dimension of the integer images (17 for digits, `2**n_bits`
      otherwise); the `log(n_bins)` of bits/dim.
    num_examples: images in this split (the last batch may be smaller).
    num_classes: number of label values, or None when the data has no labels.
    class_names: folder datasets: the class (subfolder) names, index = label.
    source: where the images come from, for logs (e.g. `'tfds:mnist train[:90%]'`).
  """

  name: str
  split: str
  image_shape: tuple[int, int, int]
  n_bins: int
  num_examples: int
  num_classes: int | None
  class_names: tuple[str, ...] | None = None
  source: str = ''

  @property
  def num_dims(self) -> int:
    """D = H * W * C, the dimension bits/dim divides by."""
    h, w, c = self.image_shape
    return h * w * c


# --------------------------------------------------------------------------------------
# Argument checks


def _check_image_size(image_size: Any) -> tuple[int, int] | None:
  if image_size is None:
    return None
  if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
    size = (int(image_size), int(image_size))
  elif (isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(
      isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in image_size)):
    size = (int(image_size[0]), int(image_size[1]))
  else:
    raise TypeError(f'image_size must be an int or an (height, width) pair, got '
                    f'{image_size!r}')
  if min(size) < 1:
    raise ValueError(f'image_size must be positive, got {image_size!r}')
  return size


def _check_common(split: str, splits: Sequence[str], batch_size: Any,
                  validation_fraction: Any, name: str) -> None:
  if split not in splits:
    raise ValueError(f'Unknown split {split!r} for {name!r}; choose one of {list(splits)}')
  if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or
      batch_size < 1):
    raise ValueError(f'batch_size must be a positive int, got {batch_size!r}')
  if not (isinstance(validation_fraction, (int, float)) and
          0.0 <= validation_fraction < 1.0):
    raise ValueError(
        f'validation_fraction must be in [0, 1), got {validation_fraction!r}')


def _check_seed(seed: Any) -> None:
  """Seeds become int64 stateless-RNG keys, so only whole numbers (or None) make sense."""
  if seed is None:
    return
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f'seed must be an int or None, got {seed!r}')
  if not -2**63 <= int(seed) < 2**63:
    raise ValueError(f'seed must fit in int64, got {seed!r}')


class UnknownDatasetError(ValueError):
  """A dataset name that is no source `load` knows (a program can then list
  what else it accepts, e.g. bin/score.py's built-in sets)."""


def _unknown_name_error(name: str) -> ValueError:
  return UnknownDatasetError(
      f'Unknown dataset {name!r}. Choose one of {list(DATASETS)}, '
      f"'{FOLDER_PREFIX}PATH' for a folder of PNG/JPEG images, or the name of any "
      'TFDS image dataset (with an "image" feature), e.g. "fashion_mnist".')


def n_bins_for(name: str, n_bits: int | None = None) -> int:
  """Levels per dimension of dataset `name` after an optional `n_bits` reduction.

  Args:
    name: a dataset name as `load` takes it.
    n_bits: bits kept of 8-bit data (1..8), or None for all 8. The digits have 17 native
      levels, which no bit reduction maps to, so `n_bits` must be None for them.

  Returns:
    17 for `'digits'`, otherwise `2 ** (n_bits or 8)`.

  Raises:
    ValueError: `n_bits` outside 1..8, or given for the digits; an empty name.
  """
  _check_n_bits(n_bits)
  if not isinstance(name, str) or not name:
    raise _unknown_name_error(name)
  if name == 'digits':
    if n_bits is not None:
      raise ValueError('The digits have 17 native levels (0..16); n_bits does not apply '
                       f'to them, pass n_bits=None (got {n_bits}).')
    return DIGITS_N_BINS
  return 2**(8 if n_bits is None else int(n_bits))


# --------------------------------------------------------------------------------------
# Helpers the sources share


def _fixed_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Positions 0..n-1 split into (kept, held out) by a fixed-seed permutation."""
  perm = np.random.default_rng(seed).permutation(n)
  n_held = int(round(fraction * n))
  return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def resize_uint8(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
  """uint8 images (`[H, W, C]` or `[N, H, W, C]`) resized to `size`: bilinear with
  antialiasing (so a downscale averages, never aliases), rounded back to uint8."""
  resized = tf.image.resize(images, size, method='bilinear', antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _from_arrays(images: np.ndarray, labels: np.ndarray | None) -> tf.data.Dataset:
  if labels is None:
    labels = np.full((len(images),), -1, np.int64)
  return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))


# --------------------------------------------------------------------------------------
# The shared tail of every pipeline


def _randomize(images: tf.Tensor, pair_seed: tf.Tensor, *, n_bins: int,
               dequantize: bool, flip: bool, translate: int,
               translate_prob: float) -> tf.Tensor:
  """Integer images `[N, H, W, C]` -> float images: translate, dequantise, flip.

  Every random draw comes from the one stateless `pair_seed`, split into a seed per
  use, so the caller alone decides what the randomness depends on.
  """
  if translate:
    tseeds = tf.random.experimental.stateless_split(pair_seed, 2)
    pair_seed = tseeds[0]
    images = random_translate(images, translate, tseeds[1], translate_prob)
  if flip:
    seeds = tf.random.experimental.stateless_split(pair_seed, 2)
    pair_seed = seeds[0]
  x = dequantize_images(images, n_bins, noise=dequantize,
                        seed=pair_seed if dequantize else None)
  if flip:
    heads = tf.random.stateless_uniform(tf.shape(x)[:1], seed=seeds[1]) < 0.5
    x = tf.where(heads[:, None, None, None], tf.reverse(x, axis=[2]), x)
  return x


def _finish(ds: tf.data.Dataset, *, n_bins: int, num_examples: int, batch_size: int,
            shuffle: bool, shuffle_buffer: int, dequantize: bool, flip: bool,
            seed: int | None, with_labels: bool, drop_remainder: bool,
            translate: int = 0, translate_prob: float = 0.5) -> tf.data.Dataset:
  """Integer `(image, label)` examples -> batched float batches.

  The randomness (noise, flips, translations) is drawn after caching, in one of two
  ways:

  * `shuffle=True` (training): per batch, from a `Dataset.random` stream re-drawn each
    epoch, so every epoch sees fresh noise; with a `seed` the whole sequence of epochs
    is reproducible, which a seeded stateful op inside `map` would not give (it
    restarts its sequence with every new iterator, so each epoch would repeat the same
    noise).
  * `shuffle=False` (evaluation): per example, from the stateless seed
    `[seed, index]`, `index` the example's position in the split (`seed=None` counts as
    0). The inputs are then a function of (seed, index) alone: the same on every pass,
    in every process and for every batch size, so a bits/dim measured twice is the same
    number, and `seed=k` is draw number k when averaging several.
  """
  _check_seed(seed)
  randomize = dict(n_bins=n_bins, dequantize=dequantize, flip=flip,
                   translate=translate, translate_prob=translate_prob)

  if not shuffle:
    key = tf.constant(0 if seed is None else int(seed), tf.int64)

    def one_example(index, example):
      image, label = example
      x = _randomize(image[None], tf.stack([key, index]), **randomize)[0]
      x = tf.ensure_shape(x, image.shape)
      return (x, label) if with_labels else x

    ds = ds.enumerate().map(one_example, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)

  ds = ds.shuffle(max(1, min(shuffle_buffer, num_examples)), seed=seed,
                  reshuffle_each_iteration=True)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)

  def one_batch(example, pair_seed):
    images, labels = example
    x = _randomize(images, pair_seed, **randomize)
    return (x, labels) if with_labels else x

  seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
  ds = tf.data.Dataset.zip((ds, seeds))
  ds = ds.map(one_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)
