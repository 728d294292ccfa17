"""Glow: the multi-scale flow composed from the components, as one bijector."""

import collections

import numpy as np
import tensorflow as tf

from tfp_glow import architecture
from tfp_glow import ops
from tfp_glow.bijectors import actnorm as actnorm_lib
from tfp_glow.bijectors import base
from tfp_glow.bijectors import coupling as coupling_lib
from tfp_glow.bijectors import invert
from tfp_glow.bijectors import invertible_conv
from tfp_glow.bijectors import permute
from tfp_glow.bijectors import split as split_lib
from tfp_glow.bijectors import squeeze as squeeze_lib
from tfp_glow.bijectors import stacked

__all__ = ['Glow', 'LogProbParts', 'COUPLINGS', 'PERMUTATIONS']

COUPLINGS = architecture.COUPLINGS
PERMUTATIONS = architecture.PERMUTATIONS

LogProbParts = collections.namedtuple(
    'LogProbParts', ['log_prob', 'eps', 'ildj', 'z_top', 'class_logits'])
LogProbParts.__doc__ = """The pieces of log p(x), from `Glow.log_prob_parts`.

log_prob: `[batch]` log-density (nats) of the images under the Glow with its
  standard-normal base: `log N(eps; 0, I) + ildj`.
eps: `[batch, D]` the standardised latent (what `inverse` returns).
ildj: `[batch]` inverse log-det-Jacobian of the whole flow (priors included).
z_top: `[batch, h, w, c]` the top latent before its prior (what the
  classifier of a class-conditional model reads).
class_logits: `[batch, num_classes]`, or None for an unconditional model.
"""


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
  once per `log_prob` and once per `sample`). `log_prob_parts(x, labels)` is
  THE one place where the pieces of `log p(x)` are put together:
  `TransformedDistribution.log_prob` (through `inverse`), `GlowModel`'s loss
  and metrics, and every export signature call it. The components (ActNorm,
  permutation, coupling, `SplitPrior`, `TopPrior`, `Squeeze`) are public
  bijectors and are driven through their public fused path
  (`inverse_and_log_det` / `forward_and_log_det`).

  Sampling (`forward`) refuses to return non-finite images: at a high
  temperature the affine couplings' inverse (a division by their sigmoid
  scale) and the priors' `exp(logs)` can overflow float32; the error names the
  number of affected samples (and the temperature, through `tfp_glow.sample`).

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
    actnorm_init: 'data' (the paper's data-dependent initialisation, through
      `tfp_glow.initialize`) or 'identity' (every ActNorm starts at scale 1,
      bias 0 and counts as initialised: the ablation's baseline).
    backprop: how the gradient through the steps of flow is computed.
      'store' (default): ordinary autodiff, every step's activations are kept
      for the backward pass (memory grows linearly with K). 'invert': each
      level's K steps are one block whose backward pass rebuilds every
      step's input from its output by the inverse and recomputes one
      component at a time (`tfp_glow.bijectors.invert`): only each level's
      output is kept, so activation memory stays flat in K, for about one
      extra forward pass of compute. Each level's steps run as one step's
      ops in a `tf.while_loop` over the level's variables, so the traced
      graph does not grow with K either. The block carries its activations
      in float64 (the networks still run in `dtype`), so a rebuilt input is
      exact to ~1e-10 even where a level's inverse is ill-conditioned (affine
      scales ~1e-4), and float32 gradients are as accurate as 'store''s
      against the float64 truth (within 3x, tested for every permutation
      and coupling; docs/BENCHMARKS.md); values agree with 'store''s to
      float32 rounding. Second derivatives are not supported. Squeezes,
      split priors and the top prior use ordinary autodiff (their
      activations are per level, not per step). ActNorm's data-dependent
      init runs the ordinary path.
    validate_args: check data (NaN/Inf, ActNorm initialised) at run time.

  Variables: the K steps of a level keep their parameters in one `[K, ...]`
  variable per parameter (`level_variables[level]`, named like
  `glow_level0_steps_actnorm/bias`); each step's components hold slices of
  them (`tfp_glow.bijectors.stacked.VariableSlice`), so an optimizer updates
  a few dozen variables whatever K is, and neither the training step's graph
  nor its memory grows with K (docs/BENCHMARKS.md). A component's
  `variables` are the level variables it reads.

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
               actnorm_init='data', backprop='store', validate_args=False,
               name='glow'):
    parameters = dict(locals())
    plan = architecture.plan(
        image_shape, levels=levels, steps_per_level=steps_per_level,
        hidden_width=hidden_width, coupling=coupling, permutation=permutation,
        learn_top=learn_top, num_classes=num_classes,
        split_fraction=split_fraction)
    base.check_option('actnorm_init', actnorm_init, architecture.ACTNORM_INITS)
    base.check_option('backprop', backprop, architecture.BACKPROPS)
    self._backprop = backprop
    dtype = base.check_float_dtype(dtype)
    self._plan = plan
    self._actnorm_init = actnorm_init
    seeds = iter(np.random.SeedSequence(seed).generate_state(
        len(plan.levels) * steps_per_level * 2 + 1).tolist())

    self._squeeze = squeeze_lib.Squeeze(name=f'{name}_squeeze')
    self.steps = []     # per level: list of (actnorm, permutation, coupling)
    self.splits = []    # per split level: SplitPrior
    for lv in plan.levels:
      c = lv.channels
      level_steps = []
      for k in range(steps_per_level):
        prefix = f'{name}_level{lv.index}_step{k}'
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
      if lv.has_split:
        self.splits.append(split_lib.SplitPrior(
            c, lv.exit_channels, dtype=dtype, validate_args=validate_args,
            name=f'{name}_level{lv.index}_prior'))
    self.top = split_lib.TopPrior(
        plan.top_channels, learn_top=learn_top, num_classes=num_classes,
        dtype=dtype, validate_args=validate_args, name=f'{name}_top_prior')
    super().__init__(channels=plan.image_shape[-1], dtype=dtype,
                     validate_args=validate_args, parameters=parameters,
                     name=name, forward_min_event_ndims=1,
                     inverse_min_event_ndims=3)
    if actnorm_init == 'identity':
      for state in self.actnorms():
        state.set_identity()
    # One [K, ...] variable per parameter slot per level (see
    # tfp_glow.bijectors.stacked): the optimizer's update and the traced
    # graph then do not grow with K. The steps keep slices of them.
    self.level_variables = []
    for lv, level_steps in zip(plan.levels, self.steps):
      step0 = f'{name}_level{lv.index}_step0'
      self.level_variables.append(stacked.stack_level(
          level_steps, rename=lambda n, s=step0: n.replace(
              s, s[:-len('_step0')] + '_steps', 1)))

  # --- static facts ----------------------------------------------------------

  @property
  def plan(self):
    """The `tfp_glow.architecture.Plan` this flow was built from."""
    return self._plan

  @property
  def image_shape(self):
    return self._plan.image_shape

  @property
  def levels(self):
    return len(self._plan.levels)

  @property
  def steps_per_level(self):
    return self._plan.steps_per_level

  @property
  def num_classes(self):
    return self._plan.num_classes

  @property
  def actnorm_init(self):
    return self._actnorm_init

  @property
  def backprop(self):
    """'store' or 'invert': how gradients pass through the steps of flow."""
    return self._backprop

  @property
  def latent_size(self):
    """D = H * W * C, the size of the flat latent."""
    return self._plan.latent_size

  @property
  def latent_shapes(self):
    """Per-level latent shapes `[(h, w, c), ...]`, exits first, top last."""
    return self._plan.latent_shapes

  def actnorms(self):
    """Every ActNorm's state (`tfp_glow.ops.ActNormState`) in data->latent
    order: each step's, then its coupling network's."""
    out = []
    for level_steps in self.steps:
      for an, _, cp in level_steps:
        out.append(an.state)
        net = cp.network
        out.extend(a for a in (getattr(net, 'actnorm1', None),
                               getattr(net, 'actnorm2', None)) if a is not None)
    return out

  # --- latent packing ----------------------------------------------------------

  def split_latent(self, eps):
    """Flat latents `[..., D]` -> list of `[..., h, w, c]`, one per level."""
    eps = tf.convert_to_tensor(eps)
    shapes = self.latent_shapes
    sizes = [int(np.prod(s)) for s in shapes]
    parts = tf.split(eps, sizes, axis=-1)
    batch_shape = tf.shape(eps)[:-1]
    return [tf.reshape(p, tf.concat([batch_shape, s], 0))
            for p, s in zip(parts, shapes)]

  def merge_latent(self, parts):
    """Inverse of `split_latent`."""
    shapes = self.latent_shapes
    if len(parts) != len(shapes):
      raise ValueError(f'Expected {len(shapes)} latent parts, got '
                       f'{len(parts)}.')
    flat = []
    for p, s in zip(parts, shapes):
      p = tf.convert_to_tensor(p)
      if p.shape.rank is not None and p.shape[-3:].as_list() != list(s):
        raise ValueError(f'Latent part shape {p.shape} does not end in {s}.')
      flat.append(tf.reshape(p, tf.concat([tf.shape(p)[:-3], [-1]], 0)))
    return tf.concat(flat, axis=-1)

  def class_logits(self, z_top):
    """Class logits from the top latent `[N, h, w, c]` (spatial mean, linear)."""
    return self.top.class_logits(z_top)

  # --- the level loop ---------------------------------------------------------

  def level_components(self, level):
    """The components of one level's K steps, in data -> latent order:
    `[actnorm_0, permutation_0, coupling_0, actnorm_1, ...]`."""
    return [bij for step in self.steps[level] for bij in step]

  def _run_steps(self, level, x):
    """One level's K steps on `x`: `(y, ldj)`, by `self.backprop`."""
    components = self.level_components(level)
    # The data-dependent init runs eagerly without gradients and sets
    # variables as it goes (through the steps' slices): the ordinary path.
    if ops.init_active():
      return invert.chain_inverse(components, x)
    if self._backprop == 'invert':
      # The K steps are copies of one another: one step's ops looped K times
      # over the level's variables (the graph does not grow with K).
      return invert.steps_inverse_by_inversion(self.steps[level], x)
    # Each level variable read once, step k on its k-th slice.
    with stacked.unstacked(self.steps[level]):
      return invert.chain_inverse(components, x)

  def _encode(self, x, labels):
    """Data -> latent on a flat batch `[N, H, W, C]`: (eps [N, D], ildj, z_top)."""
    n = tf.shape(x)[0]
    ldj = tf.zeros([n], x.dtype)
    eps_parts = []
    for level in range(len(self.steps)):
      x, _ = self._squeeze.inverse_and_log_det(x)
      x, l = self._run_steps(level, x)
      ldj += l
      if level < len(self.splits):
        split = self.splits[level]
        x, l = split.inverse_and_log_det(x)
        ldj += l
        eps_parts.append(x[..., split.kept_channels:])
        x = x[..., :split.kept_channels]
    z_top = x
    eps_top, l = self.top.inverse_and_log_det(x, labels=labels,
                                              flat_labels=True)
    eps_parts.append(eps_top)
    eps = tf.concat([tf.reshape(e, [n, -1]) for e in eps_parts], axis=-1)
    return eps, ldj + l, z_top

  def _decode(self, eps, labels):
    """Latent -> data on a flat batch `[N, D]`: (x [N, H, W, C], fldj [N])."""
    n = tf.shape(eps)[0]
    parts = self.split_latent(eps)
    x, ldj = self.top.forward_and_log_det(parts[-1], labels=labels,
                                          flat_labels=True)
    for level in reversed(range(len(self.steps))):
      if level < len(self.splits):
        x, l = self.splits[level].forward_and_log_det(
            tf.concat([x, parts[level]], axis=-1))
        ldj += l
      with stacked.unstacked(self.steps[level]):
        for step in reversed(self.steps[level]):
          for bij in reversed(step):
            x, l = bij.forward_and_log_det(x)
            ldj += l
      x, _ = self._squeeze.forward_and_log_det(x)
    return x, ldj + tf.zeros([n], eps.dtype)

  # --- the one likelihood -------------------------------------------------------

  def _check_images(self, x):
    x = self._check_input(tf.convert_to_tensor(x, dtype_hint=self.dtype),
                          what='image')
    h, w, c = self.image_shape
    if x.shape.rank is not None and x.shape[-3:-1].as_list() not in (
        [h, w], [None, None], [h, None], [None, w]):
      raise ValueError(f'{self.name}: images must have shape [..., {h}, {w}, '
                       f'{c}], got {x.shape}.')
    flat, batch_shape = ops.flatten_batch(x, 3)
    return tf.ensure_shape(flat, [None, h, w, c]), batch_shape

  def log_prob_parts(self, x, labels=None):
    """Everything `log p(x)` is made of, from one pass: a `LogProbParts`.

    The one place the likelihood is assembled. `x`: images `[..., H, W, C]`
    (any batch shape, empty included); `labels`: ints of the batch shape for a
    class-conditional model (checked here: shape, range, presence).
    """
    flat, batch_shape = self._check_images(x)
    labels = self.top.check_labels(labels, batch_shape)
    flat, labels, n = ops.pad_empty_batch(flat, labels)
    eps, ildj, z_top = self._encode(flat, labels)
    eps, ildj, z_top = eps[:n], ildj[:n], z_top[:n]
    log_prob = ops.standard_normal_log_prob(eps) + ildj
    logits = (self.top.class_logits(z_top)
              if self.num_classes is not None else None)

    def unflat(t, event_shape):
      return tf.reshape(t, tf.concat([batch_shape, event_shape], 0))

    return LogProbParts(
        log_prob=unflat(log_prob, []), eps=unflat(eps, [self.latent_size]),
        ildj=unflat(ildj, []),
        z_top=unflat(z_top, tf.shape(z_top)[1:]),
        class_logits=None if logits is None else unflat(
            logits, [self.num_classes]))

  def reconstruction_errors(self, x):
    """Per level, the relative error of every step's rebuilt input.

    What `backprop='invert'` relies on, measured: `x` (images `[N, H, W,
    C]`) goes data -> latent; at each level, the input of every step is
    rebuilt from the level's output exactly as the inverted backward pass
    rebuilds it. Returns a list (one per level) of float64 arrays of length
    K, entry k = `max|rebuilt - true| / max|true|` for the input of step k
    (step K-1, rebuilt first, is the shallowest rebuild; step 0 the
    deepest). Eager only; labels are not needed (the steps ignore them).
    """
    flat, _ = self._check_images(x)
    errors = []
    for level in range(len(self.steps)):
      flat, _ = self._squeeze.inverse_and_log_det(flat)
      components = self.level_components(level)
      per_component = invert.reconstruction_errors(components, flat)
      errors.append(per_component[::len(self.steps[level][0])])
      flat = invert.chain_inverse(components, flat)[0]
      if level < len(self.splits):
        split = self.splits[level]
        flat = split.inverse_and_log_det(flat)[0][..., :split.kept_channels]
    return errors

  def _check_finite_images(self, x, temperature):
    """Refuses non-finite images: never a NaN passed off as a sample."""
    bad = tf.logical_not(tf.reduce_all(tf.math.is_finite(x), axis=[1, 2, 3]))
    count = tf.reduce_sum(tf.cast(bad, tf.int32))
    total = tf.shape(x)[0]
    advice = ('the flow overflowed (the affine couplings divide by their '
              'scale, the priors multiply by exp(logs)); use a lower '
              'temperature or latents closer to the prior.')
    if tf.executing_eagerly():
      if int(count):
        at = ('' if temperature is None else
              f' at temperature {float(temperature):g}')
        raise FloatingPointError(
            f'{self.name}: {int(count)} of {int(total)} generated images are '
            f'not finite{at}: {advice}')
      return x
    if temperature is None:
      data = [f'{self.name}: generated images not finite (count, of):',
              count, total, advice]
    else:
      data = [f'{self.name}: generated images not finite (count, of, at '
              'temperature):', count, total, temperature, advice]
    with tf.control_dependencies([tf.debugging.Assert(
        tf.equal(count, 0), data, summarize=4)]):
      return tf.identity(x)

  def generate(self, eps, labels=None, temperature=None):
    """Latents `[..., D]` -> `(images [..., H, W, C], fldj [...])`, checked.

    The fused sampling path (`forward` calls it too). Non-finite images raise
    (`FloatingPointError` eagerly, `InvalidArgumentError` in a graph) naming
    how many, and `temperature` when given (it is only used in the message).
    """
    eps = self._check_input(tf.convert_to_tensor(eps, dtype_hint=self.dtype),
                            channels=self.latent_size, event_ndims=1,
                            what='latent')
    flat, batch_shape = ops.flatten_batch(eps, 1)
    labels = self.top.check_labels(labels, batch_shape)
    flat, labels, n = ops.pad_empty_batch(flat, labels)
    x, ldj = self._decode(flat, labels)
    x, ldj = x[:n], ldj[:n]
    x = self._check_finite_images(x, temperature)
    out = tf.reshape(x, tf.concat([batch_shape, self.image_shape], 0))
    return out, tf.reshape(ldj, batch_shape)

  def _transform(self, value, inverse, labels=None):
    if inverse:
      parts = self.log_prob_parts(value, labels)
      return parts.eps, parts.ildj
    return self.generate(value, labels)

  # --- event shapes -------------------------------------------------------------

  def _forward_event_shape(self, input_shape):
    return tf.TensorShape(self.image_shape)

  def _forward_event_shape_tensor(self, input_shape):
    return tf.constant(self.image_shape, tf.int32)

  def _inverse_event_shape(self, output_shape):
    return tf.TensorShape([self.latent_size])

  def _inverse_event_shape_tensor(self, output_shape):
    return tf.constant([self.latent_size], tf.int32)
