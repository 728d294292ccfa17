"""Property-based tests of every Glow component, on drawn configurations.

Each property draws a component (`strategies.components`: kind, channels,
height and width, hidden width, seeds, dtype, weights moved away from their
initial values by `harness.perturb`) and, where it matters, a batch shape
(empty, one, odd, several dimensions), and checks one property against an
independent computation: the shared harness's float64 autodiff Jacobians and
hand-written log-likelihoods, numpy's normal density, ordinary autodiff. The
default run draws a few derandomised examples per property; the `_slow`
copies (run with `-m slow`) many more (tests/strategies.py).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from glow_helpers import CountingWrapper
import harness
import strategies
import hypothesis
from hypothesis import strategies as st
from strategies import ComponentSpec, components, properties
from tfp_glow import bijectors as gb

tfd = tfp.distributions


def _tol(dtype, scale=1.0):
  """Absolute tolerance of a round trip, relative to the values' size."""
  return (1e-5 if dtype == tf.float32 else 1e-10) * max(1.0, scale)


def _kwargs(spec, batch_shape, seed=5):
  n = spec.num_classes if spec.kind == 'top_prior' else None
  return strategies.labels_for(n, batch_shape, seed)


@properties(default=8, slow=150, spec=components(),
            batch_shape=strategies.batch_shapes())
def test_round_trip_both_ways(spec, batch_shape):
  """forward(inverse(x)) == x and inverse(forward(z)) == z at any batch shape,
  the outputs of the batch shape and the other side's event shape."""
  bij = spec.build()
  kw = _kwargs(spec, batch_shape)
  dtype = spec.tf_dtype
  x = strategies.normal(batch_shape + spec.data_shape, dtype, 1)
  z = bij.inverse(x, **kw)
  assert z.shape.as_list() == list(batch_shape + spec.latent_shape)
  assert z.dtype == dtype
  x_again = bij.forward(z, **kw)
  assert x_again.shape.as_list() == list(batch_shape + spec.data_shape)
  scale = float(np.max(np.abs(x.numpy()), initial=0.0))
  np.testing.assert_allclose(x_again.numpy(), x.numpy(), rtol=0,
                             atol=_tol(dtype, scale),
                             err_msg='forward(inverse(x)) != x')
  z0 = strategies.normal(batch_shape + spec.latent_shape, dtype, 2)
  z_again = bij.inverse(bij.forward(z0, **kw), **kw)
  scale = float(np.max(np.abs(z0.numpy()), initial=0.0))
  np.testing.assert_allclose(z_again.numpy(), z0.numpy(), rtol=0,
                             atol=_tol(dtype, scale),
                             err_msg='inverse(forward(z)) != z')


@properties(default=5, slow=120, spec=components(),
            batch=st.integers(1, 3))
def test_log_dets_against_autodiff_jacobian(spec, batch):
  """Both log-dets against slogdet of the float64-evaluated autodiff
  Jacobian, each direction on its own, and fldj(z) == -ildj(forward(z))
  (`harness.check_log_det`)."""
  harness.check_log_det(spec.factory, spec.config(batch=batch))


@properties(default=6, slow=100, spec=components(),
            batch_shape=strategies.batch_shapes(min_ndims=1))
def test_log_dets_have_the_batch_shape(spec, batch_shape):
  """ildj(x) and fldj(z) at a batch shape (empty and several dimensions
  included) are those of the flattened batch, reshaped."""
  bij = spec.build()
  dtype = spec.tf_dtype
  kw = _kwargs(spec, batch_shape)
  n = int(np.prod(batch_shape))
  flat_kw = {k: tf.reshape(v, [n]) for k, v in kw.items()}
  x = strategies.normal(batch_shape + spec.data_shape, dtype, 3)
  z = strategies.normal(batch_shape + spec.latent_shape, dtype, 4)
  for name, value, event, ndims in (
      ('inverse_log_det_jacobian', x, spec.data_shape, 3),
      ('forward_log_det_jacobian', z, spec.latent_shape, 3)):
    got = getattr(bij, name)(value, event_ndims=ndims, **kw)
    assert got.shape.as_list() == list(batch_shape), (name, got.shape)
    flat = getattr(bij, name)(tf.reshape(value, (n,) + event),
                              event_ndims=ndims, **flat_kw)
    np.testing.assert_allclose(tf.reshape(got, [n]).numpy(), flat.numpy(),
                               rtol=1e-6 if dtype == tf.float32 else 1e-12,
                               atol=1e-6 if dtype == tf.float32 else 1e-12,
                               err_msg=name)


