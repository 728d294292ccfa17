"""Keras training for Glow: `GlowModel`, warmup schedule, sample-grid callback.

Keras does the rest: optimizers (Adam, Adamax), `use_ema` (Polyak averaging),
`clipnorm`, `ModelCheckpoint`, `BackupAndRestore`, `TensorBoard`,
`TerminateOnNaN` and the progress bar all work on a `GlowModel` as on any
Keras model.
"""

import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfp_glow import distribution as dist_lib

__all__ = ['GlowModel', 'WarmupSchedule', 'SampleGrid', 'make_strategy',
           'is_chief', 'BackupAndRestore', 'ModelCheckpoint']


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
  * Under a `tf.distribute` strategy (see `make_strategy`): build the
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
  """

  def __init__(self, distribution, n_bins, class_loss_weight=0.01,
               init_batch_size=256, name='glow_model', **kwargs):
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
    self._image_dims = int(np.prod(glow.image_shape))
    seen = set()
    for v in glow.variables:
      if id(v) not in seen:
        seen.add(id(v))
        self._track_variable(v)
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

  def _log_prob_terms(self, x, labels):
    """Returns (log p(x) per image, class logits or None)."""
    parts = self.glow.log_prob_parts(x, labels)
    if labels is not None:
      labels = tf.cast(labels, tf.int32)
    return parts.log_prob, parts.class_logits, labels

  def _bpd(self, log_prob):
    return dist_lib.bits_per_dim(log_prob, self.glow.image_shape, self.n_bins)

  def _objective(self, data):
    x, labels = self._unpack(data)
    log_prob, logits, labels = self._log_prob_terms(x, labels)
    bpd = self._bpd(log_prob)
    loss = tf.reduce_mean(bpd)
    class_loss = None
    if logits is not None:
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
      scaled_loss = _scale_for_replicas(loss)
    grads = tape.gradient(scaled_loss, variables)
    self.optimizer.apply_gradients(zip(grads, variables))
    return _rank1_for_multi_worker(
        self._update_metrics(loss, bpd, class_loss, logits, labels))

  def test_step(self, data):
    loss, bpd, class_loss, logits, labels = self._objective(data)
    return _rank1_for_multi_worker(
        self._update_metrics(loss, bpd, class_loss, logits, labels))

  def call(self, inputs, training=False):
    del training
    x, labels = self._unpack(inputs)
    return self._log_prob_terms(x, labels)[0]

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

  def fit(self, x=None, y=None, **kwargs):  # pylint: disable=arguments-differ
    """Keras `fit`, after the data-dependent init (see the class docstring)."""
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
    if x is not None and not self.initialized:
      init_data = x if y is None else (x, y)
      if isinstance(init_data, tf.distribute.DistributedDataset):
        raise ValueError('Pass the undistributed dataset to fit(); Keras '
                         'distributes it.')
      # Cross-replica context, eager: every replica's copy of each mirrored
      # ActNorm variable gets the statistics of the whole init batch.
      with strategy.scope():
        self.initialize_from(init_data)
        _broadcast_from_chief(strategy, [
            v for a in self.glow.actnorms() for v in a.variables])
    return super().fit(x, y, **kwargs)

  def _check_strategy(self, strategy):
    """A clear error when the flow's variables do not belong to `strategy`."""
    if self._distribute_strategy is None and not tf.distribute.has_strategy():
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


def _scale_for_replicas(loss):
  n = tf.distribute.get_strategy().num_replicas_in_sync
  return loss / tf.cast(n, loss.dtype) if n > 1 else loss


def _rank1_for_multi_worker(logs):
  """Keras 3 reduces a multi-worker step's outputs with
  `strategy.reduce('MEAN', v, axis=0)`, which fails on scalars ("Invalid
  reduction dimension 0 for input with 0 dimensions", tensorflow#72388): give
  them shape [1] there; the reduced logs are scalars again."""
  strategy = tf.distribute.get_strategy()
  in_multi_worker = getattr(strategy.extended, '_in_multi_worker_mode', None)
  if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
      and in_multi_worker is not None and in_multi_worker()):
    return {k: tf.reshape(v, [1]) for k, v in logs.items()}
  return logs


def _num_workers(strategy):
  return max(1, strategy.num_replicas_in_sync //
             max(1, len(strategy.extended.worker_devices)))


def _broadcast_from_chief(strategy, variables):
  """Gives every worker the chief's values of `variables` (multi-worker only).

  Each worker runs the data-dependent init on its own copy of the whole init
  batch; should their first batches differ (an unseeded shuffle), the workers'
  ActNorms would start apart and never meet. A SUM all-reduce of the first
  replica's values (zeros elsewhere) is an exact broadcast.
  """
  if (not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
      or _num_workers(strategy) < 2 or not variables):
    return

  def replica_fn():
    ctx = tf.distribute.get_replica_context()
    first = tf.equal(ctx.replica_id_in_sync_group, 0)
    values = [tf.where(first, v.read_value(), tf.zeros_like(v))
              for v in variables]
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)

  reduced = tf.function(lambda: strategy.run(replica_fn))()
  for v, r in zip(variables, reduced):
    v.assign(strategy.experimental_local_results(r)[0])


