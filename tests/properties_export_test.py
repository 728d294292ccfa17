"""The SavedModel export, fuzzed: every signature, drawn requests.

Two tiny one-level models are exported once for the module and loaded with
`tf.saved_model.load`: an unconditional one with a scoring reference (17
bins) and a class-conditional one on non-square 2-channel images (256 bins).
(One level: writing a SavedModel costs about a third less than with two, and
export_test.py serves two-level models.) Each property draws requests for a
family of signatures: shapes (empty batches, wrong ranks, heights, widths,
channels), dtypes, NaN/Inf, out-of-range values, labels of every wrong kind,
counts up to 2**31 - 1, temperatures from subnormal to Inf, any int64 seed.
Every request must give either the right answer (checked against the
in-memory model, which computes through the same `Glow.log_prob_parts` /
`generate`, eagerly) or an error that names one of the problems the request
has: an `InvalidArgumentError` from the graph, or a TypeError from the call
when an argument is missing or unknown. Never a crash, a hang, or a number
for a bad request."""

import collections

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest
import tensorflow as tf

from strategies import properties
import tfp_glow
from tfp_glow import export
from tfp_glow import scoring
from tfp_glow.data import quantize

class Served(collections.namedtuple(
    'Served', ['name', 'glow', 'signatures', 'shape', 'n_bins', 'num_classes',
               'reference', 'max_count'])):
  """An exported model, loaded, with its in-memory original."""

  def __repr__(self):   # hypothesis prints the fixture with each failure
    return f'<exported {self.name} model {self.shape}>'

MAX_COUNT = 16
# TensorFlow's names of the dtypes in its 'expected to be a ... tensor' error.
_DTYPE_NAMES = {tf.float32: 'float', tf.float64: 'double', tf.float16: 'half',
                tf.uint8: 'uint8', tf.int32: 'int32', tf.int64: 'int64'}


def _tiny_model(shape, levels, num_classes, seed):
  """An initialised Glow with weights away from init (not the identity)."""
  dist = tfp_glow.glow_distribution(shape, levels=levels, steps_per_level=1,
                                    hidden_width=4, learn_top=True,
                                    num_classes=num_classes, seed=seed)
  rng = np.random.default_rng(seed)
  x = tf.constant(rng.uniform(-0.5, 0.5, (16,) + shape), tf.float32)
  labels = None if num_classes is None else tf.constant(
      rng.integers(0, num_classes, 16), tf.int32)
  tfp_glow.initialize(dist, x, labels=labels)
  for v in dist.trainable_variables:
    v.assign_add(tf.constant(0.05 * rng.standard_normal(v.shape), v.dtype))
  return dist


@pytest.fixture(scope='module')
def served(tmp_path_factory):
  """name -> Served: the two exported models, loaded, and their in-memory
  originals."""
  base = tmp_path_factory.mktemp('fuzz')
  out = {}
  uncond = _tiny_model((4, 4, 1), 1, None, seed=1)
  model = tfp_glow.GlowModel(uncond, n_bins=17)
  images = np.random.default_rng(0).uniform(-0.5, 0.5, (8, 4, 4, 1))
  reference = scoring.fit_reference(model, images.astype(np.float32))
  path = export.save(model, str(base / 'uncond'), reference=reference,
                     max_count=MAX_COUNT)
  out['uncond'] = Served('uncond', model.glow,
                         tf.saved_model.load(path).signatures, (4, 4, 1), 17,
                         None, reference, MAX_COUNT)
  cond = _tiny_model((4, 8, 2), 1, 3, seed=2)
  path = export.save(cond, str(base / 'cond'), n_bins=256, max_count=MAX_COUNT)
  out['cond'] = Served('cond', tfp_glow.get_glow(cond),
                       tf.saved_model.load(path).signatures, (4, 8, 2), 256,
                       3, None, MAX_COUNT)
  return out


def _call(served, signature, kwargs):
  """Calls a signature; returns (outputs as numpy, None) or (None, error)."""
  try:
    out = served.signatures[signature](**kwargs)
  except (tf.errors.InvalidArgumentError, TypeError) as e:
    return None, e
  return {k: v.numpy() for k, v in out.items()}, None


def _assert_refused(error, problems, request):
  """`error` happened and names one of `problems` (message fragments)."""
  assert problems, f'a valid request failed: {request}: {error}'
  assert error is not None, (
      f'a request with problems {sorted(problems)} was answered: {request}')
  message = str(error)
  assert any(p in message for p in problems), (
      f'the error names none of {sorted(problems)}: {message[:2000]}')


