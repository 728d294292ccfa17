"""SavedModel export: a trained Glow that any TensorFlow process can load and serve.

`save(model, export_dir)` writes `export_dir/<version>/`, a SavedModel that needs
only TensorFlow to load (`tf.saved_model.load`, `saved_model_cli`, TF Serving):
no `tfp_glow`, no `tensorflow_probability`, no custom objects. Versions are
integer directories as TF Serving expects; the next version is one more than
the largest present. The SavedModel is written to a hidden temporary directory
`export_dir/.tmp-<version>-<random>` and renamed into place, so a crash never
leaves a half-written version (TF Serving ignores non-numeric directories).

#### Signatures

All batch dimensions are dynamic (`-1`). Image inputs are `[N, H, W, C]` with
H, W, C dynamic in the signature too, so that a wrong shape reaches the graph
and is refused there, with a message naming the expected shape, for every
client (Python, `saved_model_cli`, TF Serving's C++). The `metadata`
signature gives the expected shape. `D = H * W * C` is the latent size.
Class-conditional models (`num_classes` set) take `labels` (int32 `[N]`,
values in `[0, num_classes)`) in every signature except `metadata`;
unconditional models have no `labels` input.

| signature          | inputs                                   | outputs |
|--------------------|------------------------------------------|---------|
| `serving_default`  | same as `log_prob`                       | same as `log_prob` |
| `log_prob`         | `images` float32 `[N, H, W, C]` in [-0.5, 0.5] | `log_prob` float32 `[N]` (nats), `bits_per_dim` float32 `[N]` |
| `log_prob_uint8`   | `images` uint8 `[N, H, W, C]`, bin indices in `[0, n_bins)` | same as `log_prob` |
| `sample`           | `count` int32 `[]`, `temperature` float32 `[]`, `seed` int64 `[]` | `images` uint8 `[count, H, W, C]` (0..255), `bin_indices` uint8 (0..n_bins-1), `x` float32 (raw model output) |
| `encode`           | `images` float32 `[N, H, W, C]` in [-0.5, 0.5] | `latents` float32 `[N, D]` |
| `decode`           | `latents` float32 `[N, D]`                | `images` float32 `[N, H, W, C]` |
| `score`            | same as `log_prob`                       | `bits_per_dim`, `png_bits_per_dim`, `complexity` float32 `[N]`; `typicality` float32 `[N]` when exported with a reference |
| `metadata`         | none                                     | `image_shape` int32 `[3]`, `latent_size`, `n_bins`, `num_classes` int32 `[]` (0: unconditional), `max_count` int32 `[]`; with a reference also `reference_mean`, `reference_std` float32 `[]` and `reference_count` int32 `[]` |

`serving_default` is the float `log_prob`. Inputs and outputs are float32 also
for a float64 model (the computation runs in the model's dtype).

**uint8 images hold the integer bin index** `k` in `0..n_bins-1` of every
pixel, the same integers the training pipeline dequantised (`tfp_glow.data`);
they are scored at the bin centre, `x = (k + 0.5) / n_bins - 0.5`
(deterministic, no noise). For a model of 8-bit data (`n_bins = 256`) that is
simply the pixel value; for a model trained on `n_bits`-bit data
(`n_bins = 2**n_bits`) send `pixel >> (8 - n_bits)`; for the embedded digits
(`n_bins = 17`) their native values 0..16. A value `>= n_bins` is refused
(never silently mis-scored). `bits_per_dim` is
`(-log_prob + D log n_bins) / (D ln 2)` as in `tfp_glow.bits_per_dim`.

**Float images** are `[-0.5, 0.5]`, as the model sees them (e.g. the bin
centres above, or `tfp_glow.data` pipeline output); values outside are refused.

**Scores** (`score`, for out-of-distribution and anomaly detection; higher =
more anomalous; see `tfp_glow.scoring`, which computes the same numbers in
memory): `bits_per_dim` as above; `png_bits_per_dim` is
`8 * len(PNG) / D` of the image's bin indices `k = floor((x + 0.5) * n_bins)`
written as the PNG's 8-bit values (`tf.io.encode_png`, compression 9);
`complexity = bits_per_dim - png_bits_per_dim` (Serra et al. 2020);
`typicality = |bits_per_dim - reference_mean| / reference_std` (Nalisnick et
al. 2019b), from the in-distribution statistics passed as
`save(..., reference=...)` (`tfp_glow.scoring.fit_reference`) and recorded as
constants in `metadata`. Without a reference there is no `typicality`
output (never a made-up one). A class-conditional model scores `p(x | labels)`
and takes no reference.

**Samples** are deterministic for a given `seed` in any process: the noise is
`tf.random.stateless_normal([count, D], seed=[seed, 0]) * temperature`, the
same as `tfp_glow.sample(dist, count, temperature, seed=seed)` in memory.
`images` is `tfp_glow.data.postprocess` (bins spread over 0..255, for viewing);
`bin_indices` is what `log_prob_uint8` takes.

**Limits and failures of `sample`**: `count` above `max_count` (fixed at export
time, `save(..., max_count=1024)` by default, reported by `metadata`) is refused:
one request must not be able to exhaust the server's memory. Samples that are not
finite (the flow overflows at high temperatures) fail the request with an
`InvalidArgumentError` giving their count and the temperature, never a black image.

**Trust**: a SavedModel is a program (TensorFlow's security guidance): loading
or serving one runs its graph with the rights of the process, so load only
exports you trust.

**Bad input** (wrong rank, height/width, channel count or latent size, NaN or
Inf, float pixels outside [-0.5, 0.5], uint8 values `>= n_bins`, labels out of
range or of the wrong length, `count < 0`, `temperature < 0` or NaN) fails
inside the graph with an `InvalidArgumentError` naming the problem. A wrong
dtype is refused by TensorFlow before the graph runs (also an error naming the
dtype).

#### Inspect and call with `saved_model_cli`

```sh
saved_model_cli show --dir /tmp/export/1 --all
python -c "import numpy as np; np.save('/tmp/x.npy', np.zeros([2, 8, 8, 1], np.float32))"
saved_model_cli run --dir /tmp/export/1 --tag_set serve \
    --signature_def serving_default --inputs images=/tmp/x.npy
saved_model_cli run --dir /tmp/export/1 --tag_set serve --signature_def sample \
    --input_exprs 'count=4;temperature=0.7;seed=1'
```

#### From Python, with TensorFlow only

```python
import tensorflow as tf
m = tf.saved_model.load('/tmp/export/1')
out = m.signatures['log_prob'](images=tf.zeros([2, 8, 8, 1]))
out['log_prob'], out['bits_per_dim']
imgs = m.signatures['sample'](count=tf.constant(4), temperature=tf.constant(0.7),
                              seed=tf.constant(1, tf.int64))['images']
```
"""

