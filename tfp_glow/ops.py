"""The bottom layer: tensor helpers, argument checks and ActNorm's state and math.

Everything above imports from here and nothing here imports from tfp_glow:
the networks (`tfp_glow.nn`) and the bijectors (`tfp_glow.bijectors`) share
ActNorm's parameters and formula (`ActNormState`), the empty-batch workaround
(`pad_empty_batch`, `conv2d`) and the checks, each written once.
"""

import contextlib
import math
import threading

import numpy as np
import tensorflow as tf

__all__ = [
    'check_option', 'check_positive_int', 'check_float_dtype', 'conv2d',
    'flatten_batch', 'unflatten_batch', 'pad_empty_batch',
    'standard_normal_log_prob', 'data_dependent_init', 'init_active',
    'ActNormState',
]


# --- argument checks ------------------------------------------------------------

def check_option(name, value, choices):
  if value not in choices:
    raise ValueError(f'`{name}` must be one of {sorted(choices)}, got {value!r}.')
  return value


def check_positive_int(name, value):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f'`{name}` must be a positive integer, got {value!r}.')
  return int(value)


def check_float_dtype(dtype):
  dtype = tf.as_dtype(dtype)
  if not dtype.is_floating:
    raise TypeError(f'`dtype` must be a floating dtype, got {dtype.name}.')
  return dtype


# --- tensor helpers -----------------------------------------------------------------

def conv2d(x, kernel):
  """SAME-padded stride-1 conv2d that also handles an empty batch.

  (On this CPU build `tf.nn.conv2d` of a batch of 0 returns the wrong channel
  count; the reshape restores the shape, free of cost otherwise.)
  """
  y = tf.nn.conv2d(x, kernel, 1, 'SAME')
  shape = tf.concat([tf.shape(x)[:3], tf.shape(kernel)[3:]], axis=0)
  return tf.reshape(y, shape)


def flatten_batch(x, event_ndims=3):
  """Reshapes `x` to `[N] + event_shape`; returns it and the batch shape."""
  shape = tf.shape(x)
  batch_shape = shape[:-event_ndims]
  event_shape = shape[-event_ndims:]
  flat = tf.reshape(x, tf.concat([[-1], event_shape], axis=0))
  static_event = x.shape[-event_ndims:]
  flat.set_shape([None] + static_event.as_list())
  return flat, batch_shape


def unflatten_batch(x, batch_shape, event_ndims=3):
  shape = tf.concat([batch_shape, tf.shape(x)[-event_ndims:]], axis=0)
  return tf.reshape(x, shape)


def pad_empty_batch(*tensors):
  """Appends one zero row to each tensor when the batch is empty.

  TensorFlow's CPU Conv2D returns a wrong shape for an empty batch (the
  input's channel count; TF 2.21), which breaks a flow of convolutions; an
  empty batch runs on one dummy row instead, which the caller slices away
  (`[:n]`). `tensors` share their first dimension (None entries pass through).
  Returns `(padded tensors..., n)`. A batch known statically to be non-empty
  is left as it is.
  """
  first = next(t for t in tensors if t is not None)
  n = tf.shape(first)[0]
  if first.shape[0] is not None and first.shape[0] > 0:
    return (*tensors, n)
  extra = tf.cast(tf.equal(n, 0), tf.int32)
  out = []
  for t in tensors:
    if t is None:
      out.append(None)
      continue
    pad_shape = tf.concat([[extra], tf.shape(t)[1:]], axis=0)
    out.append(tf.concat([t, tf.zeros(pad_shape, t.dtype)], axis=0))
  return (*out, n)


def standard_normal_log_prob(eps):
  """log N(eps; 0, I), summed over the last axis: the Glow base density."""
  d = tf.cast(tf.shape(eps)[-1], eps.dtype)
  return (-0.5 * tf.reduce_sum(tf.square(eps), axis=-1)
          - 0.5 * d * math.log(2.0 * math.pi))


# --- ActNorm's data-dependent init and its math ----------------------------------

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


