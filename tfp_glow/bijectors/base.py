"""Shared machinery for the tfp_glow bijectors.

Every Glow component computes its output and its log-det-Jacobian in one pass
(`_augmented_forward` / `_augmented_inverse`), and TFP's greedy-attribute cache
hands the log-det to `*_log_det_jacobian` without a second evaluation. This is
what keeps `TransformedDistribution.log_prob` at one network evaluation per
coupling (TFP's RealNVP evaluates every network twice).

Caching and trainable variables: TFP caches by the identity of the input
tensor. In graph mode (every `tf.function`, every Keras step) that is always
right, because variables are read when the graph runs. In eager mode the same
tensor object can be passed again after an optimizer changed the variables, and
the cache would answer with the old value. So in eager mode a transform call
always recomputes, and a log-det call reuses the cache only when it directly
follows the transform of the very same input or output (the pattern of
`log_prob` and of `sample_and_log_prob`).
"""

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

from tfp_glow.ops import check_float_dtype  # pylint: disable=unused-import
from tfp_glow.ops import check_option  # pylint: disable=unused-import
from tfp_glow.ops import check_positive_int  # pylint: disable=unused-import
from tfp_glow.ops import flatten_batch  # pylint: disable=unused-import
from tfp_glow.ops import unflatten_batch  # pylint: disable=unused-import

tfb = tfp.bijectors

__all__ = ['GlowBijector']


def _vjp(tape, targets, cotangents, x, watch=()):
  """`(dx, {source.ref(): gradient})` of `sum(targets * cotangents)`.

  The sources are the variables the tape watched (the trainable variables
  the recomputation read), so under a `tf.distribute` strategy they are the
  same objects that `tf.custom_gradient` hands to its `grad_fn`, and the
  tensors in `watch` (parameters passed as tensors, see
  `tfp_glow.bijectors.invert.steps_inverse_by_inversion`).
  """
  sources = list(tape.watched_variables()) + list(watch)
  grads = tape.gradient(targets, [x] + sources, output_gradients=cotangents)
  dx = tf.zeros_like(x) if grads[0] is None else tf.convert_to_tensor(grads[0])
  return dx, {v.ref(): g for v, g in zip(sources, grads[1:])
              if g is not None}


