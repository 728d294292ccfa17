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

`steps_inverse_by_inversion` does the same for K steps that are copies of one
another (a Glow level), with the graph itself flat in K: one step's ops run
in a `tf.while_loop` (forward, and rebuild + backprop in reverse; eagerly a
Python loop) over the steps' parameters stacked into `[K, ...]` tensors (a
Glow's level variables, `tfp_glow.bijectors.stacked`); the loop body reads
the k-th slices in place of the first step's parameters.

Numerics: the inverted block carries its activations in float64 (the
"stream", `STREAM_DTYPE`), whatever the model's dtype; the networks still run
in the model's dtype, and the recomputation that gives the gradients runs in
the model's dtype from the rebuilt input rounded to it, exactly as 'store'
computes them. Why: a level's inverse can be ill-conditioned. An affine
coupling's inverse divides by its sigmoid scale, which trained (or merely
perturbed) couplings push to 1e-4 and below, so the inverse of a level
amplifies an error in its output by up to ~1e6 (measured, docs/BENCHMARKS.md).
A float32 output then does not determine the level's input to float32
precision at all: the forward pass's own float32 roundings (a 1x1
convolution mixing a small channel into large ones, an addition of a large
shift) already lost it, and no rebuild from that output, in any precision,
recovers it (float32 gradients were 3.6e-5 to 3.4e-2 off where 'store''s
were 5e-7). In the float64 stream
the forward's roundings are ~1e-16, the rebuilt inputs agree with the
forward's to ~1e-10 even then, and the float32 gradients are as accurate as
'store''s. The networks' inputs are the passed-through halves rounded to the
model's dtype, the same bits in the forward pass and in the rebuild, so each
network gives the same output both times. `reconstruction_errors` measures
the rebuild. Second derivatives through an inverted block are not supported
(the backward pass opens tapes of its own, but nothing records it for a
higher order).
"""

import contextlib

import numpy as np
import tensorflow as tf

from tfp_glow.bijectors import stacked

try:  # The one private import: pausing every tape during the block's forward.
  from tensorflow.python.eager import record as _record  # pylint: disable=g-direct-tensorflow-import
  _stop_recording = _record.stop_recording
except (ImportError, AttributeError):  # pragma: no cover
  _stop_recording = contextlib.nullcontext

__all__ = ['STREAM_DTYPE', 'chain_inverse', 'chain_inverse_by_inversion',
           'steps_inverse_by_inversion', 'reconstruction_errors']

# The dtype an inverted block's activations are carried in (module docstring).
# The costs: the elementwise ops and 1x1 convolutions of the chain run in
# float64 (the networks, most of the work, do not), and the one tensor a block
# keeps for its backward pass is twice the size.
STREAM_DTYPE = tf.float64


def _widen(x):
  return tf.cast(x, STREAM_DTYPE)


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
  component must have `rebuild_and_backprop` (every tfp_glow bijector does)
  and compute in its input's dtype (it receives the float64 stream, see the
  module docstring; every tfp_glow bijector does). Use it where a gradient
  will be taken; it costs nothing otherwise.
  """
  components = list(components)
  if not components:
    raise ValueError('chain_inverse_by_inversion needs at least one '
                     'component, got none.')

  @tf.custom_gradient
  def block(x):
    # Nothing inside is recorded on the caller's tapes, so nothing there holds
    # an activation; tf.custom_gradient still sees the variables read here.
    dtype = x.dtype  # the model's: the cotangents' and the outputs'
    with _stop_recording():
      y, ldj = chain_inverse(components, _widen(x))

    def grad_fn(dy, dldj, variables=None):
      # Only `y` (and `components`) are captured: never an activation.
      if dy is None:
        dy = tf.zeros(tf.shape(y), dtype)
      if dldj is None:
        dldj = tf.zeros(tf.shape(ldj), dtype)
      out, grads, done = y, {}, [dy]
      for bij in reversed(components):
        out = _after(out, done)
        out, dy, own = bij.rebuild_and_backprop(out, dy, dldj)
        for ref, g in own.items():
          g = _dense(g)
          grads[ref] = g if ref not in grads else grads[ref] + g
        done = [dy] + list(own.values())
      return dy, [grads.get(v.ref()) for v in (variables or [])]

    return (tf.cast(y, dtype), tf.cast(ldj, dtype)), grad_fn

  return block(tf.convert_to_tensor(x))


# --- K copies of one step, as a loop ---------------------------------------------
#
# Unrolled, a level's K steps put K copies of every op into the graph (forward,
# rebuild, recompute, gradient): about a thousand nodes per step of flow, so the
# traced and optimised graph, not the activations, grows with K and dominates a
# CPU process's memory. The steps of a Glow level are copies of one another
# (same classes, same variable shapes, the same code), so one step's ops can
# serve all K: the parameters of the K steps are stacked (one [K, ...] tensor
# per slot: a Glow keeps them so, see tfp_glow.bijectors.stacked), and a
# `tf.while_loop` runs the first step's components with the k-th slices
# substituted for their parameters. The graph then holds one step's ops per
# level whatever K is, and the loop runs the steps one after the other, which
# is also what bounds the backward pass's activations. The stacked parameters
# are the block's inputs, so their gradients are plain [K, ...] tensors, which
# reach the level variables (or, for steps with variables of their own,
# each step's) through the read outside the block.


