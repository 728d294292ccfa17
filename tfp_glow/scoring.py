"""Scoring images with a trained Glow: out-of-distribution and anomaly scores.

A flow's likelihood alone is a poor out-of-distribution (OOD) score: Nalisnick
et al. (ICLR 2019) found that a Glow trained on CIFAR-10 gives SVHN *higher*
likelihood than CIFAR-10's own test images. The likelihood is dominated by how
simple an image is (smooth, flat, few levels), not by whether it looks like the
training data. This module gives the naive score and the standard corrections,
each computed from the model's one likelihood (`Glow.log_prob_parts`, through
`tfp_glow.bits_per_dim`), each oriented so that **higher = more anomalous**:

| method         | score of an image x                                    | reference |
|----------------|--------------------------------------------------------|-----------|
| `'bpd'`        | bits/dim of x under the model (the naive score)        | -         |
| `'typicality'` | `|bpd(x) - mean| / std`, mean and std of the bits/dim of held-out in-distribution images (`fit_reference`); two-sided: too likely is as suspect as too unlikely | Nalisnick et al. 2019b |
| `'complexity'` | `bpd(x) - png_bpd(x)`: bits/dim under the model minus bits/dim of x compressed losslessly by PNG (a generic compressor's estimate of x's complexity) | Serra et al. 2020 |
| `'ratio'`      | `bpd(x) - bpd_background(x)`: minus the bits/dim under a second, background model (e.g. trained on perturbed or generic images), i.e. the negative log-likelihood ratio per dimension | Ren et al. 2019 |

`evaluate_ood(scores_in, scores_out)` turns the scores of an in-distribution set
and an OOD set into AUROC, AUPR and FPR at 95% TPR, with the OOD images as the
positive class.

#### Images

Every function takes images as the model sees them: float `[N, H, W, C]` in
`[-0.5, 0.5]`, i.e. integer bin indices `k` in `0..n_bins-1` dequantised,
`x = (k + u) / n_bins - 0.5` (what the `tfp_glow.data` pipelines yield; use
`tfp_glow.data.dequantize_images` or `dequantize_examples` for your own integer
images). Integer arrays are refused rather than guessed at: whether they hold
8-bit pixels or bin indices, and whether to add noise, changes every bits/dim.
Use the same dequantisation (noise, or bin centres) for the reference and for
the images you score, or typicality compares unlike numbers.

#### The PNG complexity

`png_bits_per_dim` encodes each image's **bin indices** `k = floor((x + 0.5) *
n_bins)` themselves as the 8-bit PNG sample values (grey for C = 1, grey+alpha
for 2, RGB for 3, RGBA for 4), with `tf.io.encode_png` at compression level
`PNG_COMPRESSION` (9, zlib's best), and counts `8 * len(png bytes) / D` bits
per dimension, D = H * W * C. The indices are not spread to 0..255 first: the
same symbols the model sees reach the compressor (for 8-bit data, n_bins = 256,
it is the image itself), and spreading 17 levels over 0..255 would only make
PNG's prediction filters less effective. The length includes PNG's fixed
container (signature, IHDR, IDAT framing, IEND, zlib header: about 57 bytes),
which is a large constant for tiny images (about 7 bits/dim at 8x8x1); a
constant shifts every image's complexity score equally and changes no ranking,
so no metric here depends on it.

#### Example

```python
model, config, _ = tfp_glow.run_dir.load_trained('runs/digits')
val, _ = tfp_glow.data.load('digits', 'validation', shuffle=False, seed=0)
ref = scoring.fit_reference(model, val)
scores = scoring.score(model, images, method='complexity')
scoring.evaluate_ood(scores_in, scores_out)   # {'auroc': ..., 'aupr': ..., 'fpr95': ...}
```
"""

import json
import math
import os

import numpy as np
import tensorflow as tf

from tfp_glow import distribution as dist_lib
from tfp_glow.data import quantize

__all__ = [
    'METHODS', 'SYNTHETIC_SETS', 'PNG_COMPRESSION', 'REFERENCE_NAME',
    'QUANTILES', 'bits_per_dim', 'png_bits_per_dim', 'fit_reference',
    'save_reference', 'load_reference', 'check_reference', 'score',
    'score_all', 'evaluate_ood', 'synthetic_bins', 'dequantize_examples',
]

