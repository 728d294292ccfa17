"""Hypothesis strategies for the property tests, and their two profiles.

TFP tests its bijectors by drawing parameters, shapes and inputs with
`hypothesis` and checking properties on every draw
(`bijector_properties_test.py`); `tests/properties_*_test.py` do the same for
tfp_glow. The strategies here draw *specifications* (frozen dataclasses of
plain Python values: cheap to draw, shrinkable, printable), and the specs
build the bijectors, so hypothesis's reports read like a configuration:
`ComponentSpec(kind='affine', channels=4, height=1, width=3, ...)`.

Profiles. Every property is one function, collected twice by `properties`:
`test_<name>` runs a few derandomised examples in the default run (the
README's `python -m pytest -q tests`, which must stay under 4 minutes), and
`test_<name>_slow` (marked `slow`, run by `python -m pytest -q -m slow tests`
and so by .ci/run) many more. Both are derandomised (the same examples on
every run: CI never flakes on a new draw) with no deadline (TensorFlow's
first call of a function traces it). To hunt for new failures with fresh
draws, set `TFP_GLOW_HYPOTHESIS_EXPLORE=1`; pin whatever it finds with
`@example` (passed to `properties`).
"""

import dataclasses
import os
import sys
from typing import Optional

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest
import tensorflow as tf

import harness
from tfp_glow import architecture
from tfp_glow import bijectors as gb

__all__ = ['properties', 'ComponentSpec', 'components', 'GlowSpec', 'glows',
           'batch_shapes', 'UserNetwork']

_EXPLORE = os.environ.get('TFP_GLOW_HYPOTHESIS_EXPLORE', '') not in ('', '0')
_BASE = hypothesis.settings(
    derandomize=not _EXPLORE,
    deadline=None,
    database=None,          # nothing written into the checkout
    print_blob=True,
    # Building TF objects is slow next to drawing numbers; the draws
    # themselves are plain values.
    suppress_health_check=[hypothesis.HealthCheck.too_slow,
                           hypothesis.HealthCheck.data_too_large],
)


def properties(default, slow, examples=(), **given):
  """Collects the property `fn(**drawn)` twice: bounded and slow.

  Returns `test_<name>` (`default` examples, in the default run) and puts
  `test_<name>_slow` (`slow` examples, `@pytest.mark.slow`) beside it in the
  caller's module. `examples`: `hypothesis.example(...)` objects (regressions
  found by the properties) that both run first, every time.
  """

  def decorate(fn):
    module = sys.modules[fn.__module__]

    def make(max_examples):
      test = hypothesis.given(**given)(fn)
      for ex in examples:
        test = ex(test)
      return hypothesis.settings(_BASE, max_examples=max_examples)(test)

    slow_test = pytest.mark.slow(make(slow))
    slow_test.__name__ = slow_test.__qualname__ = fn.__name__ + '_slow'
    setattr(module, fn.__name__ + '_slow', slow_test)
    return make(default)

  return decorate


DTYPES = {'float32': tf.float32, 'float64': tf.float64}


def batch_shapes(min_ndims=0, max_ndims=3, max_side=3):
  """Batch shapes: [], [0], [1], odd, several dimensions (empty ones too)."""
  return st.lists(st.integers(0, max_side), min_size=min_ndims,
                  max_size=max_ndims).map(tuple)


def non_empty_batch_shapes(min_ndims=1, max_ndims=2, max_side=3):
  return st.lists(st.integers(1, max_side), min_size=min_ndims,
                  max_size=max_ndims).map(tuple)


# --- a user-supplied coupling network ------------------------------------------------


class UserNetwork(tf.Module):
  """A user network for the couplings: one 3x3 convolution and a bias (both
  trainable, drawn away from zero)."""

  def __init__(self, in_channels, out_channels, dtype, seed):
    super().__init__(name='user_net')
    rng = np.random.default_rng(seed)
    self.kernel = tf.Variable(
        rng.normal(0, 0.3, [3, 3, in_channels, out_channels]), dtype=dtype,
        name='user_net/kernel')
    self.bias = tf.Variable(rng.normal(0, 0.3, [out_channels]), dtype=dtype,
                            name='user_net/bias')

  def __call__(self, x):
    n = tf.shape(x)[0]
    # tf.nn.conv2d of an empty batch gives the wrong channel count on CPU
    # (tfp_glow.ops.conv2d has the same fix); a user network must cope too.
    y = tf.nn.conv2d(x, self.kernel, 1, 'SAME') + self.bias
    return tf.reshape(y, tf.concat([[n], tf.shape(x)[1:3],
                                    [self.kernel.shape[-1]]], 0))


# --- components ------------------------------------------------------------------------

# kind -> (constraint on channels)
COMPONENT_KINDS = ('actnorm', 'actnorm_data_init', 'conv1x1', 'conv1x1_lu',
                   'reverse', 'shuffle', 'permute', 'affine', 'additive',
                   'affine_user_net', 'additive_user_net', 'squeeze',
                   'split_prior', 'top_prior')