def is_chief(strategy=None):
  """Whether this process writes checkpoints: True except on the
  non-chief workers of a multi-worker strategy (`TF_CONFIG`'s `chief`, or
  `worker` 0 when the cluster has no chief)."""
  strategy = strategy or tf.distribute.get_strategy()
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not getattr(resolver, 'task_type', None):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id or 0
  if task_type == 'chief':
    return True
  jobs = resolver.cluster_spec().jobs
  return task_type == 'worker' and task_id == 0 and 'chief' not in jobs


def make_strategy(name='default', collective_timeout=None):
  """A `tf.distribute` strategy by name, for `bin/train.py --strategy`.

  * `'default'`: the default (one device) strategy.
  * `'mirrored'`: `MirroredStrategy` over this host's GPUs (or its CPU).
  * `'multi_worker'`: `MultiWorkerMirroredStrategy`; the cluster and this
    process's role come from the `TF_CONFIG` environment variable. Create it
    first thing in the program, before any other TensorFlow op.
    `collective_timeout` (seconds; None or 0 for none): a collective that
    waits longer raises `DeadlineExceededError` instead of hanging, e.g. when
    a peer worker died. Keep it well above the slowest step (the first step
    traces the model). A dead peer is also found by the coordination service's
    heartbeat, after about 10 s.

  Build the distribution and the `GlowModel`, and compile it, inside
  `with strategy.scope():`.
  """
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy()
  if name == 'multi_worker':
    if not os.environ.get('TF_CONFIG'):
      raise ValueError('--strategy=multi_worker needs the TF_CONFIG '
                       'environment variable (the cluster and this task).')
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=collective_timeout or None)
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=options)
  raise ValueError(f'Unknown strategy {name!r}; expected one of default, '
                   'mirrored, multi_worker.')


class BackupAndRestore(keras.callbacks.BackupAndRestore):
  """Keras's `BackupAndRestore`, except that only the chief writes (and
  deletes) the backup; every worker restores from it, so `backup_dir` must be
  one folder all workers see (a shared filesystem, or one machine)."""

  def _save_model(self):
    if is_chief(self.model.distribute_strategy):
      super()._save_model()

  def on_train_end(self, logs=None):
    if is_chief(self.model.distribute_strategy):
      super().on_train_end(logs)


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
  """Keras's `ModelCheckpoint`, except that only the chief writes."""

  def _should_save_model(self, epoch, batch, logs, filepath):
    save = super()._should_save_model(epoch, batch, logs, filepath)
    return save and is_chief(self.model.distribute_strategy)


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then flat.

  Glow without warmup diverges early (OpenAI warms up over 10 epochs).
  """

  def __init__(self, learning_rate, warmup_steps):
    if learning_rate <= 0:
      raise ValueError(f'learning_rate must be > 0, got {learning_rate}.')
    if warmup_steps < 0:
      raise ValueError(f'warmup_steps must be >= 0, got {warmup_steps}.')
    self.learning_rate = float(learning_rate)
    self.warmup_steps = int(warmup_steps)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    if self.warmup_steps == 0:
      return tf.constant(self.learning_rate)
    return self.learning_rate * tf.minimum(1.0, (step + 1.0) /
                                           self.warmup_steps)

  def get_config(self):
    return {'learning_rate': self.learning_rate,
            'warmup_steps': self.warmup_steps}


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
    """Returns uint8 images [rows, per_row, H, W, C]."""
    from tfp_glow import data as data_lib  # pylint: disable=g-import-not-at-top
    rows = []
    for i, t in enumerate(self.temperatures):
      labels = None
      if self.model.conditional:
        labels = (self.labels if self.labels is not None else
                  tf.range(self.per_row) % self.model.glow.num_classes)
      x = self.model.sample(self.per_row, temperature=t,
                            seed=[self.seed, i], labels=labels)
      rows.append(data_lib.postprocess(x, self.n_bins))
    return np.stack([np.asarray(r) for r in rows])

  def write(self, tag, step):
    from tfp_glow import images as images_lib  # pylint: disable=g-import-not-at-top
    images = self.grid()
    flat = images.reshape((-1,) + images.shape[2:])
    os.makedirs(self.png_dir, exist_ok=True)
    path = os.path.join(self.png_dir, f'{tag}.png')
    images_lib.save_grid_png(flat, path, nrow=self.per_row)
    if self._writer is not None:
      with self._writer.as_default():
        for t, row in zip(self.temperatures, images):
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
