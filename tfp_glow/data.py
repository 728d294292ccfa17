"""Input pipelines for Glow: TFDS datasets, folders of images, the embedded digits.

Every pipeline yields float32 images in [-0.5, 0.5], shaped `[batch, H, W, C]`, made from
integer images with `n_bins` levels per dimension:

    x = (x_int + u) / n_bins - 0.5,   x_int in {0, ..., n_bins - 1}

with `u ~ U(0, 1)` for training (uniform dequantisation, so that a continuous density
on `x` bounds the discrete likelihood: bits/dim = (-log p(x) + D log n_bins) / (D ln 2),
D = H * W * C) and `u = 1/2` (the bin centre) when `dequantize=False`, e.g. for a
deterministic evaluation. 8-bit data can be reduced to `n_bits` bits first:
`x_int = floor(x8 / 2^(8 - n_bits))`, `n_bins = 2^n_bits` (the paper uses 5 bits for
CelebA-HQ). The embedded digits have 17 levels (0..16) natively, so `n_bins = 17`: the
formulas never assume a power of two.

Sources (`load(name, split)`):

* `'digits'`: scikit-learn's copy of the UCI "Optical Recognition of Handwritten Digits"
  test part (E. Alpaydin and C. Kaynak, 1998, CC BY 4.0; as shipped in scikit-learn,
  BSD-3-Clause): 1797 grey images of 8x8 pixels with 17 levels and labels 0-9, stored in
  `tfp_glow/data/digits.npz` (see `tfp_glow/data/README.md`), so training works offline.
  Fixed splits: `perm = np.random.default_rng(0).permutation(1797)`, `test = perm[:360]`
  (360 = ceil(0.2 * 1797), as scikit-learn's `train_test_split(test_size=0.2)`),
  `train_full = perm[360:]` (1437 images); `validation` is the first
  `round(validation_fraction * 1437)` entries of `train_full` permuted by
  `np.random.default_rng(1)` (144 at the default 0.1), `train` the rest (1293).
* TFDS image datasets (`DATASETS`, or any other TFDS name with an `image` feature), read
  from `data_dir`. Nothing is downloaded unless `download=True`.
* `'folder:PATH'`: PNG/JPEG files under PATH, see `load_folder`.

Splits: `'train'`, `'validation'`, `'test'`, `'train_full'` (train plus validation: for a
final run once the hyper-parameters are chosen). Where a TFDS dataset has no validation
split of its own, the last `validation_fraction` of its train split is held out
(`'train[:90%]'` / `'train[90%:]'`); where it has no test split (imagenet_resized), its
validation split is the test split, as in the papers.

#### Example

```python
from tfp_glow import data
ds, info = data.load('digits', 'train', batch_size=64, seed=1)
for x in ds.take(1):
  print(x.shape, info.n_bins)   # (64, 8, 8, 1) 17
```
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import math
import os
import tempfile
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    'DATASETS',
    'SPLITS',
    'FOLDER_PREFIX',
    'IMAGE_EXTENSIONS',
    'DatasetInfo',
    'n_bins_for',
    'reduce_bits',
    'dequantize_images',
    'digits_indices',
    'load',
    'load_folder',
    'postprocess',
    'to_bins',
    'save_grid_png',
]

_LOG = logging.getLogger(__name__)

DATASETS = (
    'digits',
    'mnist',
    'cifar10',
    'svhn_cropped',
    'celeb_a',
    'imagenet_resized/32x32',
    'imagenet_resized/64x64',
)
SPLITS = ('train', 'validation', 'test', 'train_full')
FOLDER_PREFIX = 'folder:'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')

DEFAULT_VALIDATION_FRACTION = 0.1
# Larger integer datasets (ImageNet 64x64 train is ~15 GiB) stream from disk instead.
MAX_MEMORY_CACHE_BYTES = 4 * 2**30
_SHUFFLE_BUFFER = 20_000

DIGITS_N_BINS = 17
DIGITS_NUM_EXAMPLES = 1797
DIGITS_TEST_SIZE = 360
_DIGITS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data',
                            'digits.npz')

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

# u is kept this far inside (0, 1): at u within ~1e-5 of a bin edge, float32 rounding of
# (x_int + u) / n_bins - 0.5 can land in the neighbouring bin (measured for n_bins up to
# 256). Clipping moves a 2e-4 share of the noise by at most 1e-4 of a bin, far below
# anything that shows in bits/dim, and makes floor((x + 0.5) * n_bins) == x_int exact.
_EDGE = 1e-4


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


def _check_n_bits(n_bits: Any) -> None:
  if n_bits is None:
    return
  if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)):
    raise TypeError(f'n_bits must be an int in 1..8 or None, got {n_bits!r}')
  if not 1 <= n_bits <= 8:
    raise ValueError(f'n_bits must be in 1..8 (bits kept of 8-bit data), got {n_bits}')


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


def _unknown_name_error(name: str) -> ValueError:
  return ValueError(
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
# Integer <-> float


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


def save_grid_png(images: Any, path: str, nrow: int | None = None, *, padding: int = 1,
                  pad_value: int = 0) -> str:
  """Writes uint8 images `[N, H, W, C]` (C = 1 or 3, or `[N, H, W]`) as one grid PNG.

  Args:
    images: uint8 images, e.g. `postprocess(samples, n_bins)`.
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


