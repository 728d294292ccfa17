"""The priors of the multi-scale Glow, as bijectors on a standard normal.

Glow's split prior `p(z | h) = N(mu(h), sigma(h)^2)` (OpenAI's `split2d_prior`)
and its top prior (standard, learned, or class-conditional) are written as
affine bijectors from a standard normal, so the base distribution stays a fixed
`N(0, I)` and every learnable part lives in a bijector that the exactness
harness checks on its own.
"""

import numpy as np
import tensorflow as tf

from tfp_glow import nn
from tfp_glow import ops
from tfp_glow.bijectors import base

__all__ = ['SplitPrior', 'TopPrior']


class SplitPrior(base.GlowBijector):
  """The exit of a Glow level with its learned conditional prior.

  The input `x` `[..., H, W, C]` is split on channels into the kept part
  `h = x[..., :C - E]` (which goes on to the next level) and the exiting part
  `z = x[..., C - E:]`; `(mu, logs) = NN(h)`, a zero-initialised 3x3
  convolution (`tfp_glow.nn.ZeroConv2D`, outputs interleaved: mean at even,
  log-scale at odd channels).

  Data -> latent (`inverse`):
    out = concat(h, eps),  eps = (z - mu(h)) * exp(-logs(h)),
    inverse_log_det_jacobian(x) = -sum_{h,w,c} logs(h)
  Latent -> data (`forward`):
    out = concat(h, z),  z = mu(h) + exp(logs(h)) * eps,
    forward_log_det_jacobian = +sum_{h,w,c} logs(h)

  Under a standard-normal base this is exactly `z ~ N(mu(h), exp(logs(h))^2)`.
  It starts as the identity (mu = 0, logs = 0: scale exactly 1, not TFP's
  `tfb.Glow` exit, whose scale starts at e^2). The network runs once per call.

  #### Example

  ```python
  split = SplitPrior(8, exit_channels=4)
  x = tf.random.normal([2, 4, 4, 8])
  y, ildj = split.inverse_and_log_det(x)    # y[..., 4:] is the exit's eps
  ```
  """

  def __init__(self, channels, exit_channels=None, dtype=tf.float32,
               validate_args=False, name='split_prior'):
    parameters = dict(locals())
    base.check_positive_int('channels', channels)
    if exit_channels is None:
      exit_channels = channels // 2
    base.check_positive_int('exit_channels', exit_channels)
    if exit_channels >= channels:
      raise ValueError(f'`exit_channels` must be < channels={channels} (the '
                       f'kept part needs a channel), got {exit_channels}.')
    dtype = base.check_float_dtype(dtype)
    self._exit = int(exit_channels)
    self._keep = int(channels - exit_channels)
    self.network = nn.ZeroConv2D(self._keep, 2 * self._exit, 3, dtype=dtype,
                                 name=name)
    super().__init__(channels=channels, dtype=dtype,
                     validate_args=validate_args, parameters=parameters,
                     name=name)

  @property
  def exit_channels(self):
    return self._exit

  @property
  def kept_channels(self):
    return self._keep

  def _transform(self, x, inverse, **kwargs):
    del kwargs
    x = self._check_input(x)
    kept, z = x[..., :self._keep], x[..., self._keep:]
    flat, batch_shape = ops.flatten_batch(kept)
    params = ops.unflatten_batch(self.network(flat), batch_shape)
    mean, logs = params[..., 0::2], params[..., 1::2]
    ldj = tf.reduce_sum(logs, axis=[-3, -2, -1])
    if inverse:
      return tf.concat([kept, (z - mean) * tf.exp(-logs)], axis=-1), -ldj
    return tf.concat([kept, mean + tf.exp(logs) * z], axis=-1), ldj


