"""Tests for tfp_glow.data (digits, TFDS mocked and never the network, folders) and
tfp_glow.images (PNG grids)."""

import logging
import math
import os
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from tfp_glow import data
from tfp_glow import images
from tfp_glow.data import digits as data_digits
from tfp_glow.data import folder as data_folder
from tfp_glow.data import tfds as data_tfds


def _epoch(ds):
  """All batches of one pass, concatenated (labels too when the dataset has them)."""
  batches = list(ds.as_numpy_iterator())
  if isinstance(batches[0], tuple):
    return tuple(np.concatenate(parts) for parts in zip(*batches))
  return np.concatenate(batches)


def _digits(idx):
  images, labels = data_digits._digits_arrays()  # pylint: disable=protected-access
  return images[idx][..., None], labels[idx]


# --------------------------------------------------------------------------------------
# Digits


def test_digits_splits_sizes_deterministic_and_disjoint():
  split = {s: data.digits_indices(s) for s in data.SPLITS}
  assert {s: len(i) for s, i in split.items()} == {
      'test': 360, 'train_full': 1437, 'validation': 144, 'train': 1293}
  for s in data.SPLITS:
    np.testing.assert_array_equal(split[s], data.digits_indices(s))
    assert len(np.unique(split[s])) == len(split[s])
  assert not set(split['train_full']) & set(split['test'])
  assert not set(split['train']) & set(split['validation'])
  assert not set(split['validation']) & set(split['test'])
  assert set(split['train']) | set(split['validation']) == set(split['train_full'])
  assert set(split['train_full']) | set(split['test']) == set(range(1797))
  # The documented recipe, written out independently.
  np.testing.assert_array_equal(
      split['test'], np.sort(np.random.default_rng(0).permutation(1797)[:360]))
  assert len(data.digits_indices('validation', validation_fraction=0.2)) == 287


def test_digits_batches_shapes_values_and_remainder_kept():
  ds, info = data.load('digits', 'test', batch_size=64, shuffle=False)
  assert info == data.DatasetInfo('digits', 'test', (8, 8, 1), 17, 360, 10,
                                  source=info.source)
  assert info.num_dims == 64
  shapes = [b.shape for b in ds.as_numpy_iterator()]
  assert len(shapes) == math.ceil(360 / 64)
  assert shapes[0] == (64, 8, 8, 1) and shapes[-1] == (360 - 5 * 64, 8, 8, 1)
  x = _epoch(ds)
  assert x.dtype == np.float32
  assert x.min() >= -0.5 and x.max() <= 0.5
  ds, _ = data.load('digits', 'test', batch_size=64, drop_remainder=True)
  assert [b.shape[0] for b in ds.as_numpy_iterator()] == [64] * 5


def test_digits_train_and_validation_counts():
  _, train = data.load('digits', 'train')
  _, val = data.load('digits', 'validation', validation_fraction=0.25)
  _, full = data.load('digits', 'train_full')
  assert (train.num_examples, val.num_examples, full.num_examples) == (1293, 359, 1437)


def test_dequantisation_stays_in_its_bin_and_bin_centres():
  idx = data.digits_indices('test')
  want, _ = _digits(idx)
  ds, _ = data.load('digits', 'test', batch_size=100, shuffle=False, seed=0)
  x = _epoch(ds)
  np.testing.assert_array_equal(np.floor((x + 0.5) * 17).astype(np.uint8), want)
  centres = (want + 0.5) / 17 - 0.5
  assert np.abs(x - centres).max() > 0.4 / 17  # There is noise, spread over the bin.
  ds, _ = data.load('digits', 'test', batch_size=100, shuffle=False, dequantize=False)
  np.testing.assert_allclose(_epoch(ds), centres, atol=1e-6)


def test_dequantize_images_exact_at_the_bin_edges():
  for n_bins in (2, 17, 32, 256):
    k = tf.range(n_bins, dtype=tf.int32)[:, None] * tf.ones([1, 4000], tf.int32)
    x = data.dequantize_images(k, n_bins, seed=tf.constant([1, 2]))
    recovered = tf.cast(tf.floor((x + 0.5) * n_bins), tf.int32)
    np.testing.assert_array_equal(recovered.numpy(), k.numpy())
    assert float(tf.reduce_min(x)) >= -0.5 and float(tf.reduce_max(x)) < 0.5


