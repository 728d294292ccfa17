"""The numerics of backprop by inversion: rebuilt inputs and gradients.

`backprop='invert'` rebuilds every step's input from its output in the
backward pass; the rebuilt input carries the inverse's rounding (the affine
coupling divides by its sigmoid scale, a 1x1 convolution multiplies by its
inverse), and the error compounds down a level. `measure` reports, for one
model and one batch, what that costs: the relative reconstruction error of
every step's input at each depth (`Glow.reconstruction_errors`) and the
relative error of the gradient of the mean bits/dim under 'invert' against
'store'. Run it on trained models, not only at init: a fresh Glow is near
the identity, where any error looks small.
"""

import numpy as np
import tensorflow as tf

import tfp_glow

__all__ = ['gradients', 'measure', 'copy_weights', 'relative_errors']


def copy_weights(source, target):
  """Assigns `source`'s variables to `target`'s (same architecture), cast."""
  src, dst = list(source.variables), list(target.variables)
  if len(src) != len(dst):
    raise ValueError(f'Different models: {len(src)} variables vs {len(dst)}.')
  for a, b in zip(src, dst):
    if a.shape != b.shape:
      raise ValueError(f'Variable {a.name} has shape {a.shape}, {b.name} '
                       f'{b.shape}.')
    b.assign(tf.cast(a, b.dtype))


def gradients(glow, x, n_bins):
  """Gradients of the mean bits/dim of `x` to every trainable variable
  (a tf.function, the way training runs), as float64 numpy arrays."""
  variables = glow.trainable_variables

  @tf.function
  def grad(x):
    with tf.GradientTape() as tape:
      log_prob = glow.log_prob_parts(x).log_prob
      loss = tf.reduce_mean(tfp_glow.bits_per_dim(log_prob, glow.image_shape,
                                                  n_bins))
    return tape.gradient(loss, variables)

  return [np.asarray(tf.convert_to_tensor(g).numpy(), np.float64)
          for g in grad(tf.cast(x, glow.dtype))]


def relative_errors(reference, other):
  """(global, max per-tensor, index of that tensor) relative error of the
  gradient list `other` against `reference`: `||other - ref|| / ||ref||` over
  all tensors, and the largest `max|other - ref| / max|ref|` of one tensor."""
  num = sum(float(np.sum((a - b) ** 2)) for a, b in zip(reference, other))
  den = sum(float(np.sum(a ** 2)) for a in reference)
  per_tensor = [float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))
                for a, b in zip(reference, other)]
  worst = int(np.argmax(per_tensor))
  return float(np.sqrt(num / den)), per_tensor[worst], worst


def measure(make_glow, weights_from, x, n_bins):
  """Reconstruction and gradient errors of 'invert' for one model and batch.

  `make_glow(backprop)` builds the model (any dtype); `weights_from` is a Glow
  whose weights both copies receive. Returns a dict: `reconstruction` (per
  level, the relative error of every step's rebuilt input, step 0 the
  deepest rebuild), `reconstruction_max`, `gradient_global` (||g_invert -
  g_store|| / ||g_store|| over all variables), `gradient_max_tensor` (the
  largest per-tensor max|diff| / max|g_store|) and the tensor it is in,
  and `gradients` (`{'store': [...], 'invert': [...]}`, numpy, for
  comparisons across dtypes; not JSON).
  """
  glows = {}
  for backprop in ('store', 'invert'):
    glows[backprop] = make_glow(backprop)
    copy_weights(weights_from, glows[backprop])
  x = tf.cast(x, glows['invert'].dtype)
  rec = glows['invert'].reconstruction_errors(x)
  g_store = gradients(glows['store'], x, n_bins)
  g_invert = gradients(glows['invert'], x, n_bins)
  global_error, tensor_error, worst = relative_errors(g_store, g_invert)
  return dict(
      dtype=glows['invert'].dtype.name,
      steps_per_level=glows['invert'].steps_per_level,
      reconstruction=[e.tolist() for e in rec],
      reconstruction_max=float(max(np.max(e) for e in rec)),
      gradient_global=global_error,
      gradient_max_tensor=tensor_error,
      gradient_max_tensor_name=glows['store'].trainable_variables[worst].name,
      gradients=dict(store=g_store, invert=g_invert))