COUPLING_KINDS = ('affine', 'additive', 'affine_user_net', 'additive_user_net')
TRAINABLE_KINDS = tuple(k for k in COMPONENT_KINDS
                        if k not in ('reverse', 'shuffle', 'permute', 'squeeze'))


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
  """One Glow component, drawn: its options, its event shape, its weights."""
  kind: str
  channels: int
  height: int
  width: int
  dtype: str = 'float64'
  hidden_width: int = 4
  seed: int = 0                      # construction seed
  perturb_seed: int = 0              # moves the weights away from init
  perturb_scale: float = 0.1
  permutation: tuple = ()            # 'permute'
  exit_channels: int = 1             # 'split_prior'
  learn_top: bool = False            # 'top_prior'
  num_classes: Optional[int] = None  # 'top_prior'

  @property
  def tf_dtype(self):
    return DTYPES[self.dtype]

  @property
  def data_shape(self):
    return (self.height, self.width, self.channels)

  @property
  def latent_shape(self):
    if self.kind == 'squeeze':
      return (self.height // 2, self.width // 2, 4 * self.channels)
    return self.data_shape

  @property
  def trainable(self):
    return self.kind in TRAINABLE_KINDS

  def factory(self, dtype):
    """A fresh, unperturbed component in `dtype` (the harness's factory)."""
    c, k, seed = self.channels, self.kind, self.seed
    if k in ('actnorm', 'actnorm_data_init'):
      an = gb.ActNorm(c, dtype=dtype)
      if k == 'actnorm_data_init':
        # Data-dependent init from a batch far from standardised.
        rng = np.random.default_rng(seed)
        x = rng.normal(rng.normal(0, 3, c), rng.uniform(0.1, 5, c),
                       (4, self.height, self.width, c))
        an.initialize(tf.constant(x, dtype))
      return an
    if k in ('conv1x1', 'conv1x1_lu'):
      return gb.InvertibleConv1x1(c, lu=k == 'conv1x1_lu', seed=seed,
                                  dtype=dtype)
    if k == 'reverse':
      return gb.ChannelReverse(c)
    if k == 'shuffle':
      return gb.ChannelShuffle(c, seed=seed)
    if k == 'permute':
      return gb.ChannelPermute(list(self.permutation))
    if k in COUPLING_KINDS:
      cls = gb.AffineCoupling if k.startswith('affine') else gb.AdditiveCoupling
      if k.endswith('user_net'):
        out = (2 if k.startswith('affine') else 1) * (c - c // 2)
        return cls(c, network=UserNetwork(c // 2, out, dtype, seed),
                   dtype=dtype)
      return cls(c, hidden_width=self.hidden_width, seed=seed, dtype=dtype)
    if k == 'squeeze':
      return gb.Squeeze()
    if k == 'split_prior':
      return gb.SplitPrior(c, exit_channels=self.exit_channels, dtype=dtype)
    if k == 'top_prior':
      return gb.TopPrior(c, learn_top=self.learn_top,
                         num_classes=self.num_classes, dtype=dtype)
    raise ValueError(k)

  def config(self, batch=3, dtype=None):
    """The harness's `Config` for this component (`dtype` overrides)."""
    return harness.Config(
        data_shape=self.data_shape, latent_shape=self.latent_shape,
        dtype=dtype or self.tf_dtype, batch=batch,
        num_classes=self.num_classes if self.kind == 'top_prior' else None,
        seed=self.perturb_seed, perturb_scale=self.perturb_scale,
        trainable=self.trainable and not self._all_fixed(),
        # The classifier reads z_top but is not part of the bijection.
        grad_exclude=('classifier',))

  def _all_fixed(self):
    # A top prior with neither learn_top nor classes has no variables.
    return (self.kind == 'top_prior' and not self.learn_top
            and self.num_classes is None)

  def build(self, dtype=None):
    """The component, perturbed as the harness does (`harness.build`)."""
    return harness.build(self.factory, self.config(dtype=dtype))


@st.composite
def components(draw, kinds=COMPONENT_KINDS, dtypes=tuple(DTYPES),
               max_side=3, max_channels=6):
  """A `ComponentSpec` of one of `kinds`, with a legal drawn event shape."""
  kind = draw(st.sampled_from(kinds))
  if kind in COUPLING_KINDS:
    channels = 2 * draw(st.integers(1, max_channels // 2))
  elif kind == 'split_prior':
    channels = draw(st.integers(2, max_channels))
  elif kind == 'squeeze':
    channels = draw(st.integers(1, 3))
  else:
    channels = draw(st.integers(1, max_channels))
  if kind == 'squeeze':
    height = 2 * draw(st.integers(1, 2))
    width = 2 * draw(st.integers(1, 2))
  else:
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
  extra = {}
  if kind == 'permute':
    extra['permutation'] = tuple(draw(st.permutations(range(channels))))
  if kind == 'split_prior':
    extra['exit_channels'] = draw(st.integers(1, channels - 1))
  if kind == 'top_prior':
    extra['learn_top'] = draw(st.booleans())
    extra['num_classes'] = draw(st.one_of(st.none(), st.integers(2, 4)))
  return ComponentSpec(
      kind=kind, channels=channels, height=height, width=width,
      dtype=draw(st.sampled_from(dtypes)),
      hidden_width=draw(st.integers(1, 6)),
      seed=draw(st.integers(0, 2**16)),
      perturb_seed=draw(st.integers(0, 2**16)),
      perturb_scale=draw(st.sampled_from([0.02, 0.1, 0.3])),
      **extra)


# --- whole Glows ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GlowSpec:
  """A whole Glow, drawn: architecture, options, dtype, weights."""
  image_shape: tuple
  levels: int
  steps_per_level: int
  hidden_width: int = 4
  coupling: str = 'affine'
  permutation: str = 'conv'
  learn_top: bool = False
  num_classes: Optional[int] = None
  split_fraction: float = 0.5
  dtype: str = 'float64'
  backprop: str = 'store'
  seed: int = 0
  perturb_seed: int = 0
  perturb_scale: float = 0.1

  @property
  def tf_dtype(self):
    return DTYPES[self.dtype]

  @property
  def latent_size(self):
    return int(np.prod(self.image_shape))

  def kwargs(self, **overrides):
    kw = dict(image_shape=self.image_shape, levels=self.levels,
              steps_per_level=self.steps_per_level,
              hidden_width=self.hidden_width, coupling=self.coupling,
              permutation=self.permutation, learn_top=self.learn_top,
              num_classes=self.num_classes,
              split_fraction=self.split_fraction, backprop=self.backprop)
    kw.update(overrides)
    return kw

  def factory(self, **overrides):
    """`factory(dtype)` of a fresh Glow (the harness's factory)."""
    kw = self.kwargs(**overrides)
    return lambda dtype: gb.Glow(seed=self.seed, dtype=dtype, **kw)

  def config(self, batch=3, dtype=None):
    return harness.Config(
        data_shape=tuple(self.image_shape),
        latent_shape=(self.latent_size,), dtype=dtype or self.tf_dtype,
        batch=batch, num_classes=self.num_classes, seed=self.perturb_seed,
        perturb_scale=self.perturb_scale,
        grad_exclude=('classifier',) if self.num_classes else ())

  def build(self, dtype=None, **overrides):
    return harness.build(self.factory(**overrides), self.config(dtype=dtype))


def _valid_plan(spec):
  try:
    architecture.plan(spec.image_shape, levels=spec.levels,
                      steps_per_level=spec.steps_per_level,
                      split_fraction=spec.split_fraction)
  except ValueError:
    return False
  return True


@st.composite
def glows(draw, max_levels=3, max_steps=2, max_latent=192,
          dtypes=tuple(DTYPES), backprops=tuple(architecture.BACKPROPS),
          permutations=tuple(architecture.PERMUTATIONS)):
  """A `GlowSpec`: 1..max_levels levels, square and non-square images (H and
  W multiples of 2**levels), both couplings, every permutation, conditional
  or not, learned top or not, a legal split fraction, D <= max_latent."""
  levels = draw(st.integers(1, max_levels))
  factor = 2 ** levels
  channels = draw(st.integers(1, 3))
  sides = [(a, b) for a in (1, 2, 3) for b in (1, 2, 3)
           if a * b * factor * factor * channels <= max_latent]
  hypothesis.assume(sides)
  a, b = draw(st.sampled_from(sides))
  spec = GlowSpec(
      image_shape=(a * factor, b * factor, channels), levels=levels,
      steps_per_level=draw(st.integers(1, max_steps)),
      hidden_width=draw(st.integers(1, 6)),
      coupling=draw(st.sampled_from(architecture.COUPLINGS)),
      permutation=draw(st.sampled_from(permutations)),
      learn_top=draw(st.booleans()),
      num_classes=draw(st.one_of(st.none(), st.integers(2, 4))),
      split_fraction=draw(st.sampled_from([0.5, 0.25, 0.75])),
      dtype=draw(st.sampled_from(dtypes)),
      backprop=draw(st.sampled_from(backprops)),
      seed=draw(st.integers(0, 2**16)),
      perturb_seed=draw(st.integers(0, 2**16)),
      perturb_scale=draw(st.sampled_from([0.02, 0.1, 0.3])))
  hypothesis.assume(_valid_plan(spec))
  return spec


def labels_for(num_classes, batch_shape, seed):
  """`{'labels': ...}` of `batch_shape` for a conditional model, else {}."""
  if num_classes is None:
    return {}
  rng = np.random.default_rng(seed)
  return {'labels': tf.constant(rng.integers(0, num_classes, batch_shape),
                                tf.int32)}


def normal(shape, dtype, seed, scale=1.0):
  return tf.constant(np.random.default_rng(seed).normal(0, scale, shape),
                     dtype)