class GlowBijector(tfb.Bijector):
  """Base class: fused output + log-det, input checks, eager-safe caching.

  Subclasses implement `_transform(x, inverse, **kwargs)`: for
  `inverse=True` it returns `(inverse(x), inverse_log_det_jacobian(x))`, for
  `inverse=False` it returns `(forward(x), forward_log_det_jacobian(x))`, the
  log-det reduced over the event dimensions (shape = batch shape).
  """

  _cache = cache_util.BijectorCacheWithGreedyAttrs(
      forward_name='_augmented_forward', inverse_name='_augmented_inverse')

  def __init__(self, *, channels, dtype, validate_args, parameters, name,
               forward_min_event_ndims=3, inverse_min_event_ndims=3,
               is_constant_jacobian=False):
    self._channels = channels
    self._eager_last_pair = ()
    super().__init__(
        forward_min_event_ndims=forward_min_event_ndims,
        inverse_min_event_ndims=inverse_min_event_ndims,
        is_constant_jacobian=is_constant_jacobian,
        validate_args=validate_args,
        dtype=dtype,
        parameters=parameters,
        name=name)

  @property
  def channels(self):
    return self._channels

  # --- input checks --------------------------------------------------------

  def _check_input(self, x, channels=None, event_ndims=3, what='input'):
    """Checks rank, channel count, dtype (static) and finiteness (validate_args)."""
    channels = self._channels if channels is None else channels
    if not x.dtype.is_floating:
      raise TypeError(f'{self.name}: {what} must be a floating tensor, got '
                      f'dtype {x.dtype.name}.')
    if x.shape.rank is not None and x.shape.rank < event_ndims:
      raise ValueError(
          f'{self.name}: {what} must have rank >= {event_ndims} '
          f'([..., H, W, C]), got shape {x.shape}.')
    if channels is not None and x.shape.rank is not None:
      c = x.shape[-1]
      if c is not None and c != channels:
        raise ValueError(f'{self.name}: {what} must have {channels} channels '
                         f'(last axis), got shape {x.shape}.')
    if self.validate_args:
      x = tf.debugging.assert_all_finite(
          x, f'{self.name}: {what} contains NaN or Inf.')
    return x

  # --- fused computation ---------------------------------------------------

  def _transform(self, x, inverse, **kwargs):
    raise NotImplementedError

  def inverse_and_log_det(self, y, **kwargs):
    """`(inverse(y), inverse_log_det_jacobian(y))` from one pass.

    The fused public path: what `Glow` and user code that composes components
    by hand call, so every network runs once. The log-det is reduced over the
    event dimensions (shape = batch shape). Nothing is cached.
    """
    y = tf.convert_to_tensor(y, dtype_hint=self.dtype)
    return self._transform(y, inverse=True, **kwargs)

  def forward_and_log_det(self, x, **kwargs):
    """`(forward(x), forward_log_det_jacobian(x))` from one pass."""
    x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
    return self._transform(x, inverse=False, **kwargs)

  def rebuild_and_backprop(self, y, dy, dldj, watch=()):
    """One step of backprop by inversion (`backprop='invert'`, see
    `tfp_glow.bijectors.invert`): rebuild the input from the output, then
    back-propagate through this bijector alone.

    `y` is this bijector's data -> latent output (`inverse_and_log_det(x)[0]`),
    `dy` and `dldj` the cotangents of that output and of its log-det, in the
    model's dtype. `y` may be wider (the float64 stream of
    `tfp_glow.bijectors.invert`): the rebuild then runs in `y`'s dtype and
    the recomputation in `dy`'s, from the rebuilt input rounded to it, as
    'store' computes it. Returns
    `(x, dx, grads)`: the rebuilt input `x = forward(y)` (`y`'s dtype, no
    gradient flows into it), the cotangent of the input, and `{source.ref(): gradient}`
    for every trainable variable the recomputation reads and every tensor in
    `watch` it depends on (a step's parameters, when they are substituted
    for its variables as tensors).

    The default recomputes `inverse_and_log_det(x)` under a fresh tape: one
    extra pass of this bijector, whose activations live only inside this
    call. Subclasses may fuse the rebuild and the recomputation
    (`_Coupling` does: its network runs once, not twice).
    """
    x = tf.stop_gradient(self.forward_and_log_det(y)[0])
    x_own = tf.cast(x, dy.dtype)
    with tf.GradientTape() as tape:
      tape.watch([x_own] + list(watch))
      y_again, ldj = self.inverse_and_log_det(x_own)
    return (x,) + _vjp(tape, [y_again, ldj], [dy, dldj], x_own, watch)

  def _augmented_forward(self, x, **kwargs):
    y, fldj = self._transform(x, inverse=False, **kwargs)
    return y, {'ildj': -fldj}

  def _augmented_inverse(self, y, **kwargs):
    x, ildj = self._transform(y, inverse=True, **kwargs)
    return x, {'ildj': ildj}

  def _forward(self, x, **kwargs):
    return self._augmented_forward(x, **kwargs)[0]

  def _inverse(self, y, **kwargs):
    return self._augmented_inverse(y, **kwargs)[0]

  # The log-det methods run the fused pass directly (not through the public
  # transform, which in eager mode would clear the cache entry being filled).
  def _forward_log_det_jacobian(self, x, **kwargs):
    attrs = self._cache.forward_attributes(x, **kwargs)
    if 'ildj' not in attrs:
      attrs.update(self._augmented_forward(x, **kwargs)[1])
    return -attrs['ildj']

  def _inverse_log_det_jacobian(self, y, **kwargs):
    attrs = self._cache.inverse_attributes(y, **kwargs)
    if 'ildj' not in attrs:
      attrs.update(self._augmented_inverse(y, **kwargs)[1])
    return attrs['ildj']

  # --- eager-mode cache freshness (see module docstring) -------------------

  def _fresh_transform(self, value):
    if tf.executing_eagerly():
      self._cache.clear()
      self._eager_last_pair = (id(value),)

  def _remember_output(self, out):
    if tf.executing_eagerly():
      self._eager_last_pair += (id(out),)
    return out

  def _fresh_ldj(self, value):
    # The log-det of the transform just run, asked by either end (TFP's
    # log_prob asks `fldj(inverse(y))`), comes from the cache; anything else
    # recomputes.
    if tf.executing_eagerly():
      if id(value) not in self._eager_last_pair:
        self._cache.clear()
      self._eager_last_pair = ()

  def _call_forward(self, x, name, **kwargs):
    self._fresh_transform(x)
    return self._remember_output(super()._call_forward(x, name, **kwargs))

  def _call_inverse(self, y, name, **kwargs):
    self._fresh_transform(y)
    return self._remember_output(super()._call_inverse(y, name, **kwargs))

  def _call_forward_log_det_jacobian(self, x, event_ndims, name, **kwargs):
    self._fresh_ldj(x)
    return super()._call_forward_log_det_jacobian(x, event_ndims, name,
                                                  **kwargs)

  def _call_inverse_log_det_jacobian(self, y, event_ndims, name, **kwargs):
    self._fresh_ldj(y)
    return super()._call_inverse_log_det_jacobian(y, event_ndims, name,
                                                  **kwargs)
