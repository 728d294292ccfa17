"""`'photos'`: 32x32 RGB patches of three real photographs that ship with scikit-learn
and matplotlib, split by region of each photo, offline and deterministic.

The embedded digits are 8x8 and grey; people train a Glow on their own RGB photos. This
source gives every program a small set of natural-image patches that needs no download:

| photo | file | size (W x H) | licence |
|---|---|---|---|
| a Chinese temple | scikit-learn `datasets/images/china.jpg` | 640 x 427 | CC BY 2.0, danielbuechele (Flickr) |
| a flower | scikit-learn `datasets/images/flower.jpg` | 640 x 427 | CC BY 2.0, vultilion (Flickr) |
| Grace Hopper | matplotlib `mpl-data/sample_data/grace_hopper.jpg` | 512 x 600 | public domain (U.S. Navy photograph) |

The recipe (all fixed; nothing depends on a seed the user passes):

1. Each photo is cut into non-overlapping `BLOCK` x `BLOCK` (128) blocks from its top-left
   corner (the ragged right and bottom margins are dropped): 15 blocks for each 640 x 427
   photo, 16 for the 512 x 600 one.
2. The blocks of photo `p` are permuted by `np.random.default_rng(p)`; the first 2 are
   the test region, the next 2 the validation region, the rest training.
3. Inside every block, 32 x 32 patches at a stride of 8 pixels (13 x 13 = 169 per block).
   A patch never leaves its block, so no test or validation patch shares a pixel with a
   training patch (neighbouring training patches overlap each other: that is
   augmentation, not leakage).

Splits: `train` 5,746 patches (34 blocks), `validation` 1,014 (6), `test` 1,014 (6),
`train_full` = train + validation. Labels are the photo (0 china, 1 flower, 2 Grace
Hopper). `image_size` below 32 (e.g. 16, for quick grids) resizes every patch with the
pipelines' antialiased bilinear resize; larger sizes are refused (they would invent
detail). 8-bit, so `n_bins` = 256 unless `n_bits` reduces it.

Needs scikit-learn (for two of the photos; it is imported only to find its files).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import tensorflow as tf

from tfp_glow.data.pipeline import DatasetInfo
from tfp_glow.data.pipeline import _check_image_size
from tfp_glow.data.pipeline import _finish
from tfp_glow.data.pipeline import _from_arrays
from tfp_glow.data.pipeline import n_bins_for
from tfp_glow.data.pipeline import resize_uint8
from tfp_glow.data.quantize import reduce_bits

__all__ = ['PHOTOS', 'PATCH', 'BLOCK', 'STRIDE', 'photo_paths', 'photo_patches']

PATCH = 32
BLOCK = 128
STRIDE = 8
# (name, package, path inside the package): the photos in label order.
PHOTOS = (
    ('china', 'sklearn', ('datasets', 'images', 'china.jpg')),
    ('flower', 'sklearn', ('datasets', 'images', 'flower.jpg')),
    ('grace_hopper', 'matplotlib', ('mpl-data', 'sample_data', 'grace_hopper.jpg')),
)
_HELD_OUT_BLOCKS = 2  # per photo, for each of test and validation
_SPLITS = ('train', 'validation', 'test', 'train_full')


def photo_paths() -> list[str]:
  """The three JPEG files, found in the installed packages without importing them."""
  paths = []
  for name, package, parts in PHOTOS:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
      raise ImportError(
          f"The 'photos' dataset cuts {name}.jpg, which ships with {package}; install it "
          f'(pip install {"scikit-learn" if package == "sklearn" else package}).')
    path = os.path.join(os.path.dirname(spec.origin), *parts)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"The 'photos' dataset needs {path}, which this {package} "
                              'installation lacks.')
    paths.append(path)
  return paths


def _read_rgb(path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as img:
    return np.asarray(img.convert('RGB'), dtype=np.uint8)


def _blocks_by_split(num_blocks: int, photo_index: int) -> dict[str, np.ndarray]:
  perm = np.random.default_rng(photo_index).permutation(num_blocks)
  k = _HELD_OUT_BLOCKS
  return {'test': perm[:k], 'validation': perm[k:2 * k], 'train': perm[2 * k:]}


@functools.lru_cache(maxsize=1)
def _all_patches() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Every split's 32x32 uint8 patches `[N, 32, 32, 3]` and labels, cut once."""
  out = {s: ([], []) for s in ('train', 'validation', 'test')}
  offsets = range(0, BLOCK - PATCH + 1, STRIDE)
  for label, path in enumerate(photo_paths()):
    photo = _read_rgb(path)
    rows, cols = photo.shape[0] // BLOCK, photo.shape[1] // BLOCK
    for split, blocks in _blocks_by_split(rows * cols, label).items():
      for b in sorted(blocks):
        top, left = (b // cols) * BLOCK, (b % cols) * BLOCK
        for dy in offsets:
          for dx in offsets:
            out[split][0].append(photo[top + dy:top + dy + PATCH,
                                       left + dx:left + dx + PATCH])
            out[split][1].append(label)
  result = {}
  for split, (images, labels) in out.items():
    images = np.stack(images)
    labels = np.asarray(labels, np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    result[split] = (images, labels)
  return result


def photo_patches(split: str, image_size: int | tuple[int, int] | None = None,
                  n_bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Integer patches `[N, H, W, 3]` (values `0..n_bins-1`) and labels of a split."""
  if split not in _SPLITS:
    raise ValueError(f"Unknown split {split!r} for 'photos'; choose one of "
                     f'{list(_SPLITS)}')
  size = _check_image_size(image_size)
  if size is not None and (size[0] > PATCH or size[1] > PATCH):
    raise ValueError(f"The 'photos' patches are {PATCH}x{PATCH}; image_size must be at "
                     f'most {PATCH} (got {image_size!r}): upscaling would invent detail.')
  patches = _all_patches()
  parts = ('train', 'validation') if split == 'train_full' else (split,)
  images = np.concatenate([patches[p][0] for p in parts])
  labels = np.concatenate([patches[p][1] for p in parts])
  if size is not None and size != (PATCH, PATCH):
    if size[0] != size[1]:
      raise ValueError("The 'photos' patches are square; image_size must be square too "
                       f'(got {image_size!r}).')
    images = resize_uint8(tf.constant(images), size).numpy()
  images = reduce_bits(tf.constant(images), n_bits).numpy()
  return images, labels


def _load_photos(split, *, n_bits, image_size, shuffle, seed, with_labels, **tail):
  n_bins = n_bins_for('photos', n_bits)
  images, labels = photo_patches(split, image_size, n_bits)
  ds = _from_arrays(images, labels)
  info = DatasetInfo('photos', split, tuple(int(s) for s in images.shape[1:]), n_bins,
                     len(images), len(PHOTOS),
                     source=f'photos ({split}: {len(images)} patches of china, flower, '
                            'grace_hopper)')
  return _finish(ds, n_bins=n_bins, num_examples=len(images), shuffle=shuffle,
                 shuffle_buffer=len(images), seed=seed, with_labels=with_labels,
                 **tail), info