def _by_image(x, n_bins=17):
  """Examples sorted by their integer image, so epochs in different orders compare."""
  ints = np.floor((x + 0.5) * n_bins).astype(np.uint8)
  order = sorted(range(len(x)), key=lambda i: ints[i].tobytes())
  return ints[order], x[order]


def test_training_noise_fresh_each_epoch_reproducible_with_seed():
  ds, _ = data.load('digits', 'test', batch_size=128, shuffle=True, seed=7)
  first, second = _epoch(ds), _epoch(ds)
  (ints1, x1), (ints2, x2) = _by_image(first), _by_image(second)
  # The same images (all 360 digits differ), with new noise on them, not just reordered.
  np.testing.assert_array_equal(ints1, ints2)
  assert not np.allclose(x1, x2)
  again, _ = data.load('digits', 'test', batch_size=128, shuffle=True, seed=7)
  np.testing.assert_array_equal(_epoch(again), first)


def test_evaluation_noise_identical_on_every_pass():
  ds, _ = data.load('digits', 'test', batch_size=64, shuffle=False, seed=3)
  first = list(ds.as_numpy_iterator())
  second = list(ds.as_numpy_iterator())
  assert len(first) == len(second) == math.ceil(360 / 64)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)
  again, _ = data.load('digits', 'test', batch_size=64, shuffle=False, seed=3)
  np.testing.assert_array_equal(_epoch(again), np.concatenate(first))


def test_evaluation_noise_does_not_depend_on_the_batch_size():
  small, _ = data.load('digits', 'test', batch_size=7, shuffle=False, seed=0)
  large, _ = data.load('digits', 'test', batch_size=64, shuffle=False, seed=0)
  x = _epoch(small)
  np.testing.assert_array_equal(x, _epoch(large))
  # seed=None is seed 0, and labels do not change the images.
  default, _ = data.load('digits', 'test', batch_size=360, shuffle=False,
                         with_labels=True)
  np.testing.assert_array_equal(_epoch(default)[0], x)
  # Flips and translations are per example too.
  aug = dict(shuffle=False, seed=2, flip=True, translate=1)
  a, _ = data.load('digits', 'test', batch_size=7, **aug)
  b, _ = data.load('digits', 'test', batch_size=64, **aug)
  np.testing.assert_array_equal(_epoch(a), _epoch(b))


def test_evaluation_noise_draw_k_is_seed_k():
  want, _ = _digits(data.digits_indices('test'))
  draws = []
  for seed in (0, 1):
    ds, _ = data.load('digits', 'test', batch_size=64, shuffle=False, seed=seed)
    draws.append(_epoch(ds))
  assert not np.allclose(draws[0], draws[1])
  for x in draws:
    np.testing.assert_array_equal(np.floor((x + 0.5) * 17).astype(np.uint8), want)
  # Example i's noise is the stateless draw from [seed, i], as documented.
  u = tf.random.stateless_uniform([8, 8, 1], seed=tf.constant([1, 5], tf.int64))
  u = np.clip(u.numpy(), 1e-4, 1 - 1e-4)
  np.testing.assert_allclose(draws[1][5], (want[5] + u) / 17 - 0.5, atol=1e-6)


def test_bad_seed_is_named():
  with pytest.raises(TypeError, match="'7'"):
    data.load('digits', 'test', seed='7')


def test_shuffle_differs_each_epoch_and_with_labels_match_images():
  idx = data.digits_indices('train')
  want_images, want_labels = _digits(idx)
  ds, info = data.load('digits', 'train', batch_size=500, seed=3, with_labels=True,
                       dequantize=False)
  assert info.num_classes == 10
  (x1, y1), (x2, y2) = _epoch(ds), _epoch(ds)
  assert y1.dtype == np.int64 and x1.shape == (1293, 8, 8, 1)
  assert not np.array_equal(y1, y2)
  np.testing.assert_array_equal(np.sort(y1), np.sort(want_labels))
  # Every (image, label) pair is one of the split's pairs.
  table = {(im.tobytes(), int(lab)) for im, lab in zip(want_images, want_labels)}
  ints = np.floor((x1 + 0.5) * 17).astype(np.uint8)
  assert all((im.tobytes(), int(lab)) in table for im, lab in zip(ints, y1))


