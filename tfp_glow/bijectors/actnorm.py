"""ActNorm: per-channel affine normalisation with data-dependent init."""

import contextlib
import threading

import numpy as np
import tensorflow as tf

from tfp_glow.bijectors import base

__all__ = ['ActNorm', 'data_dependent_init', 'init_active']

_INIT_STATE = threading.local()


@contextlib.contextmanager
def data_dependent_init():
  """Within this context, an uninitialised ActNorm reached in the data->latent
  direction sets itself from the statistics of its input (eager mode only)."""
  previous = getattr(_INIT_STATE, 'active', False)
  _INIT_STATE.active = True
  try:
    yield
  finally:
    _INIT_STATE.active = previous


def init_active():
  """Whether a `data_dependent_init()` context is open (in this thread)."""
  return getattr(_INIT_STATE, 'active', False)


class ActNorm(base.GlowBijector):
  """Activation normalisation (Kingma & Dhariwal 2018, section 3.1).

  Per-channel scale and shift; parameters `bias` and `logs` (shape `[C]`), with
  `log_scale = logscale_factor * logs` (OpenAI stores the log-scale divided by
  3, which acts as a larger learning rate for it).

  Data -> latent (`inverse`, the paper's function), for `x` of shape
  `[..., H, W, C]`:

    z = (x + bias) * exp(log_scale)
    inverse_log_det_jacobian(x) = H * W * sum(log_scale)

  Latent -> data (`forward`):

    x = z * exp(-log_scale) - bias
    forward_log_det_jacobian(z) = -H * W * sum(log_scale)

  Data-dependent initialisation is explicit: `initialize(x)` (or
  `tfp_glow.initialize` for a whole flow) sets `bias = -mean(x)` and
  `log_scale = -log(std(x) + 1e-6)` per channel, so that the output has zero
  mean and unit variance on that batch, and sets the `initialized` variable.
  It happens once: a second call, or a model restored from a checkpoint, keeps
  its values. The forward (sampling) direction never initialises anything.

  #### Example

  ```python
  an = ActNorm(3)
  x = tf.random.normal([16, 8, 8, 3]) * 4. + 1.
  an.initialize(x)
  z = an.inverse(x)                  # ~zero mean, unit std per channel
  x_again = an.forward(z)
  ildj = an.inverse_log_det_jacobian(x, event_ndims=3)   # shape [16]
  ```
  """

  def __init__(self, channels, logscale_factor=3.0, dtype=tf.float32,
               validate_args=False, name='actnorm'):
    parameters = dict(locals())
    base.check_positive_int('channels', channels)
    dtype = base.check_float_dtype(dtype)
    if not logscale_factor > 0:
      raise ValueError(
          f'`logscale_factor` must be positive, got {logscale_factor!r}.')
    self._logscale_factor = float(logscale_factor)
    self.bias = tf.Variable(tf.zeros([channels], dtype), name=f'{name}/bias')
    self.logs = tf.Variable(tf.zeros([channels], dtype), name=f'{name}/logs')
    self.initialized = tf.Variable(
        tf.zeros([], dtype), trainable=False, name=f'{name}/initialized')
    super().__init__(channels=channels, dtype=dtype,
                     validate_args=validate_args, parameters=parameters,
                     name=name)

  @property
  def log_scale(self):
    return self._logscale_factor * self.logs

  @property
  def is_initialized(self):
    """Python bool (eager): whether the data-dependent init has happened."""
    return bool(self.initialized.numpy() > 0.5)

  def initialize(self, x):
    """Sets the parameters from the batch `x` (data side), once.

    Returns True if it initialised, False if it was initialised already.
    """
    if not tf.executing_eagerly():
      raise RuntimeError(
          'ActNorm.initialize runs eagerly (it decides in Python whether to '
          'initialise); call it outside tf.function.')
    x = tf.convert_to_tensor(x, dtype=self.dtype)
    x = self._check_input(x)
    if self.is_initialized:
      return False
    self._set_from_batch(x)
    return True

  def _set_from_batch(self, x):
    x = tf.reshape(x, [-1, self.channels])
    if x.shape[0] == 0:
      raise ValueError(f'{self.name}: cannot initialise from an empty batch.')
    mean, var = tf.nn.moments(x, axes=[0])
    if not np.all(np.isfinite(var.numpy())) or not np.all(
        np.isfinite(mean.numpy())):
      raise ValueError(
          f'{self.name}: the initialisation batch gives non-finite statistics '
          '(NaN or Inf in the data?).')
    self.bias.assign(-mean)
    self.logs.assign(-tf.math.log(tf.sqrt(var) + 1e-6) / self._logscale_factor)
    self.initialized.assign(tf.ones([], self.dtype))

  def _maybe_init(self, x):
    if (init_active() and tf.executing_eagerly()
        and not self.is_initialized):
      self._set_from_batch(x)

  def _assert_initialized(self):
    if not self.validate_args:
      return []
    return [tf.debugging.assert_greater(
        self.initialized, tf.constant(0.5, self.dtype),
        message=(f'{self.name}: used before data-dependent initialisation; '
                 'call tfp_glow.initialize(flow, batch) first.'))]

  def normalize(self, x):
    """The data->latent map without log-det: for use inside networks."""
    self._maybe_init(x)
    with tf.control_dependencies(self._assert_initialized()):
      return (x + self.bias) * tf.exp(self.log_scale)

  def _transform(self, x, inverse, **kwargs):
    del kwargs
    x = self._check_input(x)
    if inverse:
      self._maybe_init(x)
    with tf.control_dependencies(self._assert_initialized()):
      log_scale = self.log_scale
      shape = tf.shape(x)
      hw = tf.cast(shape[-3] * shape[-2], x.dtype)
      ldj = hw * tf.reduce_sum(log_scale)
      ldj = tf.fill(shape[:-3], ldj)
      if inverse:
        return (x + self.bias) * tf.exp(log_scale), ldj
      return x * tf.exp(-log_scale) - self.bias, -ldj
