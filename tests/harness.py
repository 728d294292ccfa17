"""One test harness for every tfp_glow bijector: the components and the whole Glow.

Each `check_*` function takes a bijector factory (`factory(dtype) -> bijector`,
a fresh one per call) and a `Config` describing its two sides, builds the
bijector, moves every trainable variable away from its (identity) initial value
with `perturb`, and asserts one property against an independent computation:

- `check_round_trip`: forward(inverse(x)) == x and inverse(forward(z)) == z.
- `check_log_det`: both log-dets against `slogdet` of the autodiff Jacobian of
  the flattened map (each direction on its own, so a sign error made in both
  directions is caught), and fldj(z) == -ildj(forward(z)).
- `check_compiled`: eager == tf.function (dynamic batch) == jit_compile.
- `check_gradients`: a log-likelihood reaches every trainable variable.
- `check_saved_model`: SavedModel save + load gives the same outputs.
- `check_batch_shapes`: a rank-2 batch shape [2, 3] == the flattened batch [6].
- `check_invert_gradients`: gradients under the memory-saving backprop by
  inversion (`backprop='invert'`) equal those of ordinary autodiff.

Direction convention (TFP's): `inverse` maps data -> latent, `forward` latent
-> data. Class labels, when `Config.num_classes` is set, are passed as the
kwarg `labels`.
"""

import dataclasses
import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_glow import ops
from tfp_glow.bijectors import stacked

tfd = tfp.distributions

__all__ = [
    'Config', 'perturb', 'build', 'data', 'latent', 'bijector_kwargs',
    'jacobian_log_det', 'check_round_trip', 'check_log_det', 'check_compiled',
    'check_gradients', 'check_saved_model', 'check_batch_shapes',
    'check_invert_gradients', 'invert_tol', 'variable_reads', 'CHECKS',
]


@dataclasses.dataclass(frozen=True)
class Config:
  """What the harness needs to know about a bijector besides its factory."""
  data_shape: tuple                 # event shape of the data side (inverse input)
  latent_shape: tuple               # event shape of the latent side (forward input)
  dtype: tf.DType = tf.float64
  batch: int = 3
  num_classes: Optional[int] = None  # labels passed as the kwarg `labels`
  seed: int = 0
  perturb_scale: float = 0.1
  trainable: bool = True             # whether the bijector has trainable variables
  grad_exclude: tuple = ()           # variable-name substrings log_prob cannot reach

  @property
  def data_ndims(self):
    return len(self.data_shape)

  @property
  def latent_ndims(self):
    return len(self.latent_shape)

  @property
  def np_dtype(self):
    return self.dtype.as_numpy_dtype


def round_trip_tol(dtype):
  return 1e-5 if dtype == tf.float32 else 1e-10


def compiled_tol(dtype):
  """(rtol, atol) for eager vs graph vs XLA (different fusions and orders)."""
  return (2e-5, 2e-5) if dtype == tf.float32 else (1e-10, 1e-10)


# --- building -------------------------------------------------------------------


def perturb(bijector, seed, scale):
  """Moves every trainable variable away from its init; marks ActNorms initialised.

  Zero-initialised layers (the couplings' last convolutions, the priors) make
  a flow start near the identity, where sign and indexing errors are
  invisible. Matrices get noise of std `scale / sqrt(fan_in)` so that 1x1
  convolutions stay well conditioned; vectors get std `scale`.
  """
  rng = np.random.default_rng(seed)
  for v in bijector.trainable_variables:
    # A Glow level's [K, ...] variable: each step's slice as its own.
    step = stacked.step_shape(v).as_list()
    fan_in = int(np.prod(step[:-1])) if len(step) >= 2 else 1
    noise = rng.normal(0.0, scale / math.sqrt(fan_in), v.shape.as_list())
    v.assign_add(noise.astype(v.dtype.as_numpy_dtype))
  modules = [bijector] + list(bijector.submodules)
  for m in modules:
    if isinstance(m, ops.ActNormState):
      m.initialized.assign(tf.ones([], m.initialized.dtype))
  return bijector


