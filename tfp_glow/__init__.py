"""tfp_glow: Glow (Kingma & Dhariwal, 2018) as TensorFlow Probability bijectors.

`forward` maps latent -> image (sampling), `inverse` image -> latent (what
`log_prob` calls), as everywhere in TFP.
"""

# First, before TensorFlow loads: in a tfp_glow program (bin/, tfp-glow-*, or
# python -m tfp_glow.programs.*) TensorFlow's own log lines are hidden; anywhere
# else this does nothing (see tfp_glow/_program_start.py).
from tfp_glow import _program_start
_program_start.prepare()

# pylint: disable=g-import-not-at-top,wrong-import-position
from tfp_glow import bijectors
from tfp_glow import data
from tfp_glow import export
from tfp_glow import architecture
from tfp_glow import images
from tfp_glow import nn
from tfp_glow import scoring
from tfp_glow.bijectors.glow import Glow
from tfp_glow.bijectors.glow import LogProbParts
from tfp_glow.distribution import bits_per_dim
from tfp_glow.distribution import decode
from tfp_glow.distribution import encode
from tfp_glow.distribution import get_glow
from tfp_glow.distribution import glow_distribution
from tfp_glow.distribution import initialize
from tfp_glow.distribution import latent_noise
from tfp_glow.distribution import parameter_count
from tfp_glow.distribution import sample
from tfp_glow.keras import GlowModel
from tfp_glow.keras import SampleGrid
from tfp_glow.keras import WarmupSchedule

__all__ = [
    'Glow',
    'LogProbParts',
    'architecture',
    'images',
    'GlowModel',
    'SampleGrid',
    'WarmupSchedule',
    'bijectors',
    'data',
    'export',
    'bits_per_dim',
    'decode',
    'encode',
    'get_glow',
    'glow_distribution',
    'initialize',
    'latent_noise',
    'nn',
    'parameter_count',
    'sample',
    'scoring',
]