METHODS = ('bpd', 'typicality', 'complexity', 'ratio')
SYNTHETIC_SETS = ('noise', 'constant', 'inverted', 'sklearn_patches')
PNG_COMPRESSION = 9
REFERENCE_NAME = 'scoring_reference.json'
QUANTILES = (0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)
_REFERENCE_KIND = 'tfp_glow.scoring.reference'
DEFAULT_BATCH_SIZE = 256


# ------------------------------------------------------------------------------
# What can be scored: a GlowModel, a distribution / Glow, or a loaded export


class _Source:
  """A model reduced to what scoring needs: image shape, n_bins, bits/dim."""

  def __init__(self, what, n_bins=None):
    self.what = what
    signatures = getattr(what, 'signatures', None)
    if signatures is not None and 'log_prob' in signatures:
      # A SavedModel written by tfp_glow.export, loaded with tf.saved_model.
      meta = signatures['metadata']()
      self.image_shape = tuple(int(v) for v in meta['image_shape'].numpy())
      self.n_bins = int(meta['n_bins'].numpy())
      if int(meta['num_classes'].numpy()):
        raise ValueError(_CONDITIONAL)
      if n_bins is not None and int(n_bins) != self.n_bins:
        raise ValueError(f'n_bins={n_bins} contradicts the export\'s n_bins='
                         f'{self.n_bins}; leave it out.')
      lp = signatures['log_prob']
      self._bpd = lambda x: lp(images=tf.constant(x))['bits_per_dim'].numpy()
      return
    glow, n_bins, initialized = dist_lib.resolve_model(what, n_bins,
                                                       what='Scoring')
    if glow.num_classes is not None:
      raise ValueError(_CONDITIONAL)
    if not initialized:
      raise ValueError('Refusing to score with an uninitialised model (ActNorm '
                       'never set): its bits/dim would mean nothing.')
    self.image_shape = tuple(int(s) for s in glow.image_shape)
    self.n_bins = int(n_bins)
    shape, nb, dtype = self.image_shape, self.n_bins, glow.dtype

    def bpd(x):
      log_prob = glow.log_prob_parts(tf.cast(x, dtype)).log_prob
      return dist_lib.bits_per_dim(log_prob, shape, nb).numpy()

    self._bpd = bpd

  def bits_per_dim(self, x):
    return np.asarray(self._bpd(x), np.float64)


_CONDITIONAL = ('Class-conditional models are not supported by scoring: an OOD '
                'score needs the marginal p(x), and these models give p(x | y). '
                'Score with an unconditional model.')


def _source(what, n_bins=None):
  return what if isinstance(what, _Source) else _Source(what, n_bins)


# ------------------------------------------------------------------------------
# Images in, checked


def _check_images(x, image_shape, what='images'):
  """float [N, H, W, C] in [-0.5, 0.5], finite, of the model's shape."""
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.floating):
    raise TypeError(
        f'{what}: expected float images in [-0.5, 0.5] (dequantised bin indices, '
        f'as tfp_glow.data yields), got dtype {x.dtype}. Integer images are not '
        'guessed at: dequantise them with tfp_glow.scoring.dequantize_examples '
        '(or tfp_glow.data.dequantize_images).')
  if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape):
    raise ValueError(f'{what}: images must be [N, {", ".join(map(str, image_shape))}] '
                     f'for this model, got shape {list(x.shape)}.')
  if x.shape[0] == 0:
    raise ValueError(f'{what}: no images (an empty batch has no score).')
  bad = ~np.isfinite(x)
  if bad.any():
    raise ValueError(f'{what}: {int(bad.sum())} pixel values are NaN or Inf.')
  lo, hi = float(x.min()), float(x.max())
  if lo < -0.5 or hi > 0.5:
    raise ValueError(f'{what}: pixel values must be in [-0.5, 0.5], got '
                     f'[{lo:g}, {hi:g}] (8-bit pixels? dequantise bin indices '
                     'first).')
  return x.astype(np.float32, copy=False)


def _batches(images, batch_size):
  """Numpy batches from an array or a tf.data.Dataset (of images or (images, labels))."""
  if isinstance(images, tf.data.Dataset):
    for element in images:
      if isinstance(element, (tuple, list)):
        element = element[0]
      elif isinstance(element, dict):
        element = element['image']
      yield np.asarray(element)
    return
  x = np.asarray(images)
  if x.ndim == 3:
    raise ValueError(f'images must be a batch [N, H, W, C], got shape {list(x.shape)} '
                     '(one image? add a batch axis: x[None]).')
  for i in range(0, max(len(x), 1), batch_size):
    yield x[i:i + batch_size]


