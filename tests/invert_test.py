"""Backprop by inversion (`backprop='invert'`) of whole Glows: gradients equal
'store''s (eagerly, and in a graph where each level runs as a loop over its
steps), the loop's graph is flat in depth, and what the loop refuses.

(Per component, the same check is in bijectors_test.py; the shared helpers
are in glow_helpers.py.)
"""

import numpy as np
import pytest
import tensorflow as tf

import harness
import tfp_glow
from tfp_glow import bijectors as gb
from glow_helpers import MEDIUM, SMALL, counting_dist, glow_config, glow_kwargs, init_batch, random_images  # pylint: disable=g-multiple-import


# --- memory-saving backprop by inversion (backprop='invert') ------------------------


# (dtype, Glow options): every coupling and permutation, the priors' options,
# uneven splits, float32, and bfloat16 networks.
INVERT_CASES = {
    'affine_conv_f64': (tf.float64, dict()),
    'affine_conv_lu_f64': (tf.float64, dict(permutation='conv_lu')),
    'affine_shuffle_f64': (tf.float64, dict(permutation='shuffle')),
    'affine_reverse_f64': (tf.float64, dict(permutation='reverse')),
    'additive_conv_f64': (tf.float64, dict(coupling='additive')),
    'additive_conv_lu_learn_top_classes_f64': (tf.float64, dict(
        coupling='additive', permutation='conv_lu', learn_top=True,
        num_classes=3)),
    'additive_shuffle_split_quarter_f64': (tf.float64, dict(
        coupling='additive', permutation='shuffle', split_fraction=0.25)),
    'affine_conv_f32': (tf.float32, dict()),
    'affine_reverse_learn_top_classes_f32': (tf.float32, dict(
        permutation='reverse', learn_top=True, num_classes=3)),
}


def _invert_factories(**kw):
  kw = glow_kwargs(**kw)
  return (lambda dt: gb.Glow(seed=0, dtype=dt, backprop='store', **kw),
          lambda dt: gb.Glow(seed=0, dtype=dt, backprop='invert', **kw))


# A Glow's levels run as loops over their steps (`steps_inverse_by_inversion`:
# a tf.while_loop in a graph, a Python loop eagerly; each component on its own
# through `chain_inverse_by_inversion` is checked in bijectors_test.py). Every
# case runs in a graph, these also eagerly.
EAGER_TOO = ('affine_conv_f64', 'additive_conv_lu_learn_top_classes_f64',
             'affine_conv_f32')


# Cases whose options the others also cover (reverse, shuffle, additive):
# in the slow set, which .ci/run runs too, to keep the default run short.
COVERED_ELSEWHERE = ('affine_reverse_f64', 'affine_shuffle_f64',
                     'additive_conv_f64')


@pytest.mark.parametrize('case', [
    pytest.param(c, marks=pytest.mark.slow) if c in COVERED_ELSEWHERE else c
    for c in INVERT_CASES])
def test_invert_gradients_equal_store(case):
  """Gradients to the images and to every variable: 'invert' == 'store'
  (float64 to 1e-10, float32 to 1e-4, relative to each gradient's max)."""
  dtype, kw = INVERT_CASES[case]
  store, inverted = _invert_factories(**kw)
  harness.check_invert_gradients(
      store, glow_config(dtype, **kw), inverted,
      modes=('eager', 'graph') if case in EAGER_TOO else ('graph',))


def test_invert_gradients_bfloat16_networks():
  """bfloat16 networks: the recomputation rounds a rebuilt input (float32
  rounding away from the original) to bfloat16, which can land on the
  neighbouring bfloat16 value; measured difference ~1e-4, bound 2e-3."""
  kw = dict(compute_dtype=tf.bfloat16)
  factories = [lambda dt, b=b: gb.Glow(seed=0, dtype=dt, backprop=b,
                                       **glow_kwargs(), **kw)
               for b in ('store', 'invert')]
  worst = harness.check_invert_gradients(
      factories[0], glow_config(tf.float32), factories[1], tol=2e-3)
  print(f'bfloat16 networks: largest relative difference {worst:.2g}')


