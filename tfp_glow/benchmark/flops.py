"""FLOPs of the benchmarked model, read off the one architecture plan.

The benchmark used to walk the levels itself and let half the channels exit
whatever `split_fraction` said; now `tfp_glow.architecture.plan` is the only
walk, so the convolutions timed in the roofline, the FLOPs each operation is
credited with and the model `Glow` builds are the same by construction.

Counted: 2 x multiply-adds of every convolution of one data -> latent pass
(coupling networks, invertible 1x1 convolutions, split priors); elementwise
work is not counted. A training step counts 3 x the forward FLOPs (forward,
gradient with respect to the inputs, gradient with respect to the weights);
sampling runs the same convolutions as `log_prob` and counts the same.
"""

from tfp_glow import architecture

__all__ = ['OP_FLOP_FACTOR', 'plan', 'conv_shapes', 'forward_flops_per_image',
           'gflops_per_second']

OP_FLOP_FACTOR = {'log_prob': 1, 'train': 3, 'sample': 1}


def plan(cfg):
  """The architecture plan of a `Config`: the same arguments the model gets."""
  return architecture.plan(cfg.image_shape, **cfg.glow_kwargs())


def conv_shapes(cfg):
  """The convolutions of one pass, per image (see `Plan.conv_shapes`)."""
  return plan(cfg).conv_shapes()


def forward_flops_per_image(cfg):
  return plan(cfg).forward_flops_per_image()


def gflops_per_second(cfg, op, median_ms):
  """Achieved GFLOP/s of one batch of `op` that took `median_ms`."""
  flops = forward_flops_per_image(cfg) * OP_FLOP_FACTOR[op] * cfg.batch_size
  return flops / (median_ms / 1e3) / 1e9