@properties(default=4, slow=100, spec=components(), batch=st.integers(1, 3))
def test_transformed_log_prob_is_base_plus_jacobian(spec, batch):
  """`TransformedDistribution.log_prob(x)` == log N(inverse(x); 0, I) (numpy)
  + log|det| of the autodiff Jacobian of `inverse` (numpy slogdet): nothing
  of the bijector's own log-det enters the expected value."""
  bij = spec.build()
  cfg = spec.config(batch=batch)
  dtype = spec.tf_dtype
  base = tfd.Sample(tfd.Normal(tf.zeros([], dtype), tf.ones([], dtype)),
                    sample_shape=list(spec.latent_shape))
  dist = tfd.TransformedDistribution(base, bij)
  kw = harness.bijector_kwargs(cfg)
  x = harness.data(cfg)
  got = dist.log_prob(x, bijector_kwargs=kw).numpy()
  eps = bij.inverse(harness.data(cfg), **kw).numpy().astype(np.float64)
  eps = eps.reshape(batch, -1)
  log_det = harness.jacobian_log_det(lambda v: bij.inverse(v, **kw),
                                     harness.data(cfg), spec.data_shape)
  want = (-0.5 * np.sum(eps**2, axis=1)
          - 0.5 * eps.shape[1] * np.log(2 * np.pi) + log_det)
  dim = int(np.prod(spec.data_shape))
  np.testing.assert_allclose(
      got, want, rtol=1e-5 if dtype == tf.float32 else 1e-10,
      atol=1e-5 * dim if dtype == tf.float32 else 1e-9)


@properties(default=6, slow=100, spec=components(), batch=st.integers(1, 4))
def test_gradients_reach_every_variable(spec, batch):
  """The negative log-likelihood's gradient reaches every trainable variable
  (the classifier aside) and is finite (`harness.check_gradients`; zero is
  allowed: a ReLU of a tiny drawn network can be dead for the whole batch)."""
  harness.check_gradients(spec.factory, spec.config(batch=batch),
                          require_nonzero=False)


# The component kinds `invert.chain_inverse_by_inversion` takes (no labels).
_INVERTIBLE_KINDS = tuple(k for k in strategies.COMPONENT_KINDS
                          if k != 'top_prior')


@properties(default=5, slow=100,
            spec=components(kinds=_INVERTIBLE_KINDS))
def test_invert_gradients_equal_store(spec):
  """Backprop by inversion gives ordinary autodiff's gradients
  (`harness.check_invert_gradients`: float64 to 1e-10, float32 to 1e-4),
  the LU 1x1 convolution's float32 rebuild included (issue 20's float64
  stream; before it, ~1e-3 off on weights away from init).
  """
  harness.check_invert_gradients(spec.factory, spec.config(),
                                 modes=('eager',))


@properties(default=2, slow=30, spec=components())
def test_eager_graph_and_xla_agree(spec):
  """eager == tf.function (dynamic batch, one trace) == jit_compile, for
  both directions and both log-dets (`harness.check_compiled`)."""
  harness.check_compiled(spec.factory, spec.config())


@properties(default=3, slow=80, spec=components(), n=st.integers(1, 3),
            examples=[
                # Found by this property: the class-conditional prior
                # gathered from the variable (ResourceGather), for which
                # tf.vectorized_map has no rule.
                hypothesis.example(spec=ComponentSpec(
                    kind='top_prior', channels=1, height=1, width=1,
                    dtype='float32', num_classes=2), n=1)])