def build(factory, cfg):
  """A fresh bijector from `factory(dtype)`, perturbed."""
  return perturb(factory(cfg.dtype), cfg.seed, cfg.perturb_scale)


def _batch_shape(cfg, batch_shape):
  return [cfg.batch] if batch_shape is None else list(batch_shape)


def data(cfg, batch_shape=None, seed=1):
  """A fresh data-side tensor `batch_shape + data_shape` (standard normal)."""
  shape = _batch_shape(cfg, batch_shape) + list(cfg.data_shape)
  rng = np.random.default_rng(seed)
  return tf.constant(rng.standard_normal(shape), cfg.dtype)


def latent(cfg, batch_shape=None, seed=2):
  """A fresh latent-side tensor `batch_shape + latent_shape` (standard normal)."""
  shape = _batch_shape(cfg, batch_shape) + list(cfg.latent_shape)
  rng = np.random.default_rng(seed)
  return tf.constant(rng.standard_normal(shape), cfg.dtype)


def bijector_kwargs(cfg, batch_shape=None, seed=3):
  """`{'labels': ...}` of the batch shape for a class-conditional config."""
  if cfg.num_classes is None:
    return {}
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, cfg.num_classes, _batch_shape(cfg, batch_shape))
  return {'labels': tf.constant(labels, tf.int32)}


def _label_args(kwargs):
  return [kwargs['labels']] if 'labels' in kwargs else []


def _functions(bij, cfg):
  """Python functions of (value[, labels]) for each quantity, positional args."""

  def kw(labels):
    return {'labels': labels[0]} if labels else {}

  def inverse(x, *labels):
    return bij.inverse(x, **kw(labels))

  def ildj(x, *labels):
    return bij.inverse_log_det_jacobian(x, event_ndims=cfg.data_ndims,
                                        **kw(labels))

  def forward(z, *labels):
    return bij.forward(z, **kw(labels))

  def fldj(z, *labels):
    return bij.forward_log_det_jacobian(z, event_ndims=cfg.latent_ndims,
                                        **kw(labels))

  return {'inverse': inverse, 'ildj': ildj, 'forward': forward, 'fldj': fldj}


def _signatures(cfg):
  labels = ([tf.TensorSpec([None], tf.int32, name='labels')]
            if cfg.num_classes else [])
  data_sig = [tf.TensorSpec([None] + list(cfg.data_shape), cfg.dtype)] + labels
  latent_sig = [tf.TensorSpec([None] + list(cfg.latent_shape), cfg.dtype)
               ] + labels
  return {'inverse': data_sig, 'ildj': data_sig,
          'forward': latent_sig, 'fldj': latent_sig}


def _inputs(name, x, z, kwargs):
  return [x if name in ('inverse', 'ildj') else z] + _label_args(kwargs)


# --- independent log-det ----------------------------------------------------------


def jacobian_log_det(fn, value, event_shape):
  """log|det J| per example of `fn` (batched), from `GradientTape.batch_jacobian`.

  The Jacobian is taken of the flattened map (`[N, prod(event_shape)]` to
  `[N, -1]`) in the dtype of `value`; the slogdet is computed by numpy in
  float64. Asserts the Jacobian is square and non-singular.
  """
  n = value.shape[0]
  flat = tf.reshape(value, [n, -1])
  with tf.GradientTape() as tape:
    tape.watch(flat)
    out = fn(tf.reshape(flat, [n] + list(event_shape)))
    out_flat = tf.reshape(out, [n, -1])
  jac = tape.batch_jacobian(out_flat, flat).numpy().astype(np.float64)
  assert jac.shape[1] == jac.shape[2], f'non-square Jacobian {jac.shape}'
  sign, log_det = np.linalg.slogdet(jac)
  assert np.all(sign != 0), 'singular Jacobian'
  return log_det