def _collect(source, images, batch_size, what):
  """(images checked, bits/dim) over all batches, as numpy arrays."""
  if isinstance(batch_size, bool) or not isinstance(
      batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f'batch_size must be a positive int, got {batch_size!r}.')
  xs, bpds = [], []
  for batch in _batches(images, batch_size):
    if len(batch) == 0 and xs:
      continue
    x = _check_images(batch, source.image_shape, what)
    xs.append(x)
    bpds.append(source.bits_per_dim(x))
  if not xs:
    raise ValueError(f'{what}: no images (the dataset is empty).')
  return np.concatenate(xs), np.concatenate(bpds)


# ------------------------------------------------------------------------------
# The per-image quantities


def bits_per_dim(model, images, n_bins=None, batch_size=DEFAULT_BATCH_SIZE):
  """Bits/dim of each image under `model`: float64 `[N]`.

  `model`: a `GlowModel`, a distribution from `glow_distribution` or a `Glow`
  (then `n_bins` is required), or a SavedModel from `tfp_glow.export` loaded
  with `tf.saved_model.load`. `images`: float `[N, H, W, C]` in [-0.5, 0.5] or
  a `tf.data.Dataset` of such batches. The formula is `tfp_glow.bits_per_dim`
  of `Glow.log_prob_parts(x).log_prob`, the one likelihood.
  """
  source = _source(model, n_bins)
  return _collect(source, images, batch_size, 'images')[1]


def png_bits_per_dim(bin_images):
  """Bits/dim of PNG-compressed bin-index images: `8 * len(png) / (H * W * C)`.

  Args:
    bin_images: uint8 `[N, H, W, C]` (C in 1..4), the bin indices `k` in
      `0..n_bins-1` themselves (not spread to 0..255: see the module
      docstring), e.g. `tfp_glow.data.to_bins(x, n_bins)` cast to uint8.

  Returns:
    float32 `[N]`, each image encoded alone by `tf.io.encode_png` at
    compression `PNG_COMPRESSION`. Works in a `tf.function` (the export's
    `score` signature uses it), for any batch size, empty included.
  """
  k = tf.convert_to_tensor(bin_images)
  if k.dtype != tf.uint8:
    raise TypeError(f'png_bits_per_dim: bin images must be uint8 (bin indices), '
                    f'got {k.dtype.name}.')
  if k.shape.rank is not None and k.shape.rank != 4:
    raise ValueError(f'png_bits_per_dim: bin images must be [N, H, W, C], got '
                     f'shape {k.shape}.')
  channels = k.shape[-1]
  if channels is not None and not 1 <= channels <= 4:
    raise ValueError(f'png_bits_per_dim: PNG holds 1 to 4 channels, got '
                     f'{channels}.')
  lengths = tf.map_fn(
      lambda im: tf.strings.length(
          tf.io.encode_png(im, compression=PNG_COMPRESSION)),
      k, fn_output_signature=tf.TensorSpec([], tf.int32))
  dims = tf.cast(tf.reduce_prod(tf.shape(k)[1:]), tf.float32)
  return 8.0 * tf.cast(lengths, tf.float32) / dims


def _bins_uint8(x, n_bins):
  return tf.cast(quantize.to_bins(x, n_bins), tf.uint8)


# ------------------------------------------------------------------------------
# The reference: bits/dim of held-out in-distribution images


