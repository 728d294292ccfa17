"""One adapter per library, so the timing code treats them all alike.

Each adapter builds the same Glow architecture (a `Config`) in its library and
exposes the three timed operations with the same signatures: `log_prob(x)`,
`train(x)` (gradient of the mean negative log-likelihood and a Keras Adam
update) and `sample(seed)`. What differs between libraries, how the model is
built and how its variables are found, stays inside the adapter.
"""

import functools

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_glow

__all__ = ['Model', 'TfpGlowModel', 'TfbGlowModel', 'build', 'images',
           'count_ops', 'graph_nodes', 'conv2d_counts']


class Model:
  """A library's model: its distribution, variables and three operations.

  Subclasses set `dist`, `variables` (what the training step updates),
  `tracked_variables` (how many the distribution's `trainable_variables`
  reports: fewer means some would silently never train) and `note`, and
  implement `_sample`. A library that is not TensorFlow (the PyTorch peer,
  `torch_peer.TorchGlowModel`) also overrides `run_modes` and `args`, and
  sets `graph_ops = False` (it has no graph whose ops could be counted).
  """

  library = None
  graph_ops = True

  def __init__(self, cfg, x_init, seed=0, learning_rate=1e-4,
               backprop='store'):
    self.cfg = cfg
    self.batch = cfg.batch_size
    self.seed = seed
    self.backprop = backprop
    self.note = ''
    self._build(x_init)
    self.parameters = int(sum(int(v.shape.num_elements())
                              for v in self.variables))
    self.optimizer = keras.optimizers.Adam(learning_rate)
    self.optimizer.build(self.variables)

  def _build(self, x_init):
    raise NotImplementedError

  def _sample(self, n, seed):
    raise NotImplementedError

  def log_prob(self, x):
    return self.dist.log_prob(x)

  def gradient(self, x):
    """The training step without the update: loss and gradients."""
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(self.dist.log_prob(x))
    return loss, tape.gradient(loss, self.variables)

  def train(self, x):
    loss, grads = self.gradient(x)
    self.optimizer.apply_gradients(zip(grads, self.variables))
    return loss

  def sample(self, seed):
    return self._sample(self.batch, seed)

  def function(self, op, mode):
    """A fresh compiled function of `op` ('graph': tf.function, 'xla': XLA)."""
    return tf.function(getattr(self, op), jit_compile=(mode == 'xla'),
                       reduce_retracing=True)

  def run_modes(self, modes):
    """The modes of `modes` this library runs in (TF: all of them)."""
    return list(modes)

  def args(self, op, x, seed):
    """The arguments of `function(op, mode)`, from a batch `x` (a TF
    tensor, NHWC) and the sampling seed (an int32 pair)."""
    return (seed,) if op == 'sample' else (x,)


class TfpGlowModel(Model):
  """tfp_glow's `glow_distribution`, optionally with bfloat16 networks."""

  library = 'tfp_glow'
  compute_dtype = None

  def _build(self, x_init):
    self.dist = tfp_glow.glow_distribution(
        self.cfg.image_shape, seed=self.seed,
        compute_dtype=self.compute_dtype, backprop=self.backprop,
        **self.cfg.glow_kwargs())
    tfp_glow.initialize(self.dist, x_init)
    self.variables = list(self.dist.trainable_variables)
    self.tracked_variables = len(self.variables)

  def _sample(self, n, seed):
    return tfp_glow.sample(self.dist, n, seed=seed)


class TfpGlowBf16Model(TfpGlowModel):
  """tfp_glow's mixed-precision option: coupling networks in bfloat16."""

  library = 'tfp_glow_bf16'
  compute_dtype = tf.bfloat16