def _log_det_tol(cfg):
  if cfg.dtype == tf.float64:
    return dict(rtol=1e-6, atol=1e-9)
  dim = int(np.prod(cfg.data_shape))
  return dict(rtol=1e-4, atol=1e-5 * dim)


# --- the checks --------------------------------------------------------------------


def check_round_trip(factory, cfg):
  bij = build(factory, cfg)
  kw = bijector_kwargs(cfg)
  x, z = data(cfg), latent(cfg)
  eps = bij.inverse(x, **kw)
  assert eps.shape.as_list() == [cfg.batch] + list(cfg.latent_shape)
  assert eps.dtype == cfg.dtype
  x_again = bij.forward(eps, **kw)
  assert x_again.shape.as_list() == [cfg.batch] + list(cfg.data_shape)
  tol = round_trip_tol(cfg.dtype)
  err = np.max(np.abs(x_again.numpy() - x.numpy()))
  assert err <= tol, f'max |forward(inverse(x)) - x| = {err}'
  x_of_z = bij.forward(z, **kw)
  err = np.max(np.abs(bij.inverse(x_of_z, **kw).numpy() - z.numpy()))
  assert err <= tol, f'max |inverse(forward(z)) - z| = {err}'


def check_log_det(factory, cfg):
  bij = build(factory, cfg)
  kw = bijector_kwargs(cfg)
  tol = _log_det_tol(cfg)
  x, z = data(cfg), latent(cfg)

  ildj = bij.inverse_log_det_jacobian(x, event_ndims=cfg.data_ndims, **kw)
  assert ildj.shape.as_list() == [cfg.batch], ildj.shape
  expected = jacobian_log_det(lambda v: bij.inverse(v, **kw), data(cfg),
                              cfg.data_shape)
  np.testing.assert_allclose(ildj.numpy(), expected, **tol,
                             err_msg='ildj vs slogdet(Jacobian of inverse)')

  fldj = bij.forward_log_det_jacobian(z, event_ndims=cfg.latent_ndims, **kw)
  assert fldj.shape.as_list() == [cfg.batch], fldj.shape
  expected = jacobian_log_det(lambda v: bij.forward(v, **kw), latent(cfg),
                              cfg.latent_shape)
  np.testing.assert_allclose(fldj.numpy(), expected, **tol,
                             err_msg='fldj vs slogdet(Jacobian of forward)')

  # fldj(z) == -ildj(forward(z)), on a fresh bijector call (no shared cache).
  x_of_z = tf.identity(bij.forward(latent(cfg), **kw))
  ildj_back = bij.inverse_log_det_jacobian(x_of_z, event_ndims=cfg.data_ndims,
                                           **kw)
  np.testing.assert_allclose(fldj.numpy(), -ildj_back.numpy(), **tol,
                             err_msg='fldj(z) != -ildj(forward(z))')


def check_compiled(factory, cfg):
  """eager == tf.function(input_signature, dynamic batch) == jit_compile=True."""
  bij = build(factory, cfg)
  kw = bijector_kwargs(cfg)
  rtol, atol = compiled_tol(cfg.dtype)
  fns, sigs = _functions(bij, cfg), _signatures(cfg)
  x, z = data(cfg), latent(cfg)
  # A second, smaller batch for the dynamic-batch functions.
  x2, z2 = data(cfg, [2], seed=11), latent(cfg, [2], seed=12)
  kw2 = bijector_kwargs(cfg, [2], seed=13)
  for name, fn in fns.items():
    eager = fn(*_inputs(name, x, z, kw)).numpy()
    eager2 = fn(*_inputs(name, x2, z2, kw2)).numpy()
    graph = tf.function(fn, input_signature=sigs[name])
    xla = tf.function(fn, input_signature=sigs[name], jit_compile=True)
    for label, compiled in [('tf.function', graph), ('jit_compile', xla)]:
      out = compiled(*_inputs(name, x, z, kw)).numpy()
      out2 = compiled(*_inputs(name, x2, z2, kw2)).numpy()
      np.testing.assert_allclose(out, eager, rtol=rtol, atol=atol,
                                 err_msg=f'{name}: eager != {label}')
      np.testing.assert_allclose(out2, eager2, rtol=rtol, atol=atol,
                                 err_msg=f'{name}: eager != {label} (batch 2)')
      assert compiled.experimental_get_tracing_count() == 1, (
          f'{name} ({label}) retraced for a new batch size')


