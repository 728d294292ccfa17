"""Memory-saving backprop by inversion (`backprop='invert'`).

A Glow is invertible, so its backward pass does not need the activations of
every step: from a block's output it can rebuild the block's input exactly (up
to rounding), then back-propagate through one component at a time. This is the
RevNet / i-RevNet idea (Gomez et al. 2017; Jacobsen et al. 2018), here as a
`tf.custom_gradient` over a chain of tfp_glow components:

* forward (data -> latent): the chain runs with nothing recorded on any tape;
  the block keeps only its output `y` (and its log-det);
* backward: walking the components in reverse, each one's
  `rebuild_and_backprop(y, dy, dldj)` rebuilds its input with its
  `forward_and_log_det`, recomputes itself under a fresh `tf.GradientTape`
  and returns the input's cotangent and its variables' gradients; the rebuilt
  input is the previous component's output, and so on down the chain.

Activation memory is that of one component plus the block's output, whatever
the block's length; the price is one extra forward pass (couplings rebuild and
recompute with one network evaluation). In a graph (every `tf.function`, every
Keras step) each rebuild waits, by a control dependency, for the previous
component's gradients, so the executor cannot run the rebuild chain ahead and
keep every rebuilt input alive at once.

Numerics: a rebuilt input carries the inverse's rounding error (the affine
coupling's inverse divides by its sigmoid scale, a 1x1 convolution's inverse
multiplies by `W^-1`), and the error compounds along the chain. float64 makes
it vanish; in float32 `reconstruction_errors` measures it (docs/BENCHMARKS.md).
Second derivatives through an inverted block are not supported (the backward
pass opens tapes of its own, but nothing records it for a higher order).
"""

import contextlib

import numpy as np
import tensorflow as tf

try:  # The one private import: pausing every tape during the block's forward.
  from tensorflow.python.eager import record as _record  # pylint: disable=g-direct-tensorflow-import
  _stop_recording = _record.stop_recording
except (ImportError, AttributeError):  # pragma: no cover
  _stop_recording = contextlib.nullcontext

__all__ = ['chain_inverse', 'chain_inverse_by_inversion',
           'reconstruction_errors']


def chain_inverse(components, x):
  """`(y, ldj)` of `components` (data -> latent order) applied to `x`.

  The ordinary path: every activation is recorded by whatever tape watches.
  """
  ldj = None
  for bij in components:
    x, l = bij.inverse_and_log_det(x)
    ldj = l if ldj is None else ldj + l
  return x, ldj


def _after(tensor, dependencies):
  """`tensor`, but only once `dependencies` are computed (graph mode)."""
  if tf.executing_eagerly():
    return tensor
  with tf.control_dependencies([d for d in dependencies if d is not None]):
    return tf.identity(tensor)


def _dense(g):
  return tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g


def chain_inverse_by_inversion(components, x):
  """`chain_inverse(components, x)`, with its gradient computed by inversion.

  Same values as `chain_inverse`; the gradient (to `x` and to every trainable
  variable the chain reads) is the same up to the rounding of the rebuilt
  inputs, and nothing but the output is kept for the backward pass. Every
  component must have `rebuild_and_backprop` (every tfp_glow bijector does).
  Use it where a gradient will be taken; it costs nothing otherwise.
  """
  components = list(components)
  if not components:
    raise ValueError('chain_inverse_by_inversion needs at least one '
                     'component, got none.')

  @tf.custom_gradient
  def block(x):
    # Nothing inside is recorded on the caller's tapes, so nothing there holds
    # an activation; tf.custom_gradient still sees the variables read here.
    with _stop_recording():
      y, ldj = chain_inverse(components, x)

    def grad_fn(dy, dldj, variables=None):
      # Only `y` (and `components`) are captured: never an activation.
      if dy is None:
        dy = tf.zeros_like(y)
      if dldj is None:
        dldj = tf.zeros_like(ldj)
      out, grads, done = y, {}, [dy]
      for bij in reversed(components):
        out = _after(out, done)
        out, dy, own = bij.rebuild_and_backprop(out, dy, dldj)
        for ref, g in own.items():
          g = _dense(g)
          grads[ref] = g if ref not in grads else grads[ref] + g
        done = [dy] + list(own.values())
      return dy, [grads.get(v.ref()) for v in (variables or [])]

    return (y, ldj), grad_fn

  return block(tf.convert_to_tensor(x))


def reconstruction_errors(components, x):
  """How well inversion rebuilds each component's input, from the end.

  Runs `components` on `x` (data -> latent), then rebuilds backwards from the
  final output exactly as the backward pass of `chain_inverse_by_inversion`
  does. Returns a float64 numpy array, one entry per component in data ->
  latent order: the max-abs difference between that component's true input
  and its rebuilt input, divided by the max-abs of the true input (relative).
  Runs eagerly (a diagnostic, not a training op).
  """
  inputs = []
  out = tf.convert_to_tensor(x)
  for bij in components:
    inputs.append(out)
    out = bij.inverse_and_log_det(out)[0]
  errors = []
  for bij, true_input in zip(reversed(components), reversed(inputs)):
    out = bij.forward_and_log_det(out)[0]
    diff = np.max(np.abs(out.numpy().astype(np.float64)
                         - true_input.numpy().astype(np.float64)))
    scale = np.max(np.abs(true_input.numpy().astype(np.float64)))
    errors.append(diff / max(scale, np.finfo(np.float64).tiny))
  return np.array(errors[::-1])