import os
import re
import shutil
import uuid

import numpy as np
import tensorflow as tf

from tfp_glow.data import quantize
from tfp_glow import distribution as dist_lib
from tfp_glow import scoring

__all__ = ['save', 'next_version', 'SIGNATURES', 'DEFAULT_MAX_COUNT']

SIGNATURES = ('serving_default', 'log_prob', 'log_prob_uint8', 'sample',
              'encode', 'decode', 'score', 'metadata')
_VERSION_RE = re.compile(r'^[0-9]+$')


class _InputChecks:
  """The in-graph checks of every signature's inputs: each fails with an
  `InvalidArgumentError` naming the signature (`what`) and the problem, for
  every client (Python, `saved_model_cli`, TF Serving's C++)."""

  def __init__(self, shape, n_bins, num_classes, dtype, max_count):
    self.shape = shape
    self.d = int(np.prod(shape))
    self.n_bins = n_bins
    self.num_classes = num_classes
    self.dtype = dtype
    self.max_count = max_count

  def images(self, images, what):
    """Shape (H, W, C); returns images with a static shape."""
    h, w, c = self.shape
    # The signature says rank 4, but not every client enforces it (a loaded
    # signature called from Python does not), and Grappler folds rank checks
    # from the declared rank; padding the runtime shape with -1 makes the
    # checks below hold (and fail clearly) whatever rank arrives, rank 0
    # included (five pads: its dims[4] is then a pad, not out of bounds). Rank
    # 4 is dims[3] present (>= 0) and dims[4] a pad: an [N, H, W] batch without
    # its channel axis is a wrong shape, not a wrong channel count.
    dims = tf.concat([tf.shape(images), tf.fill([5], -1)], axis=0)
    shape_ok = tf.debugging.assert_equal(
        tf.stack([dims[1], dims[2], tf.minimum(dims[3], 0), dims[4]]),
        tf.constant([h, w, 0, -1]),
        message=f'{what}: wrong image shape: images must be [N, {h}, {w}, {c}]'
        f' (rank 4, height {h}, width {w})')
    with tf.control_dependencies([shape_ok]):
      checks = [tf.debugging.assert_equal(
          dims[3], tf.constant(c),
          message=f'{what}: wrong channel count: images must have {c} '
          f'channel(s), [N, {h}, {w}, {c}]')]
    with tf.control_dependencies(checks):
      images = tf.identity(images)
    return tf.ensure_shape(images, [None, h, w, c])

  @staticmethod
  def _assert_pixels(images, ok, message):
    """Fails unless `ok` (a bool mask shaped like `images`) holds everywhere,
    naming the first offending pixel (row-major order), its value and how many
    pixels offend. (`tf.debugging.assert_less` and friends print the tensor's
    first three values, which need not be the offending ones.)"""
    bad = tf.where(tf.logical_not(ok))
    first = bad[:1]
    return tf.debugging.Assert(
        tf.equal(tf.shape(bad)[0], 0),
        [f'{message}; first offending pixel at [n, h, w, c] =', first,
         'value', tf.gather_nd(images, first), 'offending pixels:',
         tf.shape(bad)[0]], summarize=4)

  def float_images(self, images, what):
    """Float images: shape, finite, in [-0.5, 0.5]; cast to the model's dtype."""
    images = self.images(images, what)
    with tf.control_dependencies([self._assert_pixels(
        images, tf.math.is_finite(images),
        f'{what}: images contain NaN or Inf pixels')]):
      # After the finiteness check: NaN fails every comparison.
      in_range = tf.logical_and(images >= -0.5, images <= 0.5)
      check = self._assert_pixels(
          images, in_range, f'{what}: pixel values out of range: float '
          'images must be in [-0.5, 0.5] (send uint8 bin indices to '
          'log_prob_uint8)')
    with tf.control_dependencies([check]):
      return tf.cast(tf.identity(images), self.dtype)

  def uint8_images(self, images, what):
    """uint8 bin indices: shape, `< n_bins`; returned at their bin centres."""
    images = self.images(images, what)
    k = tf.cast(images, tf.int32)
    with tf.control_dependencies([self._assert_pixels(
        images, k < self.n_bins,
        f'{what}: pixel values out of range: uint8 images hold bin indices '
        f'0..{self.n_bins - 1} (n_bins={self.n_bins})')]):
      k = tf.cast(tf.identity(k), self.dtype)
    return (k + 0.5) / self.n_bins - 0.5

  def labels(self, labels, n, what):
    """Labels `[n]` in `[0, num_classes)` (None for an unconditional model)."""
    if labels is None:
      return None
    # As for images: the declared shape is [None], a client may send any
    # rank, and Grappler folds a slice such as dims[:2] of the declared
    # length away, so each dimension is compared on its own against a
    # padded runtime shape (rank 0 gives [-1, -1], rank 2 a second
    # dimension >= 0). The range checks run after the shape check: on a
    # label tensor of the wrong rank they would fail first, unnamed.
    dims = tf.concat([tf.shape(labels), [-1, -1]], axis=0)
    shape_ok = tf.debugging.assert_equal(
        tf.stack([dims[0], dims[1]]), tf.stack([n, -1]),
        message=f'{what}: wrong labels shape: labels must be [N], one int32 '
        'label per image/sample')
    with tf.control_dependencies([shape_ok]):
      labels = tf.identity(labels)
      checks = [
          tf.debugging.assert_non_negative(
              labels, message=f'{what}: labels must be >= 0'),
          tf.debugging.assert_less(
              labels, tf.constant(self.num_classes, tf.int32),
              message=f'{what}: labels must be < num_classes='
              f'{self.num_classes}'),
      ]
    with tf.control_dependencies(checks):
      return tf.identity(labels)

  def latents(self, latents, what):
    """Latents `[N, D]`, finite; cast to the model's dtype."""
    d = self.d
    dims = tf.concat([tf.shape(latents), tf.fill([2], -1)], axis=0)
    checks = [tf.debugging.assert_equal(
        dims[1:3], tf.constant([d, -1]),
        message=f'{what}: wrong latent shape: latents must be [N, {d}] '
        f'(rank 2, latent size {d})')]
    with tf.control_dependencies(checks):
      latents = tf.identity(latents)
    with tf.control_dependencies([tf.debugging.assert_all_finite(
        latents, f'{what}: latents contain NaN or Inf')]):
      return tf.cast(tf.ensure_shape(latents, [None, d]), self.dtype)

  def sample_request(self, count, temperature, what):
    """`count` in `[0, max_count]`, a finite `temperature >= 0`; returns count."""
    # The scalars are declared [], but a loaded signature called from Python
    # passes any shape; EnsureShape refuses another one at run time, naming
    # the argument, before any op that assumes a scalar fails unnamed.
    count = tf.ensure_shape(count, [])
    temperature = tf.ensure_shape(temperature, [])
    checks = [
        tf.debugging.assert_non_negative(
            count, message=f'{what}: count must be >= 0'),
        tf.debugging.assert_less_equal(
            count, tf.constant(self.max_count, tf.int32),
            message=f'{what}: count must be <= max_count={self.max_count} '
            '(fixed at export time: one request must not take the server '
            'down; ask in several requests)'),
        tf.debugging.assert_all_finite(
            temperature, f'{what}: temperature is NaN or Inf'),
        tf.debugging.assert_non_negative(
            temperature, message=f'{what}: temperature must be >= 0'),
    ]
    with tf.control_dependencies(checks):
      return tf.identity(count)


