"""Small Glows and inputs shared by glow_test.py and invert_test.py."""

import numpy as np
import tensorflow as tf

import harness
import tfp_glow
from tfp_glow import bijectors as gb

SMALL = (4, 4, 2)     # L=2: latents [2, 2, 4] + [1, 1, 16], D = 32
MEDIUM = (8, 8, 3)    # L=2: latents [4, 4, 6] + [2, 2, 24], D = 192


def glow_kwargs(image_shape=SMALL, **overrides):
  kw = dict(image_shape=image_shape, levels=2, steps_per_level=2,
            hidden_width=8, coupling='affine', permutation='conv',
            learn_top=False, num_classes=None, split_fraction=0.5)
  kw.update(overrides)
  return kw


def glow_factory(**kw):
  kw = glow_kwargs(**kw)
  return lambda dtype: gb.Glow(seed=0, dtype=dtype, **kw)


def glow_config(dtype=tf.float64, **kw):
  kw = glow_kwargs(**kw)
  shape = tuple(kw['image_shape'])
  return harness.Config(
      data_shape=shape, latent_shape=(int(np.prod(shape)),), dtype=dtype,
      num_classes=kw['num_classes'],
      # The classifier reads z_top but is not part of log p(x | y).
      grad_exclude=('classifier',) if kw['num_classes'] else ())


def init_batch(shape, seed=0, n=16):
  rng = np.random.default_rng(seed)
  scale = rng.uniform(0.05, 3.0, shape[-1])
  return tf.constant(rng.normal(0.7, 1.0, [n] + list(shape)) * scale, tf.float32)


def random_images(n=3, seed=0, dtype=tf.float32, shape=SMALL):
  return tf.constant(np.random.default_rng(seed).uniform(-0.5, 0.5,
                                                         [n] + list(shape)),
                     dtype)


class CountingWrapper(tf.Module):

  def __init__(self, net):
    super().__init__(name='counting_wrapper')
    self.net = net
    self.calls = 0

  def __call__(self, x):
    self.calls += 1
    return self.net(x)


def counting_dist():
  dist = tfp_glow.glow_distribution(**glow_kwargs(), seed=0)
  harness.perturb(tfp_glow.get_glow(dist), 0, 0.1)
  wrappers = []
  for level_steps in tfp_glow.get_glow(dist).steps:
    for _, _, cp in level_steps:
      cp.network = CountingWrapper(cp.network)
      wrappers.append(cp.network)
  return dist, wrappers


def make_model_dir(path, dataset='digits', seed=1):
  """A model directory as bin/train.py writes it, without training: a tiny
  initialised Glow (L=2, K=1, width 8) of the digits, its config.json, and
  best and latest weights (epoch 1). Returns the model."""
  from tfp_glow import data  # pylint: disable=g-import-not-at-top
  from tfp_glow import run_dir  # pylint: disable=g-import-not-at-top
  from tfp_glow.keras import callbacks  # pylint: disable=g-import-not-at-top
  ds, info = data.load(dataset, 'train', batch_size=64, shuffle=False)
  config = {'model': run_dir.model_config(
      info, dataset=dataset, image_size=None, n_bits=None, levels=2,
      steps_per_level=1, hidden_width=8, coupling='affine', permutation='conv',
      learn_top=True, conditional=False), 'training': {}}
  model = run_dir.build_model(config['model'], seed=seed)
  model.initialize_from(ds)
  run_dir.write_config(path, config)
  for which in ('latest', 'best'):
    callbacks.save_weights(model, run_dir.checkpoint_path(path, which),
                           {'epoch': 1, 'logs': {}})
  return model
