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
           'copy_weights', 'relative_errors', 'perturb_weights',
           'train_briefly', 'accuracy_twins', 'error_vs_truth',
           'gradient_accuracy', 'accuracy_table', 'accuracy_ok',
           'render_accuracy', 'min_coupling_scale', 'ACCURACY_ARCHITECTURE', 'ACCURACY_RATIO',
           'ACCURACY_FLOOR']

EXEC_MODES = ('eager', 'graph', 'xla')


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


def gradients(glow, x, n_bins, labels=None, mode='graph'):
  """Gradients of the mean bits/dim of `x` (given `labels`, for a
  class-conditional model) to every trainable variable, as float64 numpy
  arrays. `mode`: 'graph' (a tf.function, the way training runs), 'xla'
  (`jit_compile=True`) or 'eager'."""
  if mode not in EXEC_MODES:
    raise ValueError(f'mode must be one of {EXEC_MODES}, got {mode!r}.')
  variables = glow.trainable_variables

  def grad(x):
    with tf.GradientTape() as tape:
      log_prob = glow.log_prob_parts(x, labels).log_prob
      loss = tf.reduce_mean(tfp_glow.bits_per_dim(log_prob, glow.image_shape,
                                                  n_bins))
    return tape.gradient(loss, variables)

  if mode != 'eager':
    grad = tf.function(grad, jit_compile=mode == 'xla')

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


# --- invert's float32 gradients against the exact ones (issue 20) -------------
#
# The yardstick: a float64 twin with the same weights and backprop='store'
# gives the true gradient; the error of a float32 gradient is max|g - g_true|
# over all variables / max|g_true| (one number for the whole model).
# 'invert' passes when its error is at most ACCURACY_RATIO times 'store''s
# (plus ACCURACY_FLOOR, for a 'store' error that happens to be ~0), in every
# execution mode: the inverted backward pass adds no error of its own beyond
# float32's.

# Small enough for a test (seconds per case), deep enough (K=4, two levels)
# that an error compounding along a level shows.
ACCURACY_ARCHITECTURE = dict(image_shape=(8, 8, 3), levels=2,
                             steps_per_level=4, hidden_width=16,
                             learn_top=True)
ACCURACY_RATIO = 3.0
ACCURACY_FLOOR = 1e-7


def _accuracy_images(image_shape, n=6):
  return tf.random.stateless_uniform((n,) + tuple(image_shape), seed=[7, 8],
                                     minval=-0.5, maxval=0.5)


def perturb_weights(glow, seed, scale):
  """Adds N(0, scale^2) to every trainable variable of `glow` (unscaled by
  fan-in: for an LU 1x1 convolution that moves `W` a lot, which is the
  point; the couplings' scales reach ~1e-4)."""
  rng = np.random.default_rng(seed)
  for v in glow.trainable_variables:
    v.assign_add(rng.normal(0.0, scale, v.shape).astype(
        v.dtype.as_numpy_dtype))


def train_briefly(glow, x, steps=40, learning_rate=1e-2, n_bins=256):
  """`steps` Adam steps on the mean bits/dim of the batch `x` (a
  tf.function): a high learning rate on tiny data, which moves every weight
  well away from its initial value in seconds (the zero-initialised last
  layers included). Returns the losses, first and last."""
  import keras  # pylint: disable=g-import-not-at-top
  variables = glow.trainable_variables
  optimizer = keras.optimizers.Adam(learning_rate)
  optimizer.build(variables)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tfp_glow.bits_per_dim(
          glow.log_prob_parts(x).log_prob, glow.image_shape, n_bins))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  x = tf.cast(x, glow.dtype)
  losses = [float(step(x)) for _ in range(steps)]
  return losses[0], losses[-1]


def accuracy_twins(glow_kwargs, weights, x, seed=3, scale=0.05, steps=40,
                   learning_rate=1e-2):
  """Three Glows with the same weights: float32 'store', float32 'invert'
  and the float64 'store' twin (the truth).

  `weights`: 'init' (data-dependent init on `x`), 'perturbed' (then
  N(0, scale^2) on every trainable variable, `perturb_weights`) or 'trained'
  (then `train_briefly` on `x`). The float32 'store' model is set up and
  its values copied to the others (exact: float32 -> float64 is exact).
  Returns `({'store': ..., 'invert': ..., 'truth': ...}, info)`.
  """
  if weights not in ('init', 'perturbed', 'trained'):
    raise ValueError("weights must be 'init', 'perturbed' or 'trained', got "
                     f'{weights!r}.')
  make = lambda dtype, backprop: tfp_glow.Glow(  # pylint: disable=g-long-lambda
      seed=seed, dtype=dtype, backprop=backprop, **glow_kwargs)
  glows = dict(store=make(tf.float32, 'store'),
               invert=make(tf.float32, 'invert'),
               truth=make(tf.float64, 'store'))
  source = glows['store']
  tfp_glow.initialize(source, x)
  info = {}
  if weights == 'perturbed':
    perturb_weights(source, seed, scale)
  elif weights == 'trained':
    info['loss_first'], info['loss_last'] = train_briefly(
        source, x, steps, learning_rate)
  for name in ('invert', 'truth'):
    copy_weights(source, glows[name])
  info['min_coupling_scale'] = min_coupling_scale(glows['truth'], x)
  return glows, info


