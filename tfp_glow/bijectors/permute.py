"""Fixed channel permutations: the paper's ablation baselines."""

import numpy as np
import tensorflow as tf

from tfp_glow.bijectors import base

__all__ = ['ChannelPermute', 'ChannelReverse', 'ChannelShuffle']


class ChannelPermute(base.GlowBijector):
  """Permutes the channels (last axis) of `[..., H, W, C]` images.

  Data -> latent (`inverse`): z[..., i] = x[..., perm[i]]
  Latent -> data (`forward`): x[..., perm[i]] = z[..., i]
  Both log-dets are 0 (a permutation has |det| = 1).

  The permutation is a non-trainable variable, so a checkpoint restores it.

  #### Example

  ```python
  p = ChannelPermute([2, 0, 1])
  p.inverse(tf.constant([[[[10., 20., 30.]]]]))   # [[[[30., 10., 20.]]]]
  ```
  """

  def __init__(self, permutation, validate_args=False, name='channel_permute'):
    parameters = dict(locals())
    perm = np.asarray(permutation)
    if perm.ndim != 1 or perm.size == 0 or not np.issubdtype(
        perm.dtype, np.integer) or sorted(perm.tolist()) != list(
            range(perm.size)):
      raise ValueError('`permutation` must be a permutation of 0..C-1, got '
                       f'{permutation!r}.')
    self._perm_np = perm.astype(np.int32)
    self.permutation = tf.Variable(self._perm_np, trainable=False,
                                   name=f'{name}/permutation')
    super().__init__(channels=int(perm.size), dtype=None,
                     validate_args=validate_args, parameters=parameters,
                     name=name, is_constant_jacobian=True)

  def _transform(self, x, inverse, **kwargs):
    del kwargs
    x = self._check_input(x)
    perm = tf.convert_to_tensor(self.permutation)
    if not inverse:
      perm = tf.math.invert_permutation(perm)
    return tf.gather(x, perm, axis=-1), tf.zeros(tf.shape(x)[:-3], x.dtype)


class ChannelReverse(ChannelPermute):
  """Reverses the channel order (NICE / RealNVP baseline)."""

  def __init__(self, channels, validate_args=False, name='channel_reverse'):
    base.check_positive_int('channels', channels)
    super().__init__(np.arange(channels)[::-1], validate_args=validate_args,
                     name=name)


class ChannelShuffle(ChannelPermute):
  """A fixed random channel shuffle (RealNVP-style baseline)."""

  def __init__(self, channels, seed=None, validate_args=False,
               name='channel_shuffle'):
    base.check_positive_int('channels', channels)
    perm = np.random.default_rng(seed).permutation(channels)
    super().__init__(perm, validate_args=validate_args, name=name)
