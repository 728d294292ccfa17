"""TFDS image datasets as `tfp_glow.data` sources: split mapping, crops, caching.

Reads only what is prepared in `data_dir` unless asked to download, and says how to get
a missing dataset, so a machine without network fails at once instead of hanging.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from tfp_glow.data.pipeline import DatasetInfo
from tfp_glow.data.pipeline import _check_image_size
from tfp_glow.data.pipeline import _finish
from tfp_glow.data.pipeline import _unknown_name_error
from tfp_glow.data.pipeline import n_bins_for
from tfp_glow.data.pipeline import resize_uint8
from tfp_glow.data.quantize import reduce_bits

__all__ = ['MAX_MEMORY_CACHE_BYTES']

_LOG = logging.getLogger(__name__)

# Larger integer datasets (ImageNet 64x64 train is ~15 GiB) stream from disk instead.
MAX_MEMORY_CACHE_BYTES = 4 * 2**30
_SHUFFLE_BUFFER = 20_000

# Split names of the listed datasets, used when TFDS cannot tell us (not prepared yet,
# or mocked in tests); a prepared dataset's own metadata takes precedence.
_KNOWN_SPLITS = {
    'mnist': ('train', 'test'),
    'cifar10': ('train', 'test'),
    'svhn_cropped': ('train', 'test', 'extra'),
    'celeb_a': ('train', 'validation', 'test'),
    'imagenet_resized': ('train', 'validation'),
}
# CelebA's faces sit in the middle of a 218x178 frame; the 148x148 central crop (as in
# RealNVP) keeps the face and drops most background. Its default size is 64x64.
_CENTRE_CROP = {'celeb_a': 148}
_DEFAULT_IMAGE_SIZE = {'celeb_a': (64, 64)}


def _centre_crop(image: tf.Tensor, target_hw: tuple[int, int] | None,
                 side: int | None) -> tf.Tensor:
  """Central crop to a `side` x `side` square, or to the aspect ratio of `target_hw`."""
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  if side is not None:
    ch, cw = tf.minimum(h, side), tf.minimum(w, side)
  else:
    th, tw = target_hw
    # The largest window of aspect th:tw inside h x w.
    ch = tf.minimum(h, (w * th) // tw)
    cw = tf.minimum(w, (h * tw) // th)
  return tf.image.crop_to_bounding_box(image, (h - ch) // 2, (w - cw) // 2, ch, cw)


def _tfds_missing_message(name: str, data_dir_root: Any, cause: BaseException | None):
  data_dir_root = str(data_dir_root)  # TFDS hands back an epath, whose repr is noisy.
  reason = f' ({type(cause).__name__}: {cause})' if cause is not None else ''
  return (
      f'TFDS dataset {name!r} is not prepared in data_dir {data_dir_root!r}{reason}. '
      'On a machine with internet access run\n'
      f'  python -c "import tensorflow_datasets as tfds; tfds.builder({name!r}, '
      f"data_dir='{data_dir_root}').download_and_prepare()\"\n"
      f'(or: tfds build {name} --data_dir={data_dir_root}), copy the folder '
      f'{os.path.join(data_dir_root, name.split("/")[0])} to this machine and pass '
      "its parent as data_dir; or call load(..., download=True) where the network is "
      'reachable. Some datasets (e.g. celeb_a) may need a manual download; see '
      f'https://www.tensorflow.org/datasets/catalog/{name.split("/")[0]}')


def _tfds_split(name: str, split: str, native: Sequence[str],
                validation_fraction: float) -> str:
  has_test, has_val = 'test' in native, 'validation' in native
  if split == 'test':
    if has_test:
      return 'test'
    if has_val:
      return 'validation'
    raise ValueError(f'TFDS dataset {name!r} has neither a test nor a validation split '
                     f'(splits: {list(native)}).')
  if split == 'train_full':
    return 'train'
  if has_test and has_val:
    return split  # 'train' or 'validation', as TFDS has them.
  if validation_fraction == 0:
    if split == 'validation':
      raise ValueError(f'{name!r} has no validation split of its own and '
                       'validation_fraction=0 holds none out of train.')
    return 'train'
  boundary = f'{100.0 * (1.0 - validation_fraction):.6g}%'
  return f'train[{boundary}:]' if split == 'validation' else f'train[:{boundary}]'


def _load_tfds(name, split, *, data_dir, download, n_bits, image_size, with_labels,
               validation_fraction, cache, seed, shuffle, **tail):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  n_bins = n_bins_for(name, n_bits)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as e:
    raise _unknown_name_error(name) from e
  features = builder.info.features
  if 'image' not in features:
    raise ValueError(f'TFDS dataset {name!r} has no "image" feature (features: '
                     f'{list(features.keys())}); it cannot feed an image flow.')
  has_label = 'label' in features and hasattr(features['label'], 'num_classes')
  if with_labels and not has_label:
    raise ValueError(f'TFDS dataset {name!r} has no class "label" feature; pass '
                     'with_labels=False.')
  native_shape = tuple(features['image'].shape)
  if len(native_shape) != 3 or native_shape[-1] not in (1, 3):
    raise ValueError(f'TFDS dataset {name!r} has images of shape {native_shape}; '
                     'tfp_glow needs [H, W, C] with C = 1 or 3.')
  if features['image'].np_dtype != np.uint8:
    raise ValueError(f'TFDS dataset {name!r} has {features["image"].np_dtype} images; '
                     'tfp_glow reads 8-bit images.')

  base = name.split('/')[0]
  size = _check_image_size(image_size) or _DEFAULT_IMAGE_SIZE.get(base)
  crop_side = _CENTRE_CROP.get(base)
  if size is None:
    if None in native_shape[:2]:
      raise ValueError(f'TFDS dataset {name!r} has images of varying size '
                       f'{native_shape}; pass image_size.')
    size = native_shape[:2]
  image_shape = (size[0], size[1], native_shape[2])

  if download:
    try:
      builder.download_and_prepare()
    except Exception as e:  # Network, quota and manual-download failures all vary.
      raise FileNotFoundError(_tfds_missing_message(name, builder.data_dir_root, e)) from e
  native_splits = tuple(builder.info.splits.keys()) or _KNOWN_SPLITS.get(
      base, ('train', 'test'))
  tfds_split = _tfds_split(name, split, native_splits, validation_fraction)
  try:
    ds = builder.as_dataset(
        split=tfds_split, shuffle_files=shuffle,
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False))
  except AssertionError as e:  # What TFDS raises for data that is not there.
    raise FileNotFoundError(_tfds_missing_message(name, builder.data_dir_root, None)) from e

  num_examples = int(ds.cardinality())
  if num_examples < 0:
    num_examples = builder.info.splits[tfds_split].num_examples

  needs_crop = crop_side is not None or tuple(native_shape[:2]) != tuple(size)

  def integer_example(ex):
    image = ex['image']
    if needs_crop:
      image = _centre_crop(image, size, crop_side)
      image = resize_uint8(image, size)
      image = tf.ensure_shape(image, image_shape)
    image = reduce_bits(image, n_bits)
    label = tf.cast(ex['label'], tf.int64) if has_label else tf.constant(-1, tf.int64)
    return image, label

  ds = ds.map(integer_example, num_parallel_calls=tf.data.AUTOTUNE)
  if cache is True:
    # uint8 images plus an int64 label.
    needed = num_examples * (int(np.prod(image_shape)) + 8)
    if needed <= MAX_MEMORY_CACHE_BYTES:
      ds = ds.cache()
    else:
      _LOG.info('Not caching %s %s in memory: %.1f GiB > %.1f GiB.', name, split,
                needed / 2**30, MAX_MEMORY_CACHE_BYTES / 2**30)
  elif cache:
    ds = ds.cache(os.fspath(cache))

  info = DatasetInfo(name, split, image_shape, n_bins, num_examples,
                     features['label'].num_classes if has_label else None,
                     source=f'tfds:{name} {tfds_split}')
  return _finish(ds, n_bins=n_bins, num_examples=num_examples,
                 shuffle_buffer=_SHUFFLE_BUFFER, with_labels=with_labels, seed=seed,
                 shuffle=shuffle, **tail), info

