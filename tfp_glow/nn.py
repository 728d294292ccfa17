"""The networks inside Glow's couplings and priors, as `tf.Module`s.

All parameters are `tf.Variable`s owned by `tf.Module`s, so every TFP idiom
(`trainable_variables`, `tf.train.Checkpoint`, `tf.saved_model.save`) sees
them. (Keras 3 layers are invisible to `tf.Module` tracking.)
"""

import numpy as np
import tensorflow as tf

from tfp_glow import ops

__all__ = ['ZeroConv2D', 'ZeroLinear', 'GlowNetwork', 'check_network']


def _normal(shape, seed, stddev, dtype):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(0.0, stddev, shape), dtype)


class ZeroConv2D(tf.Module):
  """A zero-initialised convolution with a learned gain (OpenAI's conv2d_zeros).

  y = (conv(x, kernel) + bias) * exp(logscale_factor * logs)

  All of kernel, bias and logs start at zero, so the output starts at zero.
  """

  def __init__(self, in_channels, out_channels, kernel_size=3,
               logscale_factor=3.0, dtype=tf.float32, name='zero_conv'):
    super().__init__(name=name)
    self.kernel = tf.Variable(
        tf.zeros([kernel_size, kernel_size, in_channels, out_channels], dtype),
        name=f'{name}/kernel')
    self.bias = tf.Variable(tf.zeros([out_channels], dtype),
                            name=f'{name}/bias')
    self.logs = tf.Variable(tf.zeros([out_channels], dtype),
                            name=f'{name}/logs')
    self._logscale_factor = logscale_factor
    self.out_channels = out_channels

  def __call__(self, x):
    return self.finish(ops.conv2d(x, tf.cast(self.kernel, x.dtype)))

  def finish(self, y):
    """Bias and gain applied to the raw convolution `y`."""
    gain = tf.exp(self._logscale_factor * self.logs)
    return (y + tf.cast(self.bias, y.dtype)) * tf.cast(gain, y.dtype)


class ZeroLinear(tf.Module):
  """A zero-initialised linear map with a learned gain (OpenAI's linear_zeros).

  y = (x @ kernel + bias) * exp(logscale_factor * logs)
  """

  def __init__(self, in_features, out_features, logscale_factor=3.0,
               dtype=tf.float32, name='zero_linear'):
    super().__init__(name=name)
    self.kernel = tf.Variable(tf.zeros([in_features, out_features], dtype),
                              name=f'{name}/kernel')
    self.bias = tf.Variable(tf.zeros([out_features], dtype),
                            name=f'{name}/bias')
    self.logs = tf.Variable(tf.zeros([out_features], dtype),
                            name=f'{name}/logs')
    self._logscale_factor = logscale_factor

  def __call__(self, x):
    return (tf.matmul(x, self.kernel) + self.bias) * tf.exp(
        self._logscale_factor * self.logs)


