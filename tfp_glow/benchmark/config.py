"""What one benchmark run measures: the architecture, its presets, the names.

A frozen `Config` rather than loose flags so that the models, the FLOP count
and the convolution roofline all read the same values: `glow_kwargs()` is
what both `glow_distribution` and `architecture.plan` receive, so the model
that is timed and the model whose FLOPs are counted cannot drift apart.
"""

import dataclasses

__all__ = ['PRESETS', 'OPS', 'MODES', 'LIBRARIES', 'Config']

PRESETS = {
    # The default: CIFAR-shaped, K=8, width 400, batch 16.
    'cifar': dict(image_size=32, channels=3, levels=3, steps_per_level=8,
                  hidden_width=400, batch_size=16),
    # Kingma & Dhariwal's CIFAR-10 model: K=32, width 512.
    'paper': dict(image_size=32, channels=3, levels=3, steps_per_level=32,
                  hidden_width=512, batch_size=16),
    # The embedded 8x8 digits (17 grey levels), as bin/train.py trains them.
    'digits': dict(image_size=8, channels=1, levels=2, steps_per_level=8,
                   hidden_width=128, batch_size=64),
    # The memory table's configuration (issue 11): K is varied (8, 16, 32).
    'memory': dict(image_size=32, channels=3, levels=3, steps_per_level=8,
                   hidden_width=128, batch_size=32),
    # A smoke run: seconds, for the test.
    'quick': dict(image_size=8, channels=1, levels=2, steps_per_level=2,
                  hidden_width=16, batch_size=4),
}

# The operations timed, the execution modes, the libraries compared.
OPS = ('log_prob', 'train', 'sample')
MODES = ('graph', 'xla')
LIBRARIES = ('tfp_glow', 'tfp_glow_bf16', 'tfb')


@dataclasses.dataclass(frozen=True)
class Config:
  """The architecture and batch of a run (square images, as the presets).

  `split_fraction` is the share of channels that exit at each split; the
  presets all use Glow's 0.5, and the FLOP count follows whatever is set.
  """
  image_size: int
  channels: int
  levels: int
  steps_per_level: int
  hidden_width: int
  batch_size: int
  preset: str = 'custom'
  split_fraction: float = 0.5

  @classmethod
  def from_preset(cls, preset, **overrides):
    """The preset's values, each replaced by an override that is not None."""
    if preset not in PRESETS:
      raise ValueError(f'Unknown preset {preset!r} (choose from '
                       f'{sorted(PRESETS)}).')
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(preset=preset, **values)

  @property
  def image_shape(self):
    return (self.image_size, self.image_size, self.channels)

  def glow_kwargs(self):
    """The architecture arguments of `glow_distribution` and `plan`."""
    return dict(levels=self.levels, steps_per_level=self.steps_per_level,
                hidden_width=self.hidden_width,
                split_fraction=self.split_fraction)

  def as_dict(self):
    """The JSON `config` record (field order as the earlier results)."""
    return dataclasses.asdict(self)
