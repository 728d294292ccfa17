"""Affine and additive coupling layers."""

import numpy as np
import tensorflow as tf

from tfp_glow import nn
from tfp_glow import ops
from tfp_glow.bijectors import base

__all__ = ['AffineCoupling', 'AdditiveCoupling']


class _Coupling(base.GlowBijector):
  """Splits channels into x_a (first C/2, passed through) and x_b."""

  _outputs_per_channel = None  # 2 for affine (shift, scale), 1 for additive

  def __init__(self, channels, hidden_width, network, seed, dtype,
               validate_args, parameters, name, compute_dtype=None):
    base.check_positive_int('channels', channels)
    if channels % 2:
      raise ValueError(f'A coupling needs an even channel count, got '
                       f'channels={channels}.')
    base.check_positive_int('hidden_width', hidden_width)
    dtype = base.check_float_dtype(dtype)
    nn.check_network(network, '`network`')
    self._half = channels // 2
    out_channels = self._outputs_per_channel * (channels - self._half)
    if network is None:
      network = nn.GlowNetwork(self._half, out_channels, hidden_width,
                                     seed=seed, dtype=dtype,
                                     compute_dtype=compute_dtype,
                                     name=f'{name}_nn')
    elif compute_dtype is not None:
      raise ValueError('`compute_dtype` applies to the default network only; '
                       'a user-supplied `network` chooses its own precision.')
    self.network = network
    self._net_out_channels = out_channels
    super().__init__(channels=channels, dtype=dtype,
                     validate_args=validate_args, parameters=parameters,
                     name=name)

  def _run_network(self, xa):
    """`h = NN(x_a)` in the coupling's dtype, whatever `x_a`'s.

    The network always runs in the coupling's dtype: given the wider stream
    of `backprop='invert'` it reads `x_a` rounded to it and its output is
    widened again, so only the coupling's arithmetic runs wide. (The rebuild
    sees the same `x_a`, rounded the same way: the same `h`.)
    """
    flat, batch_shape = base.flatten_batch(tf.cast(xa, self.dtype))
    # An empty batch runs on one zero row (sliced away below): TensorFlow's CPU
    # Conv2D gets an empty batch's shape wrong, in any network.
    flat, n = ops.pad_empty_batch(flat)
    h = self.network(flat)[:n]
    if h.shape.rank is not None and h.shape[-1] is not None and (
        h.shape[-1] != self._net_out_channels):
      raise ValueError(
          f'{self.name}: the network must return {self._net_out_channels} '
          f'channels, got shape {h.shape}.')
    return tf.cast(base.unflatten_batch(h, batch_shape), xa.dtype)

  def _transform(self, x, inverse, **kwargs):
    del kwargs
    x = self._check_input(x)
    xa, xb = x[..., :self._half], x[..., self._half:]
    yb, ldj = self._couple(xb, self._run_network(xa), inverse)
    return tf.concat([xa, yb], axis=-1), ldj

  def rebuild_and_backprop(self, y, dy, dldj, watch=()):
    """Backprop by inversion with ONE network evaluation (RevNet's trick).

    The passed-through half is unchanged (`x_a = y_a`), so `h = NN(y_a)`
    computed once under the tape serves both to rebuild `x_b` from `y_b` and
    to recompute `y_b` and the log-det for the gradient. Unfused (rebuild,
    then recompute), the network would run twice in the backward pass. See
    `GlowBijector.rebuild_and_backprop` for the contract: `y` and the
    rebuilt input are in the stream's dtype (the rebuild runs there), the
    recomputation for the gradient in the coupling's own, as 'store' runs.
    """
    dtype = dy.dtype
    ya, yb = y[..., :self._half], y[..., self._half:]
    dya, dyb = dy[..., :self._half], dy[..., self._half:]
    ya_own = tf.cast(ya, dtype)
    watch = list(watch)
    with tf.GradientTape() as tape:
      tape.watch([ya_own] + watch)
      h = self._run_network(ya_own)
      xb = tf.stop_gradient(
          self._couple(yb, tf.cast(h, yb.dtype), inverse=False)[0])
      xb_own = tf.cast(xb, dtype)
      tape.watch(xb_own)
      yb_again, ldj = self._couple(xb_own, h, inverse=True)
    variables = list(tape.watched_variables()) + watch
    grads = tape.gradient([yb_again, ldj], [ya_own, xb_own] + variables,
                          output_gradients=[dyb, dldj])
    dxa = dya if grads[0] is None else dya + grads[0]
    dxb = tf.zeros_like(xb_own) if grads[1] is None else grads[1]
    x = tf.concat([ya, xb], axis=-1)
    return x, tf.concat([dxa, dxb], axis=-1), {
        v.ref(): g for v, g in zip(variables, grads[2:]) if g is not None}


