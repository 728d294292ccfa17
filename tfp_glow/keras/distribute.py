"""tf.distribute helpers for training a GlowModel on several devices or hosts.

Which process writes (`is_chief`), the strategy by name (`make_strategy`), the
chief's values to every worker (`broadcast_from_chief`), and the two
adjustments a custom `train_step` needs under a strategy (`scale_for_replicas`,
`rank1_for_multi_worker`). Kept apart from the model so that the callbacks and
the programs can ask "am I the chief?" without the model.
"""

import os

import tensorflow as tf

__all__ = ['make_strategy', 'is_chief', 'num_workers', 'broadcast_from_chief',
           'scale_for_replicas', 'rank1_for_multi_worker']

STRATEGIES = ('default', 'mirrored', 'multi_worker')


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
  raise ValueError(f'Unknown strategy {name!r}; expected one of '
                   f'{", ".join(STRATEGIES)}.')


def is_chief(strategy=None):
  """Whether this process writes checkpoints: True except on the
  non-chief workers of a multi-worker strategy (`TF_CONFIG`'s `chief`, or
  `worker` 0 when the cluster has no chief).

  One writer per shared folder: several workers renaming files over each other
  would leave whichever finished last, not necessarily a consistent set.
  """
  strategy = strategy or tf.distribute.get_strategy()
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not getattr(resolver, 'task_type', None):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id or 0
  if task_type == 'chief':
    return True
  jobs = resolver.cluster_spec().jobs
  return task_type == 'worker' and task_id == 0 and 'chief' not in jobs


def num_workers(strategy):
  """Worker processes of `strategy` (1 unless multi-worker)."""
  return max(1, strategy.num_replicas_in_sync //
             max(1, len(strategy.extended.worker_devices)))


def broadcast_from_chief(strategy, variables):
  """Gives every worker the chief's values of `variables` (multi-worker only).

  Each worker runs the data-dependent init on its own copy of the whole init
  batch; should their first batches differ (an unseeded shuffle), the workers'
  ActNorms would start apart and never meet. A SUM all-reduce of the first
  replica's values (zeros elsewhere) is an exact broadcast. Every worker must
  call it (it is a collective).
  """
  if (not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
      or num_workers(strategy) < 2 or not variables):
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


def scale_for_replicas(loss):
  """`loss / replicas`: under a strategy each replica sees 1/n of the global
  batch and the optimizer SUMs the replicas' gradients, so the per-replica mean
  scaled by 1/n gives the update of one device on the whole global batch (what
  Keras's own `train_step` does)."""
  n = tf.distribute.get_strategy().num_replicas_in_sync
  return loss / tf.cast(n, loss.dtype) if n > 1 else loss


def rank1_for_multi_worker(logs):
  """Keras 3 reduces a multi-worker step's outputs with
  `strategy.reduce('MEAN', v, axis=0)`, which fails on scalars ("Invalid
  reduction dimension 0 for input with 0 dimensions", tensorflow#72388): give
  them shape [1] there; the reduced logs are scalars again.

  The test is Keras's own (`_collective_all_reduce_multi_worker` in
  keras/src/backend/tensorflow/trainer.py), which asks TF's private
  `_in_multi_worker_mode`; tests/distribute_test.py fails if either changes."""
  strategy = tf.distribute.get_strategy()
  in_multi_worker = getattr(strategy.extended, '_in_multi_worker_mode', None)
  if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
      and in_multi_worker is not None and in_multi_worker()):
    return {k: tf.reshape(v, [1]) for k, v in logs.items()}
  return logs
