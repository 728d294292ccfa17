"""The level/channel plan of a Glow, computed once.

`Glow` builds its components from it, `parameter_count` counts from it, and the
benchmark's FLOP count walks it: one walk over the architecture, so a change
(e.g. `split_fraction`) reaches all three.

Per level `i` (data -> latent direction): squeeze `[h, w, c] -> [h/2, w/2, 4c]`,
K steps of flow at `4c` channels, then (except the last level) a split: the
first `kept = c' - exit` channels go on, the last `exit = floor(c' *
split_fraction)` leave as the latent `z_i` with a learned conditional prior.
The last level's channels go to the top prior.
"""

import dataclasses

import numpy as np

from tfp_glow.ops import check_option
from tfp_glow.ops import check_positive_int

__all__ = ['COUPLINGS', 'PERMUTATIONS', 'ACTNORM_INITS', 'BACKPROPS',
           'LevelPlan', 'Plan', 'plan', 'check_option', 'check_positive_int']

COUPLINGS = ('affine', 'additive')
PERMUTATIONS = ('conv', 'conv_lu', 'shuffle', 'reverse')
ACTNORM_INITS = ('data', 'identity')
BACKPROPS = ('store', 'invert')


@dataclasses.dataclass(frozen=True)
class LevelPlan:
  """One level: `shape` is `[h, w, c]` after the squeeze (the steps' shape)."""
  index: int
  shape: tuple
  exit_channels: int        # 0 on the last level (no split)
  kept_channels: int        # channels going on (the top's on the last level)

  @property
  def channels(self):
    return self.shape[2]

  @property
  def has_split(self):
    return self.exit_channels > 0

  @property
  def latent_shape(self):
    """Shape of the latent this level emits: the exit, or the top latent."""
    h, w, _ = self.shape
    return (h, w, self.exit_channels if self.has_split else self.kept_channels)


@dataclasses.dataclass(frozen=True)
class Plan:
  """The architecture of a Glow; see `plan`."""
  image_shape: tuple
  levels: tuple             # LevelPlan per level
  steps_per_level: int
  hidden_width: int
  coupling: str
  permutation: str
  learn_top: bool
  num_classes: object       # None or int >= 2
  split_fraction: float

  @property
  def latent_shapes(self):
    """Per-level latent shapes, exits first, top last."""
    return [lv.latent_shape for lv in self.levels]

  @property
  def latent_size(self):
    """D = H * W * C."""
    return int(np.prod(self.image_shape))

  @property
  def top_channels(self):
    return self.levels[-1].kept_channels

  # --- counts -------------------------------------------------------------------

  def step_parameters(self, c):
    """Parameters of one step of flow at `c` channels."""
    w = self.hidden_width
    half = c // 2
    out = 2 * (c - half) if self.coupling == 'affine' else c - half
    perm = {'conv': c * c, 'conv_lu': 2 * c * c + c,
            'shuffle': 0, 'reverse': 0}[self.permutation]
    # conv1 (no bias) + ActNorm, conv2 (no bias) + ActNorm, zero conv + bias + logs.
    net = 9 * half * w + 2 * w + w * w + 2 * w + 9 * w * out + 2 * out
    return 2 * c + perm + net

  def parameter_count(self):
    """Trainable parameters (see `tfp_glow.parameter_count` for the formula)."""
    total = 0
    for lv in self.levels:
      total += self.steps_per_level * self.step_parameters(lv.channels)
      if lv.has_split:
        e, k = lv.exit_channels, lv.kept_channels
        total += 9 * k * 2 * e + 2 * 2 * e
    c = self.top_channels
    if self.learn_top:
      total += 2 * c
    if self.num_classes:
      n = self.num_classes
      total += 2 * c * n + c * n + 2 * n
    return total

  def conv_shapes(self):
    """The convolutions of one data -> latent pass, per image.

    A list of dicts: level, what, h, w, k (kernel size), cin, cout, count (how
    many per pass), flops (2 x multiply-adds of one).
    """
    width = self.hidden_width
    shapes = []
    for lv in self.levels:
      h, w, c = lv.shape
      half = c // 2
      out = 2 * (c - half) if self.coupling == 'affine' else c - half
      convs = [('coupling conv1 3x3', 3, half, width),
               ('coupling conv2 1x1', 1, width, width),
               ('coupling zero conv 3x3', 3, width, out)]
      if self.permutation in ('conv', 'conv_lu'):
        convs.append(('invertible 1x1', 1, c, c))
      for what, k, cin, cout in convs:
        shapes.append(dict(level=lv.index, what=what, h=h, w=w, k=k, cin=cin,
                           cout=cout, count=self.steps_per_level))
      if lv.has_split:
        shapes.append(dict(level=lv.index, what='split prior 3x3', h=h, w=w,
                           k=3, cin=lv.kept_channels,
                           cout=2 * lv.exit_channels, count=1))
    for s in shapes:
      s['flops'] = 2 * s['h'] * s['w'] * s['k'] * s['k'] * s['cin'] * s['cout']
    return shapes

  def forward_flops_per_image(self):
    return sum(s['flops'] * s['count'] for s in self.conv_shapes())