class TopPrior(base.GlowBijector):
  """The top latent's prior: standard, learned (`learn_top`), class-conditional.

  `(mu, logs)` per channel: zero (standard normal), plus a learned vector
  (`learn_top=True`), plus a zero-initialised embedding of the class label
  (`num_classes`; labels passed as the kwarg `labels`, ints of the batch
  shape). For `x` `[..., H, W, C]`:

  Data -> latent (`inverse`):  eps = (x - mu) * exp(-logs),
    inverse_log_det_jacobian(x) = -H * W * sum_c logs
  Latent -> data (`forward`):  x = mu + exp(logs) * eps,
    forward_log_det_jacobian = +H * W * sum_c logs

  `class_logits(z_top)` is the paper's classifier of a class-conditional
  model (a zero-initialised linear map of the spatial mean of the top latent).
  Under XLA, where asserts are dropped, an out-of-range label gives NaN, never
  a silently wrong number.
  """

  def __init__(self, channels, learn_top=False, num_classes=None,
               dtype=tf.float32, validate_args=False, name='top_prior'):
    parameters = dict(locals())
    base.check_positive_int('channels', channels)
    if num_classes is not None:
      base.check_positive_int('num_classes', num_classes)
      if num_classes < 2:
        raise ValueError(f'`num_classes` must be >= 2, got {num_classes}.')
    dtype = base.check_float_dtype(dtype)
    self._num_classes = num_classes
    c = channels
    self.mean_logs = (tf.Variable(tf.zeros([2 * c], dtype),
                                  name=f'{name}/mean_logs')
                      if learn_top else None)
    if num_classes is not None:
      self.class_embedding = tf.Variable(
          tf.zeros([num_classes, 2 * c], dtype),
          name=f'{name}/class_embedding')
      self.classifier = nn.ZeroLinear(c, num_classes, dtype=dtype,
                                      name=f'{name}_classifier')
    else:
      self.class_embedding = None
      self.classifier = None
    super().__init__(channels=channels, dtype=dtype,
                     validate_args=validate_args, parameters=parameters,
                     name=name)

  @property
  def num_classes(self):
    return self._num_classes

  def check_labels(self, labels, batch_shape):
    """Validates labels against the model; returns int32 labels of shape [N]
    (flattened batch), or None for an unconditional prior."""
    if self._num_classes is None:
      if labels is not None:
        raise ValueError(
            f'{self.name}: labels were given to an unconditional model '
            '(num_classes=None).')
      return None
    if labels is None:
      raise ValueError(f'{self.name}: this model is class-conditional '
                       f'(num_classes={self._num_classes}); pass `labels`.')
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_integer:
      raise TypeError(f'{self.name}: `labels` must be integers, got dtype '
                      f'{labels.dtype.name}.')
    labels = tf.cast(labels, tf.int32)
    assertions = [
        tf.debugging.assert_equal(
            tf.shape(labels), tf.cast(batch_shape, tf.int32),
            message=f'{self.name}: `labels` must have the batch shape of the '
            'images/latents'),
        tf.debugging.assert_non_negative(
            labels, message=f'{self.name}: `labels` must be >= 0'),
        tf.debugging.assert_less(
            labels, self._num_classes,
            message=f'{self.name}: `labels` must be < num_classes='
            f'{self._num_classes}')]
    with tf.control_dependencies(assertions):
      return tf.reshape(labels, [-1])

  def params(self, labels, dtype):
    """(mean, logs), each `[N or 1, 1, 1, C]`; `labels` flat int32 or None."""
    c = self.channels
    params = tf.zeros([1, 2 * c], dtype)
    if self.mean_logs is not None:
      params += tf.cast(self.mean_logs, dtype)[tf.newaxis]
    if labels is not None:
      # XLA drops the label asserts and clamps the gather; a NaN makes an
      # out-of-range label visible there instead of a silently wrong number.
      valid = (labels >= 0) & (labels < self._num_classes)
      poison = tf.where(valid, tf.zeros([], dtype), tf.constant(np.nan, dtype))
      # Gathered from the variable's value, not the variable: a gather on
      # the resource (ResourceGather) has no `tf.vectorized_map` rule, so a
      # class-conditional prior could not be vectorised over examples.
      embedding = tf.convert_to_tensor(self.class_embedding)
      params = (params + tf.cast(tf.gather(embedding, labels), dtype)
                + poison[:, tf.newaxis])
    params = params[:, tf.newaxis, tf.newaxis, :]
    return params[..., 0::2], params[..., 1::2]

  def class_logits(self, z_top):
    """Class logits from the top latent `[N, h, w, c]` (spatial mean, linear)."""
    if self.classifier is None:
      raise ValueError(f'{self.name}: class_logits needs num_classes.')
    return self.classifier(tf.reduce_mean(z_top, axis=[-3, -2]))

  def _transform(self, x, inverse, labels=None, flat_labels=False):
    """`flat_labels=True`: `labels` are already checked and flat (from Glow)."""
    x = self._check_input(x)
    flat, batch_shape = ops.flatten_batch(x)
    if not flat_labels:
      labels = self.check_labels(labels, batch_shape)
    mean, logs = self.params(labels, flat.dtype)
    hw = tf.cast(tf.shape(flat)[1] * tf.shape(flat)[2], flat.dtype)
    ldj = hw * tf.reduce_sum(logs, axis=[1, 2, 3]) + tf.zeros(
        tf.shape(flat)[:1], flat.dtype)
    if inverse:
      out, ldj = (flat - mean) * tf.exp(-logs), -ldj
    else:
      out = mean + tf.exp(logs) * flat
    return (ops.unflatten_batch(out, batch_shape),
            tf.reshape(ldj, batch_shape))
