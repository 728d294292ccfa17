"""Glow's components, each a `tfp.bijectors.Bijector`.

Direction convention (TFP's): `forward` maps latent -> data (sampling),
`inverse` maps data -> latent (the paper's function; what `log_prob` calls).
"""

from tfp_glow.bijectors.actnorm import ActNorm
from tfp_glow.bijectors.coupling import AdditiveCoupling
from tfp_glow.bijectors.coupling import AffineCoupling
from tfp_glow.bijectors.glow import Glow
from tfp_glow.bijectors.invertible_conv import InvertibleConv1x1
from tfp_glow.bijectors.permute import ChannelPermute
from tfp_glow.bijectors.permute import ChannelReverse
from tfp_glow.bijectors.permute import ChannelShuffle
from tfp_glow.bijectors.split import SplitPrior
from tfp_glow.bijectors.split import TopPrior
from tfp_glow.bijectors.squeeze import Squeeze

__all__ = [
    'ActNorm',
    'AdditiveCoupling',
    'AffineCoupling',
    'ChannelPermute',
    'ChannelReverse',
    'ChannelShuffle',
    'Glow',
    'InvertibleConv1x1',
    'SplitPrior',
    'Squeeze',
    'TopPrior',
]