# --------------------------------------------------------------------------------------
# The shared tail of every pipeline


def _finish(ds: tf.data.Dataset, *, n_bins: int, num_examples: int, batch_size: int,
            shuffle: bool, shuffle_buffer: int, dequantize: bool, flip: bool,
            seed: int | None, with_labels: bool, drop_remainder: bool,
            translate: int = 0, translate_prob: float = 0.5) -> tf.data.Dataset:
  """Integer `(image, label)` examples -> shuffled, batched float batches.

  Noise and flips happen after caching and per batch, so every epoch sees fresh noise.
  Their randomness comes from a `Dataset.random` stream re-drawn each epoch: with a
  `seed` the whole sequence of epochs is reproducible, which a seeded stateful op inside
  `map` would not give (it restarts its sequence with every new iterator, so each epoch
  would repeat the same noise).
  """
  if shuffle:
    ds = ds.shuffle(max(1, min(shuffle_buffer, num_examples)), seed=seed,
                    reshuffle_each_iteration=True)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)

  def to_float(images, labels, pair_seed):
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
    return (x, labels) if with_labels else x

  seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
  ds = tf.data.Dataset.zip((ds, seeds))
  ds = ds.map(lambda ex, s: to_float(ex[0], ex[1], s),
              num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)


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


def _from_arrays(images: np.ndarray, labels: np.ndarray | None) -> tf.data.Dataset:
  if labels is None:
    labels = np.full((len(images),), -1, np.int64)
  return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))


# --------------------------------------------------------------------------------------
# The embedded digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  with np.load(_DIGITS_PATH) as f:
    images, labels = f['images'], f['labels']
  if images.shape != (DIGITS_NUM_EXAMPLES, 8, 8) or images.max() >= DIGITS_N_BINS:
    raise ValueError(f'{_DIGITS_PATH} is damaged: images {images.shape}, max '
                     f'{images.max()}; expected [1797, 8, 8] with values 0..16')
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels


