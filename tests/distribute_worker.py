"""One tiny, deterministic Glow training run under a tf.distribute strategy.

The worker program of `tests/distribute_test.py` (run as a subprocess, one per
replica set or per worker): the same model, seed, data and global batch in
every mode, so the runs compare parameter for parameter.

  python tests/distribute_worker.py --mode=single --out=DIR
  python tests/distribute_worker.py --mode=mirrored --out=DIR      # 2 logical CPUs
  TF_CONFIG=... python tests/distribute_worker.py --mode=multi_worker --out=DIR

Writes `DIR/result_<task>.npz`: the flow's variables right after ActNorm's
data-dependent init (`init_<i>`) and after training (`final_<i>`), the losses
of each epoch run (`history`), and `epochs_run`, `is_chief`.

Data: the embedded digits, not shuffled, not dequantised (every value at its
bin centre), `--steps` batches of the global batch `--batch` per epoch, the
same every epoch: every mode sees the same global batches in the same order.
Multi-worker runs shard it with `AutoShardPolicy.DATA`, so each global batch
is split between the workers (its union is the single-process batch).

Checkpoints go through `tfp_glow.keras.callbacks` (`Backup`, `Checkpoint`),
the callbacks `bin/train.py` uses: `--backup_dir` (shared by the workers) and
`--ckpt_dir` (`latest.weights.h5` every epoch, `best.weights.h5` on val_bpd
with `--validate`).

`--die_at=EPOCH:BATCH` with `--die_task=T` (multi-worker; T=0 is the chief):
the first time task T reaches that batch it writes `DIR/died` and kills itself
with SIGKILL; run again with the same command, it trains on (the marker file
stops it dying twice).
"""

import argparse
import json
import os
import signal

SHAPE = (8, 8, 1)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--mode', choices=['single', 'mirrored', 'multi_worker'],
                 required=True)
  p.add_argument('--out', required=True)
  p.add_argument('--epochs', type=int, default=3)
  p.add_argument('--steps', type=int, default=2, help='batches per epoch')
  p.add_argument('--batch', type=int, default=16, help='global batch')
  p.add_argument('--init_batch', type=int, default=32)
  p.add_argument('--nonchief_init_batch', type=int, default=None,
                 help='a different init batch on non-chief workers (their '
                      'ActNorm init must be replaced by the chief\'s)')
  p.add_argument('--validate', action='store_true',
                 help='validation_data: the first batch')
  p.add_argument('--lr', type=float, default=1e-3)
  p.add_argument('--backprop', choices=['store', 'invert'], default='store',
                 help="the Glow's backprop mode (same updates either way)")
  p.add_argument('--backup_dir', default=None,
                 help='Backup folder (shared by the workers)')
  p.add_argument('--ckpt_dir', default=None,
                 help='Checkpoint folder; "{task}" is replaced by the task '
                      'index')
  p.add_argument('--collective_timeout', type=float, default=None)
  p.add_argument('--die_at', default=None, help='EPOCH:BATCH')
  p.add_argument('--die_task', type=int, default=1,
                 help='the task that dies at --die_at (0: the chief)')
  return p.parse_args(argv)


def task_index():
  cfg = json.loads(os.environ.get('TF_CONFIG') or '{}')
  return int(cfg.get('task', {}).get('index', 0))


def main(argv=None):
  args = parse_args(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if args.mode == 'mirrored':
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

  from tfp_glow.keras import distribute  # pylint: disable=g-import-not-at-top
  if args.mode == 'multi_worker':
    # First thing: MultiWorkerMirroredStrategy starts the cluster's server.
    strategy = distribute.make_strategy(
        'multi_worker', collective_timeout=args.collective_timeout)
  elif args.mode == 'mirrored':
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  else:
    strategy = distribute.make_strategy('default')

  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfp_glow import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_glow import distribution as dist_lib  # pylint: disable=g-import-not-at-top
  from tfp_glow.keras import callbacks as callbacks_lib  # pylint: disable=g-import-not-at-top
  from tfp_glow.keras import model as model_lib  # pylint: disable=g-import-not-at-top

  ds, info = data_lib.load('digits', 'train', batch_size=args.batch,
                           shuffle=False, dequantize=False, drop_remainder=True,
                           seed=0)
  ds = ds.take(args.steps)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  ds = ds.with_options(options)

  task = task_index()
  chief = distribute.is_chief(strategy)
  init_batch = args.init_batch
  if args.nonchief_init_batch and not chief:
    init_batch = args.nonchief_init_batch

  with strategy.scope():
    dist = dist_lib.glow_distribution(SHAPE, levels=2, steps_per_level=2,
                                      hidden_width=16, seed=0,
                                      backprop=args.backprop)
    model = model_lib.GlowModel(dist, n_bins=info.n_bins,
                               init_batch_size=init_batch)
    # Graph mode everywhere (what Keras's 'auto' gave on a CPU): the one-device
    # reference then runs the same kind of step as the replicas, unmeasured.
    model.compile(optimizer=keras.optimizers.Adam(args.lr), jit_compile=False)

  variables = model.glow.variables
  snapshots = {}

  class Record(keras.callbacks.Callback):

    def on_train_begin(self, logs=None):
      snapshots['init'] = [np.array(v.numpy()) for v in variables]

  class Die(keras.callbacks.Callback):

    def __init__(self, epoch, batch):
      super().__init__()
      self.epoch, self.batch, self.current = epoch, batch, -1

    def on_epoch_begin(self, epoch, logs=None):
      self.current = epoch

    def on_train_batch_begin(self, batch, logs=None):
      marker = os.path.join(args.out, 'died')
      if (self.current, batch) == (self.epoch, self.batch) and not (
          os.path.exists(marker)):
        with open(marker, 'w') as f:
          f.write(f'{task} {self.epoch}:{self.batch}\n')
        os.kill(os.getpid(), signal.SIGKILL)

  callbacks = [Record()]
  if args.backup_dir:
    callbacks.append(callbacks_lib.Backup(args.backup_dir))
  if args.ckpt_dir:
    ckpt_dir = args.ckpt_dir.replace('{task}', str(task))
    callbacks.append(callbacks_lib.Checkpoint(
        os.path.join(ckpt_dir, 'latest.weights.h5')))
    if args.validate:
      callbacks.append(callbacks_lib.Checkpoint(
          os.path.join(ckpt_dir, 'best.weights.h5'), monitor='val_bpd'))
  if args.die_at and task == args.die_task:
    callbacks.append(Die(*(int(s) for s in args.die_at.split(':'))))

  history = model.fit(ds, epochs=args.epochs, callbacks=callbacks, verbose=0,
                      validation_data=ds.take(1) if args.validate else None)
  losses = history.history.get('bpd', [])
  val_losses = history.history.get('val_bpd', [])
  os.makedirs(args.out, exist_ok=True)
  result = {f'init_{i}': a for i, a in enumerate(snapshots['init'])}
  result.update({f'final_{i}': np.array(v.numpy())
                 for i, v in enumerate(variables)})
  np.savez(os.path.join(args.out, f'result_{task}.npz'),
           history=np.array(losses, np.float64),
           val_history=np.array(val_losses, np.float64),
           epochs_run=len(losses), is_chief=chief,
           num_replicas=strategy.num_replicas_in_sync, **result)
  print(f'done: task {task}, {strategy.num_replicas_in_sync} replicas, '
        f'{len(losses)} epochs, bpd {losses}', flush=True)


if __name__ == '__main__':
  main()
