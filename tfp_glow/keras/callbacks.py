"""The checkpoint callbacks: atomic, chief-only, never a non-finite model.

One set, used by `bin/train.py` and by the distributed tests alike:

* `Checkpoint(path, monitor=None)`: the weights after an epoch (every epoch, or
  only when `monitor` improves), e.g. `checkpoints/latest.weights.h5` and
  `checkpoints/best.weights.h5`.
* `Backup(backup_dir)`: the training state after every epoch (weights,
  optimizer state, the epoch), restored when training begins again, so a
  crashed run resumes after its last finished epoch; removed when training
  finishes.
* `History(path, start)`: every epoch's logs with the wall-clock seconds and
  the optimizer step, rewritten as one JSON file after each epoch (the
  points of a time-to-quality curve, `bin/curve.py`).

What they guarantee, and why:

* **Atomic.** Every file is written under a temporary name in the same folder,
  flushed to disk and renamed over the real name (`os.replace`): a crash or a
  SIGKILL at any moment leaves either the previous file or the new one, never a
  half-written one. The epoch and the logs of a weights file are stored inside
  it (an HDF5 attribute, written before the rename), so a weights file and its
  epoch can never disagree; the `.json` beside it is a copy for people.
* **Chief-only.** Under a multi-worker strategy every worker computes the same
  weights, but only the chief (`distribute.is_chief`) writes: one writer per
  shared folder. Every worker reads the backup when training begins.
* **Finite.** An epoch whose logs or weights hold NaN/Inf (e.g. the one
  `TerminateOnNaN` stopped) is never saved, so the last good files stay; the
  backup is then kept at the end of training, so that rerunning (e.g. with a
  lower learning rate) resumes from the last good epoch.

Only public Keras API: `Callback`, `Model.save_weights` / `load_weights` (a
Keras 3 `.weights.h5` holds the optimizer's variables too: iterations,
moments, EMA), `Optimizer.build`. The first epoch of a resumed run is passed to
`fit(initial_epoch=...)`: `GlowModel.fit` does it from `Backup.initial_epoch()`;
with another model, pass it yourself. `Backup` refuses to train epochs that its
backup already holds.
"""

import json
import math
import os
import re
import shutil
import time

import h5py
import keras
import numpy as np
import tensorflow as tf

from tfp_glow.keras import distribute

__all__ = ['Checkpoint', 'Backup', 'History', 'TimeLimit', 'TimeBudget',
           'SwapEMAWeights', 'resume_epoch',
           'all_finite',
           'save_weights', 'load_weights', 'write_json', 'read_info',
           'WEIGHTS_SUFFIX']

WEIGHTS_SUFFIX = '.weights.h5'
_INFO_ATTR = 'tfp_glow_info'


