"""Tests of Glow's components: the shared harness over every one, then specifics."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import harness
import tfp_glow
from tfp_glow import bijectors as gb

tfd = tfp.distributions

IMAGE = (4, 4, 4)
HIDDEN = 8

# name -> (factory(dtype), data shape, latent shape, has trainable variables)
COMPONENTS = {
    'actnorm': (lambda dt: gb.ActNorm(4, dtype=dt), IMAGE, IMAGE, True),
    'conv1x1': (lambda dt: gb.InvertibleConv1x1(4, lu=False, seed=1, dtype=dt),
                IMAGE, IMAGE, True),
    'conv1x1_lu': (lambda dt: gb.InvertibleConv1x1(4, lu=True, seed=1, dtype=dt),
                   IMAGE, IMAGE, True),
    'reverse': (lambda dt: gb.ChannelReverse(4), IMAGE, IMAGE, False),
    'shuffle': (lambda dt: gb.ChannelShuffle(4, seed=3), IMAGE, IMAGE, False),
    'affine': (lambda dt: gb.AffineCoupling(4, hidden_width=HIDDEN, seed=1,
                                            dtype=dt), IMAGE, IMAGE, True),
    'additive': (lambda dt: gb.AdditiveCoupling(4, hidden_width=HIDDEN, seed=1,
                                                dtype=dt), IMAGE, IMAGE, True),
    'squeeze': (lambda dt: gb.Squeeze(), IMAGE, (2, 2, 16), False),
    'split_prior': (lambda dt: gb.SplitPrior(4, exit_channels=2, dtype=dt),
                    IMAGE, IMAGE, True),
    'split_prior_uneven': (lambda dt: gb.SplitPrior(4, exit_channels=1,
                                                    dtype=dt),
                           IMAGE, IMAGE, True),
    'top_prior': (lambda dt: gb.TopPrior(4, learn_top=True, dtype=dt),
                  IMAGE, IMAGE, True),
    'top_prior_classes': (lambda dt: gb.TopPrior(4, learn_top=True,
                                                 num_classes=3, dtype=dt),
                          IMAGE, IMAGE, True),
}
# Class-conditional components: the harness passes `labels`.
NUM_CLASSES = {'top_prior_classes': 3}
# The classifier is not part of the bijection: log_prob cannot reach it.
GRAD_EXCLUDE = {'top_prior_classes': ('classifier',)}
DTYPES = {'float32': tf.float32, 'float64': tf.float64}
# XLA compilation and SavedModel writes dominate the harness's run time: those
# two checks run in float32 for every component, and in float64 too for a
# representative subset (a network-driven coupling, the LU convolution, both
# priors); the cheap checks run in both dtypes everywhere.
HEAVY_CHECKS = ('compiled', 'saved_model')
HEAVY_FLOAT64 = ('affine', 'conv1x1_lu', 'split_prior', 'top_prior_classes')
HARNESS_CASES = [
    (check, component, dtype)
    for check in harness.CHECKS for component in COMPONENTS for dtype in DTYPES
    if check not in HEAVY_CHECKS or dtype == 'float32'
    or component in HEAVY_FLOAT64]


@pytest.mark.parametrize('check, component, dtype', HARNESS_CASES)
def test_harness(check, component, dtype, tmp_path):
  factory, data_shape, latent_shape, trainable = COMPONENTS[component]
  cfg = harness.Config(data_shape=data_shape, latent_shape=latent_shape,
                       dtype=DTYPES[dtype], trainable=trainable,
                       num_classes=NUM_CLASSES.get(component),
                       grad_exclude=GRAD_EXCLUDE.get(component, ()))
  if check == 'saved_model':
    harness.check_saved_model(factory, cfg, tmp_path)
  else:
    harness.CHECKS[check](factory, cfg)


@pytest.mark.parametrize('dtype', list(DTYPES))
@pytest.mark.parametrize('component', [c for c in COMPONENTS
                                       if c not in NUM_CLASSES])
def test_invert_gradients(component, dtype):
  """backprop by inversion (rebuild the input, recompute under a tape) gives
  the gradients of ordinary autodiff, for every component on its own."""
  factory, data_shape, latent_shape, trainable = COMPONENTS[component]
  cfg = harness.Config(data_shape=data_shape, latent_shape=latent_shape,
                       dtype=DTYPES[dtype], trainable=trainable)
  harness.check_invert_gradients(factory, cfg)


def test_perturb_moves_every_variable_and_marks_actnorms():
  coupling = gb.AffineCoupling(4, hidden_width=HIDDEN, seed=1)
  before = [v.numpy().copy() for v in coupling.trainable_variables]
  harness.perturb(coupling, seed=0, scale=0.1)
  for b, v in zip(before, coupling.trainable_variables):
    assert np.all(b != v.numpy()), v.name
  for an in (coupling.network.actnorm1, coupling.network.actnorm2):
    assert an.is_initialized


# --- independent formulas ------------------------------------------------------------


def _x(shape, seed=0, dtype=np.float64):
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_actnorm_formula():
  an = harness.perturb(gb.ActNorm(3, dtype=tf.float64), 0, 0.3)
  x = _x([2, 4, 6, 3])
  bias, log_scale = an.bias.numpy(), 3.0 * an.logs.numpy()
  np.testing.assert_allclose(an.inverse(tf.constant(x)).numpy(),
                             (x + bias) * np.exp(log_scale), rtol=1e-12)
  np.testing.assert_allclose(
      an.inverse_log_det_jacobian(tf.constant(x), event_ndims=3).numpy(),
      [4 * 6 * log_scale.sum()] * 2, rtol=1e-12)


@pytest.mark.parametrize('lu', [False, True])
def test_conv1x1_slogdet_vs_numpy(lu):
  conv = harness.perturb(gb.InvertibleConv1x1(5, lu=lu, seed=2,
                                              dtype=tf.float64), 0, 0.3)
  if lu:
    p = conv.permutation.numpy()
    l = np.tril(conv.lower.numpy(), -1) + np.eye(5)
    u = np.triu(conv.upper.numpy(), 1) + np.diag(
        conv.sign_s.numpy() * np.exp(conv.log_s.numpy()))
    w = p @ l @ u
  else:
    w = conv.weight.numpy()
  x = _x([3, 2, 3, 5])
  z = conv.inverse(tf.constant(x)).numpy()
  np.testing.assert_allclose(z, np.einsum('dc,nhwc->nhwd', w, x), rtol=1e-10,
                             atol=1e-12)
  _, log_det = np.linalg.slogdet(w)
  np.testing.assert_allclose(
      conv.inverse_log_det_jacobian(tf.constant(x), event_ndims=3).numpy(),
      [2 * 3 * log_det] * 3, rtol=1e-10)
  np.testing.assert_allclose(
      conv.forward_log_det_jacobian(tf.constant(z), event_ndims=3).numpy(),
      [-2 * 3 * log_det] * 3, rtol=1e-10)


@pytest.mark.parametrize('dtype', [tf.float32, tf.float64])
@pytest.mark.parametrize('channels', [1, 4, 7])
def test_lu_reconstructs_orthogonal_init(channels, dtype):
  conv = gb.InvertibleConv1x1(channels, lu=True, seed=5, dtype=dtype)
  p = conv.permutation.numpy()
  assert np.allclose(p @ p.T, np.eye(channels))           # a permutation matrix
  assert set(np.unique(p)) <= {0.0, 1.0}
  assert set(np.abs(conv.sign_s.numpy())) == {1.0}
  l = np.tril(conv.lower.numpy().astype(np.float64), -1) + np.eye(channels)
  u = np.triu(conv.upper.numpy().astype(np.float64), 1) + np.diag(
      conv.sign_s.numpy() * np.exp(conv.log_s.numpy().astype(np.float64)))
  w = p @ l @ u
  tol = 1e-6 if dtype == tf.float32 else 1e-12
  np.testing.assert_allclose(w @ w.T, np.eye(channels), atol=tol)
  w_code, log_det = conv.weight_and_log_det()
  np.testing.assert_allclose(w_code.numpy(), w, atol=tol)
  assert abs(float(log_det)) < 10 * tol                    # |det| = 1


def test_plain_conv_init_is_orthogonal():
  conv = gb.InvertibleConv1x1(6, seed=3, dtype=tf.float64)
  w = conv.weight.numpy()
  np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-12)
  # Different seeds, different matrices; same seed, same matrix.
  assert not np.allclose(w, gb.InvertibleConv1x1(6, seed=4).weight.numpy())
  np.testing.assert_array_equal(
      w, gb.InvertibleConv1x1(6, seed=3, dtype=tf.float64).weight.numpy())


def test_channel_permute_semantics():
  p = gb.ChannelPermute([2, 0, 1])
  x = tf.constant([[[[10., 20., 30.]]]])
  np.testing.assert_array_equal(p.inverse(x).numpy(), [[[[30., 10., 20.]]]])
  np.testing.assert_array_equal(p.forward(tf.constant([[[[30., 10., 20.]]]]))
                                .numpy(), x.numpy())
  r = gb.ChannelReverse(4)
  x = _x([2, 2, 2, 4])
  np.testing.assert_array_equal(r.inverse(tf.constant(x)).numpy(), x[..., ::-1])
  s = gb.ChannelShuffle(6, seed=9)
  perm = s.permutation.numpy()
  assert sorted(perm.tolist()) == list(range(6))
  x = _x([2, 2, 2, 6])
  np.testing.assert_array_equal(s.inverse(tf.constant(x)).numpy(), x[..., perm])


def test_squeeze_matches_numpy_space_to_depth():
  x = _x([2, 4, 6, 3])
  y = gb.Squeeze().inverse(tf.constant(x)).numpy()
  assert y.shape == (2, 2, 3, 12)
  expected = x.reshape(2, 2, 2, 3, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(
      2, 2, 3, 12)  # [n, i, di, j, dj, c] -> [n, i, j, (di, dj, c)]
  np.testing.assert_array_equal(y, expected)
  sq = gb.Squeeze()
  assert sq.inverse_event_shape([4, 6, 3]).as_list() == [2, 3, 12]
  assert sq.forward_event_shape([2, 3, 12]).as_list() == [4, 6, 3]


# --- user-supplied network: formula and call counting -----------------------------------


class CountingNet(tf.Module):
  """A one-conv network that counts its Python calls."""

  def __init__(self, in_channels, out_channels, dtype=tf.float32, seed=0):
    super().__init__(name='counting_net')
    rng = np.random.default_rng(seed)
    self.kernel = tf.Variable(
        rng.normal(0, 0.3, [3, 3, in_channels, out_channels]), dtype=dtype,
        name='kernel')
    self.calls = 0

  def __call__(self, x):
    self.calls += 1
    return tf.nn.conv2d(x, self.kernel, 1, 'SAME')


def test_affine_coupling_formula_with_user_network():
  net = CountingNet(2, 4, dtype=tf.float64)
  cp = gb.AffineCoupling(4, network=net, dtype=tf.float64)
  x = _x([3, 4, 4, 4])
  h = tf.nn.conv2d(tf.constant(x[..., :2]), net.kernel, 1, 'SAME').numpy()
  shift, raw = h[..., 0::2], h[..., 1::2]
  scale = 1 / (1 + np.exp(-(raw + 2)))
  expected = np.concatenate([x[..., :2], (x[..., 2:] + shift) * scale], -1)
  np.testing.assert_allclose(cp.inverse(tf.constant(x)).numpy(), expected,
                             rtol=1e-12)
  np.testing.assert_allclose(
      cp.inverse_log_det_jacobian(tf.constant(x), event_ndims=3).numpy(),
      np.log(scale).sum(axis=(1, 2, 3)), rtol=1e-12)
  assert [v.name for v in cp.trainable_variables] == ['kernel:0']


def test_additive_coupling_formula_with_user_network():
  net = CountingNet(2, 2, dtype=tf.float64)
  cp = gb.AdditiveCoupling(4, network=net, dtype=tf.float64)
  x = _x([3, 4, 4, 4])
  h = tf.nn.conv2d(tf.constant(x[..., :2]), net.kernel, 1, 'SAME').numpy()
  np.testing.assert_allclose(cp.inverse(tf.constant(x)).numpy(),
                             np.concatenate([x[..., :2], x[..., 2:] + h], -1),
                             rtol=1e-12)


def _coupling_dist():
  net = CountingNet(2, 4)
  cp = gb.AffineCoupling(4, network=net)
  base = tfd.Sample(tfd.Normal(0., 1.), [4, 4, 4])
  return net, tfd.TransformedDistribution(base, cp)


@pytest.mark.parametrize('what, mode', [
    ('log_prob', 'eager'),
    ('log_prob', 'tf.function'),
    ('sample', 'eager'), ('sample', 'tf.function'),
    ('sample_and_log_prob', 'eager'), ('sample_and_log_prob', 'tf.function'),
])
def test_network_called_once(what, mode):
  net, dist = _coupling_dist()
  x = tf.random.normal([3, 4, 4, 4])
  ops = {
      'log_prob': lambda: dist.log_prob(x),
      'sample': lambda: dist.sample(3, seed=1),
      'sample_and_log_prob': lambda: dist.experimental_sample_and_log_prob(
          3, seed=1),
  }
  fn = ops[what] if mode == 'eager' else tf.function(ops[what])
  out = fn()
  assert net.calls == 1, f'{what} ({mode}) called the network {net.calls} times'
  if mode == 'tf.function':
    fn()                      # no retrace, no new Python call
    assert net.calls == 1
  if what == 'sample_and_log_prob':
    # The fused log-prob is the right one.
    y, lp = out
    np.testing.assert_allclose(lp.numpy(), dist.log_prob(tf.identity(y)).numpy(),
                               rtol=1e-5, atol=1e-4)


def test_eager_cache_sees_variable_changes():
  net, dist = _coupling_dist()
  x = tf.random.normal([2, 4, 4, 4])
  before = dist.log_prob(x).numpy()
  net.kernel.assign(net.kernel * 2.0)
  after = dist.log_prob(x).numpy()        # the same tensor object, new variables
  assert not np.allclose(before, after)


# --- ActNorm's data-dependent initialisation ------------------------------------------


def _batch(seed=0, shape=(16, 4, 4, 3)):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(1.5, 3.0, shape) * np.array([1., 0.1, 10.]),
                     tf.float32)


def test_actnorm_initialize_standardises():
  an = gb.ActNorm(3)
  assert not an.is_initialized
  x = _batch()
  assert an.initialize(x) is True
  assert an.is_initialized
  z = an.inverse(tf.identity(x)).numpy().reshape(-1, 3).astype(np.float64)
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.std(0), 1, atol=1e-4)


def test_actnorm_second_initialize_changes_nothing():
  an = gb.ActNorm(3)
  an.initialize(_batch(0))
  values = [v.numpy().copy() for v in an.variables]
  assert an.initialize(_batch(1)) is False
  assert tfp_glow.initialize(an, _batch(2)) == 0
  for v, b in zip(an.variables, values):
    np.testing.assert_array_equal(v.numpy(), b)


def test_initialize_counts_actnorms_of_a_coupling():
  cp = gb.AffineCoupling(4, hidden_width=HIDDEN, seed=0)
  assert tfp_glow.initialize(cp, tf.random.normal([8, 4, 4, 4])) == 2
  assert cp.network.actnorm1.is_initialized and cp.network.actnorm2.is_initialized


def test_actnorm_forward_does_not_initialise():
  an = gb.ActNorm(3)
  an.forward(_batch())
  tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), [4, 4, 3]),
                              an).sample(2, seed=1)
  assert float(an.initialized.numpy()) == 0.0
  np.testing.assert_array_equal(an.bias.numpy(), 0)
  np.testing.assert_array_equal(an.logs.numpy(), 0)


@pytest.mark.parametrize('direction', ['inverse', 'forward', 'ildj'])
@pytest.mark.parametrize('mode', ['eager', 'tf.function'])
def test_actnorm_uninitialised_with_validate_args_raises(direction, mode):
  an = gb.ActNorm(3, validate_args=True)
  calls = {
      'inverse': lambda x: an.inverse(x),
      'forward': lambda x: an.forward(x),
      'ildj': lambda x: an.inverse_log_det_jacobian(x, event_ndims=3),
  }
  fn = calls[direction] if mode == 'eager' else tf.function(calls[direction])
  with pytest.raises(tf.errors.InvalidArgumentError, match='initiali'):
    fn(_batch())
  an.initialize(_batch())
  fn(_batch())  # fine once initialised


def test_actnorm_checkpoint_restore_keeps_values(tmp_path):
  an = gb.ActNorm(3)
  an.initialize(_batch(0))
  path = tf.train.Checkpoint(actnorm=an).save(str(tmp_path / 'ckpt'))
  fresh = gb.ActNorm(3)
  tf.train.Checkpoint(actnorm=fresh).restore(path).assert_consumed()
  for a, b in zip(an.variables, fresh.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert fresh.is_initialized
  assert fresh.initialize(_batch(5)) is False
  assert tfp_glow.initialize(fresh, _batch(5)) == 0
  for a, b in zip(an.variables, fresh.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


# --- bad input: construction ---------------------------------------------------------------


@pytest.mark.parametrize('make, error, match', [
    (lambda: gb.AffineCoupling(3), ValueError, 'channels=3'),
    (lambda: gb.AdditiveCoupling(5), ValueError, 'channels=5'),
    (lambda: gb.AffineCoupling(0), ValueError, 'got 0'),
    (lambda: gb.AdditiveCoupling(-2), ValueError, 'got -2'),
    (lambda: gb.ActNorm(0), ValueError, 'got 0'),
    (lambda: gb.ActNorm(-3), ValueError, 'got -3'),
    (lambda: gb.ActNorm(2.5), ValueError, 'got 2.5'),
    (lambda: gb.InvertibleConv1x1(0), ValueError, 'got 0'),
    (lambda: gb.InvertibleConv1x1(-1, lu=True), ValueError, 'got -1'),
    (lambda: gb.ChannelReverse(0), ValueError, 'got 0'),
    (lambda: gb.ChannelShuffle(-4), ValueError, 'got -4'),
    (lambda: gb.ChannelPermute([0, 0, 1]), ValueError, r'\[0, 0, 1\]'),
    (lambda: gb.InvertibleConv1x1(4, lu='yes'), ValueError, 'yes'),
    (lambda: gb.ActNorm(4, logscale_factor=-1.0), ValueError, '-1.0'),
    (lambda: gb.AffineCoupling(4, hidden_width=0), ValueError,
     'hidden_width.*got 0'),
    (lambda: gb.AffineCoupling(4, dtype=tf.int32), TypeError, 'int32'),
    (lambda: gb.ActNorm(4, dtype=tf.int64), TypeError, 'int64'),
    (lambda: gb.AffineCoupling(4, network='conv'), TypeError, 'str'),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_construction(make, error, match):
  with pytest.raises(error, match=match):
    make()


def test_keras_layer_network_rejected():
  keras = pytest.importorskip('keras')
  layer = keras.layers.Conv2D(4, 3, padding='same')
  with pytest.raises(TypeError, match='Keras layer.*Conv2D'):
    gb.AffineCoupling(4, network=layer)


def test_network_with_wrong_output_channels_rejected():
  cp = gb.AffineCoupling(4, network=CountingNet(2, 2))  # affine needs 4
  with pytest.raises(ValueError, match='4 channels'):
    cp.inverse(tf.zeros([1, 4, 4, 4]))


# --- bad input: call time --------------------------------------------------------------------

CALL_COMPONENTS = [c for c in COMPONENTS]


@pytest.mark.parametrize('component', CALL_COMPONENTS)
@pytest.mark.parametrize('direction', ['inverse', 'forward'])
def test_wrong_rank_raises(component, direction):
  bij = COMPONENTS[component][0](tf.float32)
  with pytest.raises(ValueError, match='rank'):
    getattr(bij, direction)(tf.zeros([4, 4]))


@pytest.mark.parametrize('component', [c for c in COMPONENTS if c != 'squeeze'])
@pytest.mark.parametrize('direction', ['inverse', 'forward'])
def test_wrong_channel_count_raises(component, direction):
  bij = COMPONENTS[component][0](tf.float32)
  with pytest.raises(ValueError, match='4 channels'):
    getattr(bij, direction)(tf.zeros([2, 4, 4, 3]))


def test_squeeze_bad_shapes_raise():
  sq = gb.Squeeze()
  with pytest.raises(ValueError, match='even'):
    sq.inverse(tf.zeros([1, 3, 4, 2]))
  with pytest.raises(ValueError, match='even'):
    sq.inverse(tf.zeros([1, 4, 5, 2]))
  with pytest.raises(ValueError, match='divisible by 4'):
    sq.forward(tf.zeros([1, 2, 2, 6]))
  # Unknown H at trace time: the error comes when the graph runs.
  fn = tf.function(sq.inverse, input_signature=[tf.TensorSpec([None, None,
                                                                None, 2])])
  with pytest.raises(tf.errors.InvalidArgumentError):
    fn(tf.zeros([1, 3, 4, 2]))


@pytest.mark.parametrize('component', CALL_COMPONENTS)
def test_integer_input_raises(component):
  bij = COMPONENTS[component][0](tf.float32)
  # Typed bijectors fail in TFP's dtype conversion (ValueError), untyped ones
  # (permutations, squeeze) in tfp_glow's own check (TypeError); both name it.
  for direction in ('inverse', 'forward'):
    with pytest.raises((TypeError, ValueError), match='int32'):
      getattr(bij, direction)(tf.zeros([2, 4, 4, 4], tf.int32))


VALIDATING = {
    'actnorm': lambda: gb.ActNorm(4, validate_args=True),
    'conv1x1': lambda: gb.InvertibleConv1x1(4, validate_args=True),
    'conv1x1_lu': lambda: gb.InvertibleConv1x1(4, lu=True, validate_args=True),
    'reverse': lambda: gb.ChannelReverse(4, validate_args=True),
    'shuffle': lambda: gb.ChannelShuffle(4, validate_args=True),
    'affine': lambda: gb.AffineCoupling(4, hidden_width=HIDDEN,
                                        validate_args=True),
    'additive': lambda: gb.AdditiveCoupling(4, hidden_width=HIDDEN,
                                            validate_args=True),
    'squeeze': lambda: gb.Squeeze(validate_args=True),
}


@pytest.mark.parametrize('bad', [np.nan, np.inf])
@pytest.mark.parametrize('direction', ['inverse', 'forward'])
@pytest.mark.parametrize('component', list(VALIDATING))
def test_non_finite_input_with_validate_args_raises(component, direction, bad):
  bij = harness.perturb(VALIDATING[component](), 0, 0.1)
  x = np.zeros([2, 4, 4, 4], np.float32)
  x[1, 2, 3, 1] = bad
  with pytest.raises(tf.errors.InvalidArgumentError, match='NaN or Inf'):
    getattr(bij, direction)(tf.constant(x))


def test_initialize_a_chain_of_components():
  an = gb.ActNorm(4)
  cp = gb.AffineCoupling(4, hidden_width=HIDDEN, seed=0)
  # Chain([b1, b2, b3]).inverse applies b1 first: ActNorm, conv, coupling.
  chain = tfp.bijectors.Chain([an, gb.InvertibleConv1x1(4, seed=0), cp])
  x = tf.random.stateless_normal([8, 4, 4, 4], seed=[1, 2]) * 3.0 + 1.0
  assert tfp_glow.initialize(chain, x) == 3
  z = an.inverse(tf.identity(x)).numpy().reshape(-1, 4).astype(np.float64)
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
  assert tfp_glow.initialize(chain, x) == 0


# --- the harness itself catches the errors it is for --------------------------------------


class _BothSignsWrong(gb.AffineCoupling):
  """A coupling whose log-det has the wrong sign in both directions."""

  def _couple(self, xb, h, inverse):
    yb, ldj = super()._couple(xb, h, inverse)
    return yb, -ldj


class _BadForward(gb.AffineCoupling):
  """A coupling whose forward subtracts the shift before unscaling."""

  def _couple(self, xb, h, inverse):
    if inverse:
      return super()._couple(xb, h, inverse)
    _, ldj = super()._couple(xb, h, inverse)
    log_scale = tf.math.log_sigmoid(h[..., 1::2] + 2.0)
    return (xb - h[..., 0::2]) * tf.exp(-log_scale), ldj


def _meta_config():
  return harness.Config(data_shape=IMAGE, latent_shape=IMAGE)


def test_harness_catches_sign_error_in_both_directions():
  factory = lambda dt: _BothSignsWrong(4, hidden_width=HIDDEN, seed=1, dtype=dt)
  # fldj + ildj(forward) == 0 still holds: only the Jacobian comparison sees it.
  with pytest.raises(AssertionError, match='slogdet'):
    harness.check_log_det(factory, _meta_config())


def test_harness_catches_a_wrong_inverse():
  factory = lambda dt: _BadForward(4, hidden_width=HIDDEN, seed=1, dtype=dt)
  with pytest.raises(AssertionError, match='forward'):
    harness.check_round_trip(factory, _meta_config())


def test_harness_needs_perturbation_to_see_some_errors():
  """At the identity init the zero last layer hides a wrong shift sign."""
  cfg = _meta_config()
  bij = _BadForward(4, hidden_width=HIDDEN, seed=1, dtype=tf.float64)
  x = harness.data(cfg)
  np.testing.assert_allclose(bij.forward(bij.inverse(x)).numpy(), x.numpy(),
                             atol=1e-12)


# --- mixed precision -------------------------------------------------------------------


def _bf16_affine(dt):
  return gb.AffineCoupling(4, hidden_width=HIDDEN, seed=1, dtype=dt,
                           compute_dtype=tf.bfloat16)


@pytest.mark.parametrize('check', ['round_trip', 'log_det', 'gradients',
                                   'batch_shapes'])
def test_bfloat16_network_keeps_the_float32_flow_exact(check):
  # The network computes in bfloat16, but both directions see the same network
  # output, so the coupling stays exactly invertible with an exact log-det.
  cfg = harness.Config(data_shape=IMAGE, latent_shape=IMAGE, dtype=tf.float32,
                       trainable=True)
  harness.CHECKS[check](_bf16_affine, cfg)


def test_bfloat16_network_tracks_the_float32_network():
  x = tf.random.stateless_normal([8, 4, 4, 2], seed=[1, 2])
  exact = tfp_glow.nn.GlowNetwork(2, 4, 16, seed=3)
  low = tfp_glow.nn.GlowNetwork(2, 4, 16, seed=3,
                                      compute_dtype=tf.bfloat16)
  harness.perturb(exact, seed=0, scale=0.2)
  for a, b in zip(exact.trainable_variables, low.trainable_variables):
    b.assign(a)
  for a, b in zip(exact.variables, low.variables):
    b.assign(a)
  want, got = exact(x).numpy(), low(x).numpy()
  assert got.dtype == np.float32
  scale = np.abs(want).max()
  assert scale > 0.1, 'the perturbed network should not output ~0'
  # bfloat16 has an 8-bit mantissa: ~1% relative error is expected.
  np.testing.assert_allclose(got, want, atol=0.03 * scale)
  assert not np.array_equal(got, want), 'the bfloat16 path must actually run'


def test_compute_dtype_only_for_the_default_network():
  with pytest.raises(ValueError, match='compute_dtype'):
    gb.AffineCoupling(4, network=lambda x: x, compute_dtype=tf.bfloat16)
  with pytest.raises(ValueError, match='int32'):
    tfp_glow.nn.GlowNetwork(2, 4, 8, compute_dtype=tf.int32)