class ActNormState(tf.Module):
  """ActNorm's parameters and formula, shared by the bijector and the networks.

  Per channel: `bias` and `logs` (shape `[C]`), with `log_scale =
  logscale_factor * logs` (OpenAI stores the log-scale divided by 3, which
  acts as a larger learning rate for it), and an `initialized` variable so
  that a restored model is never re-initialised.

    normalize(x)   = (x + bias) * exp(log_scale)        (data -> latent)
    denormalize(z) = z * exp(-log_scale) - bias          (latent -> data)

  Data-dependent init (`set_from_batch`): `bias = -mean(x)`, `log_scale =
  -log(std(x) + 1e-6)` per channel, so the output has zero mean and unit
  variance on that batch. `set_identity` marks it initialised at scale 1,
  bias 0 (the ablation's "no data-dependent init").
  """

  def __init__(self, channels, logscale_factor=3.0, dtype=tf.float32,
               name='actnorm'):
    super().__init__(name=name)
    check_positive_int('channels', channels)
    if not logscale_factor > 0:
      raise ValueError(
          f'`logscale_factor` must be positive, got {logscale_factor!r}.')
    self.channels = int(channels)
    self.label = name
    self.logscale_factor = float(logscale_factor)
    self.bias = tf.Variable(tf.zeros([channels], dtype), name=f'{name}/bias')
    self.logs = tf.Variable(tf.zeros([channels], dtype), name=f'{name}/logs')
    self.initialized = tf.Variable(
        tf.zeros([], dtype), trainable=False, name=f'{name}/initialized')

  @property
  def log_scale(self):
    return self.logscale_factor * self.logs

  @property
  def is_initialized(self):
    """Python bool (eager): whether the data-dependent init has happened."""
    return bool(self.initialized.numpy() > 0.5)

  def set_from_batch(self, x):
    x = tf.reshape(x, [-1, self.channels])
    if x.shape[0] == 0:
      raise ValueError(f'{self.label}: cannot initialise from an empty batch.')
    mean, var = tf.nn.moments(x, axes=[0])
    if not np.all(np.isfinite(var.numpy())) or not np.all(
        np.isfinite(mean.numpy())):
      raise ValueError(
          f'{self.label}: the initialisation batch gives non-finite statistics '
          '(NaN or Inf in the data?).')
    self.bias.assign(-mean)
    self.logs.assign(-tf.math.log(tf.sqrt(var) + 1e-6) / self.logscale_factor)
    self.initialized.assign(tf.ones([], self.initialized.dtype))

  def set_identity(self):
    self.bias.assign(tf.zeros_like(self.bias))
    self.logs.assign(tf.zeros_like(self.logs))
    self.initialized.assign(tf.ones([], self.initialized.dtype))

  def maybe_init(self, x):
    if init_active() and tf.executing_eagerly() and not self.is_initialized:
      self.set_from_batch(x)

  def assert_initialized(self, validate):
    if not validate:
      return []
    return [tf.debugging.assert_greater(
        self.initialized, tf.constant(0.5, self.initialized.dtype),
        message=(f'{self.label}: used before data-dependent initialisation; '
                 'call tfp_glow.initialize(flow, batch) first.'))]

  def normalize(self, x, validate=False):
    """Data -> latent, no log-det (initialises inside `data_dependent_init`)."""
    self.maybe_init(x)
    # exp in the input's dtype: given a wider input (the float64 stream of
    # `backprop='invert'`, see tfp_glow.bijectors.invert), the two directions
    # are then inverses to that dtype's precision, not to the parameters'.
    with tf.control_dependencies(self.assert_initialized(validate)):
      return (x + tf.cast(self.bias, x.dtype)) * tf.exp(
          tf.cast(self.log_scale, x.dtype))

  def denormalize(self, z, validate=False):
    """Latent -> data, no log-det."""
    with tf.control_dependencies(self.assert_initialized(validate)):
      return z * tf.exp(-tf.cast(self.log_scale, z.dtype)) - tf.cast(
          self.bias, z.dtype)

  def log_det(self, x):
    """`H * W * sum(log_scale)` per example of `x` `[..., H, W, C]`, as a
    tensor of the batch shape (the data -> latent log-det)."""
    shape = tf.shape(x)
    hw = tf.cast(shape[-3] * shape[-2], x.dtype)
    return tf.fill(shape[:-3], hw * tf.cast(tf.reduce_sum(self.log_scale),
                                            x.dtype))