def check_gradients(factory, cfg, require_nonzero=True):
  """Every trainable variable gets a finite, non-zero gradient from log p(x).

  `require_nonzero=False` asks only that the gradient reach every variable
  (not None) and be finite: on drawn configurations a ReLU can be dead for
  every input of a tiny batch (a hidden width of 1 on a 1x1 image), which
  zeroes a network's gradients without anything being wrong.
  """
  bij = build(factory, cfg)
  kw = bijector_kwargs(cfg)
  variables = bij.trainable_variables
  assert (len(variables) > 0) == cfg.trainable, [v.name for v in variables]
  base = tfd.Sample(tfd.Normal(tf.zeros([], cfg.dtype), tf.ones([], cfg.dtype)),
                    sample_shape=list(cfg.latent_shape))
  dist = tfd.TransformedDistribution(base, bij)
  x = data(cfg)
  with tf.GradientTape() as tape:
    log_prob = dist.log_prob(x, bijector_kwargs=kw)
    loss = -tf.reduce_sum(log_prob)
  grads = tape.gradient(loss, variables)

  # log_prob is the change of variables: standard-normal density of inverse(x)
  # plus ildj, summed per example (computed here by hand).
  eps = bij.inverse(data(cfg), **kw).numpy().reshape(cfg.batch, -1)
  ildj = bij.inverse_log_det_jacobian(data(cfg), event_ndims=cfg.data_ndims,
                                      **kw).numpy()
  expected = (-0.5 * np.sum(eps.astype(np.float64)**2, axis=1)
              - 0.5 * eps.shape[1] * np.log(2 * np.pi) + ildj)
  rtol = 1e-5 if cfg.dtype == tf.float32 else 1e-12
  np.testing.assert_allclose(log_prob.numpy(), expected, rtol=rtol)

  missing = []
  for v, g in zip(variables, grads):
    if any(s in v.name for s in cfg.grad_exclude):
      continue
    if g is None:
      missing.append(f'{v.name}: None')
      continue
    g = tf.convert_to_tensor(g).numpy()
    if not np.all(np.isfinite(g)):
      missing.append(f'{v.name}: non-finite')
    elif require_nonzero and not np.any(g != 0):
      missing.append(f'{v.name}: all zero')
  assert not missing, f'gradients do not reach: {missing}'
  return len(variables)


def check_saved_model(factory, cfg, tmp_path):
  """A tf.Module with the bijector and tf.functions survives save + load."""
  bij = build(factory, cfg)
  kw = bijector_kwargs(cfg)
  fns, sigs = _functions(bij, cfg), _signatures(cfg)
  module = tf.Module()
  module.bijector = bij
  for name, fn in fns.items():
    setattr(module, name, tf.function(fn, input_signature=sigs[name]))
  rtol, atol = compiled_tol(cfg.dtype)
  x, z = data(cfg), latent(cfg)
  x2, z2 = data(cfg, [2], seed=11), latent(cfg, [2], seed=12)
  kw2 = bijector_kwargs(cfg, [2], seed=13)
  cases = [(x, z, kw), (x2, z2, kw2)]
  expected = {name: [fn(*_inputs(name, *case)).numpy() for case in cases]
              for name, fn in fns.items()}
  path = str(tmp_path / 'saved_bijector')
  tf.saved_model.save(module, path)
  # Moving the original's variables afterwards must not affect the loaded copy.
  perturb(bij, cfg.seed + 1, cfg.perturb_scale)
  loaded = tf.saved_model.load(path)
  for name in fns:
    for case, want in zip(cases, expected[name]):
      got = getattr(loaded, name)(*_inputs(name, *case)).numpy()
      np.testing.assert_allclose(got, want, rtol=rtol, atol=atol,
                                 err_msg=f'{name}: loaded != original')