class _GlowExporter(tf.Module):
  """The exported object: the flow's variables and the signature functions.

  Only the variables are tracked (not the TFP bijector objects, nor the input
  checks), so the SavedModel holds plain variables and graphs: nothing to
  revive. Each signature checks its inputs (`_InputChecks`), then computes
  through the Glow's one likelihood (`log_prob_parts`) or its `generate`.
  """

  def __init__(self, glow, n_bins, max_count, reference=None):
    super().__init__(name='glow_export')
    # The reference's numbers become graph constants (no variables to save).
    self._reference = None if reference is None else (
        float(reference['mean']), float(reference['std']),
        int(reference['count']))
    # Not tracked (object.__setattr__): only the variables below are saved.
    object.__setattr__(self, '_glow', glow)
    self._max_count = int(max_count)
    self.flow_variables = list(_unique(glow.variables))
    h, w, c = glow.image_shape
    self._shape = (h, w, c)
    self._d = int(h * w * c)
    self._n_bins = int(n_bins)
    self._num_classes = glow.num_classes
    self._dtype = glow.dtype
    object.__setattr__(self, '_check', _InputChecks(
        self._shape, self._n_bins, self._num_classes, self._dtype,
        self._max_count))
    self._define_signatures(glow.num_classes is not None)

  def _define_signatures(self, conditional):
    """One `tf.function` per signature, with its input names and dtypes;
    class-conditional models take `labels` last in all but `metadata`."""
    img_f = tf.TensorSpec([None, None, None, None], tf.float32, name='images')
    img_u = tf.TensorSpec([None, None, None, None], tf.uint8, name='images')
    lat = tf.TensorSpec([None, None], tf.float32, name='latents')
    lab = tf.TensorSpec([None], tf.int32, name='labels')
    count = tf.TensorSpec([], tf.int32, name='count')
    temp = tf.TensorSpec([], tf.float32, name='temperature')
    seed = tf.TensorSpec([], tf.int64, name='seed')
    if conditional:
      self.log_prob = tf.function(
          lambda images, labels: self._log_prob(images, labels),
          input_signature=[img_f, lab])
      self.log_prob_uint8 = tf.function(
          lambda images, labels: self._log_prob_uint8(images, labels),
          input_signature=[img_u, lab])
      self.sample = tf.function(
          lambda count, temperature, seed, labels: self._sample(
              count, temperature, seed, labels),
          input_signature=[count, temp, seed, lab])
      self.encode = tf.function(
          lambda images, labels: self._encode(images, labels),
          input_signature=[img_f, lab])
      self.decode = tf.function(
          lambda latents, labels: self._decode(latents, labels),
          input_signature=[lat, lab])
      self.score = tf.function(
          lambda images, labels: self._score(images, labels),
          input_signature=[img_f, lab])
    else:
      self.log_prob = tf.function(
          lambda images: self._log_prob(images, None),
          input_signature=[img_f])
      self.log_prob_uint8 = tf.function(
          lambda images: self._log_prob_uint8(images, None),
          input_signature=[img_u])
      self.sample = tf.function(
          lambda count, temperature, seed: self._sample(
              count, temperature, seed, None),
          input_signature=[count, temp, seed])
      self.encode = tf.function(
          lambda images: self._encode(images, None), input_signature=[img_f])
      self.decode = tf.function(
          lambda latents: self._decode(latents, None), input_signature=[lat])
      self.score = tf.function(
          lambda images: self._score(images, None), input_signature=[img_f])
    self.metadata = tf.function(self._metadata, input_signature=[])

  def signatures(self):
    return {
        'serving_default': self.log_prob.get_concrete_function(),
        'log_prob': self.log_prob.get_concrete_function(),
        'log_prob_uint8': self.log_prob_uint8.get_concrete_function(),
        'sample': self.sample.get_concrete_function(),
        'encode': self.encode.get_concrete_function(),
        'decode': self.decode.get_concrete_function(),
        'score': self.score.get_concrete_function(),
        'metadata': self.metadata.get_concrete_function(),
    }

  # --- the computations (all through the Glow's one likelihood) ---------------

  def _scores(self, x, labels, what):
    labels = self._check.labels(labels, tf.shape(x)[0], what)
    log_prob = self._glow.log_prob_parts(x, labels).log_prob
    bpd = dist_lib.bits_per_dim(log_prob, self._shape, self._n_bins)
    return {'log_prob': tf.cast(log_prob, tf.float32),
            'bits_per_dim': tf.cast(bpd, tf.float32)}

  def _log_prob(self, images, labels):
    x = self._check.float_images(images, 'log_prob')
    return self._scores(x, labels, 'log_prob')

  def _log_prob_uint8(self, images, labels):
    x = self._check.uint8_images(images, 'log_prob_uint8')
    return self._scores(x, labels, 'log_prob_uint8')

  def _score(self, images, labels):
    x = self._check.float_images(images, 'score')
    bpd = self._scores(x, labels, 'score')['bits_per_dim']
    png = scoring.png_bits_per_dim(
        tf.cast(quantize.to_bins(x, self._n_bins), tf.uint8))
    out = {'bits_per_dim': bpd, 'png_bits_per_dim': png,
           'complexity': bpd - png}
    if self._reference is not None:
      mean, std, _ = self._reference
      out['typicality'] = tf.abs(bpd - mean) / std
    return out

  def _encode(self, images, labels):
    x = self._check.float_images(images, 'encode')
    labels = self._check.labels(labels, tf.shape(x)[0], 'encode')
    eps = self._glow.log_prob_parts(x, labels).eps
    return {'latents': tf.cast(tf.ensure_shape(eps, [None, self._d]),
                               tf.float32)}

  def _decode(self, latents, labels):
    eps = self._check.latents(latents, 'decode')
    labels = self._check.labels(labels, tf.shape(eps)[0], 'decode')
    x, _ = self._glow.generate(eps, labels)
    return {'images': tf.cast(x, tf.float32)}

  def _sample(self, count, temperature, seed, labels):
    count = self._check.sample_request(count, temperature, 'sample')
    # Scalars, named by EnsureShape when a Python caller sends another shape.
    seed = tf.ensure_shape(seed, [])
    temperature = tf.ensure_shape(temperature, [])
    labels = self._check.labels(labels, count, 'sample')
    t = tf.cast(temperature, self._dtype)
    eps = dist_lib.latent_noise(count, self._d, t, seed, self._dtype)
    x, _ = self._glow.generate(eps, labels, temperature=t)
    return {
        'images': quantize.postprocess(x, self._n_bins),
        'bin_indices': tf.cast(quantize.to_bins(x, self._n_bins), tf.uint8),
        'x': tf.cast(x, tf.float32),
    }

  def _metadata(self):
    out = {
        'image_shape': tf.constant(self._shape, tf.int32),
        'latent_size': tf.constant(self._d, tf.int32),
        'n_bins': tf.constant(self._n_bins, tf.int32),
        'num_classes': tf.constant(self._num_classes or 0, tf.int32),
        'max_count': tf.constant(self._max_count, tf.int32),
    }
    if self._reference is not None:
      mean, std, count = self._reference
      out.update(reference_mean=tf.constant(mean, tf.float32),
                 reference_std=tf.constant(std, tf.float32),
                 reference_count=tf.constant(count, tf.int32))
    return out


