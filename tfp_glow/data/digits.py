"""The embedded 8x8 digits (`digits.npz` beside this file) and their fixed splits.

The one source that needs neither network nor downloads, so training, the tests and the
examples run anywhere. Provenance and the split recipe: `tfp_glow/data/README.md` and
the `tfp_glow.data` docstring.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from tfp_glow.data.pipeline import DEFAULT_VALIDATION_FRACTION
from tfp_glow.data.pipeline import DIGITS_N_BINS
from tfp_glow.data.pipeline import SPLITS
from tfp_glow.data.pipeline import DatasetInfo
from tfp_glow.data.pipeline import _check_common
from tfp_glow.data.pipeline import _check_image_size
from tfp_glow.data.pipeline import _finish
from tfp_glow.data.pipeline import _fixed_holdout
from tfp_glow.data.pipeline import _from_arrays
from tfp_glow.data.pipeline import n_bins_for

__all__ = [
    'DIGITS_N_BINS',
    'DIGITS_NUM_EXAMPLES',
    'DIGITS_TEST_SIZE',
    'digits_indices',
]

DIGITS_NUM_EXAMPLES = 1797
DIGITS_TEST_SIZE = 360
_DIGITS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'digits.npz')


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  """The 1797 images `[N, 8, 8]` (uint8, 0..16) and labels, read once, read-only."""
  with np.load(_DIGITS_PATH) as f:
    images, labels = f['images'], f['labels']
  if images.shape != (DIGITS_NUM_EXAMPLES, 8, 8) or images.max() >= DIGITS_N_BINS:
    raise ValueError(f'{_DIGITS_PATH} is damaged: images {images.shape}, max '
                     f'{images.max()}; expected [1797, 8, 8] with values 0..16')
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels


def digits_indices(split: str,
                   validation_fraction: float = DEFAULT_VALIDATION_FRACTION) -> np.ndarray:
  """Sorted indices (into the 1797 digits) of a split; the recipe is in `tfp_glow.data`."""
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