def check_batch_shapes(factory, cfg):
  """A batch shape [2, 3] gives the results of the flattened batch [6]."""
  bij = build(factory, cfg)
  tol = dict(rtol=1e-6, atol=1e-6) if cfg.dtype == tf.float32 else dict(
      rtol=1e-12, atol=1e-12)
  x, z = data(cfg, [2, 3]), latent(cfg, [2, 3])
  kw = bijector_kwargs(cfg, [2, 3])
  x_flat = tf.reshape(x, [6] + list(cfg.data_shape))
  z_flat = tf.reshape(z, [6] + list(cfg.latent_shape))
  kw_flat = {k: tf.reshape(v, [6]) for k, v in kw.items()}
  fns = _functions(bij, cfg)
  out_shapes = {'inverse': list(cfg.latent_shape), 'forward': list(cfg.data_shape),
                'ildj': [], 'fldj': []}
  for name, fn in fns.items():
    out = fn(*_inputs(name, x, z, kw))
    assert out.shape.as_list() == [2, 3] + out_shapes[name], (name, out.shape)
    flat = fn(*_inputs(name, x_flat, z_flat, kw_flat))
    np.testing.assert_allclose(
        tf.reshape(out, [6] + out_shapes[name]).numpy(), flat.numpy(), **tol,
        err_msg=f'{name}: batch [2, 3] != flattened batch [6]')


def invert_tol(dtype):
  """Relative tolerance of 'invert' vs 'store' gradients (per tensor, of its
  max-abs): the rebuilt inputs carry the inverse's rounding."""
  return 1e-4 if dtype == tf.float32 else 1e-10