class GlowNetwork(tf.Module):
  """Glow's coupling network NN(x_a) (Kingma & Dhariwal 2018, appendix).

  conv3x3(width) -> ActNorm -> ReLU -> conv1x1(width) -> ActNorm -> ReLU
  -> ZeroConv2D 3x3(out_channels)

  The hidden convolutions have no bias (the ActNorm after them has one) and
  start from N(0, 0.05^2) weights; the last layer starts at zero, so the
  coupling it drives starts near the identity. The two ActNorms take part in
  the flow's data-dependent initialisation.

  Input `[N, H, W, in_channels]`, output `[N, H, W, out_channels]`.

  Each ActNorm is folded into the convolution before it (`(conv(h, k) + b) * s =
  conv(h, k * s) + b * s`, computed in the variables' dtype), so a hidden layer
  is one fused Conv2D + BiasAdd + Relu; the data-dependent init runs the
  unfolded path, which reads each ActNorm's input.

  `compute_dtype=tf.bfloat16` is the mixed-precision option: the three
  convolutions and the hidden activations run in bfloat16, while the variables, the output's bias and gain,
  and everything outside the network (log-dets, 1x1 convolutions, priors) stay
  in the flow's dtype. Exactness of the flow is unaffected: the coupling sees
  the same network output in both directions. The data-dependent init always
  runs the full-precision path. Fast with TF's oneDNN kernels (graph mode) on
  CPUs with bfloat16 support; XLA on CPU gains little from it.
  """

  def __init__(self, in_channels, out_channels, hidden_width=512, seed=None,
               dtype=tf.float32, compute_dtype=None, name='nn'):
    super().__init__(name=name)
    if compute_dtype is not None:
      compute_dtype = tf.as_dtype(compute_dtype)
      if not compute_dtype.is_floating:
        raise ValueError('`compute_dtype` must be None or a floating dtype such '
                         f'as bfloat16, got {compute_dtype.name}.')
      if compute_dtype == tf.as_dtype(dtype):
        compute_dtype = None
    self.compute_dtype = compute_dtype
    for arg, value in [('in_channels', in_channels),
                       ('out_channels', out_channels),
                       ('hidden_width', hidden_width)]:
      ops.check_positive_int(arg, value)
    seeds = np.random.SeedSequence(seed).generate_state(2)
    self.in_channels = in_channels
    self.out_channels = out_channels
    self.hidden_width = hidden_width
    self.kernel1 = tf.Variable(
        _normal([3, 3, in_channels, hidden_width], seeds[0], 0.05, dtype),
        name=f'{name}/conv1/kernel')
    self.actnorm1 = ops.ActNormState(hidden_width, dtype=dtype,
                                     name=f'{name}_actnorm1')
    self.kernel2 = tf.Variable(
        _normal([1, 1, hidden_width, hidden_width], seeds[1], 0.05, dtype),
        name=f'{name}/conv2/kernel')
    self.actnorm2 = ops.ActNormState(hidden_width, dtype=dtype,
                                     name=f'{name}_actnorm2')
    self.out = ZeroConv2D(hidden_width, out_channels, 3, dtype=dtype,
                          name=f'{name}_zero_conv')

  def __call__(self, x):
    if ops.init_active():
      # The data-dependent init reads each ActNorm's input: the unfolded path.
      h = ops.conv2d(x, self.kernel1)
      h = tf.nn.relu(self.actnorm1.normalize(h))
      h = ops.conv2d(h, self.kernel2)
      h = tf.nn.relu(self.actnorm2.normalize(h))
      return self.out(h)
    return self._call_folded(x)

  def _call_folded(self, x):
    """The same function with each ActNorm folded into the convolution before it,
    `(conv(h, k) + b) * s = conv(h, k * s) + b * s` (in the variables' dtype), so
    each hidden layer is Conv2D + BiasAdd + Relu, which oneDNN runs as one fused
    kernel (in float32 and bfloat16 alike) instead of a convolution followed by
    three elementwise passes over the activations (and their gradients)."""
    low = self.compute_dtype or x.dtype
    h = tf.cast(x, low)
    # A coupling never hands its network an empty batch (it pads one), so the
    # plain tf.nn.conv2d is safe here and keeps the pattern the fusion looks for.
    scale = tf.exp(self.actnorm1.log_scale)
    h = tf.nn.conv2d(h, tf.cast(self.kernel1 * scale, low), 1, 'SAME')
    h = tf.nn.relu(tf.nn.bias_add(h, tf.cast(self.actnorm1.bias * scale, low)))
    # The 1x1 convolution as the matrix product it is, [N*H*W, width] x [width,
    # width]: MatMul + BiasAdd + Relu fuse as well, and its gradients are two
    # plain matrix products, which run faster than the convolution's backprop
    # kernels (docs/BENCHMARKS.md).
    shape = tf.shape(h)
    scale = tf.exp(self.actnorm2.log_scale)
    h = tf.matmul(tf.reshape(h, [-1, self.hidden_width]),
                  tf.cast(self.kernel2[0, 0] * scale, low))
    h = tf.nn.relu(tf.nn.bias_add(h, tf.cast(self.actnorm2.bias * scale, low)))
    h = tf.reshape(h, shape)
    y = tf.cast(ops.conv2d(h, tf.cast(self.out.kernel, low)), x.dtype)
    return self.out.finish(y)


def check_network(network, what):
  """Rejects networks whose variables would silently not train."""
  if network is None:
    return
  if not callable(network):
    raise TypeError(f'{what} must be callable, got {type(network).__name__}.')
  keras_layer = None
  try:
    import keras  # pylint: disable=g-import-not-at-top
    keras_layer = keras.layers.Layer
  except ImportError:  # pragma: no cover
    pass
  if keras_layer is not None and isinstance(network, keras_layer):
    raise TypeError(
        f'{what} is a Keras layer ({type(network).__name__}). Keras 3 '
        'variables are invisible to tf.Module tracking, so its weights would '
        'silently never train. Pass a tf.Module (or a function of one) whose '
        'parameters are tf.Variables, e.g. tfp_glow.nn.GlowNetwork.')