def test_invert_compiled_dynamic_and_empty_batch():
  """tf.function (dynamic batch, one trace): the same gradients as 'store'
  (eager), and an empty batch gives zero gradients, not an error. (XLA, which
  compiles per batch size, is checked through GlowModel with jit_compile=True
  in training_test.py.)"""
  glows = {b: gb.Glow(seed=0, dtype=tf.float64, backprop=b,
                      **glow_kwargs(num_classes=3, steps_per_level=3))
           for b in ('store', 'invert')}
  for glow in glows.values():
    harness.perturb(glow, 0, 0.1)

  def grad(glow, x, labels):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = -tf.reduce_sum(glow.log_prob_parts(x, labels).log_prob)
    # (The classifier is not part of log p(x | y): None in both modes.)
    return [None if g is None else tf.convert_to_tensor(g)
            for g in tape.gradient(loss, [x] + list(glow.trainable_variables))]

  compiled = tf.function(lambda x, l: grad(glows['invert'], x, l),
                         input_signature=[tf.TensorSpec([None, 4, 4, 2],
                                                        tf.float64),
                                          tf.TensorSpec([None], tf.int32)])
  x = tf.constant(np.random.default_rng(1).standard_normal([3, 4, 4, 2]))
  labels = tf.constant([0, 2, 1])
  for n in (3, 2, 0):
    want = grad(glows['store'], x[:n], labels[:n])
    got = compiled(x[:n], labels[:n])
    for a, b in zip(want, got):
      assert (a is None) == (b is None)
      if a is None:
        continue
      a, b = a.numpy(), b.numpy()
      assert a.shape == b.shape
      np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10 * max(
          1.0, float(np.max(np.abs(a))) if a.size else 1.0), err_msg=f'n={n}')
      if n == 0:
        assert not np.any(b), 'an empty batch moved a gradient'
  assert compiled.experimental_get_tracing_count() == 1


def test_invert_data_dependent_init_is_the_same():
  """ActNorm's init runs eagerly without gradients: 'invert' must not change
  it (it takes the ordinary path)."""
  values = {}
  for backprop in ('store', 'invert'):
    dist = tfp_glow.glow_distribution(**glow_kwargs(), seed=0,
                                      backprop=backprop)
    assert tfp_glow.initialize(dist, init_batch(SMALL, 0)) == 12
    values[backprop] = [v.numpy() for v in dist.variables]
  for a, b in zip(values['store'], values['invert']):
    np.testing.assert_array_equal(a, b)


def test_invert_runs_each_network_once_more_in_the_backward_pass():
  """The coupling fuses rebuild and recompute: one extra network evaluation
  per coupling (RevNet's ~1.33x), not two. (Eagerly too, a level's steps
  run as the first step's components looped K times over the level's
  parameters: that step's network wrapper counts the level's calls.)"""
  dist, wrappers = counting_dist()
  glow = tfp_glow.get_glow(dist)
  glow._backprop = 'invert'  # pylint: disable=protected-access
  k = glow.steps_per_level
  per_level = lambda: [sum(w.calls for w in wrappers[i:i + k])  # pylint: disable=g-long-lambda
                       for i in range(0, len(wrappers), k)]
  with tf.GradientTape() as tape:
    loss = -tf.reduce_sum(dist.log_prob(random_images()))
  assert per_level() == [k] * glow.levels
  tape.gradient(loss, glow.trainable_variables)
  assert per_level() == [2 * k] * glow.levels


def _gradient_graph_ops(backprop, steps_per_level, types):
  """Op counts (graph + function library) of a traced gradient of log_prob."""
  from tfp_glow.benchmark import models  # pylint: disable=g-import-not-at-top
  glow = gb.Glow(seed=0, dtype=tf.float32, backprop=backprop,
                 **glow_kwargs(steps_per_level=steps_per_level))

  @tf.function
  def grad(x):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_sum(glow.log_prob_parts(x).log_prob)
    return tape.gradient(loss, glow.trainable_variables)

  concrete = grad.get_concrete_function(tf.TensorSpec([None] + list(SMALL)))
  counts = models.count_ops(concrete, types)
  counts['nodes'] = models.graph_nodes(concrete)
  counts['variables'] = len(glow.variables)
  return counts


