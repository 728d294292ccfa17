"""What one benchmark run measures: the architecture, its presets, the names.

A frozen `Config` rather than loose flags so that the models, the FLOP count
and the convolution roofline all read the same values: `glow_kwargs()` is
what both `glow_distribution` and `architecture.plan` receive, so the model
that is timed and the model whose FLOPs are counted cannot drift apart.
"""

import dataclasses
import math

__all__ = ['PRESETS', 'OPS', 'MODES', 'LIBRARIES', 'PEERS', 'Config']

PRESETS = {
    # The default: CIFAR-shaped, K=8, width 400, batch 16.
    'cifar': dict(image_size=32, channels=3, levels=3, steps_per_level=8,
                  hidden_width=400, batch_size=16),
    # The same at 64x64x3 with one more level (the top latent stays 4x4):
    # how each implementation's cost grows with the image (--also_image_sizes
    # times it beside the 32x32 rows, interleaved).
    'cifar64': dict(image_size=64, channels=3, levels=4, steps_per_level=8,
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
LIBRARIES = ('tfp_glow', 'tfp_glow_bf16', 'tfb', 'torch')
# The peers timed against tfp_glow: TFP's tfb.Glow and the PyTorch port
# (rosinality/glow-pytorch, optional: see `torch_peer`).
PEERS = ('tfb', 'torch')


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

  def at_image_size(self, image_size):
    """The same model at another image size, with one more level per
    doubling (one fewer per halving), so the top latent keeps its size:
    32x32x3 at L=3 becomes 64x64x3 at L=4."""
    ratio = image_size / self.image_size
    k = round(math.log2(ratio)) if ratio > 0 else None
    if k is None or 2.0**k != ratio or self.levels + k < 1:
      raise ValueError(
          f'image_size {image_size} is not {self.image_size} times a power '
          f'of two that leaves at least one level (L={self.levels}).')
    return dataclasses.replace(self, image_size=int(image_size),
                               levels=self.levels + k)

  @property
  def label(self):
    """'32x32x3 L=3': how the tables name a configuration."""
    return (f'{self.image_size}x{self.image_size}x{self.channels} '
            f'L={self.levels}')

  def as_dict(self):
    """The JSON `config` record (field order as the earlier results)."""
    return dataclasses.asdict(self)