# --- labels --------------------------------------------------------------------------

LABEL_MODES = ('ok', 'ok', 'ok', 'missing', 'short', 'long', 'rank0', 'rank2',
               'negative', 'too_big', 'int64', 'float32')


def _labels(mode, n, num_classes, rng):
  """(kwargs, problems) for labels of `mode` with a batch of `n`."""
  if num_classes is None:
    # Labels given to an unconditional model: the call refuses the argument.
    if mode == 'ok':
      return {}, set()
    return ({'labels': tf.zeros([n], tf.int32)},
            {"unexpected keyword argument 'labels'"})
  ok = rng.integers(0, num_classes, n).astype(np.int32)
  if mode == 'ok':
    return {'labels': tf.constant(ok)}, set()
  if mode == 'missing':
    return {}, {"missing a required argument: 'labels'"}
  shape_problem = {'wrong labels shape'}
  if mode == 'short':
    return {'labels': tf.constant(ok[:-1] if n else [0], tf.int32)}, (
        shape_problem)
  if mode == 'long':
    return {'labels': tf.constant(np.append(ok, 0), tf.int32)}, shape_problem
  if mode == 'rank0':
    return {'labels': tf.constant(0, tf.int32)}, shape_problem
  if mode == 'rank2':
    return {'labels': tf.constant(ok[:, None])}, shape_problem
  if mode == 'negative':
    if not n:
      return {'labels': tf.constant(ok)}, set()
    bad = ok.copy()
    bad[rng.integers(n)] = rng.integers(-2**31, 0)
    return {'labels': tf.constant(bad)}, {'labels must be >= 0'}
  if mode == 'too_big':
    if not n:
      return {'labels': tf.constant(ok)}, set()
    bad = ok.copy()
    bad[rng.integers(n)] = rng.integers(num_classes, 2**31)
    return {'labels': tf.constant(bad)}, {
        f'labels must be < num_classes={num_classes}'}
  dtype = {'int64': tf.int64, 'float32': tf.float32}[mode]
  return {'labels': tf.constant(ok, dtype)}, {
      f'expected to be a int32 tensor but is a {_DTYPE_NAMES[dtype]} tensor'}


# --- images: log_prob, serving_default, log_prob_uint8, encode, score ------------------

IMAGE_SIGNATURES = ('serving_default', 'log_prob', 'log_prob_uint8', 'encode',
                    'score')


def _image_example(**overrides):
  """A drawn image request, written out (for `@example` regressions)."""
  r = dict(model='uncond', signature='log_prob', batch=2, shape_error=None,
           rank=0, wrong_dim=0, dtype=None, corruption=None, magnitude=1.0,
           labels='ok', seed=0)
  r.update(overrides)
  return hypothesis.example(request=r)


@st.composite
def image_requests(draw):
  return dict(
      model=draw(st.sampled_from(['uncond', 'cond'])),
      signature=draw(st.sampled_from(IMAGE_SIGNATURES)),
      batch=draw(st.integers(0, 4)),
      shape_error=draw(st.sampled_from(
          [None] * 4 + ['rank', 'height', 'width', 'channels'])),
      rank=draw(st.sampled_from([0, 1, 2, 3, 5, 6])),
      wrong_dim=draw(st.integers(0, 9)),
      dtype=draw(st.sampled_from([None] * 6 + [tf.float64, tf.float16,
                                               tf.int32, tf.uint8,
                                               tf.float32])),
      corruption=draw(st.sampled_from(
          [None] * 4 + ['nan', 'inf', '-inf', 'high', 'low', 'unit_range'])),
      magnitude=draw(st.sampled_from([1e-6, 1e-3, 0.5, 1.0, 1e3, 1e30])),
      labels=draw(st.sampled_from(LABEL_MODES)),
      seed=draw(st.integers(0, 2**31 - 1)))