def min_coupling_scale(glow, x):
  """The smallest sigmoid scale any affine coupling applies to `x`'s
  activations (1.0 for additive couplings): how ill-conditioned the levels'
  inverses are (an inverse divides by it)."""
  smallest = 1.0
  flat = tf.cast(x, glow.dtype)
  for level in range(glow.levels):
    flat = glow._squeeze.inverse_and_log_det(flat)[0]  # pylint: disable=protected-access
    for bij in glow.level_components(level):
      if isinstance(bij, tfp_glow.bijectors.AffineCoupling):
        h = bij._run_network(flat[..., :bij._half])  # pylint: disable=protected-access
        smallest = min(smallest, float(tf.reduce_min(tf.sigmoid(
            h[..., 1::2] + 2.0))))
      flat = bij.inverse_and_log_det(flat)[0]
    if level < len(glow.splits):
      split = glow.splits[level]
      flat = split.inverse_and_log_det(flat)[0][..., :split.kept_channels]
  return smallest


def error_vs_truth(truth, other, names):
  """`(max|other - truth| over all variables / max|truth|, the variable
  where that max is)` for two gradient lists."""
  scale = max(float(np.max(np.abs(t))) for t in truth)
  diffs = [float(np.max(np.abs(a - t))) for a, t in zip(other, truth)]
  worst = int(np.argmax(diffs))
  return diffs[worst] / max(scale, np.finfo(np.float64).tiny), names[worst]


def gradient_accuracy(glows, x, modes=EXEC_MODES):
  """Per execution mode, the error of float32 'store' and 'invert' against
  the float64 twin (`error_vs_truth`). Returns `{mode: {'store': (error,
  variable), 'invert': (error, variable)}}`."""
  names = [v.name for v in glows['truth'].trainable_variables]
  truth = gradients(glows['truth'], x, 256, mode='graph')
  out = {}
  for mode in modes:
    out[mode] = {b: error_vs_truth(truth, gradients(glows[b], x, 256,
                                                    mode=mode), names)
                 for b in ('store', 'invert')}
  return out


def accuracy_ok(store_error, invert_error, ratio=ACCURACY_RATIO,
                floor=ACCURACY_FLOOR):
  """The criterion: invert's error at most `ratio` x store's, + `floor`."""
  return invert_error <= ratio * store_error + floor


def accuracy_table(permutations=('reverse', 'shuffle', 'conv', 'conv_lu'),
                   couplings=('affine', 'additive'),
                   weights=('perturbed', 'trained'), modes=EXEC_MODES,
                   architecture=None, log=None):
  """`gradient_accuracy` of every (permutation, coupling, weights) on
  `ACCURACY_ARCHITECTURE` (or `architecture`) and the issue's batch (six
  8x8x3 uniform images). Returns a list of JSON-able rows, one per case and
  mode: permutation, coupling, weights, mode, store_error, invert_error,
  ratio, worst variable of each, min_coupling_scale, ok."""
  arch = dict(ACCURACY_ARCHITECTURE, **(architecture or {}))
  x = _accuracy_images(arch['image_shape'])
  rows = []
  for permutation in permutations:
    for coupling in couplings:
      for weight in weights:
        glows, info = accuracy_twins(
            dict(arch, permutation=permutation, coupling=coupling), weight, x)
        for mode, r in gradient_accuracy(glows, x, modes).items():
          (es, vs), (ei, vi) = r['store'], r['invert']
          row = dict(permutation=permutation, coupling=coupling,
                     weights=weight, mode=mode, store_error=es,
                     invert_error=ei, ratio=ei / max(es, 1e-300),
                     store_worst=vs, invert_worst=vi,
                     ok=accuracy_ok(es, ei), **info)
          rows.append(row)
          if log:
            log(f'{permutation:8s} {coupling:8s} {weight:9s} {mode:5s} '
                f'store {es:.2g} invert {ei:.2g} ({vi})')
  return rows


def render_accuracy(rows, what=''):
  """The Markdown table of `accuracy_table`'s rows."""
  lines = [f"Float32 gradients against a float64 'store' twin with the same "
           f"weights{': ' + what if what else ''}. Error = max|g - g_true| "
           f"over all variables / max|g_true|; 'ok': invert <= "
           f"{ACCURACY_RATIO:g} x store + {ACCURACY_FLOOR:g}.", '',
           '| permutation | coupling | weights | min scale | mode | store '
           '| invert | invert / store | ok | worst variable (invert) |',
           '|---|---|---|---:|---|---:|---:|---:|---|---|']
  for r in rows:
    lines.append(
        f"| {r['permutation']} | {r['coupling']} | {r['weights']} | "
        f"{r['min_coupling_scale']:.2g} | {r['mode']} | "
        f"{r['store_error']:.2g} | {r['invert_error']:.2g} | "
        f"{r['ratio']:.2g} | {'yes' if r['ok'] else '**no**'} | "
        f"`{r['invert_worst']}` |")
  return '\n'.join(lines)
