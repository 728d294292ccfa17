"""ActNorm: per-channel affine normalisation with data-dependent init."""

import tensorflow as tf

from tfp_glow import ops
from tfp_glow.bijectors import base

__all__ = ['ActNorm']


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
    dtype = base.check_float_dtype(dtype)
    # Parameters and formula live in ops.ActNormState (shared with the
    # coupling networks' ActNorms); this class adds the log-det.
    self.state = ops.ActNormState(channels, logscale_factor, dtype=dtype,
                                  name=name)
    super().__init__(channels=channels, dtype=dtype,
                     validate_args=validate_args, parameters=parameters,
                     name=name)

  @property
  def bias(self):
    return self.state.bias

  @property
  def logs(self):
    return self.state.logs

  @property
  def initialized(self):
    return self.state.initialized

  @property
  def log_scale(self):
    return self.state.log_scale

  @property
  def is_initialized(self):
    """Python bool (eager): whether the data-dependent init has happened."""
    return self.state.is_initialized

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
    self.state.set_from_batch(x)
    return True

  def _transform(self, x, inverse, **kwargs):
    del kwargs
    x = self._check_input(x)
    ldj = self.state.log_det(x)
    if inverse:
      return self.state.normalize(x, self.validate_args), ldj
    return self.state.denormalize(x, self.validate_args), -ldj