def _unique(variables):
  seen = set()
  for v in variables:
    if id(v) not in seen:
      seen.add(id(v))
      yield v


def next_version(export_dir):
  """One more than the largest integer version directory (1 if none)."""
  if not tf.io.gfile.isdir(export_dir):
    return 1
  versions = [int(n.rstrip('/')) for n in tf.io.gfile.listdir(export_dir)
              if _VERSION_RE.match(n.rstrip('/'))]
  return max(versions, default=0) + 1


DEFAULT_MAX_COUNT = 1024


def save(model_or_distribution, export_dir, version=None, n_bins=None,
         max_count=DEFAULT_MAX_COUNT, reference=None):
  """Writes a servable SavedModel to `export_dir/<version>/`; returns its path.

  Args:
    model_or_distribution: a `tfp_glow.GlowModel` (its `n_bins` is used), or a
      distribution from `glow_distribution` / a `Glow` bijector (then `n_bins`
      is required).
    export_dir: the base directory (TF Serving's model base path); created if
      missing.
    version: a positive int; default: one more than the largest existing. An
      existing version is never overwritten.
    n_bins: levels per dimension of the data (2..256); only for a bare
      distribution.
    max_count: the most images one `sample` request may ask for (recorded in
      `metadata`); a larger `count` is refused by name, so that one request
      cannot exhaust the server's memory.
    reference: in-distribution bits/dim statistics for the `score`
      signature's `typicality` (a dict from `tfp_glow.scoring.fit_reference`,
      or the path of one saved by `save_reference`, e.g. the model
      directory); fitted for this model (same image shape and n_bins).
      Unconditional models only. None: `score` has no `typicality`.

  Raises:
    ValueError: the model is not initialised (ActNorm's data-dependent init
      has not run: its numbers would be meaningless), or bad arguments.
    FileExistsError: `export_dir/<version>` exists.

  See the module docstring for the signatures.
  """
  glow, n_bins, initialized = dist_lib.resolve_model(
      model_or_distribution, n_bins, what='Exporting')
  if isinstance(max_count, bool) or not isinstance(
      max_count, (int, np.integer)) or max_count < 1:
    raise ValueError(f'max_count must be a positive int, got {max_count!r}.')
  if reference is not None:
    if not isinstance(reference, dict):
      reference = scoring.load_reference(reference)
    scoring.check_reference(reference, glow.image_shape, n_bins)
    if glow.num_classes is not None:
      raise ValueError('A typicality reference is for unconditional models '
                       '(scoring needs p(x)); this model is class-conditional.')
  if not initialized:
    raise ValueError('Refusing to export an uninitialised model: ActNorm\'s '
                     'data-dependent initialisation has not run (train it, '
                     'call tfp_glow.initialize(dist, x), or restore weights).')
  export_dir = os.fspath(export_dir)
  if version is None:
    version = next_version(export_dir)
  if isinstance(version, bool) or not isinstance(version, (int, np.integer)) \
      or version < 1:
    raise ValueError(f'version must be a positive int, got {version!r}.')
  version = int(version)
  final = os.path.join(export_dir, str(version))
  if os.path.exists(final):
    raise FileExistsError(f'{final} exists; versions are never overwritten.')
  os.makedirs(export_dir, exist_ok=True)
  tmp = os.path.join(export_dir, f'.tmp-{version}-{uuid.uuid4().hex[:12]}')
  exporter = _GlowExporter(glow, n_bins, max_count, reference)
  try:
    tf.saved_model.save(exporter, tmp, signatures=exporter.signatures())
    os.rename(tmp, final)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return final