def fit_reference(model, dataset, n_bins=None, batch_size=DEFAULT_BATCH_SIZE,
                  description=None):
  """Statistics of the in-distribution bits/dim, for the typicality score.

  Fit it on held-out in-distribution images (the validation split, not the
  test set you then evaluate on, and not the training set, whose bits/dim are
  optimistically low), dequantised as the images you will score.

  Args:
    model: as for `bits_per_dim`.
    dataset: float images `[N, H, W, C]` in [-0.5, 0.5], or a `tf.data.Dataset`
      of batches (images, or `(images, labels)`). At least 2 images.
    n_bins: for a bare distribution only.
    batch_size: images per model call when `dataset` is an array.
    description: anything JSON-able saying where the images came from (e.g.
      `{'dataset': 'digits', 'split': 'validation', 'seed': 0}`), kept as
      `reference['data']`.

  Returns:
    A JSON-able dict: `mean`, `std` (ddof=1), `min`, `max`, `quantiles`
    ({'0.001': ..., ..., '0.999': ...}), `count`, and `n_bins`, `image_shape`
    (checked against the model when scoring).
  """
  source = _source(model, n_bins)
  _, bpd = _collect(source, dataset, batch_size, 'reference images')
  if len(bpd) < 2:
    raise ValueError(f'fit_reference needs at least 2 images for a standard '
                     f'deviation, got {len(bpd)}.')
  if not np.all(np.isfinite(bpd)):
    raise ValueError(f'fit_reference: {int((~np.isfinite(bpd)).sum())} of '
                     f'{len(bpd)} reference bits/dim are not finite: the model '
                     'does not fit its own data.')
  reference = {
      'kind': _REFERENCE_KIND,
      'version': 1,
      'statistic': 'bits_per_dim',
      'n_bins': source.n_bins,
      'image_shape': list(source.image_shape),
      'count': int(len(bpd)),
      'mean': float(np.mean(bpd)),
      'std': float(np.std(bpd, ddof=1)),
      'min': float(np.min(bpd)),
      'max': float(np.max(bpd)),
      'quantiles': {str(q): float(v) for q, v in
                    zip(QUANTILES, np.quantile(bpd, QUANTILES))},
  }
  if description is not None:
    reference['data'] = json.loads(json.dumps(description))
  return check_reference(reference)