def _fixed_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Positions 0..n-1 split into (kept, held out) by a fixed-seed permutation."""
  perm = np.random.default_rng(seed).permutation(n)
  n_held = int(round(fraction * n))
  return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def digits_indices(split: str,
                   validation_fraction: float = DEFAULT_VALIDATION_FRACTION) -> np.ndarray:
  """Indices (into the 1797 digits, sorted) of a digits split; see the module docstring."""
  _check_common(split, SPLITS, 1, validation_fraction, 'digits')
  perm = np.random.default_rng(0).permutation(DIGITS_NUM_EXAMPLES)
  test, train_full = perm[:DIGITS_TEST_SIZE], perm[DIGITS_TEST_SIZE:]
  if split == 'test':
    return np.sort(test)
  if split == 'train_full':
    return np.sort(train_full)
  kept, held = _fixed_holdout(len(train_full), validation_fraction, seed=1)
  chosen = train_full[held] if split == 'validation' else train_full[kept]
  if not len(chosen):
    raise ValueError(f'The digits {split!r} split is empty at validation_fraction='
                     f'{validation_fraction}.')
  return np.sort(chosen)


def _load_digits(split, *, n_bits, image_size, validation_fraction, **tail):
  n_bins = n_bins_for('digits', n_bits)
  if _check_image_size(image_size) not in (None, (8, 8)):
    raise ValueError('The digits are 8x8 with 17 levels; resizing would invent levels '
                     f'between them, so image_size must be None or 8 (got {image_size!r}).')
  images, labels = _digits_arrays()
  idx = digits_indices(split, validation_fraction)
  ds = _from_arrays(images[idx][..., None], labels[idx])
  info = DatasetInfo('digits', split, (8, 8, 1), n_bins, len(idx), 10,
                     source=f'digits (embedded, {len(idx)} of 1797)')
  return _finish(ds, n_bins=n_bins, num_examples=len(idx), shuffle_buffer=len(idx),
                 **tail), info


# --------------------------------------------------------------------------------------
# TFDS


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


def _resize_uint8(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
  resized = tf.image.resize(image, size, method='bilinear', antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


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
      image = _resize_uint8(image, size)
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


# --------------------------------------------------------------------------------------
# Public entry points


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
    shuffle: shuffle examples (and TFDS files) anew every epoch.
    dequantize: uniform noise within each bin (training); False puts every value at its
      bin centre (deterministic evaluation).
    flip: random horizontal flips, drawn per example and epoch.
    translate: random translations by up to this many whole pixels on each axis, drawn
      per example and epoch, with 0 (the darkest level) shifted in (see
      `random_translate`); 0 (the default) for none. Training augmentation only: 1,
      with `translate_prob` 0.5, lowers the digits' validation bits/dim.
    translate_prob: with `translate`, the share of the examples that are translated
      (the others are left as they are); 0.5 measured better than 1 on the digits.
    seed: makes shuffling, noise and flips reproducible; each epoch still differs.
    cache: TFDS only (digits and folders live in memory anyway): True caches the integer
      images in memory when they take at most `MAX_MEMORY_CACHE_BYTES`, a string caches
      them to that file path, False reads them afresh each epoch. The cache holds images
      before dequantisation, so the noise is fresh each epoch.
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
    FileNotFoundError: a TFDS dataset that is not in `data_dir` (and could not be
      downloaded); the message says how to get it.
  """
  if not isinstance(name, str) or not name:
    raise _unknown_name_error(name)
  _check_n_bits(n_bits)
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
  return _load_tfds(name, split, data_dir=data_dir, download=download, n_bits=n_bits,
                    image_size=image_size, with_labels=with_labels,
                    validation_fraction=validation_fraction, cache=cache, seed=seed,
                    shuffle=shuffle, **tail)


# --------------------------------------------------------------------------------------
# Folders


def _list_images(root: str) -> list[str]:
  found = []
  for folder, subfolders, files in os.walk(root):
    subfolders[:] = sorted(d for d in subfolders if not d.startswith('.'))
    for f in sorted(files):
      if not f.startswith('.') and f.lower().endswith(IMAGE_EXTENSIONS):
        found.append(os.path.join(folder, f))
  return found


def _channels_of_mode(mode: str) -> int:
  return 1 if mode in ('1', 'L', 'LA', 'I', 'I;16', 'I;16B', 'I;16L', 'F') else 3


