"""The Glow distribution over images, and the functions users call on it."""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_glow import architecture
from tfp_glow import ops
from tfp_glow.bijectors import glow as glow_lib

tfd = tfp.distributions

__all__ = [
    'glow_distribution', 'get_glow', 'initialize', 'sample', 'encode',
    'decode', 'bits_per_dim', 'parameter_count', 'latent_noise',
    'resolve_model',
]


def glow_distribution(image_shape, levels=3, steps_per_level=32,
                      hidden_width=512, coupling='affine', permutation='conv',
                      learn_top=False, num_classes=None, split_fraction=0.5,
                      seed=None, dtype=tf.float32, compute_dtype=None,
                      actnorm_init='data', backprop='store',
                      validate_args=False, name='glow'):
  """A `tfd.TransformedDistribution` over `[H, W, C]` images, Glow's model.

  The base is a fixed standard normal of dimension `D = H * W * C`; every
  learnable part (steps, split priors, top prior, class conditioning) is in the
  `tfp_glow.bijectors.Glow` bijector (see it for the arguments). Images live
  in `[-0.5, 0.5]` (see `tfp_glow.data`).

  Call `initialize(dist, x)` on a batch before training (ActNorm's
  data-dependent init). Class-conditional models take their labels as a
  bijector kwarg: `dist.log_prob(x, bijector_kwargs={'labels': l})`.
  `backprop='invert'` trades about one extra forward pass for activation
  memory that stays flat in the number of steps (see `Glow`).

  #### Example

  ```python
  dist = tfp_glow.glow_distribution([8, 8, 1], levels=2, steps_per_level=4,
                                    hidden_width=64)
  x = tf.random.uniform([32, 8, 8, 1], -0.5, 0.5)
  tfp_glow.initialize(dist, x)
  bpd = tfp_glow.bits_per_dim(dist.log_prob(x), [8, 8, 1], n_bins=256)
  images = tfp_glow.sample(dist, 16, temperature=0.7, seed=1)
  ```
  """
  glow = glow_lib.Glow(
      image_shape, levels=levels, steps_per_level=steps_per_level,
      hidden_width=hidden_width, coupling=coupling, permutation=permutation,
      learn_top=learn_top, num_classes=num_classes,
      split_fraction=split_fraction, seed=seed, dtype=dtype,
      compute_dtype=compute_dtype, actnorm_init=actnorm_init,
      backprop=backprop, validate_args=validate_args, name=name)
  return distribution_from_glow(glow)


def distribution_from_glow(glow):
  """Wraps a `Glow` bijector with its standard-normal base."""
  base_dist = tfd.Sample(
      tfd.Normal(tf.zeros([], glow.dtype), tf.ones([], glow.dtype)),
      sample_shape=[glow.latent_size])
  return tfd.TransformedDistribution(base_dist, glow, name=f'{glow.name}_dist')


def get_glow(dist_or_bijector):
  """The `Glow` bijector of a distribution from `glow_distribution` (or itself)."""
  if isinstance(dist_or_bijector, glow_lib.Glow):
    return dist_or_bijector
  bij = getattr(dist_or_bijector, 'bijector', None)
  if isinstance(bij, glow_lib.Glow):
    return bij
  raise TypeError('Expected a tfp_glow Glow bijector or a distribution made by '
                  f'glow_distribution, got {type(dist_or_bijector).__name__}.')


def resolve_model(model_or_distribution, n_bins=None, what='Using'):
  """`(glow, n_bins, initialised)` of a GlowModel (its own n_bins) or of a
  distribution / `Glow` (then `n_bins` is required): what the export and the
  scores both need. `what` starts the error for a missing n_bins."""
  model_n_bins = getattr(model_or_distribution, 'n_bins', None)
  glow = getattr(model_or_distribution, 'glow', None)
  if glow is not None and model_n_bins is not None:  # a GlowModel
    if n_bins is not None and int(n_bins) != int(model_n_bins):
      raise ValueError(f'n_bins={n_bins} contradicts the model\'s n_bins='
                       f'{model_n_bins}; leave it out for a GlowModel.')
    n_bins = model_n_bins
  else:
    glow = get_glow(model_or_distribution)
    if n_bins is None:
      raise ValueError(f'{what} a bare distribution needs n_bins (levels per '
                       'dimension of the data: 256 for 8-bit, 17 for the '
                       'digits).')
  if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) \
      or not 2 <= n_bins <= 256:
    raise ValueError(f'n_bins must be an int in 2..256 (uint8 bin indices), '
                     f'got {n_bins!r}.')
  initialized = all(bool(a.is_initialized) for a in glow.actnorms())
  return glow, int(n_bins), initialized