def test_flip_mirrors_some_images():
  idx = data.digits_indices('test')
  want, _ = _digits(idx)
  ds, _ = data.load('digits', 'test', batch_size=360, shuffle=False, dequantize=False,
                    flip=True, seed=1)
  got = np.floor((_epoch(ds) + 0.5) * 17).astype(np.uint8)
  same = np.all(got == want, axis=(1, 2, 3))
  mirrored = np.all(got == want[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same | mirrored)
  assert np.sum(mirrored & ~same) > 100 and np.sum(same & ~mirrored) > 100


def test_n_bins_for_and_bad_n_bits():
  assert data.n_bins_for('digits') == 17
  assert data.n_bins_for('mnist') == 256
  assert data.n_bins_for('celeb_a', 5) == 32
  for bad in (0, 9):
    with pytest.raises(ValueError, match='n_bits must be in 1..8'):
      data.n_bins_for('cifar10', bad)
    with pytest.raises(ValueError, match='n_bits must be in 1..8'):
      data.load('mnist', n_bits=bad)
  with pytest.raises(ValueError, match='17 native levels'):
    data.load('digits', n_bits=4)


def test_unknown_dataset_and_split_list_the_choices():
  with pytest.raises(ValueError) as err:
    data.load('no_such_dataset_xyz', 'train')
  for choice in ('no_such_dataset_xyz', 'digits', 'cifar10', 'imagenet_resized/64x64',
                 'folder:'):
    assert choice in str(err.value)
  with pytest.raises(ValueError, match="'train_full'"):
    data.load('digits', 'dev')


def test_tfds_split_mapping():
  split = data_tfds._tfds_split  # pylint: disable=protected-access
  assert split('mnist', 'train', ('train', 'test'), 0.1) == 'train[:90%]'
  assert split('mnist', 'validation', ('train', 'test'), 0.1) == 'train[90%:]'
  assert split('mnist', 'train_full', ('train', 'test'), 0.1) == 'train'
  assert split('celeb_a', 'validation', ('train', 'validation', 'test'), 0.1) == (
      'validation')
  assert split('imagenet_resized/32x32', 'test', ('train', 'validation'), 0.1) == (
      'validation')
  assert split('imagenet_resized/32x32', 'validation', ('train', 'validation'),
               0.25) == 'train[75%:]'


# --------------------------------------------------------------------------------------
# TFDS, mocked: nothing is read from or written to the network.


def _mock_raw(name, n):
  """The images the mock yields, straight from TFDS (the mock is deterministic)."""
  raw = tfds.load(name, split='train', shuffle_files=False)
  return np.stack([ex['image'] for ex in raw.take(n).as_numpy_iterator()])


def test_tfds_mnist_shapes_and_exact_bit_reduction(tmp_path):
  with tfds.testing.mock_data(num_examples=10):
    raw = _mock_raw('mnist', 10)
    ds, info = data.load('mnist', 'train', data_dir=str(tmp_path), n_bits=3,
                         batch_size=4, shuffle=False, dequantize=False)
    got = _epoch(ds)
    assert [b.shape[0] for b in ds.as_numpy_iterator()] == [4, 4, 2]
  assert info.image_shape == (28, 28, 1) and info.n_bins == 8
  assert info.num_examples == 10 and info.num_classes == 10
  assert info.source == 'tfds:mnist train[:90%]'
  assert raw.max() > 200  # The mock spans 8 bits, so the reduction is exercised.
  expected = (np.floor(raw / 32.0) + 0.5) / 8 - 0.5
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_tfds_cifar10_labels_resize_and_noise(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    raw = _mock_raw('cifar10', 6)
    ds, info = data.load('cifar10', 'test', data_dir=str(tmp_path), n_bits=5,
                         batch_size=6, shuffle=False, with_labels=True, seed=2)
    x, y = _epoch(ds)
    small, small_info = data.load('cifar10', 'validation', data_dir=str(tmp_path),
                                  image_size=16, batch_size=3)
    small_batch = next(iter(small))
  assert x.shape == (6, 32, 32, 3) and info.n_bins == 32
  np.testing.assert_array_equal(np.floor((x + 0.5) * 32), raw // 8)
  assert y.dtype == np.int64 and np.all((0 <= y) & (y < 10))
  assert info.num_classes == 10 and info.source == 'tfds:cifar10 test'
  assert small_batch.shape == (3, 16, 16, 3) and small_info.image_shape == (16, 16, 3)
  assert small_info.source == 'tfds:cifar10 train[90%:]'


def test_tfds_celeb_a_is_cropped_and_has_no_labels(tmp_path):
  with tfds.testing.mock_data(num_examples=2):
    ds, info = data.load('celeb_a', 'train', data_dir=str(tmp_path), batch_size=2)
    assert next(iter(ds)).shape == (2, 64, 64, 3)
    with pytest.raises(ValueError, match='no class "label"'):
      data.load('celeb_a', 'train', data_dir=str(tmp_path), with_labels=True)
  assert info.image_shape == (64, 64, 3) and info.num_classes is None


def test_tfds_missing_data_fails_fast_with_instructions(tmp_path):
  # download=False is the default: TFDS never touches the network, so this cannot hang.
  start = time.monotonic()
  with pytest.raises(FileNotFoundError) as err:
    data.load('mnist', 'train', data_dir=str(tmp_path))
  assert time.monotonic() - start < 20
  message = str(err.value)
  assert "'mnist'" in message and str(tmp_path) in message
  assert 'download_and_prepare' in message and 'download=True' in message


# --------------------------------------------------------------------------------------
# Folders


def _png(path, size=(12, 10), mode='RGB', value=0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(value)
  shape = (size[0], size[1], 3) if mode == 'RGB' else size
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
  return path


def test_folder_png_and_jpeg_with_labels(tmp_path):
  a = _png(str(tmp_path / 'cats' / 'a.png'), value=1)
  _png(str(tmp_path / 'cats' / 'deeper' / 'b.PNG'), value=2)
  (tmp_path / 'dogs').mkdir()
  Image.fromarray(np.full((12, 10, 3), 200, np.uint8)).save(tmp_path / 'dogs' / 'c.jpg')
  (tmp_path / 'dogs' / 'notes.txt').write_text('not an image, and ignored')
  ds, info = data.load_folder(str(tmp_path), batch_size=2, shuffle=False,
                              with_labels=True, dequantize=False)
  x, y = _epoch(ds)
  assert info.image_shape == (12, 10, 3) and info.num_examples == 3
  assert info.class_names == ('cats', 'dogs') and info.num_classes == 2
  np.testing.assert_array_equal(y, [0, 0, 1])
  np.testing.assert_array_equal(np.floor((x[0] + 0.5) * 256),
                                np.asarray(Image.open(a)))
  assert abs(float(np.floor((x[2] + 0.5) * 256).mean()) - 200) < 3  # JPEG is lossy.
  via_load, via_info = data.load(f'folder:{tmp_path}', 'all', batch_size=8)
  assert next(iter(via_load)).shape == (3, 12, 10, 3)
  assert via_info.name == f'folder:{tmp_path}'


def test_folder_grey_channels_split_and_n_bits(tmp_path):
  for i in range(20):
    _png(str(tmp_path / f'{i:02d}.png'), size=(8, 6), mode='L', value=i)
  _, info = data.load_folder(str(tmp_path))
  assert info.image_shape == (8, 6, 1) and info.num_classes is None
  _, train = data.load_folder(str(tmp_path), 'train', validation_fraction=0.25)
  _, val = data.load_folder(str(tmp_path), 'validation', validation_fraction=0.25)
  assert (train.num_examples, val.num_examples) == (15, 5)
  ds, rgb = data.load_folder(str(tmp_path), channels=3, n_bits=4, dequantize=False,
                             shuffle=False, batch_size=20)
  x = next(iter(ds)).numpy()
  assert rgb.image_shape == (8, 6, 3) and rgb.n_bins == 16
  want = np.asarray(Image.open(tmp_path / '00.png')) // 16
  np.testing.assert_array_equal(np.floor((x[0, ..., 1] + 0.5) * 16), want)
  with pytest.raises(ValueError, match='no test split'):
    data.load_folder(str(tmp_path), 'test')


def test_folder_resize_and_crop_give_the_requested_shape(tmp_path):
  _png(str(tmp_path / 'wide.png'), size=(20, 40), value=1)
  _png(str(tmp_path / 'tall.png'), size=(30, 10), value=2)
  for resize in ('crop', 'resize'):
    ds, info = data.load_folder(str(tmp_path), image_size=(8, 12), resize=resize,
                                batch_size=4)
    assert next(iter(ds)).shape == (2, 8, 12, 3) and info.image_shape == (8, 12, 3)
  # Cropping keeps proportions: a left-black / right-white image cropped to a square
  # keeps both halves; stretching keeps them too, so compare a centre stripe instead.
  stripes = np.zeros((10, 30), np.uint8)
  stripes[:, 10:20] = 255
  Image.fromarray(stripes).save(tmp_path / 'stripes.png')
  crop = data_folder._decode(str(tmp_path / 'stripes.png'), 1, (10, 10), 'crop')  # pylint: disable=protected-access
  stretch = data_folder._decode(str(tmp_path / 'stripes.png'), 1, (10, 10), 'resize')  # pylint: disable=protected-access
  assert crop.min() == 255  # Only the white centre third survives the square crop.
  assert stretch.min() == 0


def test_folder_mixed_sizes_name_two_files(tmp_path):
  _png(str(tmp_path / 'a.png'), size=(8, 8))
  _png(str(tmp_path / 'b.png'), size=(8, 8))
  _png(str(tmp_path / 'c.png'), size=(9, 8))
  with pytest.raises(ValueError, match='differ in size') as err:
    data.load_folder(str(tmp_path))
  assert 'c.png' in str(err.value) and ('a.png' in str(err.value))
  assert 'image_size' in str(err.value)


def test_folder_corrupt_files_named_or_skipped(tmp_path, caplog):
  _png(str(tmp_path / 'good.png'), size=(8, 8))
  (tmp_path / 'bad.png').write_bytes(b'this is not a png')
  _png(str(tmp_path / 'whole.png'), size=(8, 8), value=5)
  truncated = (tmp_path / 'whole.png').read_bytes()
  (tmp_path / 'truncated.png').write_bytes(truncated[:len(truncated) // 2])
  with pytest.raises(ValueError, match='bad.png') as err:
    data.load_folder(str(tmp_path))
  assert 'skip_corrupt' in str(err.value)
  (tmp_path / 'bad.png').unlink()
  with pytest.raises(ValueError, match='truncated.png'):
    data.load_folder(str(tmp_path))
  (tmp_path / 'bad.png').write_bytes(b'this is not a png')
  with caplog.at_level(logging.WARNING, logger='tfp_glow.data'):
    ds, info = data.load_folder(str(tmp_path), skip_corrupt=True)
  assert info.num_examples == 2 and next(iter(ds)).shape == (2, 8, 8, 3)
  warned = ' '.join(r.getMessage() for r in caplog.records)
  assert 'bad.png' in warned and 'truncated.png' in warned


def test_folder_missing_empty_and_unlabelled(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    data.load_folder(str(tmp_path / 'nowhere'))
  (tmp_path / 'empty' / 'sub').mkdir(parents=True)
  (tmp_path / 'empty' / 'readme.txt').write_text('no images here')
  with pytest.raises(ValueError, match='No images'):
    data.load_folder(str(tmp_path / 'empty'))
  _png(str(tmp_path / 'flat' / 'a.png'))
  with pytest.raises(ValueError, match='directly in'):
    data.load_folder(str(tmp_path / 'flat'), with_labels=True)
  (tmp_path / 'onlybad').mkdir()
  (tmp_path / 'onlybad' / 'x.jpg').write_bytes(b'garbage')
  with pytest.raises(ValueError, match='No readable images'):
    data.load_folder(str(tmp_path / 'onlybad'), skip_corrupt=True)


# --------------------------------------------------------------------------------------
# Back to pixels


def test_postprocess_inverts_dequantisation():
  x8 = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
  x = data.dequantize_images(x8, 256, seed=tf.constant([3, 4]))
  np.testing.assert_array_equal(data.postprocess(x, 256).numpy(), x8)
  k = np.arange(17)
  x17 = data.dequantize_images(k, 17, noise=False)
  np.testing.assert_array_equal(data.postprocess(x17, 17).numpy(),
                                np.round(k * 255 / 16).astype(np.uint8))
  out = data.postprocess(np.array([-3.0, -0.5, 0.4999, 7.0]), 17).numpy()
  np.testing.assert_array_equal(out, [0, 0, 255, 255])
  with pytest.raises(ValueError, match='n_bins'):
    data.postprocess(x, 1)


def test_save_grid_png(tmp_path):
  images_in = np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
  path = images.save_grid_png(images_in, str(tmp_path / 'out' / 'grid.png'), nrow=3,
                              scale=1)
  grid = np.asarray(Image.open(path))
  assert grid.shape == (2 * 5 + 1, 3 * 7 + 1, 3)
  np.testing.assert_array_equal(grid[1:5, 1:7], images_in[0])
  np.testing.assert_array_equal(grid[6:10, 8:14], images_in[4])
  assert os.listdir(tmp_path / 'out') == ['grid.png']  # No temporary file left over.
  grey = images.save_grid_png(images_in[..., :1], str(tmp_path / 'grey.png'))
  assert Image.open(grey).mode == 'L'
  with pytest.raises(TypeError, match='postprocess'):
    images.save_grid_png(images_in.astype(np.float32), str(tmp_path / 'x.png'))
  for bad in (0, 1.5, True):
    with pytest.raises(ValueError, match=f'scale must be .* got {bad!r}'):
      images.save_grid_png(images_in, str(tmp_path / 'x.png'), scale=bad)


def test_save_grid_png_enlarges_small_tiles(tmp_path):
  digits = (np.arange(5 * 8 * 8) % 251).astype(np.uint8).reshape(5, 8, 8)
  path = images.save_grid_png(digits, str(tmp_path / 'digits.png'), nrow=5)
  with Image.open(path) as img:
    # 8x8 tiles are drawn 64x64 (scale 8); the 1-pixel padding is not scaled.
    assert img.size == (5 * 65 + 1, 65 + 1)
    grid = np.asarray(img)
  np.testing.assert_array_equal(grid[1:65, 1:65], digits[0].repeat(8, 0).repeat(8, 1))
  np.testing.assert_array_equal(grid[1:65, 66:130], digits[1].repeat(8, 0).repeat(8, 1))
  assert images.default_scale(8, 8) == 8 and images.default_scale(28, 28) == 3
  assert images.default_scale(64, 100) == 1 and images.default_scale(256, 256) == 1
  big = np.zeros((2, 64, 64, 3), np.uint8)
  with Image.open(images.save_grid_png(big, str(tmp_path / 'big.png'), nrow=2)) as img:
    assert img.size == (2 * 65 + 1, 65 + 1)
  with Image.open(images.save_grid_png(digits, str(tmp_path / 's3.png'), nrow=5,
                                       scale=3, padding=2)) as img:
    assert img.size == (5 * 26 + 2, 26 + 2)


def test_save_grid_png_mode_follows_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    path = images.save_grid_png(np.zeros((1, 8, 8), np.uint8), str(tmp_path / 'a.png'))
    assert os.stat(path).st_mode & 0o777 == 0o644
    os.umask(0o077)
    path = images.save_grid_png(np.zeros((1, 8, 8), np.uint8), str(tmp_path / 'b.png'))
    assert os.stat(path).st_mode & 0o777 == 0o600
  finally:
    os.umask(old)


def _np_shift(img, dy, dx):
  out = np.zeros_like(img)
  h, w = img.shape[:2]
  for i in range(h):
    for j in range(w):
      si, sj = i + dy, j + dx
      if 0 <= si < h and 0 <= sj < w:
        out[i, j] = img[si, sj]
  return out


def test_random_translate_is_a_zero_padded_shift():
  rng = np.random.default_rng(3)
  images = rng.integers(1, 17, size=[32, 8, 8, 1]).astype(np.int32)
  out = data.random_translate(tf.constant(images), 1, tf.constant([5, 6]),
                              prob=1.0).numpy()
  shifts = set()
  for img, moved in zip(images, out):
    matches = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
               if np.array_equal(_np_shift(img, dy, dx), moved)]
    assert len(matches) == 1, 'each output is exactly one shift of its input'
    shifts.add(matches[0])
  assert len(shifts) > 3, 'the offsets vary between examples'
  same = data.random_translate(tf.constant(images), 1, tf.constant([5, 6]),
                               prob=0.0).numpy()
  np.testing.assert_array_equal(same, images)


def test_translate_zero_leaves_the_pipeline_unchanged():
  plain, _ = data.load('digits', 'train', batch_size=64, seed=4)
  zero, _ = data.load('digits', 'train', batch_size=64, seed=4, translate=0)
  moved, _ = data.load('digits', 'train', batch_size=64, seed=4, translate=1)
  a, b, c = (next(iter(ds)).numpy() for ds in (plain, zero, moved))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  with pytest.raises(ValueError, match='translate'):
    data.load('digits', 'train', translate=-1)
  with pytest.raises(ValueError, match='translate_prob'):
    data.load('digits', 'train', translate=1, translate_prob=1.5)


@pytest.mark.parametrize('name, shape, split', [
    ('svhn_cropped', (32, 32, 3), 'test'),
    ('imagenet_resized/32x32', (32, 32, 3), 'train'),
    ('imagenet_resized/64x64', (64, 64, 3), 'test'),
])
def test_tfds_other_named_datasets(tmp_path, name, shape, split):
  with tfds.testing.mock_data(num_examples=5):
    ds, info = data.load(name, split, data_dir=str(tmp_path), batch_size=5,
                         shuffle=False, with_labels=True)
    images, labels = next(iter(ds))
  assert info.image_shape == shape
  assert images.shape[1:] == shape and images.shape[0] == labels.shape[0] > 0
  assert np.all(np.abs(images.numpy()) <= 0.5)
  assert info.n_bins == 256


# --------------------------------------------------------------------------------------
# 'photos': patches of the photos scikit-learn and matplotlib ship


def test_photos_splits_sizes_labels_and_no_shared_pixels():
  from tfp_glow.data import photos  # pylint: disable=g-import-not-at-top
  sets = {s: photos.photo_patches(s) for s in ('train', 'validation', 'test')}
  assert {s: len(v[0]) for s, v in sets.items()} == {
      'train': 5746, 'validation': 1014, 'test': 1014}
  for images, labels in sets.values():
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
    assert set(labels.tolist()) == {0, 1, 2}
  full = photos.photo_patches('train_full')[0]
  np.testing.assert_array_equal(full, np.concatenate([sets['train'][0],
                                                      sets['validation'][0]]))
  # Independently of the module's block bookkeeping: find every patch's position in
  # its photo by brute force on a subsample and mark the pixels each split covers;
  # the held-out pixels must never be covered by a training patch.
  photo = photos._read_rgb(photos.photo_paths()[2])  # pylint: disable=protected-access
  h, w = photo.shape[:2]
  windows = np.lib.stride_tricks.sliding_window_view(photo, (32, 32, 3))[..., 0, :, :, :]
  covered = {}
  for split, (images, labels) in sets.items():
    mask = np.zeros((h, w), bool)
    for patch in images[labels == 2][::7]:
      ys, xs = np.nonzero(np.all(windows[:, :, 0, 0] == patch[0, 0], axis=-1))
      hits = [(y, x) for y, x in zip(ys, xs) if np.array_equal(windows[y, x], patch)]
      assert hits, 'a patch that is not in its photo'
      for y, x in hits:
        mask[y:y + 32, x:x + 32] = True
    covered[split] = mask
  assert not (covered['train'] & covered['test']).any()
  assert not (covered['train'] & covered['validation']).any()
  assert not (covered['validation'] & covered['test']).any()


def test_photos_load_image_size_n_bits_and_determinism():
  ds, info = data.load('photos', 'test', batch_size=50, shuffle=False, seed=3)
  assert (info.image_shape, info.n_bins, info.num_examples, info.num_classes) == (
      (32, 32, 3), 256, 1014, 3)
  a, b = next(iter(ds)).numpy(), next(iter(ds)).numpy()
  np.testing.assert_array_equal(a, b)
  assert a.min() >= -0.5 and a.max() < 0.5
  small, info16 = data.load('photos', 'validation', image_size=16, n_bits=5,
                            batch_size=8, shuffle=False, dequantize=False)
  assert info16.image_shape == (16, 16, 3) and info16.n_bins == 32
  bins = (next(iter(small)).numpy() + 0.5) * 32 - 0.5
  np.testing.assert_allclose(bins, np.round(bins), atol=1e-4)
  # 16x16 patches are the 32x32 ones averaged, not other photos: means agree.
  from tfp_glow.data import photos  # pylint: disable=g-import-not-at-top
  big = photos.photo_patches('validation')[0][:8].astype(np.float64)
  half = photos.photo_patches('validation', image_size=16)[0][:8].astype(np.float64)
  np.testing.assert_allclose(half.mean(axis=(1, 2)), big.mean(axis=(1, 2)), atol=3.0)
  with pytest.raises(ValueError, match='at most 32'):
    data.load('photos', 'train', image_size=64)
  with pytest.raises(ValueError, match="split 'nope'"):
    data.load('photos', 'nope')
