"""A Glow level's steps keep their parameters in [K, ...] variables
(tfp_glow/bijectors/stacked.py): stacking keeps every value, a step's slice
reads and writes its own part, the variable count and the training step's
graph do not grow with K, and a checkpoint of another layout is refused with
a clear message."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_glow
from tfp_glow import bijectors as gb
from tfp_glow.benchmark import models
from tfp_glow.bijectors import stacked
from tfp_glow.keras import callbacks as callbacks_lib
from glow_helpers import SMALL, glow_kwargs, init_batch  # pylint: disable=g-multiple-import


def _steps(k=3, channels=4):
  return [(gb.ActNorm(channels), gb.InvertibleConv1x1(channels, lu=True,
                                                      seed=i),
           gb.AffineCoupling(channels, hidden_width=8, seed=10 + i))
          for i in range(k)]


def test_stacking_keeps_every_value_and_each_slice_is_its_step():
  steps = _steps()
  paths = stacked._parameter_paths  # pylint: disable=protected-access
  before = [[v.numpy().copy() for bij in step for _, v in paths(bij)]
            for step in steps]
  level = stacked.stack_level(steps)
  assert all(stacked.is_stacked(v) and v.shape[0] == 3 for v in level)
  # Step k's components now read slice k of the level variables, with the
  # values the step's own variables had (the same order: sorted paths).
  for k, step in enumerate(steps):
    slices = [p for bij in step for _, p in paths(bij)]
    assert all(isinstance(p, stacked.VariableSlice) and p.index == k
               for p in slices)
    for p, want in zip(slices, before[k]):
      np.testing.assert_array_equal(p.numpy(), want, err_msg=p.name)
  # A component's variables are the level variables it reads.
  assert {id(v) for v in steps[1][2].trainable_variables} <= {
      id(v) for v in level}
  with pytest.raises(ValueError, match='already stacked'):
    stacked.stack_level(steps)


def test_a_slice_reads_and_writes_its_own_part():
  variable = tf.Variable(np.arange(6, dtype=np.float32).reshape(3, 2))
  part = stacked.VariableSlice(variable, 1)
  assert part.shape == (2,) and part.dtype == tf.float32
  np.testing.assert_array_equal(tf.convert_to_tensor(part), [2, 3])
  np.testing.assert_array_equal(3.0 * part - 1.0, [5, 8])
  np.testing.assert_array_equal(tf.cast(part, tf.float64), [2, 3])
  part.assign([7.0, 9.0])
  part.assign_add([1.0, 1.0])
  np.testing.assert_array_equal(variable.numpy(), [[0, 1], [8, 10], [4, 5]])
  np.testing.assert_array_equal(part.numpy(), [8, 10])  # a fresh read
  assert part.variables == (variable,)


def test_glow_variables_do_not_grow_with_depth():
  """Every level holds one variable per parameter slot, [K, ...], named
  after the level; the count is the same for K=2 and K=3."""
  glows = {k: gb.Glow(seed=0, **glow_kwargs(steps_per_level=k))
           for k in (2, 3)}
  assert len(glows[2].variables) == len(glows[3].variables)
  for k, glow in glows.items():
    for level, variables in enumerate(glow.level_variables):
      assert variables and all(v.shape[0] == k for v in variables)
      assert all(f'glow_level{level}_steps_' in v.name for v in variables)
    # Each level variable is listed once.
    ids = [id(v) for v in glow.variables]
    assert len(ids) == len(set(ids))


def test_store_gradient_of_a_level_variable_is_dense():
  """'store' reads each level variable once and unstacks it (a dense
  gradient), not one sparse gather per step."""
  glow = gb.Glow(seed=0, **glow_kwargs(permutation='conv_lu'))
  tfp_glow.initialize(glow, init_batch(SMALL))
  with tf.GradientTape() as tape:
    loss = -tf.reduce_sum(glow.log_prob_parts(init_batch(SMALL, 1)).log_prob)
  grads = tape.gradient(loss, glow.trainable_variables)
  stacked_grads = [g for v, g in zip(glow.trainable_variables, grads)
                   if stacked.is_stacked(v)]
  assert stacked_grads and all(isinstance(g, tf.Tensor)
                               for g in stacked_grads)


def _train_step_nodes(k, backprop):
  glow = gb.Glow(seed=0, backprop=backprop, **glow_kwargs(steps_per_level=k))
  variables = glow.trainable_variables
  optimizer = keras.optimizers.Adam(1e-3)
  optimizer.build(variables)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(glow.log_prob_parts(x).log_prob)
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  return models.graph_nodes(step.get_concrete_function(
      tf.TensorSpec([None] + list(SMALL))))


@pytest.mark.slow
def test_adam_training_step_graph_is_flat_in_depth():
  """The Keras Adam update is per variable: with level variables it is the
  same for any K, so under 'invert' the whole training step's graph is.
  (Slow set: the default run checks the gradient's graph and the variable
  count, invert_test.py::test_invert_graph_does_not_grow_with_depth.)"""
  assert _train_step_nodes(2, 'invert') == _train_step_nodes(3, 'invert')


def test_a_checkpoint_of_another_layout_is_refused_clearly(tmp_path):
  """A weights file whose variables do not match (as one written with a
  variable per step, before the level variables) fails naming the cause."""
  def model(learn_top):
    dist = tfp_glow.glow_distribution(**glow_kwargs(learn_top=learn_top),
                                      seed=0)
    return tfp_glow.GlowModel(dist, 256)

  path = str(tmp_path / f'other{callbacks_lib.WEIGHTS_SUFFIX}')
  callbacks_lib.save_weights(model(True), path)
  with pytest.raises(ValueError, match=r'does not fit this model.*\[K, \.\.\.\]'):
    callbacks_lib.load_weights(model(False), path)
