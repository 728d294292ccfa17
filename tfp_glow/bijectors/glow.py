"""Glow: the multi-scale flow composed from the components, as one bijector."""

import collections
import math

import numpy as np
import tensorflow as tf

from tfp_glow import networks
from tfp_glow.bijectors import actnorm as actnorm_lib
from tfp_glow.bijectors import base
from tfp_glow.bijectors import coupling as coupling_lib
from tfp_glow.bijectors import invertible_conv
from tfp_glow.bijectors import permute
from tfp_glow.bijectors import squeeze as squeeze_lib

__all__ = ['Glow', 'LogProbParts', 'COUPLINGS', 'PERMUTATIONS']

# TEMPORARY (branch wt-keras): a minimal stand-in for the lead's
# `Glow.log_prob_parts`, so that GlowModel can call the one likelihood before
# that change is merged; replaced by the lead's version at merge.
LogProbParts = collections.namedtuple(
    'LogProbParts', ['log_prob', 'eps', 'ildj', 'z_top', 'class_logits'])

COUPLINGS = ('affine', 'additive')
PERMUTATIONS = ('conv', 'conv_lu', 'shuffle', 'reverse')


class Glow(base.GlowBijector):
  """The Glow flow (Kingma & Dhariwal 2018) as one TFP bijector.

  ```
  image x [H, W, C]                                  (data side, `inverse` ->)
    level 0: squeeze -> K x (ActNorm, permutation, coupling) -> split
                                         |                       `-> eps_0
    level 1: squeeze -> K x (...)        -> split --------------------> eps_1
    ...
    level L-1: squeeze -> K x (...)      -> top prior ----------------> eps_top
  latent eps = concat(flatten(eps_0), ..., flatten(eps_top))   shape [D]
  ```

  Data -> latent (`inverse`, what `log_prob` calls): each level squeezes
  (`[h, w, c] -> [h/2, w/2, 4c]`), runs K steps of flow, and (except the last
  level) splits the channels: the first `c - c_exit` are kept, the last
  `c_exit = floor(c * split_fraction)` exit as `z_i` with the learned
  conditional prior `z_i ~ N(mu(h), exp(logs(h))^2)`, `(mu, logs)` computed by
  a zero-initialised 3x3 convolution of the kept half `h`. The prior is written
  as an affine bijector on a standard normal:

    eps_i = (z_i - mu(h)) * exp(-logs(h)),   log-det  -sum(logs(h))

  so the base distribution is a fixed standard normal of dimension
  `D = H * W * C` and every learnable part lives here. The top latent gets the
  same affine map with `(mu, logs)` zero (standard normal prior), learned per
  channel (`learn_top=True`), and/or shifted by a zero-initialised embedding
  of the class label (`num_classes`, passed as the kwarg `labels`).

  `inverse_log_det_jacobian(x)` is the sum of all steps' log-dets and of the
  priors' `-sum(logs)`; `forward` (latent -> image, sampling) runs everything
  backwards with `forward_log_det_jacobian(eps) = -inverse_log_det_jacobian(x)`.
  Every exited latent is part of `eps`, so `forward(inverse(x))` rebuilds `x`.
  All priors start as the identity (scale exactly 1: no `+2` offset as in
  TFP's `tfb.Glow` exits).

  The output and the log-det come from one pass (each coupling network runs
  once per `log_prob` and once per `sample`).

  Args:
    image_shape: `[H, W, C]`; H and W divisible by `2**levels`.
    levels: L, number of levels (squeeze + steps [+ split]).
    steps_per_level: K, steps of flow per level.
    hidden_width: channels of the coupling networks' hidden layers.
    coupling: 'affine' or 'additive'.
    permutation: 'conv' (1x1 conv), 'conv_lu' (LU 1x1 conv), 'shuffle' or
      'reverse' (the paper's ablation baselines).
    learn_top: learn the mean and log-scale of the top prior (per channel).
    num_classes: if set, the top prior depends on the class label, passed as
      the kwarg `labels` (ints in `[0, num_classes)`, shape = the batch shape):
      `glow.inverse(x, labels=l)`,
      `dist.log_prob(x, bijector_kwargs={'labels': l})`. (Not `y`: TFP's
      `Bijector.inverse(y, ...)` already uses that name.) `class_logits` gives
      the classifier of the paper's class-conditional model.
    split_fraction: fraction of the channels that exit at each split
      (0.5 in the paper).
    seed: int seed for the random initial weights (orthogonal 1x1 convs,
      shuffles, hidden convolutions); `None` draws a fresh one.
    dtype: float32 or float64.
    compute_dtype: None, or `tf.bfloat16` for mixed precision: the coupling
      networks compute in bfloat16, everything else (log-dets, 1x1
      convolutions, priors, the variables) stays in `dtype`. See
      `tfp_glow.networks.GlowNetwork`.
    validate_args: check data (NaN/Inf, ActNorm initialised) at run time.

  #### Example

  ```python
  glow = Glow([8, 8, 1], levels=2, steps_per_level=4, hidden_width=64)
  x = tf.random.uniform([16, 8, 8, 1], -0.5, 0.5)
  tfp_glow.initialize(glow, x)
  eps = glow.inverse(x)                                # [16, 64]
  ildj = glow.inverse_log_det_jacobian(x, event_ndims=3)
  x_again = glow.forward(eps)
  ```
  """

  def __init__(self, image_shape, levels=3, steps_per_level=32,
               hidden_width=512, coupling='affine', permutation='conv',
               learn_top=False, num_classes=None, split_fraction=0.5,
               seed=None, dtype=tf.float32, compute_dtype=None,
               validate_args=False, name='glow'):
    parameters = dict(locals())
    image_shape = tuple(image_shape) if isinstance(
        image_shape, (list, tuple)) else image_shape
    if (not isinstance(image_shape, tuple) or len(image_shape) != 3 or
        not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                and d > 0 for d in image_shape)):
      raise ValueError('`image_shape` must be [H, W, C] with positive ints, '
                       f'got {image_shape!r}.')
    image_shape = tuple(int(d) for d in image_shape)
    base.check_positive_int('levels', levels)
    base.check_positive_int('steps_per_level', steps_per_level)
    base.check_positive_int('hidden_width', hidden_width)
    base.check_option('coupling', coupling, COUPLINGS)
    base.check_option('permutation', permutation, PERMUTATIONS)
    if num_classes is not None:
      base.check_positive_int('num_classes', num_classes)
      if num_classes < 2:
        raise ValueError(f'`num_classes` must be >= 2, got {num_classes}.')
    if not 0 < split_fraction < 1:
      raise ValueError(
          f'`split_fraction` must be in (0, 1), got {split_fraction!r}.')
    dtype = base.check_float_dtype(dtype)
    h, w, c = image_shape
    factor = 2 ** levels
    if h % factor or w % factor:
      raise ValueError(
          f'image_shape {list(image_shape)}: H and W must be divisible by '
          f'2**levels = {factor} (levels={levels}).')
    self._image_shape = image_shape
    self._levels = levels
    self._steps_per_level = steps_per_level
    self._hidden_width = hidden_width
    self._coupling = coupling
    self._permutation = permutation
    self._learn_top = bool(learn_top)
    self._num_classes = num_classes
    self._split_fraction = float(split_fraction)
    seeds = iter(np.random.SeedSequence(seed).generate_state(
        levels * steps_per_level * 2 + 1).tolist())

    self._squeeze = squeeze_lib.Squeeze(name=f'{name}_squeeze')
    self.steps = []     # per level: list of (actnorm, permutation, coupling)
    self.priors = []    # per split level: ZeroConv2D kept -> 2 * exit
    self._latent_shapes = []
    self._exit_channels = []
    for level in range(levels):
      h, w, c = h // 2, w // 2, c * 4
      level_steps = []
      for k in range(steps_per_level):
        prefix = f'{name}_level{level}_step{k}'
        an = actnorm_lib.ActNorm(c, dtype=dtype, validate_args=validate_args,
                                 name=f'{prefix}_actnorm')
        if permutation in ('conv', 'conv_lu'):
          perm = invertible_conv.InvertibleConv1x1(
              c, lu=permutation == 'conv_lu', seed=next(seeds), dtype=dtype,
              name=f'{prefix}_conv1x1')
        elif permutation == 'shuffle':
          perm = permute.ChannelShuffle(c, seed=next(seeds),
                                        name=f'{prefix}_shuffle')
        else:
          perm = permute.ChannelReverse(c, name=f'{prefix}_reverse')
        coupling_cls = (coupling_lib.AffineCoupling if coupling == 'affine'
                        else coupling_lib.AdditiveCoupling)
        cp = coupling_cls(c, hidden_width=hidden_width, seed=next(seeds),
                          dtype=dtype, compute_dtype=compute_dtype,
                          name=f'{prefix}_coupling')
        level_steps.append((an, perm, cp))
      self.steps.append(level_steps)
      if level < levels - 1:
        c_exit = int(c * split_fraction)
        if c_exit < 1 or c_exit >= c:
          raise ValueError(
              f'split_fraction={split_fraction} at level {level} with {c} '
              f'channels would let {c_exit} of {c} channels exit; both parts '
              'must keep at least one channel.')
        c_keep = c - c_exit
        self.priors.append(networks.ZeroConv2D(
            c_keep, 2 * c_exit, 3, dtype=dtype,
            name=f'{name}_level{level}_prior'))
        self._latent_shapes.append((h, w, c_exit))
        self._exit_channels.append(c_exit)
        c = c_keep
    self._latent_shapes.append((h, w, c))
    self._top_channels = c
    self.top_prior = (tf.Variable(tf.zeros([2 * c], dtype),
                                  name=f'{name}_top_prior/mean_logs')
                      if self._learn_top else None)
    if num_classes is not None:
      self.class_embedding = tf.Variable(
          tf.zeros([num_classes, 2 * c], dtype),
          name=f'{name}_top_prior/class_embedding')
      self.classifier = networks.ZeroLinear(c, num_classes, dtype=dtype,
                                            name=f'{name}_classifier')
    else:
      self.class_embedding = None
      self.classifier = None
    self._latent_size = int(sum(np.prod(s) for s in self._latent_shapes))
    super().__init__(channels=image_shape[-1], dtype=dtype,
                     validate_args=validate_args, parameters=parameters,
                     name=name, forward_min_event_ndims=1,
                     inverse_min_event_ndims=3)

  # --- static facts ----------------------------------------------------------

  @property
  def image_shape(self):
    return self._image_shape

  @property
  def levels(self):
    return self._levels

  @property
  def steps_per_level(self):
    return self._steps_per_level

  @property
  def num_classes(self):
    return self._num_classes

  @property
  def latent_size(self):
    """D = H * W * C, the size of the flat latent."""
    return self._latent_size

  @property
  def latent_shapes(self):
    """Per-level latent shapes `[(h, w, c), ...]`, exits first, top last."""
    return list(self._latent_shapes)

  def actnorms(self):
    """The ActNorms in data->latent order: each step's, then its network's."""
    out = []
    for level_steps in self.steps:
      for an, _, cp in level_steps:
        out.append(an)
        net = cp.network
        out.extend(a for a in (getattr(net, 'actnorm1', None),
                               getattr(net, 'actnorm2', None)) if a is not None)
    return out

  # --- latent packing ----------------------------------------------------------

  def split_latent(self, eps):
    """Flat latents `[..., D]` -> list of `[..., h, w, c]`, one per level."""
    eps = tf.convert_to_tensor(eps)
    sizes = [int(np.prod(s)) for s in self._latent_shapes]
    parts = tf.split(eps, sizes, axis=-1)
    batch_shape = tf.shape(eps)[:-1]
    return [tf.reshape(p, tf.concat([batch_shape, s], 0))
            for p, s in zip(parts, self._latent_shapes)]

  def merge_latent(self, parts):
    """Inverse of `split_latent`."""
    if len(parts) != len(self._latent_shapes):
      raise ValueError(f'Expected {len(self._latent_shapes)} latent parts, got '
                       f'{len(parts)}.')
    flat = []
    for p, s in zip(parts, self._latent_shapes):
      p = tf.convert_to_tensor(p)
      if p.shape.rank is not None and p.shape[-3:].as_list() != list(s):
        raise ValueError(f'Latent part shape {p.shape} does not end in {s}.')
      flat.append(tf.reshape(p, tf.concat([tf.shape(p)[:-3], [-1]], 0)))
    return tf.concat(flat, axis=-1)

  # --- priors -----------------------------------------------------------------

  def _check_labels(self, y, batch_shape):
    """Validates labels against the model; returns int32 labels of shape [N]."""
    if self._num_classes is None:
      if y is not None:
        raise ValueError(
            f'{self.name}: labels were given to an unconditional model '
            '(num_classes=None).')
      return None
    if y is None:
      raise ValueError(f'{self.name}: this model is class-conditional '
                       f'(num_classes={self._num_classes}); pass `labels`.')
    y = tf.convert_to_tensor(y)
    if not y.dtype.is_integer:
      raise TypeError(f'{self.name}: `labels` must be integers, got dtype '
                      f'{y.dtype.name}.')
    y = tf.cast(y, tf.int32)
    assertions = [tf.debugging.assert_equal(
        tf.shape(y), batch_shape,
        message=f'{self.name}: `labels` must have the batch shape of the '
        'images/latents')]
    assertions += [
        tf.debugging.assert_non_negative(
            y, message=f'{self.name}: `labels` must be >= 0'),
        tf.debugging.assert_less(
            y, self._num_classes,
            message=f'{self.name}: `labels` must be < num_classes='
            f'{self._num_classes}')]
    with tf.control_dependencies(assertions):
      return tf.reshape(y, [-1])

  def _top_params(self, labels, n, dtype):
    """(mean, logs) of the top prior, each [N or 1, 1, 1, c_top]."""
    del n
    c = self._top_channels
    params = tf.zeros([1, 2 * c], dtype)
    if self.top_prior is not None:
      params += self.top_prior[tf.newaxis]
    if labels is not None:
      # XLA drops the label asserts and clamps the gather; a NaN makes an
      # out-of-range label visible there instead of a silently wrong number.
      valid = (labels >= 0) & (labels < self._num_classes)
      poison = tf.where(valid, tf.zeros([], dtype), tf.constant(np.nan, dtype))
      params = (params + tf.gather(self.class_embedding, labels)
                + poison[:, tf.newaxis])
    params = params[:, tf.newaxis, tf.newaxis, :]
    return params[..., 0::2], params[..., 1::2]

  def class_logits(self, z_top):
    """Class logits from the top latent `[N, h, w, c]` (spatial mean, linear)."""
    if self.classifier is None:
      raise ValueError(f'{self.name}: class_logits needs num_classes.')
    return self.classifier(tf.reduce_mean(z_top, axis=[1, 2]))

  # --- the fused passes -----------------------------------------------------------

  def inverse_pass(self, x, labels=None):
    """Data -> latent in one pass: returns (eps [N, D], ildj [N], z_top).

    `x` must be `[N, H, W, C]`; `z_top` is the top latent before its prior
    (what the classifier of a class-conditional model reads).
    """
    n = tf.shape(x)[0]
    ldj = tf.zeros([n], x.dtype)
    eps_parts = []
    for level in range(self._levels):
      x, _ = self._squeeze._transform(x, inverse=True)
      for step in self.steps[level]:
        for bij in step:
          x, l = bij._transform(x, inverse=True)
          ldj += l
      if level < self._levels - 1:
        c_keep = x.shape[-1] - self._exit_channels[level]
        kept, z = x[..., :c_keep], x[..., c_keep:]
        params = self.priors[level](kept)
        mean, logs = params[..., 0::2], params[..., 1::2]
        eps_parts.append((z - mean) * tf.exp(-logs))
        ldj -= tf.reduce_sum(logs, axis=[1, 2, 3])
        x = kept
    mean, logs = self._top_params(labels, n, x.dtype)
    eps_parts.append((x - mean) * tf.exp(-logs))
    ldj -= tf.cast(tf.shape(x)[1] * tf.shape(x)[2], x.dtype) * tf.reduce_sum(
        logs, axis=[1, 2, 3])
    eps = tf.concat([tf.reshape(e, [n, -1]) for e in eps_parts], axis=-1)
    return eps, ldj, x

  def log_prob_parts(self, x, labels=None):
    """TEMPORARY (replaced by the lead's version at merge): log p(x) parts.

    Returns `LogProbParts(log_prob, eps, ildj, z_top, class_logits)`:
    `log_prob` in nats under the standard-normal base, shape = the batch
    shape of `x`; `class_logits` None for an unconditional model.
    """
    x = self._check_input(tf.convert_to_tensor(x), what='image')
    h, w, c = self._image_shape
    flat, batch_shape = base.flatten_batch(x, 3)
    flat = tf.ensure_shape(flat, [None, h, w, c])
    labels = self._check_labels(labels, batch_shape)
    flat, labels, n = _pad_empty_batch(flat, labels)
    eps, ildj, z_top = self.inverse_pass(flat, labels)
    eps, ildj, z_top = eps[:n], ildj[:n], z_top[:n]
    log_base = -0.5 * tf.reduce_sum(tf.square(eps), axis=-1) - (
        0.5 * self._latent_size * math.log(2.0 * math.pi))
    logits = self.class_logits(z_top) if labels is not None else None
    if logits is not None:
      logits = tf.reshape(logits, tf.concat(
          [batch_shape, [self._num_classes]], 0))
    return LogProbParts(
        log_prob=tf.reshape(log_base + ildj, batch_shape),
        eps=tf.reshape(eps, tf.concat([batch_shape, [self._latent_size]], 0)),
        ildj=tf.reshape(ildj, batch_shape),
        z_top=tf.reshape(z_top, tf.concat([batch_shape, tf.shape(z_top)[1:]],
                                          0)),
        class_logits=logits)

  def forward_pass(self, eps, labels=None):
    """Latent -> data in one pass: returns (x [N, H, W, C], fldj [N])."""
    n = tf.shape(eps)[0]
    parts = self.split_latent(eps)
    mean, logs = self._top_params(labels, n, eps.dtype)
    x = mean + tf.exp(logs) * parts[-1]
    ldj = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], eps.dtype) * tf.reduce_sum(
        logs, axis=[1, 2, 3]) + tf.zeros([n], eps.dtype)
    for level in reversed(range(self._levels)):
      if level < self._levels - 1:
        params = self.priors[level](x)
        mean, logs = params[..., 0::2], params[..., 1::2]
        z = mean + tf.exp(logs) * parts[level]
        ldj += tf.reduce_sum(logs, axis=[1, 2, 3])
        x = tf.concat([x, z], axis=-1)
      for step in reversed(self.steps[level]):
        for bij in reversed(step):
          x, l = bij._transform(x, inverse=False)
          ldj += l
      x, _ = self._squeeze._transform(x, inverse=False)
    return x, ldj

  def _transform(self, value, inverse, labels=None):
    if inverse:
      value = self._check_input(value, what='image')
      h, w, _ = self._image_shape
      if value.shape.rank is not None and value.shape[-3:-1].as_list() not in (
          [h, w], [None, None], [h, None], [None, w]):
        raise ValueError(f'{self.name}: images must have shape [..., {h}, {w}, '
                         f'{self._image_shape[2]}], got {value.shape}.')
      flat, batch_shape = base.flatten_batch(value, 3)
      flat = tf.ensure_shape(flat, [None, h, w, self._image_shape[2]])
      labels = self._check_labels(labels, batch_shape)
      flat, labels, n = _pad_empty_batch(flat, labels)
      eps, ldj, _ = self.inverse_pass(flat, labels)
      eps, ldj = eps[:n], ldj[:n]
      out = tf.reshape(eps, tf.concat([batch_shape, [self._latent_size]], 0))
    else:
      value = self._check_input(value, channels=self._latent_size,
                                event_ndims=1, what='latent')
      flat, batch_shape = base.flatten_batch(value, 1)
      labels = self._check_labels(labels, batch_shape)
      flat, labels, n = _pad_empty_batch(flat, labels)
      x, ldj = self.forward_pass(flat, labels)
      x, ldj = x[:n], ldj[:n]
      out = tf.reshape(x, tf.concat([batch_shape, self._image_shape], 0))
    return out, tf.reshape(ldj, batch_shape)

  # --- event shapes -------------------------------------------------------------

  def _forward_event_shape(self, input_shape):
    return tf.TensorShape(self._image_shape)

  def _forward_event_shape_tensor(self, input_shape):
    return tf.constant(self._image_shape, tf.int32)

  def _inverse_event_shape(self, output_shape):
    return tf.TensorShape([self._latent_size])

  def _inverse_event_shape_tensor(self, output_shape):
    return tf.constant([self._latent_size], tf.int32)


def _pad_empty_batch(flat, labels):
  """Adds one zero row when the batch is empty; returns it, labels and N.

  `tf.nn.conv2d` of an empty batch returns a wrong channel count on TF's CPU
  kernels, so an empty batch runs the flow on one dummy row, which the caller
  slices away (`[:N]`). A batch known to be non-empty is left as it is.
  """
  n = tf.shape(flat)[0]
  if flat.shape[0] is not None and flat.shape[0] > 0:
    return flat, labels, n
  extra = tf.cast(tf.equal(n, 0), tf.int32)
  pad_shape = tf.concat([[extra], tf.shape(flat)[1:]], axis=0)
  flat = tf.concat([flat, tf.zeros(pad_shape, flat.dtype)], axis=0)
  if labels is not None:
    labels = tf.concat([labels, tf.zeros([extra], labels.dtype)], axis=0)
  return flat, labels, n