def _gradient_of(bij, cfg, kw, x, through, compiled=False):
  """Gradients of a generic scalar of `through(bij, x)` = (out, ldj) to
  [x] + trainable variables: random weights on every output and on the
  log-det, so every cotangent entry is exercised. `compiled`: inside a
  tf.function (a graph), else eagerly."""
  rng = np.random.default_rng(cfg.seed + 7)
  variables = bij.trainable_variables

  def scalar_and_grads(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      out, ldj = through(bij, x, kw)
      w_out = tf.constant(rng.standard_normal(out.shape.as_list()), out.dtype)
      w_ldj = tf.constant(rng.standard_normal(ldj.shape.as_list()), ldj.dtype)
      scalar = tf.reduce_sum(w_out * out) + tf.reduce_sum(w_ldj * ldj)
    # The sum of its terms' magnitudes: the scale of its rounding error.
    magnitude = (tf.reduce_sum(tf.abs(w_out * out)) +
                 tf.reduce_sum(tf.abs(w_ldj * ldj)))
    grads = tape.gradient(scalar, [x] + list(variables))
    return (scalar, magnitude), [None if g is None else tf.convert_to_tensor(g)
                                 for g in grads]

  if compiled:
    scalar_and_grads = tf.function(scalar_and_grads)
  (scalar, magnitude), grads = scalar_and_grads(x)
  names = ['input'] + [v.name for v in variables]
  return (scalar.numpy(), magnitude.numpy()), names, [
      None if g is None else g.numpy() for g in grads]


def check_invert_gradients(factory, cfg, invert_factory=None, tol=None,
                           modes=('eager', 'graph')):
  """Gradients by inversion equal those of ordinary autodiff.

  A component (`invert_factory=None`): the same bijector through
  `invert.chain_inverse` (ordinary) and `invert.chain_inverse_by_inversion`.
  A whole Glow: `factory` builds it with `backprop='store'`,
  `invert_factory` with `backprop='invert'` (same seed, same perturbation),
  and the scalar weighs its latent `eps` and its `ildj` (priors included).
  `modes`: 'eager' and/or 'graph' (a tf.function), each compared with
  'store' run the same way.
  Every gradient must agree to `tol` (default `invert_tol(cfg.dtype)`)
  relative to its max-abs, and be None in both or in neither. Returns the
  largest relative difference.
  """
  from tfp_glow.bijectors import invert  # pylint: disable=g-import-not-at-top
  kw = bijector_kwargs(cfg)
  x = data(cfg)
  if invert_factory is None:
    store_bij = invert_bij = build(factory, cfg)
    plain = lambda b, v, k: invert.chain_inverse([b], v)  # pylint: disable=unnecessary-lambda-assignment
    inverted = lambda b, v, k: invert.chain_inverse_by_inversion([b], v)  # pylint: disable=unnecessary-lambda-assignment
  else:
    store_bij, invert_bij = build(factory, cfg), build(invert_factory, cfg)
    assert invert_bij.backprop == 'invert', invert_bij.backprop
    def whole(b, v, k):
      parts = b.log_prob_parts(v, k.get('labels'))
      return parts.eps, parts.ildj
    plain = inverted = whole
  tol = invert_tol(cfg.dtype) if tol is None else tol
  worst, bad = 0.0, []
  # Eagerly, and in a graph, where a whole Glow's levels run as loops over
  # their steps (`invert.steps_inverse_by_inversion`); each against 'store'
  # run the same way (a graph may pick other kernels, e.g. oneDNN's fused
  # bfloat16 ones, which round differently).
  for how in modes:
    value_a, names, store = _gradient_of(store_bij, cfg, kw, x, plain,
                                         compiled=how == 'graph')
    value_b, _, inv = _gradient_of(invert_bij, cfg, kw, x, inverted,
                                   compiled=how == 'graph')
    # 'invert' runs the chain in its float64 stream and rounds the result,
    # 'store' rounds at every op: in float32 the weighted sum agrees to a
    # few float32 roundings of its terms (measured up to 1.6e-6 relative),
    # not bit for bit; relative to the terms' magnitudes, since the sum may
    # cancel to near zero (-0.0629 from terms of order 1: 7e-7 apart).
    (a, scale), (b, _) = value_a, value_b
    rel = 1e-12 if cfg.dtype == tf.float64 else 1e-5
    assert abs(float(b) - float(a)) <= rel * max(float(scale), 1e-30), (
        f'{how}: values differ: {b} vs {a} (terms of magnitude {scale})')
    for name, a, b in zip(names, store, inv):
      if (a is None) != (b is None):
        bad.append(f'{how}, {name}: store {a is None and "None"}, invert '
                   f'{b is None and "None"}')
        continue
      if a is None:
        continue
      scale = max(float(np.max(np.abs(a))), np.finfo(np.float64).tiny)
      rel = float(np.max(np.abs(a - b))) / scale
      worst = max(worst, rel)
      if not rel <= tol:
        bad.append(f'{how}, {name}: relative difference {rel:.3g} > {tol:g}')
  assert not bad, f"gradients under 'invert' differ from 'store': {bad}"
  return worst


def variable_reads(concrete, variables):
  """How often the graph of a concrete function reads each variable.

  `{variable name: number of live ReadVariableOps on its captured handle}`
  (the analogue of TFP's `assert_no_excessive_var_usage`). A read whose
  value no op consumes is not counted: the runtime prunes it (TF's own
  `tf.custom_gradient` leaves one such read per variable in a graph).
  Reads inside a loop body are a separate graph and are not seen here.
  """
  graph = concrete.graph
  handle_of = {}
  for v in variables:
    for external, internal in graph.captures:
      if external is v.handle:
        handle_of[internal.name] = v.name
  reads = {name: 0 for name in handle_of.values()}
  for op in graph.get_operations():
    if (op.type == 'ReadVariableOp' and op.inputs[0].name in handle_of
        and op.outputs[0].consumers()):
      reads[handle_of[op.inputs[0].name]] += 1
  return reads


CHECKS = {
    'round_trip': check_round_trip,
    'log_det': check_log_det,
    'compiled': check_compiled,
    'gradients': check_gradients,
    'saved_model': check_saved_model,
    'batch_shapes': check_batch_shapes,
}
