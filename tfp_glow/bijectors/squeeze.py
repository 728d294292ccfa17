"""Squeeze: 2x2 space-to-depth."""

import tensorflow as tf

from tfp_glow.bijectors import base

__all__ = ['Squeeze']


class Squeeze(base.GlowBijector):
  """Trades spatial size for channels, as in RealNVP and Glow.

  Data -> latent (`inverse`): `[..., H, W, C] -> [..., H/2, W/2, 4C]`, each
  2x2 block of pixels becoming one pixel with 4x the channels
  (`tf.nn.space_to_depth` order).
  Latent -> data (`forward`): the reverse (`tf.nn.depth_to_space`).
  Both log-dets are 0 (a permutation of the entries).

  H and W of the data side must be even.

  #### Example

  ```python
  sq = Squeeze()
  sq.inverse(tf.zeros([5, 8, 8, 3])).shape     # [5, 4, 4, 12]
  sq.forward(tf.zeros([5, 4, 4, 12])).shape    # [5, 8, 8, 3]
  ```
  """

  def __init__(self, validate_args=False, name='squeeze'):
    parameters = dict(locals())
    super().__init__(channels=None, dtype=None, validate_args=validate_args,
                     parameters=parameters, name=name,
                     is_constant_jacobian=True)

  def _transform(self, x, inverse, **kwargs):
    del kwargs
    x = self._check_input(x)
    if inverse:
      h, w = x.shape[-3], x.shape[-2]
      if (h is not None and h % 2) or (w is not None and w % 2):
        raise ValueError(f'{self.name}: H and W must be even, got image shape '
                         f'{x.shape[-3:]}.')
    else:
      c = x.shape[-1]
      if c is not None and c % 4:
        raise ValueError(f'{self.name}: the latent side needs a channel count '
                         f'divisible by 4, got shape {x.shape}.')
    flat, batch_shape = base.flatten_batch(x)
    if inverse:
      # A dynamic odd size fails inside space_to_depth with a message that
      # names the size and the block size.
      y = tf.nn.space_to_depth(flat, 2)
    else:
      y = tf.nn.depth_to_space(flat, 2)
    ldj = tf.zeros(batch_shape, x.dtype)
    return base.unflatten_batch(y, batch_shape), ldj

  def _forward_event_shape(self, input_shape):
    h, w, c = input_shape[-3:]
    return tf.TensorShape([None if h is None else 2 * h,
                           None if w is None else 2 * w,
                           None if c is None else c // 4])

  def _forward_event_shape_tensor(self, input_shape):
    return tf.stack([2 * input_shape[-3], 2 * input_shape[-2],
                     input_shape[-1] // 4])

  def _inverse_event_shape(self, output_shape):
    h, w, c = output_shape[-3:]
    return tf.TensorShape([None if h is None else h // 2,
                           None if w is None else w // 2,
                           None if c is None else 4 * c])

  def _inverse_event_shape_tensor(self, output_shape):
    return tf.stack([output_shape[-3] // 2, output_shape[-2] // 2,
                     4 * output_shape[-1]])