def check_reference(reference, image_shape=None, n_bins=None):
  """Returns `reference` if it is a valid reference (for this model); else raises."""
  if not isinstance(reference, dict):
    raise TypeError(f'A reference is a dict from fit_reference/load_reference, '
                    f'got {type(reference).__name__}.')
  if reference.get('kind') != _REFERENCE_KIND:
    raise ValueError(f'Not a scoring reference: kind={reference.get("kind")!r} '
                     f'(expected {_REFERENCE_KIND!r}).')
  missing = [k for k in ('n_bins', 'image_shape', 'count', 'mean', 'std')
             if k not in reference]
  if missing:
    raise ValueError(f'The reference lacks {missing}.')
  for key in ('mean', 'std'):
    value = reference[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
        or not math.isfinite(value):
      raise ValueError(f'reference[{key!r}] must be a finite number, got {value!r}.')
  if not reference['std'] > 0:
    raise ValueError(f'reference["std"] must be > 0 (typicality divides by it), '
                     f'got {reference["std"]!r}.')
  count = reference['count']
  if isinstance(count, bool) or not isinstance(count, int) or count < 2:
    raise ValueError(f'reference["count"] must be an int >= 2, got {count!r}.')
  shape = reference['image_shape']
  if (not isinstance(shape, (list, tuple)) or len(shape) != 3 or
      not all(isinstance(s, int) and s > 0 for s in shape)):
    raise ValueError(f'reference["image_shape"] must be [H, W, C], got {shape!r}.')
  if image_shape is not None and list(shape) != list(image_shape):
    raise ValueError(f'The reference was fitted on images of shape {list(shape)}, '
                     f'the model takes {list(image_shape)}.')
  if n_bins is not None and reference['n_bins'] != n_bins:
    raise ValueError(f'The reference was fitted at n_bins={reference["n_bins"]}, '
                     f'the model has n_bins={n_bins}.')
  return reference


def _reference_path(path):
  path = os.fspath(path)
  return os.path.join(path, REFERENCE_NAME) if os.path.isdir(path) else path


def save_reference(reference, path):
  """Writes the reference as JSON, atomically; returns the file's path.

  `path`: a model (or export) directory, then the file is
  `path/scoring_reference.json` (`REFERENCE_NAME`), or a file path.
  """
  check_reference(reference)
  path = _reference_path(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(json.dumps(reference, indent=2, sort_keys=True) + '\n')
  os.replace(tmp, path)
  return path


def load_reference(path):
  """The reference saved by `save_reference` (a directory or a file path)."""
  path = _reference_path(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'No scoring reference at {path} (fit one with '
                            'tfp_glow.scoring.fit_reference and save_reference, '
                            'or run bin/score.py on the model directory).')
  with open(path) as f:
    return check_reference(json.load(f))


# ------------------------------------------------------------------------------
# Scores


def score_all(model, images, methods=('bpd', 'typicality', 'complexity'),
              reference=None, background=None, n_bins=None,
              batch_size=DEFAULT_BATCH_SIZE):
  """Several scores from one pass of the model: `{method: float64 [N]}`.

  See `score`; the model (and the background model) run once for all methods.
  Also returns `'png_bpd'` (the PNG bits/dim) when 'complexity' is asked for,
  and `'background_bpd'` with 'ratio'.
  """
  if isinstance(methods, str):
    methods = (methods,)
  methods = tuple(methods)
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    raise ValueError(f'Unknown scoring method(s) {unknown or methods!r}; choose '
                     f'from {list(METHODS)}.')
  source = _source(model, n_bins)
  if 'typicality' in methods:
    if reference is None:
      raise ValueError('method "typicality" needs a reference (fit_reference on '
                       'held-out in-distribution images, or load_reference).')
    check_reference(reference, source.image_shape, source.n_bins)
  bg = None
  if 'ratio' in methods:
    if background is None:
      raise ValueError('method "ratio" needs a background model (background=...).')
    knows_n_bins = hasattr(background, 'n_bins') or hasattr(background, 'signatures')
    bg = _source(background, None if knows_n_bins else source.n_bins)
    if (bg.image_shape, bg.n_bins) != (source.image_shape, source.n_bins):
      raise ValueError(
          f'The background model takes images {list(bg.image_shape)} at n_bins='
          f'{bg.n_bins}; the model {list(source.image_shape)} at n_bins='
          f'{source.n_bins}: a likelihood ratio needs the same data space.')
  x, bpd = _collect(source, images, batch_size, 'images')
  if np.isnan(bpd).any():
    raise FloatingPointError(f'{int(np.isnan(bpd).sum())} of {len(bpd)} bits/dim '
                             'are NaN: the model is broken for these images.')
  out = {}
  if 'bpd' in methods:
    out['bpd'] = bpd
  if 'typicality' in methods:
    out['typicality'] = np.abs(bpd - reference['mean']) / reference['std']
  if 'complexity' in methods:
    png = np.concatenate([
        png_bits_per_dim(_bins_uint8(x[i:i + batch_size], source.n_bins)).numpy()
        for i in range(0, len(x), batch_size)]).astype(np.float64)
    out['png_bpd'] = png
    out['complexity'] = bpd - png
  if 'ratio' in methods:
    bg_bpd = np.concatenate([bg.bits_per_dim(x[i:i + batch_size])
                             for i in range(0, len(x), batch_size)])
    ratio = bpd - bg_bpd
    if np.isnan(ratio).any():
      raise FloatingPointError(f'{int(np.isnan(ratio).sum())} likelihood ratios '
                               'are NaN (both models give zero density).')
    out['background_bpd'] = bg_bpd
    out['ratio'] = ratio
  return out


def score(model, images, method='bpd', reference=None, background=None,
          n_bins=None, batch_size=DEFAULT_BATCH_SIZE):
  """Anomaly scores of images, float64 `[N]`: higher = more anomalous.

  Args:
    model: a `GlowModel`, a distribution from `glow_distribution` or a `Glow`
      (then pass `n_bins`), or a `tfp_glow.export` SavedModel loaded with
      `tf.saved_model.load`. Unconditional models only.
    images: float `[N, H, W, C]` in [-0.5, 0.5] (see the module docstring), or
      a `tf.data.Dataset` of such batches (or of `(images, labels)`).
    method: 'bpd', 'typicality', 'complexity' or 'ratio' (module docstring).
    reference: for 'typicality': a dict from `fit_reference`/`load_reference`
      fitted for this model (same image shape and n_bins).
    background: for 'ratio': a second model (any kind `model` may be) of the
      same image shape and n_bins.
    n_bins: levels per dimension, for a bare distribution only.
    batch_size: images per model call.

  Raises:
    ValueError / TypeError: images of the wrong shape, dtype or range, or with
      NaN; an empty set; a reference or background for another shape or
      n_bins; a missing reference or background.
    FloatingPointError: the model gives NaN bits/dim.
  """
  if not isinstance(method, str):
    raise TypeError(f'method must be one name (score_all takes several), got '
                    f'{method!r}.')
  return score_all(model, images, (method,), reference=reference,
                   background=background, n_bins=n_bins,
                   batch_size=batch_size)[method]


# ------------------------------------------------------------------------------
# Metrics


def _check_scores(scores, what):
  s = np.asarray(scores, dtype=np.float64)
  if s.ndim != 1:
    raise ValueError(f'{what} must be a 1-D array of scores, got shape {list(s.shape)}.')
  if s.size == 0:
    raise ValueError(f'{what} is empty: no metric without both sets.')
  nan = np.isnan(s)
  if nan.any():
    raise ValueError(f'{what} holds {int(nan.sum())} NaN score(s) of {s.size}; a '
                     'NaN has no rank.')
  return s


def _midranks(s):
  """1-based ranks, ties given the mean of the ranks they span."""
  _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
  last = np.cumsum(counts)
  return (last - (counts - 1) / 2.0)[inverse]


def evaluate_ood(scores_in, scores_out):
  """AUROC, AUPR and FPR at 95% TPR of scores (higher = more anomalous).

  The OOD images (`scores_out`) are the positives.

  * `auroc`: the probability that a random OOD image scores higher than a
    random in-distribution one, ties counting 1/2 (Mann-Whitney U with
    mid-ranks). 0.5 is chance; below 0.5 the score ranks OOD images as *more*
    typical than the real ones (the naive likelihood's known failure).
  * `aupr`: average precision, `sum_n (R_n - R_{n-1}) P_n` over the distinct
    score thresholds from high to low (tied scores are one threshold), as
    scikit-learn's `average_precision_score`. Chance is `n_out / (n_in + n_out)`.
  * `fpr95`: the share of in-distribution images flagged (score >= t) at the
    highest threshold t that flags at least 95% of the OOD images. 0 is
    perfect.

  Returns:
    `{'auroc', 'aupr', 'fpr95', 'threshold95', 'n_in', 'n_out'}` (Python
    floats and ints, JSON-able).

  Raises:
    ValueError: a set is empty, not 1-D, or holds NaN (+-Inf is allowed: it
      ranks).
  """
  s_in = _check_scores(scores_in, 'scores_in')
  s_out = _check_scores(scores_out, 'scores_out')
  n_in, n_out = s_in.size, s_out.size
  s = np.concatenate([s_in, s_out])
  is_out = np.concatenate([np.zeros(n_in, bool), np.ones(n_out, bool)])

  ranks = _midranks(s)
  auroc = (ranks[n_in:].sum() - n_out * (n_out + 1) / 2.0) / (n_in * n_out)

  order = np.argsort(-s, kind='mergesort')
  s_sorted, pos = s[order], is_out[order]
  # Index of the last element of each run of equal scores (high to low).
  last = np.append(np.nonzero(s_sorted[1:] != s_sorted[:-1])[0], s.size - 1)
  tp = np.cumsum(pos)[last]
  fp = (last + 1) - tp
  precision = tp / (tp + fp)
  recall = tp / n_out
  aupr = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))
  # First threshold (from the top) with TPR >= 95%, in integers: no 0.95 rounding.
  i = int(np.argmax(20 * tp >= 19 * n_out))
  return {
      'auroc': float(auroc),
      'aupr': aupr,
      'fpr95': float(fp[i] / n_in),
      'threshold95': float(s_sorted[last[i]]),
      'n_in': int(n_in),
      'n_out': int(n_out),
  }