def initialize(dist_or_bijector, x, labels=None):
  """ActNorm's data-dependent initialisation, explicitly, from one batch.

  Runs `x` once through the flow in the data -> latent direction; every
  ActNorm not yet initialised (the steps' and those inside the coupling
  networks), in order, sets its bias and scale from the statistics of what
  reaches it, so its output has zero mean and unit variance per channel on
  this batch. Already-initialised ActNorms (a second call, a restored
  checkpoint) are left as they are. Runs eagerly.

  Under a `tf.distribute` strategy, call it in the cross-replica context with
  the whole init batch: the statistics are those of the whole batch, and the
  mirrored variables get the same values on every replica.

  Args:
    dist_or_bijector: a distribution from `glow_distribution`, a `Glow`, or
      any tfp_glow bijector (or a TFP `Chain` of them).
    x: images `[N, H, W, C]` in the data space, N >= 1 (OpenAI uses 256).
    labels: class labels, for a class-conditional Glow.

  Returns:
    The number of ActNorms that were initialised by this call.
  """
  if not tf.executing_eagerly():
    raise RuntimeError('initialize() runs eagerly; call it outside tf.function '
                       '(and outside strategy.run).')
  bij = getattr(dist_or_bijector, 'bijector', dist_or_bijector)
  dtype = bij.dtype or tf.float32
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    raise TypeError(f'initialize: images must be floating, got {x.dtype.name}.')
  x = tf.cast(x, dtype)
  if x.shape.rank is not None and x.shape.rank >= 1 and x.shape[0] == 0:
    raise ValueError('initialize: the initialisation batch is empty.')
  if not np.all(np.isfinite(x.numpy())):
    raise ValueError('initialize: the initialisation batch contains NaN or Inf.')
  actnorms = [m for m in bij.submodules if isinstance(m, ops.ActNormState)]
  before = [a.is_initialized for a in actnorms]
  kwargs = {} if labels is None else {'labels': labels}
  with ops.data_dependent_init():
    if hasattr(bij, 'inverse_and_log_det'):
      # The fused pass, not `inverse`: nothing is cached from this run.
      bij.inverse_and_log_det(x, **kwargs)
    else:
      bij.inverse(tf.identity(x), **kwargs)
  return sum(1 for a, b in zip(actnorms, before) if a.is_initialized and not b)


def latent_noise(n, latent_size, temperature=1.0, seed=None,
                 dtype=tf.float32):
  """`[n, D]` latent noise at temperature T: `N(0, T^2)` (the one definition).

  `seed`: None (stateful), an int (the same as the stateless seed `[seed, 0]`),
  or a stateless seed of shape [2]. Philox is named explicitly: the default
  ('auto_select') draws other numbers under XLA, and the same seed must give
  the same images everywhere (in memory and in the SavedModel's `sample`).
  """
  shape = tf.stack([tf.cast(n, tf.int32), latent_size])
  if seed is None:
    eps = tf.random.normal(shape, dtype=dtype)
  else:
    if isinstance(seed, (int, np.integer)):
      seed = [int(seed), 0]
    elif isinstance(seed, tf.Tensor) and seed.shape.rank == 0:
      seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    eps = tf.random.stateless_normal(shape, seed=seed, dtype=dtype,
                                     alg='philox')
  return eps * tf.cast(temperature, dtype)


