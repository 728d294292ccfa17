"""Folders of PNG/JPEG images as a `tfp_glow.data` source (`'folder:PATH'`).

Everything is decoded up front and kept in memory, so a bad file is named before
training starts rather than failing an epoch later.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os

import numpy as np
import tensorflow as tf

from tfp_glow.data.pipeline import DEFAULT_VALIDATION_FRACTION
from tfp_glow.data.pipeline import FOLDER_PREFIX
from tfp_glow.data.pipeline import DatasetInfo
from tfp_glow.data.pipeline import _check_common
from tfp_glow.data.pipeline import _check_image_size
from tfp_glow.data.pipeline import _check_seed
from tfp_glow.data.pipeline import _finish
from tfp_glow.data.pipeline import _fixed_holdout
from tfp_glow.data.pipeline import _from_arrays
from tfp_glow.data.pipeline import n_bins_for
from tfp_glow.data.quantize import _check_n_bits
from tfp_glow.data.quantize import reduce_bits

__all__ = ['IMAGE_EXTENSIONS', 'load_folder']

_LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


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
  root, size = _check_arguments(path, split, batch_size, validation_fraction, n_bits,
                                seed, image_size, resize, channels)
  files = _list_images(root)
  if not files:
    raise ValueError(f'No images (.png, .jpg, .jpeg) found under {root!r} (searched '
                     'recursively).')
  labels, class_names = _labels(files, root, with_labels)
  chosen = _split_indices(files, split, validation_fraction, root)
  complain = _complainer(skip_corrupt)
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
    good = _readable(pool, files, chosen, complain, root)
    if channels is None:
      channels = _default_channels(files, good)
    target = size if size is not None else _one_size(good, root)
    images, indices = _decode_all(pool, good, channels, target, resize, complain,
                                  root, len(chosen))
  images = reduce_bits(images, n_bits).numpy()
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


# --------------------------------------------------------------------------------------
# The steps of load_folder, in order


def _check_arguments(path, split, batch_size, validation_fraction, n_bits, seed,
                     image_size, resize, channels):
  """Refuses bad arguments and a missing folder; returns `(root, size)`."""
  folder_splits = ('all', 'train_full', 'train', 'validation')
  if split == 'test':
    raise ValueError("A folder has no test split: put test images in a folder of their "
                     "own and load it with split='all'.")
  _check_common(split, folder_splits, batch_size, validation_fraction, f'folder {path}')
  _check_n_bits(n_bits)
  _check_seed(seed)
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
  return root, size


def _labels(files, root, with_labels):
  """`(labels, class_names)`: each file's top-level subfolder as its class (class
  names sorted), or -1 for every file and None without labels."""
  if not with_labels:
    return np.full((len(files),), -1, np.int64), None
  tops = []
  for f in files:
    parts = os.path.relpath(f, root).split(os.sep)
    if len(parts) < 2:
      raise ValueError(f'with_labels=True labels images by their subfolder, but {f!r} '
                       f'is directly in {root!r}.')
    tops.append(parts[0])
  class_names = tuple(sorted(set(tops)))
  return np.array([class_names.index(t) for t in tops], np.int64), class_names


def _split_indices(files, split, validation_fraction, root):
  """Indices (into the sorted `files`) of the split's images: a fixed holdout
  for 'train' / 'validation', every image otherwise."""
  if split not in ('train', 'validation'):
    return np.arange(len(files))
  kept, held = _fixed_holdout(len(files), validation_fraction, seed=0)
  chosen = held if split == 'validation' else kept
  if not len(chosen):
    raise ValueError(f'The {split!r} split of {root!r} is empty ({len(files)} images, '
                     f'validation_fraction={validation_fraction}).')
  return chosen


def _complainer(skip_corrupt):
  """What to do with an unreadable file: raise, naming it, or log and go on."""
  def complain(f, e):
    message = f'Cannot read image {f!r}: {type(e).__name__}: {e}'
    if not skip_corrupt:
      raise ValueError(message + ' (pass skip_corrupt=True to leave it out)') from e
    _LOG.warning('%s; skipping it.', message)

  return complain


def _header(f):
  """`((height, width), mode, None)` of an image file, or `(None, None, error)`."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(f) as img:
      return (img.height, img.width), img.mode, None
  except Exception as e:  # PIL raises several types for non-images.  # pylint: disable=broad-except
    return None, None, e


def _readable(pool, files, chosen, complain, root):
  """`(index, file, (height, width), mode)` of each chosen file whose header reads."""
  chosen_files = [files[i] for i in chosen]
  good = []
  for i, f, (hw, mode, err) in zip(chosen, chosen_files,
                                   pool.map(_header, chosen_files)):
    if err is not None:
      complain(f, err)
    else:
      good.append((i, f, hw, mode))
  if not good:
    raise ValueError(f'No readable images under {root!r}: all {len(chosen)} were '
                     'skipped as unreadable.')
  return good


def _default_channels(files, good):
  """Channels from the first image of the whole folder, so every split agrees
  (the first readable one of the split when that image does not read)."""
  first = _header(files[0])
  return _channels_of_mode(first[1] if first[2] is None else good[0][3])


def _one_size(good, root):
  """The size all `good` images share; two of different sizes are named."""
  by_size = {}
  for _, f, hw, _ in good:
    by_size.setdefault(hw, f)
  if len(by_size) > 1:
    (hw1, f1), (hw2, f2) = list(by_size.items())[:2]
    raise ValueError(
        f'Images under {root!r} differ in size: {f1!r} is {hw1[0]}x{hw1[1]} and '
        f'{f2!r} is {hw2[0]}x{hw2[1]} (height x width); pass image_size to bring '
        'them to one size.')
  return None


def _decode_all(pool, good, channels, target, resize, complain, root, n_chosen):
  """Every `good` image decoded (uint8 `[N, H, W, C]`) and its index; one whose
  data fails behind a valid header goes to `complain`."""
  def decode(item):
    try:
      return _decode(item[1], channels, target, resize), None
    except Exception as e:  # Truncated or damaged data behind a valid header.  # pylint: disable=broad-except
      return None, e

  arrays, indices = [], []
  for (i, f, _, _), (array, err) in zip(good, pool.map(decode, good)):
    if err is not None:
      complain(f, err)
    else:
      arrays.append(array)
      indices.append(i)
  if not arrays:
    raise ValueError(f'No readable images under {root!r}: all {n_chosen} were '
                     'skipped as unreadable.')
  return np.stack(arrays), indices
