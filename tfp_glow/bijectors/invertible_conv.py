"""Invertible 1x1 convolution, plain and LU-decomposed."""

import numpy as np
import tensorflow as tf

from tfp_glow.bijectors import base

__all__ = ['InvertibleConv1x1', 'random_orthogonal']


def random_orthogonal(channels, seed=None):
  """A random orthogonal matrix (float64 numpy), Haar-distributed."""
  rng = np.random.default_rng(seed)
  q, r = np.linalg.qr(rng.standard_normal([channels, channels]))
  return q * np.sign(np.diag(r))[np.newaxis, :]


def _lu_decompose(w):
  """Returns P, L (unit lower), U (upper) with w = P @ L @ U (numpy)."""
  n = w.shape[0]
  u = w.astype(np.float64).copy()
  l = np.eye(n)
  perm = np.arange(n)
  for k in range(n - 1):
    pivot = k + int(np.argmax(np.abs(u[k:, k])))
    if pivot != k:
      u[[k, pivot], :] = u[[pivot, k], :]
      l[[k, pivot], :k] = l[[pivot, k], :k]
      perm[[k, pivot]] = perm[[pivot, k]]
    factors = u[k + 1:, k] / u[k, k]
    l[k + 1:, k] = factors
    u[k + 1:, :] -= factors[:, np.newaxis] * u[k, :]
  p = np.eye(n)[:, perm]  # rows of w were permuted: P^T w = L U
  return p, l, np.triu(u)


def _channel_matmul(x, matrix):
  """y[..., d] = sum_c matrix[d, c] * x[..., c] as one 2-D matmul."""
  shape = tf.shape(x)
  flat = tf.reshape(x, [-1, shape[-1]])
  out = tf.matmul(flat, matrix, transpose_b=True)
  return tf.reshape(out, shape)


class InvertibleConv1x1(base.GlowBijector):
  """The invertible 1x1 convolution of Glow (Kingma & Dhariwal 2018, 3.2).

  A `C x C` matrix `W` applied at every pixel. For `x` of shape `[..., H, W, C]`:

  Data -> latent (`inverse`):   z = W x (per pixel),
    inverse_log_det_jacobian(x) = H * W * log|det W|
  Latent -> data (`forward`):   x = W^-1 z,
    forward_log_det_jacobian(z) = -H * W * log|det W|

  `lu=False`: `W` is a free variable, initialised as a random orthogonal
  matrix. `log|det W|` and `W^-1` are computed in float64: `log|det W|` as
  `sum(log|diag(R)|)` of a QR decomposition, which XLA compiles (it has no
  kernel for `slogdet` or `lu` on CPU).

  `lu=True`: `W = P L (U + diag(sign_s * exp(log_s)))` with `P` a fixed
  permutation, `L` unit lower-triangular, `U` strictly upper-triangular,
  `sign_s` fixed and `log_s` learned; `log|det W| = sum(log_s)`, exact in any
  dtype, and `W` stays invertible whatever the optimizer does. Initialised from
  the LU decomposition of a random orthogonal matrix. `P` and `sign_s` are
  non-trainable variables, so a checkpoint restores them.

  #### Example

  ```python
  conv = InvertibleConv1x1(4, lu=True, seed=1)
  x = tf.random.normal([2, 8, 8, 4])
  z = conv.inverse(x)
  assert np.allclose(conv.forward(z), x, atol=1e-5)
  ```
  """

  def __init__(self, channels, lu=False, seed=None, dtype=tf.float32,
               validate_args=False, name='invertible_conv1x1'):
    parameters = dict(locals())
    base.check_positive_int('channels', channels)
    if not isinstance(lu, bool):
      raise ValueError(f'`lu` must be True or False, got {lu!r}.')
    dtype = base.check_float_dtype(dtype)
    self._lu = lu
    w0 = random_orthogonal(channels, seed)
    if lu:
      p, l, u = _lu_decompose(w0)
      s = np.diag(u)
      self.permutation = tf.Variable(p, dtype=tf.float64, trainable=False,
                                     name=f'{name}/permutation')
      self.sign_s = tf.Variable(np.sign(s), dtype=tf.float64, trainable=False,
                                name=f'{name}/sign_s')
      self.lower = tf.Variable(np.tril(l, -1), dtype=dtype,
                               name=f'{name}/lower')
      self.upper = tf.Variable(np.triu(u, 1), dtype=dtype,
                               name=f'{name}/upper')
      self.log_s = tf.Variable(np.log(np.abs(s)), dtype=dtype,
                               name=f'{name}/log_s')
      self._lower_mask = np.tril(np.ones([channels, channels]), -1)
      self._upper_mask = np.triu(np.ones([channels, channels]), 1)
    else:
      self.weight = tf.Variable(w0, dtype=dtype, name=f'{name}/weight')
    super().__init__(channels=channels, dtype=dtype,
                     validate_args=validate_args, parameters=parameters,
                     name=name)

  @property
  def lu(self):
    return self._lu

  def weight_and_log_det(self, inverse_weight=False, dtype=None):
    """Returns (W or W^-1, log|det W|) in `dtype` (default: the bijector's).

    `W^-1` always comes from float64 (triangular solves of the LU factors,
    or `inv` of `W`), cast. A `dtype` wider than the variables' (the float64
    stream of `backprop='invert'`) computes `W` in it too, from the same
    values, so that `W` and `W^-1` are inverses to that dtype's precision.
    """
    dtype = self.dtype if dtype is None else tf.as_dtype(dtype)
    if self._lu:
      c = self.channels
      eye = tf.eye(c, dtype=dtype)
      l = tf.cast(self.lower, dtype) * tf.constant(self._lower_mask,
                                                   dtype) + eye
      log_s = tf.cast(self.log_s, dtype)
      u = (tf.cast(self.upper, dtype) * tf.constant(self._upper_mask, dtype)
           + tf.linalg.diag(tf.cast(self.sign_s, dtype) * tf.exp(log_s)))
      log_det = tf.reduce_sum(log_s)
      if not inverse_weight:
        return tf.matmul(tf.cast(self.permutation, dtype),
                         tf.matmul(l, u)), log_det
      # W^-1 = U^-1 L^-1 P^T, from triangular solves in float64.
      l64, u64 = tf.cast(l, tf.float64), tf.cast(u, tf.float64)
      eye64 = tf.eye(c, dtype=tf.float64)
      l_inv = tf.linalg.triangular_solve(l64, eye64, lower=True)
      u_inv = tf.linalg.triangular_solve(u64, eye64, lower=False)
      w_inv = tf.matmul(u_inv, tf.matmul(l_inv, self.permutation,
                                         transpose_b=True))
      return tf.cast(w_inv, dtype), log_det
    w64 = tf.cast(self.weight, tf.float64)
    r = tf.linalg.qr(w64, full_matrices=False).r
    log_det = tf.cast(tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(r)))),
                      dtype)
    if not inverse_weight:
      return tf.cast(self.weight, dtype), log_det
    return tf.cast(tf.linalg.inv(w64), dtype), log_det

  def _transform(self, x, inverse, **kwargs):
    del kwargs
    x = self._check_input(x)
    # In the input's dtype: the variables' own, or the wider stream of
    # `backprop='invert'`.
    matrix, log_det = self.weight_and_log_det(inverse_weight=not inverse,
                                              dtype=x.dtype)
    shape = tf.shape(x)
    ldj = tf.fill(shape[:-3], tf.cast(shape[-3] * shape[-2], x.dtype) * log_det)
    y = _channel_matmul(x, matrix)
    return (y, ldj) if inverse else (y, -ldj)