def test_vectorized_map_over_examples(spec, n):
  """`tf.vectorized_map` of each direction and log-det over the examples of
  a batch gives the batched call's results, as TFP's bijector property tests
  expect of every bijector (no fallback to a while loop)."""
  bij = spec.build()
  dtype = spec.tf_dtype
  kw = _kwargs(spec, (n,))
  x = strategies.normal((n,) + spec.data_shape, dtype, 6)
  z = strategies.normal((n,) + spec.latent_shape, dtype, 7)
  calls = {
      'inverse': (x, lambda v, **k: bij.inverse(v, **k)),
      'forward': (z, lambda v, **k: bij.forward(v, **k)),
      'ildj': (x, lambda v, **k: bij.inverse_log_det_jacobian(
          v, event_ndims=3, **k)),
      'fldj': (z, lambda v, **k: bij.forward_log_det_jacobian(
          v, event_ndims=3, **k)),
  }
  tol = dict(rtol=1e-5, atol=1e-5) if dtype == tf.float32 else dict(
      rtol=1e-10, atol=1e-10)
  for name, (value, fn) in calls.items():
    batched = fn(tf.identity(value), **kw)
    if kw:
      mapped = tf.vectorized_map(lambda a: fn(a[0], labels=a[1]),
                                 (value, kw['labels']),
                                 fallback_to_while_loop=False)
    else:
      mapped = tf.vectorized_map(fn, value, fallback_to_while_loop=False)
    np.testing.assert_allclose(
        mapped.numpy(), np.broadcast_to(batched.numpy(), mapped.shape), **tol,
        err_msg=f'{name}: vectorized_map != batched call')


# Each variable is read at most this often by one log_prob: once for the
# transform, and once more for the log-det where it comes from the same
# parameter (ActNorm's logs, the 1x1 convolution's weight, a prior's gain).
MAX_READS = 2


@properties(default=6, slow=100,
            spec=components(kinds=strategies.COMPONENT_KINDS + (
                # The kinds with networks, twice as often.
                'affine', 'additive', 'affine_user_net', 'additive_user_net',
                'split_prior')))
def test_log_prob_reads_each_variable_a_bounded_number_of_times(spec):
  """In a graph, a `TransformedDistribution.log_prob` reads no variable more
  than it must (TFP's `assert_no_excessive_var_usage`), and a network (a
  coupling's, default or user-supplied; a split prior's) runs once: its
  Python call count after one trace."""
  bij = spec.build()
  dtype = spec.tf_dtype
  base = tfd.Sample(tfd.Normal(tf.zeros([], dtype), tf.ones([], dtype)),
                    sample_shape=list(spec.latent_shape))
  dist = tfd.TransformedDistribution(base, bij)
  kw = _kwargs(spec, (2,))
  x = strategies.normal((2,) + spec.data_shape, dtype, 8)
  wrapper = None
  if isinstance(getattr(bij, 'network', None), tf.Module):
    bij.network = wrapper = CountingWrapper(bij.network)
  concrete = tf.function(
      lambda v: dist.log_prob(v, bijector_kwargs=kw)).get_concrete_function(x)
  reads = harness.variable_reads(concrete, bij.variables)
  too_many = {k: v for k, v in reads.items() if v > MAX_READS}
  assert not too_many, f'variables read more than {MAX_READS} times: {too_many}'
  if wrapper is not None:
    assert wrapper.calls == 1, f'the network ran {wrapper.calls} times'


@properties(default=4, slow=60, channels=st.integers(1, 5),
            batch_shape=strategies.non_empty_batch_shapes(),
            side=st.integers(1, 3), seed=st.integers(0, 2**16),
            dtype=st.sampled_from(list(strategies.DTYPES)))
def test_actnorm_initialisation(channels, batch_shape, side, seed, dtype):
  """An uninitialised ActNorm with `validate_args` refuses to run, by name;
  `initialize` on a drawn batch (not standardised) standardises it per
  channel, once."""
  dt = strategies.DTYPES[dtype]
  n = int(np.prod(batch_shape))
  hypothesis_assume_spread = n * side * side >= 2   # a std needs two values
  rng = np.random.default_rng(seed)
  x = tf.constant(rng.normal(rng.normal(0, 5, channels),
                             rng.uniform(0.05, 10, channels),
                             batch_shape + (side, side, channels)), dt)
  an = gb.ActNorm(channels, dtype=dt, validate_args=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match='initiali'):
    an.inverse(x)
  with pytest.raises(tf.errors.InvalidArgumentError, match='initiali'):
    an.forward(x)
  if not hypothesis_assume_spread:
    return
  assert an.initialize(x) is True
  z = an.inverse(tf.identity(x)).numpy().reshape(-1, channels)
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
  before = [v.numpy().copy() for v in an.variables]
  assert an.initialize(x * 3.0 + 1.0) is False
  for b, v in zip(before, an.variables):
    np.testing.assert_array_equal(b, v.numpy())