# Slow set (run by .ci/run): one of the default run's slowest (issue 22: under 4 minutes).
@pytest.mark.slow
def test_invert_graph_does_not_grow_with_depth():
  """Under 'invert' a level's K steps are one step's ops in a tf.while_loop:
  the convolutions (forward, rebuild/recompute, their gradients) in the
  traced graph are the same for K=2 and K=3; under 'store' they grow with K.
  Nothing else grows either: each level's parameters are [K, ...] variables
  (as many for any K), read once per pass."""
  types = ['Conv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter', 'While',
           'StatelessWhile']
  counts = {(b, k): _gradient_graph_ops(b, k, types)
            for b in ('store', 'invert') for k in (2, 3)}
  inv2, inv5 = counts['invert', 2], counts['invert', 3]
  st2, st5 = counts['store', 2], counts['store', 3]
  for t in types[:3]:
    assert inv5[t] == inv2[t] > 0, (t, inv2, inv5)
    assert st5[t] > st2[t], (t, st2, st5)
  loops = lambda c: c['While'] + c['StatelessWhile']  # pylint: disable=unnecessary-lambda-assignment
  assert loops(inv2) == 4 and loops(st2) == 0  # 2 levels x (fwd, bwd)
  # The whole inverted graph is the same size (measured 2341 nodes at K=2
  # and 3; 'store' 2261 -> 3081), and so is the variable count.
  assert inv5['nodes'] == inv2['nodes'], (inv2, inv5)
  assert st5['nodes'] > st2['nodes'], (st2, st5)
  assert inv5['variables'] == inv2['variables'] == st5['variables']


def test_steps_loop_refuses_steps_that_are_not_copies():
  from tfp_glow.bijectors import invert  # pylint: disable=g-import-not-at-top
  steps = [(gb.ActNorm(2), gb.InvertibleConv1x1(2, seed=1)),
           (gb.ActNorm(2), gb.ChannelReverse(2))]
  with pytest.raises(ValueError, match='copies of one another.*step 1'):
    tf.function(lambda x: invert.steps_inverse_by_inversion(steps, x))(
        tf.zeros([1, 2, 2, 2]))


class _ListHeldScale(gb.ActNorm):
  """An ActNorm that also multiplies by a variable kept in a list, where the
  loop cannot substitute it (a hypothetical user component)."""

  def __init__(self, channels):
    super().__init__(channels)
    self.extra = [tf.Variable(2.0)]

  def _transform(self, x, inverse, **kwargs):
    y, ldj = super()._transform(x, inverse, **kwargs)
    return y * tf.cast(self.extra[0], y.dtype), ldj


def test_steps_loop_refuses_a_variable_outside_its_layout():
  """Silently reusing step 0's variable for every step would be a wrong
  number: the loop refuses, naming the variable."""
  from tfp_glow.bijectors import invert  # pylint: disable=g-import-not-at-top
  steps = [(_ListHeldScale(2),) for _ in range(3)]
  for (bij,) in steps:
    bij.initialize(tf.ones([1, 2, 2, 2]))
  with pytest.raises(ValueError, match='forward pass.*cannot be looped'):
    tf.function(lambda x: invert.steps_inverse_by_inversion(steps, x))(
        tf.ones([1, 2, 2, 2]))


@pytest.mark.parametrize('dtype, bound', [(tf.float64, 1e-12),
                                          (tf.float32, 1e-5)])
def test_reconstruction_errors_per_depth(dtype, bound):
  glow = gb.Glow(seed=0, dtype=dtype, backprop='invert',
                 **glow_kwargs(image_shape=MEDIUM, steps_per_level=4))
  harness.perturb(glow, 0, 0.1)
  x = tf.constant(np.random.default_rng(1).uniform(-0.5, 0.5, [4, 8, 8, 3]),
                  dtype)
  errors = glow.reconstruction_errors(x)
  assert [e.shape for e in errors] == [(4,), (4,)]
  worst = max(float(np.max(e)) for e in errors)
  assert worst < bound, errors


def test_bad_backprop_raises():
  with pytest.raises(ValueError, match="backprop.*'checkpoint'"):
    gb.Glow(backprop='checkpoint', **glow_kwargs())