class TfbGlowModel(Model):
  """TFP's `tfb.Glow` with its default networks at the same hidden width.

  Only the 0.5 split is built: TFP's `grab_after_block` slices by the wrong
  channel count otherwise (see DESIGN.md), so it would not be the same model.
  """

  library = 'tfb'

  def _build(self, x_init):
    cfg = self.cfg
    if cfg.split_fraction != 0.5:
      raise ValueError('tfb.Glow is compared only at split_fraction=0.5, got '
                       f'{cfg.split_fraction}.')
    if self.backprop != 'store':
      raise ValueError("tfb.Glow has only ordinary backprop ('store'), got "
                       f'backprop={self.backprop!r}.')
    tfb, tfd = tfp.bijectors, tfp.distributions
    tf.random.set_seed(self.seed)
    glow = tfb.Glow(
        output_shape=cfg.image_shape, num_glow_blocks=cfg.levels,
        num_steps_per_block=cfg.steps_per_level,
        coupling_bijector_fn=functools.partial(
            tfb.GlowDefaultNetwork, num_hidden=cfg.hidden_width),
        exit_bijector_fn=tfb.GlowDefaultExitNetwork, seed=self.seed)
    size = int(glow.inverse_event_shape(cfg.image_shape).num_elements())
    self.dist = tfd.TransformedDistribution(
        tfd.Sample(tfd.Normal(0., 1.), [size]), glow)
    # The first (eager) log_prob builds the Keras layers and runs TFP's
    # ActNorm data-dependent init (a tf.cond on its own variable).
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(self.dist.log_prob(x_init[:self.batch]))
    del loss
    self.tracked_variables = len(self.dist.trainable_variables)
    # Collect the variables from the tape: robust whether or not the Keras
    # layers' variables are visible to tf.Module tracking.
    self.variables = [v for v in tape.watched_variables() if v.trainable]
    if self.tracked_variables != len(self.variables):
      self.note = (f'trainable_variables reports {self.tracked_variables} '
                   f'of the {len(self.variables)} variables the tape sees')

  def _sample(self, n, seed):
    return self.dist.sample(n, seed=seed)


_MODELS = {m.library: m for m in (TfpGlowModel, TfpGlowBf16Model,
                                  TfbGlowModel)}
# Libraries whose adapter imports an optional package: loaded when asked for.
_OPTIONAL = {'torch': ('tfp_glow.benchmark.torch_peer', 'TorchGlowModel')}


def build(library, cfg, x_init, seed=0, learning_rate=1e-4, backprop='store',
          **peer_options):
  """The adapter of `library` ('tfp_glow', 'tfp_glow_bf16', 'tfb' or
  'torch'); `backprop` ('store' or 'invert', tfp_glow only) is `Glow`'s
  option. `peer_options` go to the PyTorch adapter (`glow_dir`, `threads`;
  see `torch_peer.TorchGlowModel`) and are ignored by the others."""
  if library in _OPTIONAL:
    import importlib  # pylint: disable=g-import-not-at-top
    module, name = _OPTIONAL[library]
    cls = getattr(importlib.import_module(module), name)
    return cls(cfg, x_init, seed=seed, learning_rate=learning_rate,
               backprop=backprop, **peer_options)
  if library not in _MODELS:
    raise ValueError(f'Unknown library {library!r} (choose from '
                     f'{sorted(_MODELS) + sorted(_OPTIONAL)}).')
  return _MODELS[library](cfg, x_init, seed=seed, learning_rate=learning_rate,
                          backprop=backprop)


def images(cfg, seed=0):
  """Uniform images in [-0.5, 0.5]: enough for tfp_glow's data-dependent
  init (OpenAI uses 256), at least one batch."""
  rng = np.random.default_rng(seed)
  n = max(cfg.batch_size, min(256, 4 * cfg.batch_size))
  s = cfg.image_size
  return rng.uniform(-0.5, 0.5, [n, s, s, cfg.channels]).astype(np.float32)


def count_ops(concrete, types):
  """Ops of the given types in a concrete function's graph and its library
  (nested functions, e.g. a `tf.cond`'s branches, live in the library)."""
  counts = dict.fromkeys(types, 0)
  for op in concrete.graph.get_operations():
    if op.type in counts:
      counts[op.type] += 1
  graph_def = concrete.graph.as_graph_def()
  for fdef in graph_def.library.function:
    for node in fdef.node_def:
      if node.op in counts:
        counts[node.op] += 1
  return counts


def graph_nodes(concrete):
  """Nodes of a concrete function's graph, its function library included
  (a loop's body, a `tf.cond`'s branches): what a process holds for it."""
  graph = concrete.graph.as_graph_def()
  return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)


def conv2d_counts(model, x, seed):
  """Conv2D ops in the `log_prob` and `sample` graphs (the same under XLA):
  shows whether a library evaluates each coupling network once or twice."""
  log_prob = tf.function(model.log_prob).get_concrete_function(x)
  sample = tf.function(model.sample).get_concrete_function(seed)
  return dict(conv2d_log_prob=count_ops(log_prob, ['Conv2D'])['Conv2D'],
              conv2d_sample=count_ops(sample, ['Conv2D'])['Conv2D'])