def _image_request(served, r):
  """(kwargs, problems, x) for the drawn request `r`: `x` the float images
  the model should see when the request is valid."""
  rng = np.random.default_rng(r['seed'])
  h, w, c = served.shape
  u8 = r['signature'] == 'log_prob_uint8'
  want = tf.uint8 if u8 else tf.float32
  dtype = r['dtype'] or want
  problems = set()
  if dtype != want:
    problems.add(f'expected to be a {_DTYPE_NAMES[want]} tensor but is a '
                 f'{_DTYPE_NAMES[dtype]} tensor')
  shape = [r['batch'], h, w, c]
  error = r['shape_error']
  if error == 'rank':
    shape = (shape + [2, 3])[:r['rank']]
  elif error in ('height', 'width', 'channels'):
    axis = {'height': 1, 'width': 2, 'channels': 3}[error]
    if r['wrong_dim'] == shape[axis]:
      error = None
    shape[axis] = r['wrong_dim']
  if error in ('rank', 'height', 'width'):
    problems.add('wrong image shape')
  elif error == 'channels':
    problems.add('wrong channel count')
  if u8:
    k = rng.integers(0, served.n_bins, shape)
    values = k.astype(np.float64)
  else:
    values = rng.uniform(-0.5, 0.5, shape)
  corruption = r['corruption']
  if corruption == 'unit_range' and not u8:
    values = values + 0.5   # [0, 1] images: a common client mistake
  elif values.size and corruption is not None:
    flat = values.reshape(-1)
    i = rng.integers(flat.size)
    if u8:
      if corruption == 'high' and served.n_bins < 256:
        flat[i] = rng.integers(served.n_bins, 256)
    elif corruption in ('nan', 'inf', '-inf'):
      flat[i] = float(corruption)
    elif corruption in ('high', 'low'):
      flat[i] = (0.5 + r['magnitude']) * (1 if corruption == 'high' else -1)
  if dtype.is_integer:
    # NaN and Inf have no integer form; the dtype is the problem named.
    values = np.nan_to_num(values, posinf=0.0, neginf=0.0)
  # The value problems, read off the values the signature receives.
  sent = values.astype(dtype.as_numpy_dtype)
  if u8 and np.any(sent >= served.n_bins):
    problems.add('pixel values out of range')
  if not u8 and dtype.is_floating:
    finite = np.isfinite(sent)
    if not np.all(finite):
      problems.add('NaN or Inf')
    if np.any(np.abs(sent[finite]) > 0.5):
      problems.add('pixel values out of range')
  images = tf.constant(sent, dtype)
  labels, label_problems = _labels(r['labels'], r['batch'], served.num_classes,
                                   rng)
  problems |= label_problems
  x = None
  if not problems:
    x = (k + 0.5) / served.n_bins - 0.5 if u8 else values
  return dict(images=images, **labels), problems, x


def _expected_scores(served, x, labels):
  """The in-memory model's numbers for valid float images `x`."""
  glow = served.glow
  parts = glow.log_prob_parts(tf.constant(x, tf.float32), labels)
  log_prob = parts.log_prob.numpy()
  bpd = tfp_glow.bits_per_dim(log_prob, served.shape, served.n_bins).numpy()
  return log_prob, bpd, parts.eps.numpy()


@properties(default=60, slow=600, request=image_requests(), examples=[
    # Found by this property: images of rank 0 failed with 'slice index 4
    # of dimension 0 out of bounds' (the shape check's padding was one short).
    _image_example(shape_error='rank', rank=0),
    # Pinned: float images in [0, 1] instead of [-0.5, 0.5].
    _image_example(corruption='unit_range'),
    # Found by this property: images [N, H, W] (no channel axis) were
    # refused as a 'wrong channel count' (the rank check took the missing
    # axis for a pad) instead of a wrong shape.
    _image_example(batch=0, shape_error='rank', rank=3),
    # Found by this property: labels of rank 2 failed with 'Incompatible
    # shapes: [3] vs. [2]' (Grappler had folded the dims[:2] slice away).
    _image_example(model='cond', signature='serving_default', batch=0,
                   labels='rank2'),
])
def test_image_signatures_answer_or_name_the_problem(served, request):
  """log_prob, serving_default, log_prob_uint8, encode and score: a valid
  request gets the in-memory model's numbers, a bad one an error naming
  one of its problems."""
  s = served[request['model']]
  kwargs, problems, x = _image_request(s, request)
  out, error = _call(s, request['signature'], kwargs)
  if problems or error is not None:
    _assert_refused(error, problems, request)
    return
  n = request['batch']
  labels = kwargs.get('labels')
  log_prob, bpd, eps = _expected_scores(s, x, labels)
  sig = request['signature']
  if sig == 'encode':
    np.testing.assert_allclose(out['latents'], eps, rtol=1e-5, atol=1e-5)
    assert out['latents'].shape == (n, int(np.prod(s.shape)))
    return
  np.testing.assert_allclose(out['bits_per_dim'], bpd, rtol=1e-5, atol=1e-5)
  if sig == 'score':
    bins = tf.cast(quantize.to_bins(tf.constant(x, tf.float32), s.n_bins),
                   tf.uint8)
    png = scoring.png_bits_per_dim(bins).numpy()
    np.testing.assert_allclose(out['png_bits_per_dim'], png, rtol=1e-6)
    np.testing.assert_allclose(out['complexity'], bpd - png, rtol=1e-5,
                               atol=1e-5)
    if s.reference is None:
      assert 'typicality' not in out
    else:
      np.testing.assert_allclose(
          out['typicality'],
          np.abs(bpd - s.reference['mean']) / s.reference['std'],
          rtol=1e-4, atol=1e-4)
  else:
    np.testing.assert_allclose(out['log_prob'], log_prob, rtol=1e-5,
                               atol=1e-4)
  for value in out.values():
    assert value.shape == (n,)
    assert np.all(np.isfinite(value))


