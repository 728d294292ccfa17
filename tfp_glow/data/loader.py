"""`load`: one entry point that sends a dataset name to its source (digits, TFDS or a
folder), above all of them so that no source needs to know the others.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfp_glow.data.digits import _load_digits
from tfp_glow.data.folder import load_folder
from tfp_glow.data.photos import _load_photos
from tfp_glow.data.pipeline import DEFAULT_VALIDATION_FRACTION
from tfp_glow.data.pipeline import FOLDER_PREFIX
from tfp_glow.data.pipeline import SPLITS
from tfp_glow.data.pipeline import DatasetInfo
from tfp_glow.data.pipeline import _check_common
from tfp_glow.data.pipeline import _check_image_size
from tfp_glow.data.pipeline import _check_seed
from tfp_glow.data.pipeline import _unknown_name_error
from tfp_glow.data.quantize import _check_n_bits
from tfp_glow.data.tfds import _load_tfds

__all__ = ['load']


def load(name: str,
         split: str = 'train',
         *,
         data_dir: str | None = None,
         download: bool = False,
         n_bits: int | None = None,
         image_size: int | tuple[int, int] | None = None,
         batch_size: int = 64,
         shuffle: bool = True,
         dequantize: bool = True,
         flip: bool = False,
         translate: int = 0,
         translate_prob: float = 0.5,
         seed: int | None = None,
         cache: bool | str = True,
         with_labels: bool = False,
         drop_remainder: bool = False,
         validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
         ) -> tuple[tf.data.Dataset, DatasetInfo]:
  """A batched float pipeline over one split of a dataset, and its `DatasetInfo`.

  Args:
    name: `'digits'` (embedded, offline), a TFDS image dataset (`DATASETS` lists the
      tested ones; any TFDS dataset with an `image` feature passes through), or
      `'folder:PATH'` (see `load_folder`, which has the folder-only options).
    split: `'train'`, `'validation'`, `'test'` or `'train_full'` (train + validation);
      folders also take `'all'`.
    data_dir: TFDS data folder (TFDS's default, `~/tensorflow_datasets` or
      `$TFDS_DATA_DIR`, when None).
    download: let TFDS download and prepare a missing dataset. Off by default, so that a
      machine without network fails at once with instructions instead of waiting on it.
    n_bits: keep this many bits (1..8) of 8-bit data; None keeps all. Must be None for
      the digits, which have 17 levels.
    image_size: `(H, W)` or an int for square; TFDS and folder images are centre-cropped
      to that aspect ratio and resized (bilinear, antialiased) before any bit reduction.
      None keeps the native size (celeb_a: 148x148 centre crop resized to 64x64).
    batch_size: examples per batch; the last, smaller batch is kept unless
      `drop_remainder`.
    shuffle: shuffle examples (and TFDS files) anew every epoch, with fresh noise,
      flips and translations each epoch (training). False keeps the split's order and
      makes them a fixed function of `(seed, example index)` (evaluation; see `seed`).
    dequantize: uniform noise within each bin (training, and the usual evaluation);
      False puts every value at its bin centre.
    flip: random horizontal flips, drawn per example and epoch.
    translate: random translations by up to this many whole pixels on each axis, drawn
      per example and epoch, with 0 (the darkest level) shifted in (see
      `random_translate`); 0 (the default) for none. Training augmentation only: 1,
      with `translate_prob` 0.5, lowers the digits' validation bits/dim.
    translate_prob: with `translate`, the share of the examples that are translated
      (the others are left as they are); 0.5 measured better than 1 on the digits.
    seed: with `shuffle`, makes shuffling, noise, flips and translations reproducible
      across runs while each epoch still differs. Without `shuffle`, example `i` gets
      its noise (and flip and translation) from the stateless seed `[seed, i]`, so
      every pass, process and batch size sees bit-identical inputs, and `seed=k` is
      draw number k (e.g. to average bits/dim over several draws); None means 0.
    cache: TFDS only (digits and folders live in memory anyway): True caches the integer
      images in memory when they take at most `MAX_MEMORY_CACHE_BYTES`, a string caches
      them to that file path, False reads them afresh each epoch. The cache holds images
      before dequantisation, so a shuffled pipeline's noise is fresh each epoch.
    with_labels: yield `(images, labels)` (int64) instead of images.
    drop_remainder: drop the last incomplete batch (e.g. for TPUs).
    validation_fraction: share of the training images held out as `'validation'` where
      the dataset has no validation split of its own (digits, mnist, cifar10, svhn,
      imagenet_resized, folders). Fixed, so runs compare.

  Returns:
    `(dataset, info)`: batches of float32 images `[batch, H, W, C]` in [-0.5, 0.5]
    (or `(images, labels)`), prefetched; and a `DatasetInfo`.

  Raises:
    ValueError: an unknown dataset (the message lists the choices) or split, `n_bits`
      outside 1..8, a bad `image_size`, `batch_size` or `validation_fraction`.
    TypeError: a `seed` that is not an int (or None).
    FileNotFoundError: a TFDS dataset that is not in `data_dir` (and could not be
      downloaded); the message says how to get it.
  """
  if not isinstance(name, str) or not name:
    raise _unknown_name_error(name)
  _check_n_bits(n_bits)
  _check_seed(seed)
  if isinstance(translate, bool) or not isinstance(translate, (int, np.integer)) \
      or translate < 0:
    raise ValueError(f'translate must be an int >= 0, got {translate!r}.')
  if not 0.0 <= translate_prob <= 1.0:
    raise ValueError(f'translate_prob must be in [0, 1], got {translate_prob!r}.')
  if name.startswith(FOLDER_PREFIX):
    folder = name[len(FOLDER_PREFIX):]
    ds, info = load_folder(
        folder, split, image_size=image_size, n_bits=n_bits, batch_size=batch_size,
        shuffle=shuffle, dequantize=dequantize, flip=flip, translate=translate,
        translate_prob=translate_prob, seed=seed,
        with_labels=with_labels, drop_remainder=drop_remainder,
        validation_fraction=validation_fraction)
    return ds, dataclasses.replace(info, name=name)
  _check_common(split, SPLITS, batch_size, validation_fraction, name)
  _check_image_size(image_size)
  tail = dict(batch_size=int(batch_size), dequantize=dequantize, flip=flip,
              drop_remainder=drop_remainder, translate=int(translate),
              translate_prob=float(translate_prob))
  if name == 'digits':
    return _load_digits(split, n_bits=n_bits, image_size=image_size,
                        validation_fraction=validation_fraction, shuffle=shuffle,
                        seed=seed, with_labels=with_labels, **tail)
  if name == 'photos':
    return _load_photos(split, n_bits=n_bits, image_size=image_size, shuffle=shuffle,
                        seed=seed, with_labels=with_labels, **tail)
  return _load_tfds(name, split, data_dir=data_dir, download=download, n_bits=n_bits,
                    image_size=image_size, with_labels=with_labels,
                    validation_fraction=validation_fraction, cache=cache, seed=seed,
                    shuffle=shuffle, **tail)

