"""The Keras layer of tfp_glow: `GlowModel`, the warmup schedule, sample grids.

Keras does the rest: optimizers (Adam, Adamax), `use_ema` (Polyak averaging),
`clipnorm`, `TensorBoard`, `TerminateOnNaN` and the progress bar all work on a
`GlowModel` as on any Keras model; the checkpoint callbacks are in
`tfp_glow.keras.callbacks` (atomic and chief-only), the `tf.distribute` helpers
in `tfp_glow.keras.distribute`.
"""

import functools
import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfp_glow import distribution as dist_lib
from tfp_glow.keras import callbacks as callbacks_lib
from tfp_glow.keras import distribute
from tfp_glow.keras import jit as jit_lib

__all__ = ['GlowModel', 'WarmupSchedule', 'SampleGrid', 'warmup_steps_for']


@keras.saving.register_keras_serializable(package='tfp_glow')
class GlowModel(keras.Model):
  """A Keras model around a Glow distribution; its loss is bits per dimension.

  The flow's parameters are `tf.Variable`s owned by `tf.Module`s (see
  DESIGN.md); the model registers each of them once, so `fit`, the optimizers,
  `save_weights` / `load_weights` and the callbacks see every one.

  * `fit(x)`: `x` yields image batches `[N, H, W, C]` in [-0.5, 0.5], or
    `(images, labels)` for a class-conditional model. Before the first step,
    ActNorm's data-dependent initialisation runs on the first
    `init_batch_size` images of `x` (OpenAI uses 256) unless the model is
    initialised already (restored, or fitted before). Each step minimises the
    mean bits/dim, plus `class_loss_weight` times the classifier's
    cross-entropy for a class-conditional model (the paper's 0.01).
  * Reported: `loss` (the objective, which `TerminateOnNaN` watches), `bpd`
    (train and `val_`/`evaluate`), the same formula as
    `tfp_glow.bits_per_dim`; `class_loss` and `accuracy` when conditional.
  * `model(x)` / `predict(x)`: the log-likelihood of each image, in nats.
  * Log-likelihoods come from `Glow.log_prob_parts`, the one place log p(x)
    is put together, as for `dist.log_prob` and the export.
  * `compile(jit_compile='auto')` (the default) chooses XLA or graph mode by
    measurement at the first `fit`: after ActNorm's init, the training and
    evaluation steps are timed in both modes on the first batches of `x`
    (`tfp_glow.keras.jit.choose_jit_compile`; the weights and optimizer state
    are restored afterwards, so the choice does not change what is trained),
    and the faster of each is kept; `jit_choice` holds the decision and the
    figures, printed unless `fit(verbose=0)`. On a machine with no GPU or
    TPU it is graph mode for both, unmeasured (`jit.cpu_choice`: graph mode
    wins there, and an XLA training step slows the graph-mode steps after it;
    `TFP_GLOW_JIT_AUTO=measure` measures anyway). With a dataset, those batches come from the same pass over `x`
    as the init's images (no extra pass, so the data order of a seeded
    pipeline is unchanged). `jit_compile=True` / `False` force a mode;
    `evaluate` / `predict` before any `fit` follow Keras's own 'auto' (XLA
    only with an accelerator).
  * Resuming: with a `tfp_glow.keras.callbacks.Backup` among `fit`'s
    callbacks, training restarts after the backed-up epoch, from its weights
    and optimizer state.
  * Keras's own save: `model.save('glow.keras')` then
    `keras.models.load_model('glow.keras')` (after `import tfp_glow`, which
    registers the class) rebuilds the architecture from `get_config` (the
    `Glow`'s constructor arguments) and loads every weight exactly, the
    optimizer's state with them. `model.export(...)` is refused: the
    SavedModel to serve is `tfp_glow.export.save`, with its signatures.
  * Under a `tf.distribute` strategy (see `distribute.make_strategy`): build the
    distribution and the model, and compile, inside `strategy.scope()`; `x`
    yields global batches, which Keras splits between the replicas. Each step
    is the step of one device on the whole global batch (the per-replica mean
    is scaled by 1/replicas before the optimizer sums the gradients), so the
    learning rate goes with the global batch, not the number of replicas.
    ActNorm's init uses the first `init_batch_size` images of `x`, whole, on
    every replica (multi-worker: the chief's, broadcast).

  Args:
    distribution: from `tfp_glow.glow_distribution` (or a `Glow` bijector).
    n_bins: grey levels per dimension of the data (256 for 8-bit, 17 for the
      embedded digits); used for bits/dim.
    class_loss_weight: weight of the classifier loss (class-conditional).
    init_batch_size: images used for the data-dependent initialisation.
    jit_timing_steps: timed steps per mode when `jit_compile='auto'`.
  """

  # Batches of `x` the 'auto' measurement cycles through.
  JIT_TIMING_BATCHES = 3

  def __init__(self, distribution, n_bins, class_loss_weight=0.01,
               init_batch_size=256, jit_timing_steps=5, name='glow_model',
               **kwargs):
    super().__init__(name=name, **kwargs)
    glow = dist_lib.get_glow(distribution)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) \
        or n_bins < 2:
      raise ValueError(f'n_bins must be an int >= 2, got {n_bins!r}.')
    self.glow = glow
    self.distribution = dist_lib.distribution_from_glow(glow) if (
        distribution is glow) else distribution
    self.n_bins = int(n_bins)
    self.class_loss_weight = float(class_loss_weight)
    self.init_batch_size = int(init_batch_size)
    self.jit_timing_steps = int(jit_timing_steps)
    self._jit_auto = False
    self.jit_choice = None  # a jit.JitChoice once the mode is settled
    self._image_dims = int(np.prod(glow.image_shape))
    _register_variables(self, glow.variables)
    # 'loss' (the objective: mean bpd, plus the weighted class loss) is what
    # TerminateOnNaN, EarlyStopping and friends look at by default.
    self.loss_tracker = keras.metrics.Mean(name='loss')
    self.bpd_tracker = keras.metrics.Mean(name='bpd')
    self.class_loss_tracker = keras.metrics.Mean(name='class_loss')
    self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
        name='accuracy')
    self.built = True

  @property
  def conditional(self):
    return self.glow.num_classes is not None

  # --- Keras's serialization -----------------------------------------------------

  def get_config(self):
    """What `keras.models.load_model` rebuilds the model from: the Glow's
    constructor arguments (`glow`, plain JSON) and this model's settings. The
    weights are saved apart, by Keras, in the order `_register_variables`
    gave them, which the same arguments give again."""
    return {
        'name': self.name,
        'glow': _glow_config(self.glow, self.distribution),
        'n_bins': self.n_bins,
        'class_loss_weight': self.class_loss_weight,
        'init_batch_size': self.init_batch_size,
        'jit_timing_steps': self.jit_timing_steps,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    glow = dict(config.pop('glow'))
    return cls(dist_lib.glow_distribution(**glow), **config)

  def compile_from_config(self, config):
    """Keras's own, which skips any model that overrides `compile`: this one's
    `compile` only adds the 'auto' mode, so the saved arguments compile it as
    they are, and the optimizer's state then loads from the file."""
    self.compile(**keras.saving.deserialize_keras_object(config))
    if self.built:
      self.optimizer.build(self.trainable_variables)

  def export(self, filepath, *args, **kwargs):  # pylint: disable=arguments-differ
    """Refused: `tfp_glow.export.save(model, export_dir)` is this model's export."""
    del args, kwargs
    raise NotImplementedError(
        f'GlowModel.export({filepath!r}): Keras\'s export (one `serve` '
        'endpoint) is not the one for this model. Use tfp_glow.export.save(model, '
        'export_dir): a SavedModel with the log_prob, log_prob_uint8, sample, '
        'encode, decode, score and metadata signatures, input checks inside the '
        'graph, needing only TensorFlow to load (bin/export.py runs it).')

  @property
  def metrics(self):
    if self.conditional:
      return [self.loss_tracker, self.bpd_tracker, self.class_loss_tracker,
              self.accuracy_tracker]
    return [self.loss_tracker, self.bpd_tracker]

  @property
  def initialized(self):
    return all(a.is_initialized for a in self.glow.actnorms())

  # --- the objective -----------------------------------------------------------

  def _unpack(self, data):
    if isinstance(data, (tuple, list)):
      x = data[0]
      labels = data[1] if len(data) > 1 else None
    else:
      x, labels = data, None
    if self.conditional and labels is None:
      raise ValueError('This GlowModel is class-conditional: the data must '
                       'yield (images, labels).')
    if not self.conditional:
      labels = None
    x = tf.cast(x, self.glow.dtype)
    return x, labels

  def _bpd(self, log_prob):
    return dist_lib.bits_per_dim(log_prob, self.glow.image_shape, self.n_bins)

  def _objective(self, data):
    """The loss and what the metrics need, from the flow's one likelihood.

    `Glow.log_prob_parts` is the only place log p(x) is put together (labels
    checked, empty batches handled there), so training, `evaluate`, `predict`,
    `dist.log_prob` and the export agree by construction.
    """
    x, labels = self._unpack(data)
    parts = self.glow.log_prob_parts(x, labels)
    bpd = self._bpd(parts.log_prob)
    loss = tf.reduce_mean(bpd)
    class_loss = logits = None
    if parts.class_logits is not None:
      labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
      logits = tf.reshape(parts.class_logits, [-1, self.glow.num_classes])
      class_loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
      loss += self.class_loss_weight * class_loss
    return loss, bpd, class_loss, logits, labels

  def _update_metrics(self, loss, bpd, class_loss, logits, labels):
    self.loss_tracker.update_state(loss)
    self.bpd_tracker.update_state(bpd)
    if class_loss is not None:
      self.class_loss_tracker.update_state(class_loss)
      self.accuracy_tracker.update_state(labels, logits)
    return {m.name: m.result() for m in self.metrics}

  def train_step(self, data):
    variables = self.trainable_variables
    with tf.GradientTape() as tape:
      loss, bpd, class_loss, logits, labels = self._objective(data)
      # Under a tf.distribute strategy each replica sees 1/n of the global
      # batch and the optimizer SUMs the replicas' gradients, so the
      # per-replica mean is scaled by 1/n: the update is that of one device
      # on the whole global batch (what Keras's own train_step does).
      scaled_loss = distribute.scale_for_replicas(loss)
    grads = tape.gradient(scaled_loss, variables)
    self.optimizer.apply_gradients(zip(grads, variables))
    return distribute.rank1_for_multi_worker(
        self._update_metrics(loss, bpd, class_loss, logits, labels))

  def test_step(self, data):
    loss, bpd, class_loss, logits, labels = self._objective(data)
    return distribute.rank1_for_multi_worker(
        self._update_metrics(loss, bpd, class_loss, logits, labels))

  def call(self, inputs, training=False):
    del training
    x, labels = self._unpack(inputs)
    return self.glow.log_prob_parts(x, labels).log_prob

  def predict_step(self, data):
    return self.call(data)

  # --- data-dependent init -------------------------------------------------------

  def initialize_from(self, data):
    """ActNorm init from the first `init_batch_size` images of `data`.

    `data`: an array/tensor of images, a `(images, labels)` pair, or a
    `tf.data.Dataset` of batches. Does nothing if already initialised.
    Returns the number of ActNorms initialised.
    """
    if self.initialized:
      return 0
    xs, ys, count = [], [], 0
    if isinstance(data, tf.data.Dataset):
      for batch in data:
        x, labels = self._unpack(batch)
        xs.append(x)
        if labels is not None:
          ys.append(labels)
        count += int(x.shape[0])
        if count >= self.init_batch_size:
          break
      if not xs:
        raise ValueError('initialize_from: the dataset is empty.')
      x = tf.concat(xs, 0)[:self.init_batch_size]
      labels = tf.concat(ys, 0)[:self.init_batch_size] if ys else None
    else:
      x, labels = self._unpack(data)
      x, labels = x[:self.init_batch_size], (
          None if labels is None else labels[:self.init_batch_size])
    return dist_lib.initialize(self.glow, x, labels=labels)

  def compile(self, *args, jit_compile=jit_lib.AUTO, **kwargs):  # pylint: disable=arguments-differ
    """Keras `compile`; `jit_compile` is 'auto' (the default: measured at the
    first `fit`, see the class docstring), True (XLA) or False (graph mode)."""
    mode = jit_lib.parse_jit_compile(jit_compile)
    self._jit_auto = mode == jit_lib.AUTO and not kwargs.get('run_eagerly')
    self.jit_choice = None if mode == jit_lib.AUTO else jit_lib.forced(mode)
    super().compile(*args, jit_compile=mode, **kwargs)

  def choose_jit_compile(self, batches, log=None):
    """Measures and sets the compile modes now (see `jit.choose_jit_compile`);
    `fit` does it by itself when compiled with `jit_compile='auto'`."""
    self.jit_choice = jit_lib.choose_jit_compile(
        self, batches, steps=self.jit_timing_steps, log=log)
    self._jit_auto = False
    return self.jit_choice

  def _first_batches(self, data, batch_size):
    """One pass over `data`: enough batches for ActNorm's init (if it is
    still to run) and for the jit measurement."""
    if isinstance(data, tf.data.Dataset):
      out, count = [], 0
      for batch in data:
        out.append(batch)
        count += int(tf.nest.flatten(batch)[0].shape[0])
        if len(out) >= self.JIT_TIMING_BATCHES and (
            self.initialized or count >= self.init_batch_size):
          break
      if not out:
        raise ValueError('fit: the dataset is empty.')
      return out
    # Arrays or tensors, batched as Keras will (32 unless batch_size is given).
    size = batch_size or 32
    return [tf.nest.map_structure(lambda a, i=i: a[i * size:(i + 1) * size],
                                  data)
            for i in range(self.JIT_TIMING_BATCHES)
            if int(tf.nest.flatten(data)[0].shape[0]) > i * size]

  def fit(self, x=None, y=None, **kwargs):  # pylint: disable=arguments-differ
    """Keras `fit`, after the data-dependent init (see the class docstring).

    With a `tfp_glow.keras.callbacks.Backup` among the callbacks whose folder
    holds a backup, training resumes after the backed-up epoch (the callback
    restores weights and optimizer state when training begins).
    """
    strategy = self.distribute_strategy
    self._check_strategy(strategy)
    if (strategy.num_replicas_in_sync > 1 and self.jit_compile
        and not isinstance(strategy, tf.distribute.TPUStrategy)):
      # Keras compiles the whole cross-replica step; XLA then refuses the
      # other replicas' variables ("Trying to access resource ... located in
      # device CPU:1 from device CPU:0").
      warnings.warn('jit_compile=True does not work with several replicas '
                    f'under {type(strategy).__name__}; training without XLA.')
      self.jit_compile = False
      self.train_function = self.test_function = None
      self.predict_function = None
    # A backup to resume from sets the first epoch (and replaces the init: the
    # restored weights include ActNorm's). Asked of our own callback through
    # its public method, so no Keras internals are involved.
    resume_epoch = callbacks_lib.resume_epoch(kwargs.get('callbacks'))
    if resume_epoch:
      kwargs['initial_epoch'] = max(kwargs.get('initial_epoch', 0),
                                    resume_epoch)
    data = x if y is None else (x, y)
    if isinstance(data, tf.distribute.DistributedDataset):
      raise ValueError('Pass the undistributed dataset to fit(); Keras '
                       'distributes it.')
    measure = self._jit_auto and self.jit_choice is None and x is not None
    if measure and jit_lib.several_replicas(strategy):
      self.choose_jit_compile([])  # nothing to time: XLA is off
      measure = False
    if measure and jit_lib.cpu_only():
      # Graph mode, unmeasured: see tfp_glow/keras/jit.py.
      self.jit_choice = jit_lib.cpu_choice(
          self, log=None if kwargs.get('verbose', 'auto') == 0 else
          functools.partial(print, flush=True))
      self._jit_auto = False
      measure = False
    init = x is not None and not self.initialized and not resume_epoch
    batches = None
    if measure or (init and isinstance(data, tf.data.Dataset)):
      # One pass serves both: a seeded pipeline that reshuffles every pass
      # then sees as many passes as without the measurement.
      batches = self._first_batches(data, kwargs.get('batch_size'))
    if init:
      init_data = data
      if isinstance(data, tf.data.Dataset):
        first = batches[0]
        init_data = (tf.concat(list(batches), 0) if not isinstance(
            first, (tuple, list)) else tuple(
                tf.concat([b[i] for b in batches], 0)
                for i in range(len(first))))
      # Cross-replica context, eager: every replica's copy of each mirrored
      # ActNorm variable gets the statistics of the whole init batch.
      with strategy.scope():
        self.initialize_from(init_data)
        distribute.broadcast_from_chief(strategy, [
            v for a in self.glow.actnorms() for v in a.variables])
    if measure:
      self.choose_jit_compile(
          batches[:self.JIT_TIMING_BATCHES],
          log=None if kwargs.get('verbose', 'auto') == 0 else functools.partial(
              print, flush=True))
    return super().fit(x, y, **kwargs)

  def _check_strategy(self, strategy):
    """A clear error when the flow's variables do not belong to `strategy`."""
    if (not tf.distribute.has_strategy()
        and strategy is tf.distribute.get_strategy()):
      return  # no strategy anywhere: plain single-device training
    outside = [v.name for v in self.glow.variables
               if not strategy.extended.variable_created_in_scope(v)]
    if outside:
      raise ValueError(
          f'GlowModel: {len(outside)} of the flow\'s variables (e.g. '
          f'{outside[0]!r}) were not created under the scope of the '
          f'{type(strategy).__name__} that trains it. Build the distribution '
          'and the GlowModel (and compile it) inside `with strategy.scope():`.')

  # --- sampling ---------------------------------------------------------------

  def sample(self, n, temperature=1.0, seed=None, labels=None):
    """Images sampled at `temperature` (see `tfp_glow.sample`)."""
    return dist_lib.sample(self.glow, n, temperature=temperature, seed=seed,
                           labels=labels)


def _glow_config(glow, distribution):
  """The keyword arguments of `glow_distribution` that rebuild `glow` (JSON:
  dtypes by name), or a ValueError when `distribution` is not the standard one
  that `glow_distribution` puts around a Glow (a base it cannot rebuild)."""
  base = getattr(distribution, 'distribution', None)
  normal = getattr(base, 'distribution', None)
  standard = (
      getattr(distribution, 'bijector', None) is glow and
      type(base).__name__ == 'Sample' and type(normal).__name__ == 'Normal' and
      np.array_equal(np.asarray(normal.loc), 0) and
      np.array_equal(np.asarray(normal.scale), 1))
  if not standard:
    raise ValueError(
        'GlowModel.get_config: the distribution is not the one glow_distribution '
        'makes (a standard-normal base around the Glow), so its config cannot '
        'rebuild it; build the model from tfp_glow.glow_distribution(...).')
  config = dict(glow.parameters)
  config['image_shape'] = [int(d) for d in config['image_shape']]
  for key in ('dtype', 'compute_dtype'):
    if config[key] is not None:
      config[key] = tf.as_dtype(config[key]).name
  return config


def _register_variables(layer, variables):
  """Makes `layer` own `variables` (each once), so that `trainable_variables`,
  the optimizers, `save_weights` / `load_weights` and the callbacks see them.

  The one Keras internal this package relies on: Keras 3 has no public way to
  adopt an existing `tf.Variable` (`add_weight` creates a new one), and its
  trackers ignore `tf.Module` attributes (tensorflow#84019). `Layer._track_variable`
  is what Keras itself uses for this. tests/training_test.py
  (`test_trainable_weights_are_the_flow_variables_once`) fails if it changes.
  """
  seen = set()
  for v in variables:
    if id(v) not in seen:
      seen.add(id(v))
      layer._track_variable(v)  # pylint: disable=protected-access


DECAYS = ('linear', 'cosine', 'constant')


@keras.saving.register_keras_serializable(package='tfp_glow')
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then a decay
  that reaches zero at step `total_steps` (or flat, `decay='constant'`).

      lr(s) = learning_rate * min(1, (s + 1) / warmup_steps) * d(s),
      span = total_steps - warmup_steps,
      u = clip((s - warmup_steps - (1 - decay_fraction) * span)
               / (decay_fraction * span), 0, 1),
      d = 1 - u (linear), (1 + cos(pi u)) / 2 (cosine), 1 (constant).

  `decay_fraction` (default 1: the decay fills the budget after the warmup) keeps
  the rate at its peak for the first `1 - decay_fraction` of the budget and decays
  over the rest: warmup-stable-decay, the "cooldown" of Zhai et al. (2022) and
  Hagele et al. (2024), which match a full-length decay at equal compute. Where
  the noise of a high rate is part of the regularisation (the digits' 1,293
  images, docs/BENCHMARKS.md) it keeps that noise for most of the run.

  Glow without warmup diverges early (OpenAI warms up over 10 epochs). The decay
  is budgeted training's (Li, Yumer & Ramanan, ICLR 2020: when the budget is fixed in
  advance, a learning rate decayed linearly to zero exactly at its end beats step
  and constant schedules at equal compute). `total_steps` is either a number
  (`--epochs` x steps per epoch) or, for a wall-clock budget, re-estimated as
  training goes by `tfp_glow.keras.callbacks.TimeBudget` through
  `set_total_steps` (a variable, so a compiled training step reads the current
  estimate without being traced again). Without `total_steps` (None) nothing
  decays, whatever `decay` says.
  """

  def __init__(self, learning_rate, warmup_steps, total_steps=None,
               decay='linear', decay_fraction=1.0):
    if not learning_rate > 0:
      raise ValueError(f'learning_rate must be > 0, got {learning_rate}.')
    if warmup_steps < 0:
      raise ValueError(f'warmup_steps must be >= 0, got {warmup_steps}.')
    if decay not in DECAYS:
      raise ValueError(f'decay must be one of {list(DECAYS)}, got {decay!r}.')
    if isinstance(decay_fraction, bool) or not 0 < decay_fraction <= 1:
      raise ValueError('decay_fraction must be in (0, 1], got '
                       f'{decay_fraction!r}.')
    if total_steps is not None and not total_steps >= 1:
      raise ValueError(f'total_steps must be >= 1 or None, got {total_steps}.')
    self.learning_rate = float(learning_rate)
    self.warmup_steps = int(warmup_steps)
    self.decay = decay
    self.decay_fraction = float(decay_fraction)
    self._total = None
    if total_steps is not None and decay != 'constant':
      # A variable that is not the model's (never trained, saved or averaged).
      self._total = tf.Variable(float(total_steps), trainable=False,
                                dtype=tf.float32, name='lr_total_steps')

  @property
  def total_steps(self):
    """The step at which the rate reaches zero (its current estimate), or None."""
    return None if self._total is None else float(self._total.numpy())

  def set_total_steps(self, total_steps):
    if self._total is None:
      raise ValueError('This schedule does not decay (total_steps=None or '
                       "decay='constant'); it has no total to set.")
    self._total.assign(max(1.0, float(total_steps)))

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    lr = tf.constant(self.learning_rate)
    if self.warmup_steps:
      lr = lr * tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
    if self._total is None:
      return lr
    total = tf.cast(self._total, tf.float32)
    span = tf.maximum(total - self.warmup_steps, 1.0)
    # Counted back from the end, so that u is exactly 1 at `total` in float32.
    u = tf.clip_by_value(1.0 - (total - step) /
                         tf.maximum(self.decay_fraction * span, 1.0), 0.0, 1.0)
    if self.decay == 'linear':
      return lr * (1.0 - u)
    return lr * 0.5 * (1.0 + tf.cos(math.pi * u))

  def value(self, step):
    """The rate at `step` (an int), as a Python float."""
    return float(self(tf.constant(step)).numpy())

  def get_config(self):
    return {'learning_rate': self.learning_rate,
            'warmup_steps': self.warmup_steps,
            'total_steps': self.total_steps, 'decay': self.decay,
            'decay_fraction': self.decay_fraction}


class SampleGrid(keras.callbacks.Callback):
  """Writes grids of samples at several temperatures, as PNG and TensorBoard.

  Every `every_epochs` epochs (and at the end of training): one row per
  temperature, `per_row` images each, with a fixed seed so the grids of
  successive epochs are comparable. PNGs go to `png_dir/epoch_XXXX.png` (and
  `png_dir/final.png`), images to TensorBoard under `log_dir` if given.
  """

  def __init__(self, png_dir, n_bins, temperatures=(0.0, 0.5, 0.7, 1.0),
               per_row=8, every_epochs=1, log_dir=None, seed=0, labels=None):
    super().__init__()
    self.png_dir = png_dir
    self.n_bins = n_bins
    self.temperatures = tuple(float(t) for t in temperatures)
    if any(t < 0 for t in self.temperatures):
      raise ValueError(f'temperatures must be >= 0, got {temperatures}.')
    self.per_row = int(per_row)
    self.every_epochs = int(every_epochs)
    self.seed = seed
    self.labels = labels
    self._writer = (tf.summary.create_file_writer(os.path.join(log_dir,
                                                               'samples'))
                    if log_dir else None)

  def grid(self):
    """Returns uint8 images [rows, per_row, H, W, C] and the temperature of
    each row.

    A temperature whose samples are not finite (the flow overflowed, which
    a model early in training may do at T=1) gets no row: it is left out,
    with a line saying so, and training goes on (a sample grid is a view of
    the model, never a reason to lose the run). Returns `(None, ())` when
    every temperature failed.
    """
    from tfp_glow import data as data_lib  # pylint: disable=g-import-not-at-top
    rows, temperatures = [], []
    for i, t in enumerate(self.temperatures):
      labels = None
      if self.model.conditional:
        labels = (self.labels if self.labels is not None else
                  tf.range(self.per_row) % self.model.glow.num_classes)
      try:
        x = self.model.sample(self.per_row, temperature=t,
                              seed=[self.seed, i], labels=labels)
      except FloatingPointError as e:
        print(f'Sample grid: no row for T={t:g}: {e}', flush=True)
        continue
      rows.append(data_lib.postprocess(x, self.n_bins))
      temperatures.append(t)
    if not rows:
      return None, ()
    return np.stack([np.asarray(r) for r in rows]), tuple(temperatures)

  def write(self, tag, step):
    """Writes the grid; returns its path (None when no temperature gave
    finite samples)."""
    from tfp_glow import images as images_lib  # pylint: disable=g-import-not-at-top
    images, temperatures = self.grid()
    if images is None:
      return None
    flat = images.reshape((-1,) + images.shape[2:])
    os.makedirs(self.png_dir, exist_ok=True)
    path = os.path.join(self.png_dir, f'{tag}.png')
    images_lib.save_grid_png(flat, path, nrow=self.per_row)
    if self._writer is not None:
      with self._writer.as_default():
        for t, row in zip(temperatures, images):
          tf.summary.image(f'samples/T={t:g}', row, step=step,
                           max_outputs=self.per_row)
      self._writer.flush()
    return path

  def on_epoch_end(self, epoch, logs=None):
    if (epoch + 1) % self.every_epochs == 0:
      self.write(f'epoch_{epoch + 1:04d}', epoch + 1)

  def on_train_end(self, logs=None):
    self.write('final', 0)


def warmup_steps_for(epochs, steps_per_epoch):
  """Warmup steps for `epochs` epochs of `steps_per_epoch` (rounded up)."""
  return int(math.ceil(epochs * steps_per_epoch))