def _decode(path: str, channels: int, size: tuple[int, int] | None,
            resize: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  with Image.open(path) as img:
    img.load()  # Decodes fully here, so a truncated file fails with its name attached.
    img = img.convert('L' if channels == 1 else 'RGB')
  if size is not None and (img.height, img.width) != tuple(size):
    th, tw = size
    if resize == 'crop':
      # The largest window of the target aspect ratio, centred.
      cw = min(img.width, img.height * tw // th)
      ch = min(img.height, img.width * th // tw)
      left, top = (img.width - cw) // 2, (img.height - ch) // 2
      img = img.crop((left, top, left + cw, top + ch))
    img = img.resize((tw, th), Image.BILINEAR)
  array = np.asarray(img, np.uint8)
  return array[..., None] if channels == 1 else array


def load_folder(path: str,
                split: str = 'all',
                *,
                image_size: int | tuple[int, int] | None = None,
                resize: str = 'crop',
                channels: int | None = None,
                n_bits: int | None = None,
                batch_size: int = 64,
                shuffle: bool = True,
                dequantize: bool = True,
                flip: bool = False,
                translate: int = 0,
                translate_prob: float = 0.5,
                seed: int | None = None,
                with_labels: bool = False,
                drop_remainder: bool = False,
                validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
                skip_corrupt: bool = False,
                num_workers: int = 8,
                ) -> tuple[tf.data.Dataset, DatasetInfo]:
  """A pipeline over the PNG/JPEG images found (recursively) under `path`.

  All images are decoded up front with PIL (in `num_workers` threads) and kept in
  memory as uint8, so every unreadable file is reported by name before training starts.

  Args:
    path: the folder. Hidden files and folders are ignored, as are files whose names do
      not end in .png, .jpg or .jpeg (any case).
    split: `'all'` (or `'train_full'`): every image; `'train'` / `'validation'`: a fixed
      split (`np.random.default_rng(0)` over the sorted file list) holding out
      `validation_fraction` of the images. Folders have no test split: keep test
      images in a folder of their own and load it with `'all'`.
    image_size: `(H, W)` or an int for square. None requires all images to have one
      size; otherwise each is brought to this size as `resize` says.
    resize: `'crop'`: centre-crop to the target aspect ratio, then resize (keeps
      proportions); `'resize'`: resize directly (stretches). Both bilinear.
    channels: 1 (grey) or 3 (RGB); None takes it from the first image (sorted order):
      grey modes give 1, everything else 3. Images are converted to it, alpha dropped.
    n_bits, batch_size, shuffle, dequantize, flip, translate, translate_prob, seed,
      drop_remainder: as in `load`.
    with_labels: label each image by its top-level subfolder under `path` (class names
      sorted; `info.class_names[label]`); every image must then be in a subfolder.
    validation_fraction: see `split`.
    skip_corrupt: log a warning for each unreadable image and leave it out, instead of
      raising.
    num_workers: decoding threads.

  Returns:
    `(dataset, info)` as `load`.

  Raises:
    FileNotFoundError: `path` does not exist. NotADirectoryError: it is a file.
    ValueError: no images; an unreadable image (named) unless `skip_corrupt`; images of
      different sizes without `image_size` (two are named); an image outside any
      subfolder with `with_labels`; bad arguments.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  folder_splits = ('all', 'train_full', 'train', 'validation')
  if split == 'test':
    raise ValueError("A folder has no test split: put test images in a folder of their "
                     "own and load it with split='all'.")
  _check_common(split, folder_splits, batch_size, validation_fraction, f'folder {path}')
  _check_n_bits(n_bits)
  size = _check_image_size(image_size)
  if resize not in ('crop', 'resize'):
    raise ValueError(f"resize must be 'crop' or 'resize', got {resize!r}")
  if channels not in (None, 1, 3):
    raise ValueError(f'channels must be 1, 3 or None, got {channels!r}')
  root = os.fspath(path)
  if not os.path.exists(root):
    raise FileNotFoundError(f'Image folder {root!r} does not exist.')
  if not os.path.isdir(root):
    raise NotADirectoryError(f'{root!r} is not a folder of images.')

  files = _list_images(root)
  if not files:
    raise ValueError(f'No images (.png, .jpg, .jpeg) found under {root!r} (searched '
                     'recursively).')

  class_names = None
  if with_labels:
    tops = []
    for f in files:
      parts = os.path.relpath(f, root).split(os.sep)
      if len(parts) < 2:
        raise ValueError(f'with_labels=True labels images by their subfolder, but {f!r} '
                         f'is directly in {root!r}.')
      tops.append(parts[0])
    class_names = tuple(sorted(set(tops)))
    labels = np.array([class_names.index(t) for t in tops], np.int64)
  else:
    labels = np.full((len(files),), -1, np.int64)

  if split in ('train', 'validation'):
    kept, held = _fixed_holdout(len(files), validation_fraction, seed=0)
    chosen = held if split == 'validation' else kept
    if not len(chosen):
      raise ValueError(f'The {split!r} split of {root!r} is empty ({len(files)} images, '
                       f'validation_fraction={validation_fraction}).')
  else:
    chosen = np.arange(len(files))

  def header(f):
    try:
      with Image.open(f) as img:
        return (img.height, img.width), img.mode, None
    except Exception as e:  # PIL raises several types for non-images.
      return None, None, e

  def complain(f, e):
    message = f'Cannot read image {f!r}: {type(e).__name__}: {e}'
    if not skip_corrupt:
      raise ValueError(message + ' (pass skip_corrupt=True to leave it out)') from e
    _LOG.warning('%s; skipping it.', message)

  pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_workers))
  with pool:
    chosen_files = [files[i] for i in chosen]
    heads = list(pool.map(header, chosen_files))
    good = []
    for i, f, (hw, mode, err) in zip(chosen, chosen_files, heads):
      if err is not None:
        complain(f, err)
      else:
        good.append((i, f, hw, mode))
    if not good:
      raise ValueError(f'No readable images under {root!r}: all {len(chosen)} were '
                       'skipped as unreadable.')
    if channels is None:
      # From the first image of the whole folder, so every split agrees.
      first = header(files[0])
      channels = _channels_of_mode(first[1] if first[2] is None else good[0][3])
    if size is None:
      by_size = {}
      for _, f, hw, _ in good:
        by_size.setdefault(hw, f)
      if len(by_size) > 1:
        (hw1, f1), (hw2, f2) = list(by_size.items())[:2]
        raise ValueError(
            f'Images under {root!r} differ in size: {f1!r} is {hw1[0]}x{hw1[1]} and '
            f'{f2!r} is {hw2[0]}x{hw2[1]} (height x width); pass image_size to bring '
            'them to one size.')
      target = None
    else:
      target = size

    def decode(item):
      try:
        return _decode(item[1], channels, target, resize), None
      except Exception as e:  # Truncated or damaged data behind a valid header.
        return None, e

    decoded = list(pool.map(decode, good))

  arrays, indices = [], []
  for (i, f, _, _), (array, err) in zip(good, decoded):
    if err is not None:
      complain(f, err)
    else:
      arrays.append(array)
      indices.append(i)
  if not arrays:
    raise ValueError(f'No readable images under {root!r}: all {len(chosen)} were '
                     'skipped as unreadable.')
  images = reduce_bits(np.stack(arrays), n_bits).numpy()
  n = len(images)
  n_bins = n_bins_for('folder', n_bits)
  info = DatasetInfo(f'{FOLDER_PREFIX}{root}', split, tuple(images.shape[1:]), n_bins, n,
                     len(class_names) if class_names else None, class_names,
                     source=f'folder {root} ({n} images)')
  ds = _from_arrays(images, labels[np.asarray(indices)])
  return _finish(ds, n_bins=n_bins, num_examples=n, batch_size=int(batch_size),
                 shuffle=shuffle, shuffle_buffer=n, dequantize=dequantize, flip=flip,
                 seed=seed, with_labels=with_labels,
                 drop_remainder=drop_remainder, translate=int(translate),
                 translate_prob=float(translate_prob)), info