def plan(image_shape, levels=3, steps_per_level=32, hidden_width=512,
         coupling='affine', permutation='conv', learn_top=False,
         num_classes=None, split_fraction=0.5):
  """Validates the architecture and computes its per-level plan.

  Raises ValueError naming the bad value: a non-[H, W, C] shape, H or W not
  divisible by 2**levels, an unknown coupling or permutation, a split that
  would leave a part without channels.
  """
  if isinstance(image_shape, (list, tuple)):
    image_shape = tuple(image_shape)
  if (not isinstance(image_shape, tuple) or len(image_shape) != 3 or
      not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
              and d > 0 for d in image_shape)):
    raise ValueError('`image_shape` must be [H, W, C] with positive ints, '
                     f'got {image_shape!r}.')
  image_shape = tuple(int(d) for d in image_shape)
  levels = check_positive_int('levels', levels)
  steps_per_level = check_positive_int('steps_per_level', steps_per_level)
  hidden_width = check_positive_int('hidden_width', hidden_width)
  check_option('coupling', coupling, COUPLINGS)
  check_option('permutation', permutation, PERMUTATIONS)
  if num_classes is not None:
    num_classes = check_positive_int('num_classes', num_classes)
    if num_classes < 2:
      raise ValueError(f'`num_classes` must be >= 2, got {num_classes}.')
  if isinstance(split_fraction, bool) or not 0 < split_fraction < 1:
    raise ValueError(
        f'`split_fraction` must be in (0, 1), got {split_fraction!r}.')
  h, w, c = image_shape
  factor = 2 ** levels
  if h % factor or w % factor:
    raise ValueError(
        f'image_shape {list(image_shape)}: H and W must be divisible by '
        f'2**levels = {factor} (levels={levels}).')
  plans = []
  for level in range(levels):
    h, w, c = h // 2, w // 2, c * 4
    if level < levels - 1:
      c_exit = int(c * split_fraction)
      if c_exit < 1 or c_exit >= c:
        raise ValueError(
            f'split_fraction={split_fraction} at level {level} with {c} '
            f'channels would let {c_exit} of {c} channels exit; both parts '
            'must keep at least one channel.')
      plans.append(LevelPlan(level, (h, w, c), c_exit, c - c_exit))
      c = c - c_exit
    else:
      plans.append(LevelPlan(level, (h, w, c), 0, c))
  return Plan(image_shape=image_shape, levels=tuple(plans),
              steps_per_level=steps_per_level, hidden_width=hidden_width,
              coupling=coupling, permutation=permutation,
              learn_top=bool(learn_top), num_classes=num_classes,
              split_fraction=float(split_fraction))