def sample(dist_or_glow, n, temperature=1.0, seed=None, labels=None):
  """Samples `n` images at temperature `T`: eps ~ N(0, T^2) at every level.

  The paper's temperature scales the standard-normal noise of every level's
  prior (not only the top's); T = 1 is the model's own distribution, T = 0 the
  deterministic image from the prior means, T ~ 0.7 usually looks best.

  Args:
    dist_or_glow: a distribution from `glow_distribution`, or a `Glow`.
    n: number of images (Python int or scalar int tensor).
    temperature: T >= 0.
    seed: None (stateful), an int, or a stateless seed of shape [2]. The same
      int seed gives the same images.
    labels: int labels of shape [n] for a class-conditional model.

  Returns:
    `[n, H, W, C]` images.

  Raises:
    FloatingPointError (eagerly; `InvalidArgumentError` in a graph): some
      samples are not finite (the flow overflows at a high temperature); the
      message names how many and the temperature. Never a NaN image.
  """
  glow = get_glow(dist_or_glow)
  if isinstance(temperature, (int, float)) and (
      not np.isfinite(temperature) or temperature < 0):
    raise ValueError(f'temperature must be finite and >= 0, got {temperature}.')
  if isinstance(n, (int, np.integer)) and n < 0:
    raise ValueError(f'n must be >= 0, got {n}.')
  t = tf.convert_to_tensor(temperature, glow.dtype)
  with tf.control_dependencies([tf.debugging.assert_non_negative(
      t, message='temperature must be >= 0')] if not isinstance(
          temperature, (int, float)) else []):
    eps = latent_noise(n, glow.latent_size, t, seed, glow.dtype)
  return glow.generate(eps, labels=labels, temperature=t)[0]


def encode(dist_or_glow, x, labels=None):
  """Images `[..., H, W, C]` -> standardised latents `[..., D]`.

  The latent is the flow's `eps`: the concatenation, level by level (first
  exit first, top last), of each level's latent standardised by its prior
  (`(z - mu) / sigma`), so it is N(0, I) under the model. Use
  `get_glow(dist).split_latent(eps)` for the per-level tensors.
  """
  kwargs = {} if labels is None else {'labels': labels}
  return get_glow(dist_or_glow).inverse(x, **kwargs)


def decode(dist_or_glow, eps, labels=None):
  """Latents `[..., D]` (as from `encode`) -> images; `decode(encode(x)) == x`."""
  kwargs = {} if labels is None else {'labels': labels}
  return get_glow(dist_or_glow).forward(eps, **kwargs)


def bits_per_dim(log_prob, image_shape, n_bins):
  """Bits per dimension of discrete data from the continuous log-density.

  bpd = (-log p(x) + D * log(n_bins)) / (D * ln 2),  D = H * W * C,

  where `log p(x)` is the density of the dequantised image scaled to
  [-0.5, 0.5] (one bin has width 1 / n_bins, hence the `D log(n_bins)`). This
  is the number papers quote. Works per image (a vector in, a vector out).
  """
  if isinstance(n_bins, bool) or not isinstance(
      n_bins, (int, float, np.integer, np.floating)) or n_bins < 2:
    raise ValueError(f'n_bins must be a number >= 2, got {n_bins!r}.')
  d = int(np.prod(image_shape))
  if d < 1 or len(image_shape) != 3:
    raise ValueError(f'image_shape must be [H, W, C], got {image_shape!r}.')
  log_prob = tf.convert_to_tensor(log_prob)
  return (-log_prob + d * math.log(n_bins)) / (d * math.log(2.0))


def parameter_count(image_shape, levels=3, steps_per_level=32,
                    hidden_width=512, coupling='affine', permutation='conv',
                    learn_top=False, num_classes=None, split_fraction=0.5):
  """Trainable parameters of a Glow, from its architecture (the formula).

  Pass an `image_shape` and the architecture's arguments, or (as `image_shape`) a built
  distribution / `Glow` (its plan is used; the other arguments must be left
  out). Unknown options raise. With `c` the channels of a level after its
  squeeze and `w` the hidden width, each step has
    ActNorm              2c
    permutation          conv: c^2;  conv_lu: 2c^2 + c (L and U are stored as
                         full c x c matrices, masked);  shuffle/reverse: 0
    coupling network     9 (c/2) w + 2w + w^2 + 2w + 9 w o + 2o,
                         o = c (affine) or c/2 (additive)
  each split with `e = floor(c * split_fraction)` exiting channels and
  `k = c - e` kept adds the prior conv  9 k (2e) + 2 (2e);
  the top (c_top channels) adds 2 c_top if learn_top, and with n classes
  2 c_top n (embedding) + c_top n + 2n (classifier).
  """
  if isinstance(image_shape, (list, tuple)):
    plan = architecture.plan(
        image_shape, levels=levels, steps_per_level=steps_per_level,
        hidden_width=hidden_width, coupling=coupling, permutation=permutation,
        learn_top=learn_top, num_classes=num_classes,
        split_fraction=split_fraction)
  else:
    plan = get_glow(image_shape).plan
  return plan.parameter_count()