# --- atomic files -----------------------------------------------------------------


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _fsync(path):
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _replace_atomically(path, write, suffix=''):
  """Calls `write(tmp)` for a temporary file beside `path`, then renames it.

  `suffix` stays at the end of the temporary name (Keras wants `.weights.h5`).
  Temporaries left by a killed writer (its pid is gone) are removed first.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  name = os.path.basename(path)
  stem = name[:-len(suffix)] if suffix and name.endswith(suffix) else name
  stale = re.compile(re.escape(stem) + r'\.tmp(\d+)' + re.escape(suffix) + '$')
  for other in os.listdir(folder):
    match = stale.match(other)
    if match and not _pid_alive(int(match.group(1))):
      try:
        os.remove(os.path.join(folder, other))
      except FileNotFoundError:
        pass
  tmp = os.path.join(folder, f'{stem}.tmp{os.getpid()}{suffix}')
  try:
    write(tmp)
    _fsync(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  try:
    _fsync(folder)  # the rename itself survives a power cut
  except OSError:
    pass  # a filesystem that cannot sync a folder; the rename is done


def write_json(path, obj):
  """Writes `obj` as JSON, atomically (temporary file + `os.replace`)."""
  text = json.dumps(obj, indent=2, sort_keys=True) + '\n'

  def write(tmp):
    with open(tmp, 'w') as f:
      f.write(text)

  _replace_atomically(path, write)


def save_weights(model, path, info=None):
  """`model.save_weights(path)`, atomically; `info` (a JSON-able dict) is stored
  inside the file, so the weights and what is said about them go together."""
  if not path.endswith(WEIGHTS_SUFFIX):
    raise ValueError(f'A weights path must end in {WEIGHTS_SUFFIX}, got '
                     f'{path!r}.')

  def write(tmp):
    model.save_weights(tmp, overwrite=True)
    if info is not None:
      with h5py.File(tmp, 'r+') as f:
        f.attrs[_INFO_ATTR] = json.dumps(info, sort_keys=True)

  _replace_atomically(path, write, suffix=WEIGHTS_SUFFIX)


def load_weights(model, path):
  """`model.load_weights(path)`, with an error that says what to do when
  the file does not fit the model.

  The usual cause: a checkpoint written before tfp_glow kept a level's K
  steps in `[K, ...]` variables (tfp_glow.bijectors.stacked) holds one
  variable per step and parameter, which the current model does not have;
  such a file cannot be loaded (retrain, or read it with the tfp_glow that
  wrote it). A different architecture gives the same mismatch.
  """
  try:
    model.load_weights(path)
  except ValueError as e:
    raise ValueError(
        f'{path} does not fit this model\'s variables. A checkpoint written '
        'before tfp_glow stored each level\'s steps in [K, ...] variables '
        '(one variable per step and parameter) cannot be loaded into the '
        'current model: train again, or use the tfp_glow version that wrote '
        'it. (Otherwise the model was built with another architecture than '
        f'the one that was saved.) Keras said: {e}') from e


def read_info(path):
  """The `info` dict stored in a weights file by `save_weights` (None if none)."""
  with h5py.File(path, 'r') as f:
    text = f.attrs.get(_INFO_ATTR)
  if text is None:
    return None
  return json.loads(text.decode() if isinstance(text, bytes) else text)


def _info_path(path):
  return path[:-len(WEIGHTS_SUFFIX)] + '.json'


def _float_logs(logs):
  out = {}
  for key, value in (logs or {}).items():
    try:
      out[key] = float(value)
    except (TypeError, ValueError):
      continue
  return out


def all_finite(logs=None, variables=()):
  """True when every number in `logs` and every float of `variables` is finite."""
  for value in _float_logs(logs).values():
    if not math.isfinite(value):
      return False
  for v in variables:
    a = np.asarray(v.numpy() if hasattr(v, 'numpy') else v)
    if a.dtype.kind == 'f' and not np.all(np.isfinite(a)):
      return False
  return True


def _writes(model):
  return distribute.is_chief(model.distribute_strategy)


# --- the callbacks ------------------------------------------------------------------


class Checkpoint(keras.callbacks.Callback):
  """Saves the weights at each epoch end: atomic, chief-only, finite-only.

  With `monitor` (e.g. 'val_bpd'), only when it improves (lower is better) on
  the best so far. The epoch and the logs are stored in the file (see
  `read_info`) and copied to `<path without .weights.h5>.json`; a resumed run
  reads the best value back, so it only replaces the file with a better one.
  An epoch whose logs or weights hold NaN/Inf is never saved
  (`skipped_non_finite` becomes True), so the last good checkpoint stays.

  Args:
    path: the weights file, ending in `.weights.h5`.
    monitor: a log key to minimise, or None to save every epoch.
  """

  def __init__(self, path, monitor=None):
    super().__init__()
    if not path.endswith(WEIGHTS_SUFFIX):
      raise ValueError(f'path must end in {WEIGHTS_SUFFIX}, got {path!r}.')
    self.path = path
    self.info_path = _info_path(path)
    self.monitor = monitor
    self.best = math.inf
    self.skipped_non_finite = False
    if monitor and os.path.exists(path):
      info = read_info(path) or {}
      self.best = float(info.get('logs', {}).get(monitor, math.inf))

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    if not all_finite(logs, self.model.weights):
      self.skipped_non_finite = True
      return
    if self.monitor:
      if self.monitor not in logs:
        raise KeyError(f'Checkpoint: monitor {self.monitor!r} is not in the '
                       f'logs ({sorted(logs)}); is there validation data?')
      value = float(logs[self.monitor])
      if not value < self.best:
        return
      self.best = value
    if not _writes(self.model):
      return
    info = {'epoch': epoch + 1, 'logs': _float_logs(logs)}
    save_weights(self.model, self.path, info)
    write_json(self.info_path, {'epoch': epoch + 1, **info['logs']})


class Backup(keras.callbacks.Callback):
  """Backs up the training state every epoch; restores it when training begins.

  The state is one file, `backup_dir/backup.weights.h5`: the model's weights,
  the optimizer's variables (step count, moments, EMA averages) and, inside,
  the number of finished epochs; `backup_dir/backup.json` is a copy of that
  number for people. Only the chief writes; every worker restores, so
  `backup_dir` must be one folder all workers see.

  To resume, the same `fit` is called again: `initial_epoch()` says where
  training stops before (`GlowModel.fit` passes it as `initial_epoch` by
  itself), and at `on_train_begin` the weights and optimizer state are loaded.
  If training then begins at an epoch the backup already holds, it raises
  rather than train those epochs again on the newer weights.

  When training ends, the backup is removed, except after an epoch with
  non-finite logs or weights (`non_finite`): that backup is kept, with the last
  good epoch, for a rerun.
  """

  STATE_NAME = 'backup' + WEIGHTS_SUFFIX
  INFO_NAME = 'backup.json'

  def __init__(self, backup_dir):
    super().__init__()
    if not backup_dir:
      raise ValueError(f'backup_dir must be a folder, got {backup_dir!r}.')
    self.backup_dir = backup_dir
    self.state_path = os.path.join(backup_dir, self.STATE_NAME)
    self.non_finite = False
    self.restored_epoch = 0
    self._first_epoch = None

  def initial_epoch(self):
    """The epochs the backup holds (0 when there is none): the first epoch to
    train when resuming, for `fit(initial_epoch=...)`."""
    if not os.path.exists(self.state_path):
      return 0
    info = read_info(self.state_path)
    if not info or 'epoch' not in info:
      raise ValueError(f'{self.state_path} holds no epoch: not a backup written '
                       'by tfp_glow.keras.callbacks.Backup.')
    return int(info['epoch'])

  def on_train_begin(self, logs=None):
    self._first_epoch = None
    self.restored_epoch = self.initial_epoch()
    if not self.restored_epoch:
      return
    optimizer = self.model.optimizer
    if optimizer is not None and not optimizer.built:
      # The optimizer's variables must exist for load_weights to fill them.
      with self.model.distribute_strategy.scope():
        optimizer.build(self.model.trainable_variables)
    load_weights(self.model, self.state_path)

  def on_epoch_begin(self, epoch, logs=None):
    if self._first_epoch is None:
      self._first_epoch = epoch
      if epoch < self.restored_epoch:
        raise ValueError(
            f'Backup: {self.state_path} holds {self.restored_epoch} finished '
            f'epochs, but fit() began at epoch {epoch}; pass '
            f'initial_epoch={self.restored_epoch} (Backup.initial_epoch()) to '
            'fit, as GlowModel.fit does.')

  def on_epoch_end(self, epoch, logs=None):
    variables = list(self.model.weights)
    if self.model.optimizer is not None:
      variables += list(self.model.optimizer.variables)
    if not all_finite(logs, variables):
      self.non_finite = True
      return
    if not _writes(self.model):
      return
    info = {'epoch': epoch + 1, 'logs': _float_logs(logs)}
    save_weights(self.model, self.state_path, info)
    write_json(os.path.join(self.backup_dir, self.INFO_NAME), info)

  def on_train_end(self, logs=None):
    if not self.non_finite and _writes(self.model) and os.path.isdir(
        self.backup_dir):
      shutil.rmtree(self.backup_dir)


class History(keras.callbacks.Callback):
  """Writes each epoch's logs, with when and after how many steps, to JSON.

  Keras's own `History` keeps the logs in memory and without times; a
  time-to-quality curve (held-out bits/dim against minutes of training)
  needs, per epoch, the wall-clock time at which the evaluated weights
  existed. After every epoch, `path` is rewritten (atomically, chief only)
  as `{"epochs": [...]}`, one entry per epoch:

    epoch         1-based, as the checkpoints count;
    step          the optimizer's step count at the end of the epoch;
    elapsed_s     seconds from `start` to the end of the epoch's training
                  steps, i.e. when the weights that were validated existed
                  (validation, checkpoints and sample grids of EARLIER epochs
                  are inside it, this epoch's are not);
    epoch_end_s   seconds from `start` to the end of the epoch's work
                  (`on_epoch_end`, after the callbacks listed before this);
    eval_s        seconds spent in validation so far (all epochs);
    and every number of the epoch's logs (bpd, val_bpd, learning_rate, ...).

  `start` is a `time.monotonic()` reading (the training program passes the
  one its `--time_limit` counts from), default: when training begins. A
  resumed run keeps the entries of the epochs before it (their times are
  those of the earlier process).
  """

  def __init__(self, path, start=None):
    super().__init__()
    self.path = path
    self.start = start
    self.epochs = []
    self._eval_s = 0.0
    self._test_begin = None
    self._steps_end = None

  def on_train_begin(self, logs=None):
    if self.start is None:
      self.start = time.monotonic()
    self.epochs = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.epochs = list(json.load(f).get('epochs', []))

  def on_epoch_begin(self, epoch, logs=None):
    # Entries of this epoch and later come from an older process: replaced.
    self.epochs = [e for e in self.epochs if e.get('epoch', 0) <= epoch]
    self._steps_end = None

  def on_test_begin(self, logs=None):
    self._test_begin = time.monotonic()
    if self._steps_end is None:
      self._steps_end = self._test_begin

  def on_test_end(self, logs=None):
    if self._test_begin is not None:
      self._eval_s += time.monotonic() - self._test_begin
      self._test_begin = None

  def on_epoch_end(self, epoch, logs=None):
    now = time.monotonic()
    steps_end = self._steps_end if self._steps_end is not None else now
    optimizer = self.model.optimizer
    entry = {'epoch': epoch + 1,
             'step': (int(optimizer.iterations.numpy())
                      if optimizer is not None else None),
             'elapsed_s': steps_end - self.start,
             'epoch_end_s': now - self.start,
             'eval_s': self._eval_s}
    entry.update(_float_logs(logs))
    self.epochs.append(entry)
    if _writes(self.model):
      write_json(self.path, {'epochs': self.epochs})


class TimeLimit(keras.callbacks.Callback):
  """Stops training at the end of the step that crosses a wall-clock limit.

  Keras 3 has no time-based stop. After each training step, if `minutes`
  have passed since `start` (a `time.monotonic()` reading; default: when
  training begins), `model.stop_training` is set: Keras then ends the epoch
  in progress early, runs its validation and calls every `on_epoch_end` (so
  `Checkpoint` and `Backup` write as after a full epoch), and stops.

  The clock is read once per step, on the host; no tensor is fetched. It does
  not set `async_safe`, so Keras calls it right after each step, and the step
  that crosses the limit is the last one (an asynchronously dispatched
  callback could only stop a step later).

  Attributes:
    stopped: True once the limit stopped training.
    stopped_epoch, stopped_step: where (0-based epoch, 1-based step in it).
    elapsed_s: seconds from `start` to the stop (or to the end of training).
  """

  def __init__(self, minutes, start=None):
    super().__init__()
    if isinstance(minutes, bool) or not isinstance(
        minutes, (int, float)) or not minutes > 0 or not math.isfinite(minutes):
      raise ValueError(f'minutes must be a number > 0, got {minutes!r}.')
    self.minutes = float(minutes)
    self.start = start
    self.stopped = False
    self.stopped_epoch = self.stopped_step = None
    self.elapsed_s = None
    self._epoch = 0

  def on_train_begin(self, logs=None):
    if self.start is None:
      self.start = time.monotonic()
    self.stopped = False

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    if self.stopped:
      return
    elapsed = time.monotonic() - self.start
    if elapsed >= 60.0 * self.minutes:
      self.stopped = True
      self.stopped_epoch, self.stopped_step = self._epoch, batch + 1
      self.elapsed_s = elapsed
      self.model.stop_training = True

  def on_train_end(self, logs=None):
    if not self.stopped and self.start is not None:
      self.elapsed_s = time.monotonic() - self.start


class TimeBudget(keras.callbacks.Callback):
  """Shapes a decaying learning rate to a wall-clock budget.

  With a budget of `minutes` (counted from `start`, a `time.monotonic()` reading,
  as `TimeLimit` counts), the step at which the rate must reach zero is not known
  in advance: it is the step count when the time runs out. Every `update_every`
  steps this callback estimates it from the measured pace,

      total = steps + (60 * minutes - elapsed) / seconds_per_step,

  `seconds_per_step` the wall time per step since the first `skip_steps` steps of
  this `fit` (compilation and the input pipeline's start excluded; once an epoch
  has ended, its validation and checkpoints are in the pace too), capped at
  `max_steps` (the `--epochs` budget), and hands it to the schedule's
  `set_total_steps` (e.g. `tfp_glow.WarmupSchedule`). So the rate follows the
  schedule's warmup and decay and reaches (near) zero when `TimeLimit` stops the
  run. The clock is read on the host once a step; no tensor is fetched.

  Attributes:
    estimates: `[(step, estimated total steps)]`, one per epoch end and the last.
    steps: steps taken (optimizer iterations) after the last batch seen.
  """

  def __init__(self, schedule, minutes, start=None, max_steps=None, update_every=10,
               skip_steps=5):
    super().__init__()
    if not callable(getattr(schedule, 'set_total_steps', None)):
      raise TypeError('schedule must have set_total_steps (e.g. a '
                      f'tfp_glow.WarmupSchedule with total_steps), got {schedule!r}.')
    if isinstance(minutes, bool) or not isinstance(
        minutes, (int, float)) or not minutes > 0 or not math.isfinite(minutes):
      raise ValueError(f'minutes must be a number > 0, got {minutes!r}.')
    self.schedule = schedule
    self.minutes = float(minutes)
    self.start = start
    self.max_steps = max_steps
    self.update_every = int(update_every)
    self.skip_steps = int(skip_steps)
    self.estimates = []
    self.steps = 0
    self._seen = 0
    self._ref = None
    self._total = None

  def on_train_begin(self, logs=None):
    if self.start is None:
      self.start = time.monotonic()
    self.steps = int(self.model.optimizer.iterations.numpy())  # once, at the start
    self._seen = 0
    self._ref = None

  def _estimate(self, now):
    pace = (now - self._ref[0]) / max(1, self.steps - self._ref[1])
    remaining = 60.0 * self.minutes - (now - self.start)
    total = self.steps + max(0.0, remaining) / max(pace, 1e-9)
    if self.max_steps is not None:
      total = min(total, float(self.max_steps))
    return max(total, float(self.steps))

  def on_train_batch_end(self, batch, logs=None):
    self.steps += 1
    self._seen += 1
    now = time.monotonic()
    if self._seen == self.skip_steps:
      self._ref = (now, self.steps)
    elif self._ref is not None and (
        self._seen - self.skip_steps) % self.update_every == 0:
      self._total = self._estimate(now)
      self.schedule.set_total_steps(self._total)

  def on_epoch_end(self, epoch, logs=None):
    if self._total is not None:
      self.estimates.append((self.steps, round(self._total, 1)))

  def on_train_end(self, logs=None):
    if self._total is not None and (
        not self.estimates or self.estimates[-1][0] != self.steps):
      self.estimates.append((self.steps, round(self._total, 1)))


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
  """Keras's `SwapEMAWeights`, each swap one compiled call.

  Keras swaps eagerly, three assignments per variable: ~1 s per swap for the
  digits model and its ~250 variables on a loaded 2-core CPU, four swaps per
  epoch with `swap_on_epoch=True` and validation (measured, issue 14); as
  one `tf.function` the same swap takes ~30 ms. The swap itself is Keras's
  (`_swap_variables`, traced once): only when it runs differs.
  tests/training_test.py checks that the swapped values are Keras's.
  """

  def __init__(self, swap_on_epoch=False):
    super().__init__(swap_on_epoch=swap_on_epoch)
    self._compiled_swap = None

  def set_model(self, model):
    super().set_model(model)
    self._compiled_swap = None

  def _swap_variables(self):
    if self._compiled_swap is None:
      self._compiled_swap = tf.function(super()._swap_variables)
    self._compiled_swap()


def resume_epoch(callbacks):
  """The first epoch to train given `callbacks`: the largest
  `Backup.initial_epoch()` among them (0 without a backup)."""
  if callbacks is None:
    return 0
  callbacks = getattr(callbacks, 'callbacks', callbacks)  # a CallbackList
  return max([cb.initial_epoch() for cb in callbacks
              if isinstance(cb, Backup)] or [0])