class AffineCoupling(_Coupling):
  """Glow's affine coupling (Kingma & Dhariwal 2018, section 3.3).

  With `x = (x_a, x_b)` split on channels (`x_a` the first `C/2`),
  `h = NN(x_a)`, `shift = h[..., 0::2]`, `scale = sigmoid(h[..., 1::2] + 2)`:

  Data -> latent (`inverse`):  z_a = x_a,  z_b = (x_b + shift) * scale,
    inverse_log_det_jacobian(x) = sum_{h,w,c} log(scale)
  Latent -> data (`forward`):  x_a = z_a,  x_b = z_b / scale - shift,
    forward_log_det_jacobian(z) = -sum_{h,w,c} log(scale)

  The sigmoid bounds the scale in (0, 1), which keeps training stable (an
  unbounded exp scale is a known source of NaNs). `NN` is evaluated once per
  call, log-det included. The default network is `GlowNetwork`; any callable
  mapping `[N, H, W, C/2]` to `[N, H, W, C]` (shift and scale interleaved)
  can replace it, provided its variables are `tf.Variable`s in `tf.Module`s.
  `compute_dtype=tf.bfloat16` runs the default network in bfloat16 (see
  `GlowNetwork`); the coupling itself and its log-det stay in `dtype`.

  #### Example

  ```python
  coupling = AffineCoupling(4, hidden_width=32)
  x = tf.random.normal([2, 8, 8, 4])
  z = coupling.inverse(x)
  ildj = coupling.inverse_log_det_jacobian(x, event_ndims=3)  # shape [2]
  ```
  """

  _outputs_per_channel = 2

  def __init__(self, channels, hidden_width=512, network=None, seed=None,
               dtype=tf.float32, compute_dtype=None, validate_args=False,
               name='affine_coupling'):
    parameters = dict(locals())
    super().__init__(channels, hidden_width, network, seed, dtype,
                     validate_args, parameters, name, compute_dtype)

  def _couple(self, xb, h, inverse):
    shift = h[..., 0::2]
    log_scale = tf.math.log_sigmoid(h[..., 1::2] + 2.0)
    ldj = tf.reduce_sum(log_scale, axis=[-3, -2, -1])
    if inverse:
      return (xb + shift) * tf.exp(log_scale), ldj
    return xb * tf.exp(-log_scale) - shift, -ldj


class AdditiveCoupling(_Coupling):
  """Additive coupling (NICE; Glow's CelebA-HQ model).

  With `x = (x_a, x_b)` split on channels and `t = NN(x_a)`:

  Data -> latent (`inverse`):  z_a = x_a,  z_b = x_b + t
  Latent -> data (`forward`):  x_a = z_a,  x_b = z_b - t
  Both log-dets are 0 (volume preserving).

  #### Example

  ```python
  coupling = AdditiveCoupling(4, hidden_width=32)
  x = tf.random.normal([2, 8, 8, 4])
  z = coupling.inverse(x)
  ```
  """

  _outputs_per_channel = 1

  def __init__(self, channels, hidden_width=512, network=None, seed=None,
               dtype=tf.float32, compute_dtype=None, validate_args=False,
               name='additive_coupling'):
    parameters = dict(locals())
    super().__init__(channels, hidden_width, network, seed, dtype,
                     validate_args, parameters, name, compute_dtype)

  def _couple(self, xb, h, inverse):
    ldj = tf.zeros(tf.shape(xb)[:-3], xb.dtype)
    return (xb + h, ldj) if inverse else (xb - h, ldj)