# ------------------------------------------------------------------------------
# Built-in OOD sets


def _photos_8bit(channels):
  """scikit-learn's two sample photos (china, flower), uint8 [427, 640, C]."""
  try:
    from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('The "sklearn_patches" set cuts the photos that ship with '
                      'scikit-learn: pip install scikit-learn.') from e
  photos = [np.asarray(p) for p in load_sample_images().images]
  if channels == 3:
    return photos
  # ITU-R 601 luma, as PIL's convert('L').
  return [np.round(p @ np.array([0.299, 0.587, 0.114]))
          .clip(0, 255).astype(np.uint8)[..., None] for p in photos]


def synthetic_bins(name, count, image_shape, n_bins, seed=0, like=None):
  """Integer images (bin indices, uint8 `[N, H, W, C]`) of a built-in OOD set.

  * `'noise'`: every value uniform in `0..n_bins-1`, independently.
  * `'constant'`: one level per image and channel, uniform in `0..n_bins-1`,
    the same at every pixel (flat images).
  * `'inverted'`: `n_bins - 1 - k` of the bin images `like` (e.g. the
    in-distribution test set): for the digits, `16 - v`, white background.
    `count` is ignored (one per image of `like`).
  * `'sklearn_patches'`: `H x W` patches at uniform random positions of the
    two photos scikit-learn ships (`load_sample_images`: a Chinese temple and
    a flower, 427 x 640), grey (ITU-R 601 luma) for C = 1, RGB for C = 3,
    quantised from 8 bits to `n_bins` levels by `k = floor(v * n_bins / 256)`
    (for n_bins = 2^b that is `v >> (8 - b)`, the pipelines' bit reduction).
    Needs scikit-learn.

  The images depend only on `(name, count, image_shape, n_bins, seed)`.
  """
  h, w, c = (int(s) for s in image_shape)
  if isinstance(n_bins, bool) or not isinstance(
      n_bins, (int, np.integer)) or not 2 <= n_bins <= 256:
    raise ValueError(f'n_bins must be an int in 2..256, got {n_bins!r}.')
  if name == 'inverted':
    if like is None:
      raise ValueError('The "inverted" set needs the images to invert (like=...).')
    k = np.asarray(like)
    if not np.issubdtype(k.dtype, np.integer) or k.ndim != 4 or \
        tuple(k.shape[1:]) != (h, w, c):
      raise ValueError(f'"inverted": like must be integer bin images '
                       f'[N, {h}, {w}, {c}], got {k.dtype} {list(k.shape)}.')
    if k.size and (k.min() < 0 or k.max() >= n_bins):
      raise ValueError(f'"inverted": bin indices must be in 0..{n_bins - 1}, got '
                       f'{k.min()}..{k.max()}.')
    return (n_bins - 1 - k).astype(np.uint8)
  if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
    raise ValueError(f'count must be a positive int, got {count!r}.')
  rng = np.random.default_rng([int(seed), SYNTHETIC_SETS.index(name)
                               if name in SYNTHETIC_SETS else 99])
  if name == 'noise':
    return rng.integers(0, n_bins, (count, h, w, c)).astype(np.uint8)
  if name == 'constant':
    levels = rng.integers(0, n_bins, (count, 1, 1, c))
    return np.broadcast_to(levels, (count, h, w, c)).astype(np.uint8)
  if name == 'sklearn_patches':
    if c not in (1, 3):
      raise ValueError(f'"sklearn_patches" makes grey (C=1) or RGB (C=3) patches; '
                       f'the model takes C={c}.')
    photos = _photos_8bit(c)
    out = np.empty((count, h, w, c), np.uint8)
    for i in range(count):
      p = photos[rng.integers(len(photos))]
      if h > p.shape[0] or w > p.shape[1]:
        raise ValueError(f'"sklearn_patches": {h}x{w} patches do not fit the '
                         f'{p.shape[0]}x{p.shape[1]} photos.')
      top = rng.integers(0, p.shape[0] - h + 1)
      left = rng.integers(0, p.shape[1] - w + 1)
      out[i] = p[top:top + h, left:left + w]
    return (out.astype(np.int64) * n_bins // 256).astype(np.uint8)
  raise ValueError(f'Unknown synthetic set {name!r}; choose from '
                   f'{list(SYNTHETIC_SETS)}.')


def dequantize_examples(bin_images, n_bins, seed=0, noise=True):
  """Integer images -> float32 in [-0.5, 0.5], example i's noise from `[seed, i]`.

  The same rule as the unshuffled `tfp_glow.data` pipelines (evaluation), so a
  built-in set and a loaded split are dequantised alike: `seed=k` is draw k.
  """
  k = np.asarray(bin_images)
  if not np.issubdtype(k.dtype, np.integer):
    raise TypeError(f'bin images must be integers, got {k.dtype}.')
  if k.size and (k.min() < 0 or k.max() >= n_bins):
    raise ValueError(f'bin indices must be in 0..{n_bins - 1}, got '
                     f'{k.min()}..{k.max()}.')
  if not noise:
    return quantize.dequantize_images(k, n_bins, noise=False).numpy()
  return np.stack([
      quantize.dequantize_images(
          k[i:i + 1], n_bins, seed=tf.constant([int(seed), i], tf.int64))[0]
      .numpy() for i in range(len(k))]) if len(k) else k.astype(np.float32)