# --- decode --------------------------------------------------------------------------


def _decode_example(**overrides):
  r = dict(model='uncond', batch=2, shape_error=None, rank=0, size_delta=1,
           dtype=None, scale=1.0, corruption=None, labels='ok', seed=0)
  r.update(overrides)
  return hypothesis.example(request=r)


@st.composite
def decode_requests(draw):
  return dict(
      model=draw(st.sampled_from(['uncond', 'cond'])),
      batch=draw(st.integers(0, 4)),
      shape_error=draw(st.sampled_from([None] * 4 + ['rank', 'size'])),
      rank=draw(st.sampled_from([0, 1, 3])),
      size_delta=draw(st.sampled_from([-1, 1, 7])),
      dtype=draw(st.sampled_from([None] * 6 + [tf.float64, tf.float16])),
      scale=draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 1e3, 1e30, 3e38])),
      corruption=draw(st.sampled_from([None] * 4 + ['nan', 'inf', '-inf'])),
      labels=draw(st.sampled_from(LABEL_MODES)),
      seed=draw(st.integers(0, 2**31 - 1)))


@properties(default=30, slow=300, request=decode_requests(), examples=[
    # Found by this property (as for the image signatures): rank-2 labels.
    _decode_example(model='cond', batch=0, labels='rank2'),
])
def test_decode_answers_or_names_the_problem(served, request):
  """decode: the in-memory `decode` of the latents; wrong shapes, NaN/Inf and
  bad labels named; latents so large that the flow overflows refused as not
  finite exactly when the in-memory flow refuses them."""
  s = served[request['model']]
  r = request
  rng = np.random.default_rng(r['seed'])
  d = int(np.prod(s.shape))
  problems = set()
  dtype = r['dtype'] or tf.float32
  if dtype != tf.float32:
    problems.add(f'expected to be a float tensor but is a '
                 f'{_DTYPE_NAMES[dtype]} tensor')
  shape = [r['batch'], d]
  if r['shape_error'] == 'rank':
    shape = ([r['batch'], d, 1] if r['rank'] == 3 else
             [d] if r['rank'] == 1 else [])
    problems.add('wrong latent shape')
  elif r['shape_error'] == 'size':
    shape = [r['batch'], d + r['size_delta']]
    problems.add('wrong latent shape')
  values = rng.standard_normal(shape) * r['scale']
  if values.size and r['corruption']:
    values.reshape(-1)[rng.integers(values.size)] = float(r['corruption'])
    problems.add('NaN or Inf')
  latents = tf.constant(values.astype(np.float32), dtype) if dtype == (
      tf.float32) else tf.constant(values, dtype)
  if dtype == tf.float32 and not np.all(np.isfinite(latents.numpy())) and (
      'NaN or Inf' not in problems):
    problems.add('NaN or Inf')   # 3e38 * a normal draw overflows float32
  labels, label_problems = _labels(r['labels'], r['batch'], s.num_classes, rng)
  problems |= label_problems
  out, error = _call(s, 'decode', dict(latents=latents, **labels))
  if problems:
    _assert_refused(error, problems, request)
    return
  try:
    want = s.glow.forward(latents, **labels).numpy()
  except FloatingPointError:
    _assert_refused(error, {'generated images not finite'}, request)
    return
  assert error is None, f'{request}: {error}'
  assert np.all(np.isfinite(out['images'])), 'non-finite images answered'
  np.testing.assert_allclose(out['images'], want, rtol=1e-5, atol=1e-5)
  assert out['images'].shape == (r['batch'],) + s.shape


# --- sample --------------------------------------------------------------------------

COUNTS = [-2**31, -1, 0, 1, 2, 3, 5, MAX_COUNT, MAX_COUNT + 1, 2**31 - 1]


def _sample_example(**overrides):
  r = dict(model='uncond', count=2, temperature=0.7, seed=1, non_scalar=None,
           count_dtype=tf.int32, labels='ok', label_seed=0)
  r.update(overrides)
  return hypothesis.example(request=r)


