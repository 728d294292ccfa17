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

__all__ = ['gradients', 'measure', 'measure_dtypes', 'render',
           'copy_weights', 'relative_errors']


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


def gradients(glow, x, n_bins, labels=None):
  """Gradients of the mean bits/dim of `x` (given `labels`, for a
  class-conditional model) to every trainable variable (a tf.function, the
  way training runs), as float64 numpy arrays."""
  variables = glow.trainable_variables

  @tf.function
  def grad(x):
    with tf.GradientTape() as tape:
      log_prob = glow.log_prob_parts(x, labels).log_prob
      loss = tf.reduce_mean(tfp_glow.bits_per_dim(log_prob, glow.image_shape,
                                                  n_bins))
    return tape.gradient(loss, variables)

  # (A class-conditional model's classifier is not part of log p(x | y):
  # its gradient is None, here zeros.)
  return [np.zeros(v.shape, np.float64) if g is None else
          np.asarray(tf.convert_to_tensor(g).numpy(), np.float64)
          for v, g in zip(variables, grad(tf.cast(x, glow.dtype)))]


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


def measure(make_glow, weights_from, x, n_bins, labels=None):
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
  g_store = gradients(glows['store'], x, n_bins, labels)
  g_invert = gradients(glows['invert'], x, n_bins, labels)
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


def measure_dtypes(glow, x, n_bins, labels=None):
  """`measure` of a trained `glow` in float64 and in float32, plus both
  float32 modes' gradients against float64 'store' (how far float32 itself
  is from the exact gradient, whichever the backprop).

  Two fresh copies of `glow`'s architecture per dtype receive its weights
  (`glow.parameters` with `dtype` and `backprop` replaced). Returns a
  JSON-able dict: `{'float64': measure(...), 'float32': measure(...) plus
  'store_vs_float64_store' and 'invert_vs_float64_store'}` (each `global`,
  `max_tensor`, `tensor`), without the gradient arrays.
  """
  params = {k: v for k, v in glow.parameters.items() if k != 'name'}
  out, grads = {}, {}
  for dtype in (tf.float64, tf.float32):
    def make(backprop, dtype=dtype):
      return type(glow)(**dict(params, dtype=dtype, backprop=backprop))
    result = measure(make, glow, x, n_bins, labels)
    grads[dtype.name] = result.pop('gradients')
    out[dtype.name] = result
  names = [v.name for v in glow.trainable_variables]
  for backprop in ('store', 'invert'):
    g, t, worst = relative_errors(grads['float64']['store'],
                                  grads['float32'][backprop])
    out['float32'][f'{backprop}_vs_float64_store'] = dict(
        global_error=g, max_tensor=t, tensor=names[worst])
  return out


def render(results, what=''):
  """The Markdown table of `measure_dtypes`'s results."""
  lines = [f'Backprop by inversion, numerics{": " + what if what else ""}. '
           'Reconstruction: max|rebuilt - true| / max|true| of each step\'s '
           'input, deepest rebuild per level and the largest anywhere; '
           'gradients of the mean bits/dim, relative: global ||a - b|| / ||b|| '
           '/ worst tensor max|a - b| / max|b|.', '',
           "| dtype | rebuilt, deepest per level | rebuilt, largest | 'invert' "
           "vs 'store' | 'store' vs float64 | 'invert' vs float64 |",
           '|---|---|---:|---|---|---|']
  for dtype in ('float64', 'float32'):
    r = results[dtype]
    deepest = ' / '.join(f'{e[0]:.2g}' for e in r['reconstruction'])
    vs64 = ['', '']
    if dtype == 'float32':
      vs64 = [f"{r[f'{b}_vs_float64_store']['global_error']:.2g} / "
              f"{r[f'{b}_vs_float64_store']['max_tensor']:.2g}"
              for b in ('store', 'invert')]
    lines.append(
        f"| {dtype} | {deepest} | {r['reconstruction_max']:.2g} | "
        f"{r['gradient_global']:.2g} / {r['gradient_max_tensor']:.2g} | "
        f'{vs64[0]} | {vs64[1]} |')
  return '\n'.join(lines)