def _check_no_variable_read(what):
  """Raises unless the loop body being traced (the default graph) read no
  variable: every parameter must come from the stacked slices, or step 0's
  values would silently serve all K steps."""
  graph = tf.compat.v1.get_default_graph()
  # A variable read inside the body captures the variable's handle.
  handles = [t for t in getattr(graph, 'internal_captures', ())
             if t.dtype == tf.resource]
  if handles:
    names = sorted(v.name for v in getattr(graph, '_watched_variables', ()))
    _refuse(what, len(handles), names)


def _refuse(what, count, names):
  raise ValueError(
      f'steps_inverse_by_inversion: the {what} of a step read {count} '
      f'variable(s) {names} that are not in its variable layout (held outside '
      'tf.Module attributes?); such steps cannot be looped.')


def _trainable(source):
  return (source.trainable if isinstance(source, tf.Variable)
          else source[0].trainable)


def steps_inverse_by_inversion(steps, x):
  """`chain_inverse` of the K `steps` (each a sequence of components, data ->
  latent order), with one step's ops looped K times and the gradient by
  inversion.

  Same values and gradients as `chain_inverse_by_inversion` over the
  flattened steps; the forward pass and the backward pass are each a
  `tf.while_loop` over the steps (eagerly, a Python loop), so a graph's size
  (`tf.function`, Keras, XLA) does not grow with K. The steps must be copies
  of one another: the same component classes, the same variable layout
  (checked) and the same non-variable settings (not checked), as the steps
  of one level of `tfp_glow.Glow` are. Their parameters are read once, as
  one `[K, ...]` tensor per slot: a level variable when the steps hold its
  slices (`tfp_glow.bijectors.stacked`), else the steps' own variables
  stacked.
  """
  steps = [tuple(step) for step in steps]
  if not steps or not all(steps):
    raise ValueError('steps_inverse_by_inversion needs at least one step of '
                     'at least one component.')
  slots, sources = stacked.level_sources(steps, 'steps_inverse_by_inversion')
  first = steps[0]
  count = len(steps)
  trainable = [j for j, source in enumerate(sources) if _trainable(source)]

  @tf.custom_gradient
  def block(x, *values):
    dtype = x.dtype  # the model's: the cotangents' and the outputs'
    with _stop_recording():

      def body(k, x, ldj):
        with stacked.substituted(first, slots,
                                 [tf.gather(v, k) for v in values]):
          for bij in first:
            x, l = bij.inverse_and_log_det(x)
            ldj += l
        _check_no_variable_read('forward pass')
        return k + 1, x, ldj

      ldj0 = tf.zeros(tf.shape(x)[:-3], STREAM_DTYPE)
      _, y, ldj = tf.while_loop(
          lambda k, *_: k < count, body, (tf.constant(0), _widen(x), ldj0),
          parallel_iterations=1, maximum_iterations=count)

    def grad_fn(dy, dldj, variables=None):
      # Only `y` and the parameters are captured: never an activation.
      if variables:  # eagerly: a variable read that no slice stood for
        _refuse('forward pass', len(variables),
                sorted(v.name for v in variables))
      if dy is None:
        dy = tf.zeros(tf.shape(y), dtype)
      if dldj is None:
        dldj = tf.zeros(tf.shape(ldj), dtype)
      arrays = [tf.TensorArray(values[j].dtype, size=count,
                               element_shape=values[j].shape[1:])
                for j in trainable]

      def body(k, out, d, arrays):
        params = [tf.gather(v, k) for v in values]
        watch = [params[j] for j in trainable]
        grads = {}
        with stacked.substituted(first, slots, params):
          for bij in reversed(first):
            out, d, own = bij.rebuild_and_backprop(out, d, dldj, watch=watch)
            for ref, g in own.items():
              g = _dense(g)
              grads[ref] = g if ref not in grads else grads[ref] + g
        _check_no_variable_read('backward pass')
        arrays = [a.write(k, grads.get(t.ref(), tf.zeros_like(t)))
                  for a, t in zip(arrays, watch)]
        return k - 1, out, d, arrays

      _, _, dx, arrays = tf.while_loop(
          lambda k, *_: k >= 0, body, (tf.constant(count - 1), y, dy, arrays),
          parallel_iterations=1, maximum_iterations=count)
      grads = [None] * len(values)
      for j, a in zip(trainable, arrays):
        grads[j] = a.stack()
      return [dx] + grads

    return (tf.cast(y, dtype), tf.cast(ldj, dtype)), grad_fn

  return block(tf.convert_to_tensor(x), *stacked.read_sources(sources))


def reconstruction_errors(components, x):
  """How well inversion rebuilds each component's input, from the end.

  Runs `components` on `x` (data -> latent) in the stream's dtype, then
  rebuilds backwards from the final output exactly as the backward pass of
  `chain_inverse_by_inversion` does. Returns a float64 numpy array, one entry
  per component in data -> latent order: the max-abs difference between that
  component's input in the forward pass and its rebuilt input, divided by the
  max-abs of the former (relative). Runs eagerly (a diagnostic, not a
  training op).
  """
  inputs = []
  out = _widen(x)
  for bij in components:
    inputs.append(out)
    out = bij.inverse_and_log_det(out)[0]
  errors = []
  for bij, true_input in zip(reversed(components), reversed(inputs)):
    out = bij.forward_and_log_det(out)[0]
    diff = np.max(np.abs(out.numpy() - true_input.numpy()))
    scale = np.max(np.abs(true_input.numpy()))
    errors.append(diff / max(scale, np.finfo(np.float64).tiny))
  return np.array(errors[::-1])