@st.composite
def sample_requests(draw):
  return dict(
      model=draw(st.sampled_from(['uncond', 'cond'])),
      count=draw(st.sampled_from(COUNTS)),
      temperature=draw(st.one_of(
          st.sampled_from([0.0, 1e-45, 0.7, 1.0, 2.0, 1e30, 3e38, -0.5,
                           -1e-30, float('nan'), float('inf'),
                           -float('inf')]),
          st.floats(0.0, 5.0, width=32))),
      seed=draw(st.integers(-2**63, 2**63 - 1)),
      non_scalar=draw(st.sampled_from([None] * 6 + ['count', 'temperature',
                                                    'seed'])),
      count_dtype=draw(st.sampled_from([tf.int32] * 6 + [tf.int64])),
      labels=draw(st.sampled_from(LABEL_MODES)),
      label_seed=draw(st.integers(0, 2**31 - 1)))


@properties(default=40, slow=400, request=sample_requests(), examples=[
    # Found by this property: rank-0 labels failed with 'Invalid reduction
    # dimension' (the range checks ran before the shape check).
    _sample_example(model='cond', count=0, labels='rank0'),
    # Found by this property: a count of shape [1] failed with 'In[0] should
    # be a scalar', naming no argument (now EnsureShape names it).
    _sample_example(non_scalar='count'),
    _sample_example(model='cond', non_scalar='temperature'),
])
def test_sample_answers_or_names_the_problem(served, request):
  """sample: with a valid count, temperature and seed, the in-memory
  `tfp_glow.sample` with that seed (images and bin indices its quantisation);
  otherwise an error naming the problem: a negative count, a count above
  max_count (2**31 - 1 included), a NaN/Inf or negative temperature, a
  non-scalar argument, a wrong dtype, bad labels, or samples that overflow
  (refused exactly when the in-memory sampler refuses them)."""
  s = served[request['model']]
  r = request
  count, t = r['count'], r['temperature']
  problems = set()
  if count < 0:
    problems.add('count must be >= 0')
  if count > s.max_count:
    problems.add(f'count must be <= max_count={s.max_count}')
  if not np.isfinite(t):
    problems.add('temperature is NaN or Inf')
  elif t < 0:
    problems.add('temperature must be >= 0')
  if r['count_dtype'] != tf.int32:
    problems.add('expected to be a int32 tensor but is a int64 tensor')
  args = dict(count=tf.constant(count, r['count_dtype']),
              temperature=tf.constant(t, tf.float32),
              seed=tf.constant(r['seed'], tf.int64))
  if r['non_scalar']:
    name = r['non_scalar']
    args[name] = tf.reshape(args[name], [1])
    problems.add(f'Shape of tensor {name} [1] is not compatible with '
                 'expected shape []')
  rng = np.random.default_rng(r['label_seed'])
  n = count if 0 <= count <= s.max_count else 2
  labels, label_problems = _labels(r['labels'], n, s.num_classes, rng)
  if n != count and 'labels' in labels:
    label_problems = label_problems | {'wrong labels shape'}
  problems |= label_problems
  out, error = _call(s, 'sample', dict(args, **labels))
  if problems:
    _assert_refused(error, problems, request)
    return
  try:
    want = tfp_glow.sample(s.glow, count, temperature=float(np.float32(t)),
                           seed=r['seed'], labels=labels.get('labels'))
  except FloatingPointError:
    _assert_refused(error, {'generated images not finite'}, request)
    return
  assert error is None, f'{request}: {error}'
  want = want.numpy()
  assert out['x'].shape == (count,) + s.shape
  assert np.all(np.isfinite(out['x'])), 'non-finite samples answered'
  np.testing.assert_allclose(out['x'], want, rtol=1e-5, atol=1e-5)
  x = tf.constant(out['x'])
  np.testing.assert_array_equal(
      out['bin_indices'], quantize.to_bins(x, s.n_bins).numpy().astype(np.uint8))
  np.testing.assert_array_equal(out['images'],
                                quantize.postprocess(x, s.n_bins).numpy())


def test_metadata_describes_the_models(served):
  for s in served.values():
    meta = {k: v.numpy() for k, v in s.signatures['metadata']().items()}
    np.testing.assert_array_equal(meta['image_shape'], s.shape)
    assert meta['latent_size'] == np.prod(s.shape)
    assert meta['n_bins'] == s.n_bins
    assert meta['num_classes'] == (s.num_classes or 0)
    assert meta['max_count'] == s.max_count
    assert ('reference_mean' in meta) == (s.reference is not None)
