"""The training program's speed against the bare training step.

`measure` answers: how much does everything around the step cost, i.e.
`GlowModel.fit` with the training program's callbacks, its optimizer (Adam,
the warmup schedule, Polyak averaging), its metrics and its tf.data pipeline,
against the bare step of the benchmark (`models.TfpGlowModel.train`: the
gradient and an Adam update on one fixed batch), in the same compile mode?

What runs, per mode: the configuration's model built as `bin/train.py`
builds it (`run_dir.build_model`), compiled with the program's default recipe
(`run_dir.DEFAULTS`), fitted on synthetic 8-bit images of the configuration's
shape written as PNGs to a temporary folder and read by the program's own
pipeline (`data.load('folder:...')`: decode, dequantisation noise, shuffling,
prefetch; 10 % held out for validation, so every epoch is validated as in the
program), with the program's callbacks, in the program's order (see
`program_callbacks`): TerminateOnNaN, Backup, SwapEMAWeights, the latest and
best Checkpoints, SampleGrid, TensorBoard, and Keras's progress bar
(verbose=1, to a non-terminal). The closest reproducible set: the same
classes and settings, built here rather than by the program's `main`.

Interleaving: at the start of every epoch, the bare step runs as many steps
as an epoch has, timed, then the epoch runs; the two alternate in the same
process, so a change of the machine's load falls on both. An epoch's time
runs from the end of that bare block to the start of the next epoch's, so it
includes the epoch's validation and every `on_epoch_end` (checkpoints,
backup, sample grids). The first epoch (tracing and compiling) is left out.
Reported per mode: the median over epochs of ms per step, both ways, their
ratio and the program's steps/s; and the fit's split into its steps (first
step's start to last step's end: pipeline, EMA, metrics, per-step callbacks)
and its per-epoch work (the rest: validation, checkpoints, EMA swaps), so the
ratio at another epoch length follows: (S * steps_ms + epoch_work) / (S *
bare_ms).
"""

import contextlib
import io
import math
import os
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tfp_glow import data as data_lib
from tfp_glow import run_dir
from tfp_glow.benchmark import models
from tfp_glow.benchmark import timing
from tfp_glow.keras import callbacks as callbacks_lib
from tfp_glow.keras import model as model_lib

__all__ = ['measure', 'program_callbacks', 'write_images']

VALIDATION_FRACTION = 0.1


def write_images(folder, cfg, count, seed=0):
  """`count` random 8-bit PNGs of the configuration's shape in `folder`."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  s, c = cfg.image_size, cfg.channels
  for i in range(count):
    pixels = rng.integers(0, 256, size=(s, s, c), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if c == 1 else pixels).save(
        os.path.join(folder, f'{i:05d}.png'))
  return folder


def program_callbacks(model, model_dir, n_bins, seed=0):
  """The callbacks `bin/train.py` uses by default, in its order (defaults:
  --ema, --validation, --sample_every=10, four temperatures, TensorBoard)."""
  log_dir = os.path.join(model_dir, 'logs')
  return [
      keras.callbacks.TerminateOnNaN(),
      callbacks_lib.Backup(os.path.join(model_dir, 'backup')),
      callbacks_lib.SwapEMAWeights(swap_on_epoch=True),
      callbacks_lib.Checkpoint(run_dir.checkpoint_path(model_dir, 'latest')),
      callbacks_lib.Checkpoint(run_dir.checkpoint_path(model_dir, 'best'),
                               monitor='val_bpd'),
      model_lib.SampleGrid(os.path.join(model_dir, 'samples'), n_bins,
                           temperatures=(0.0, 0.5, 0.7, 1.0), every_epochs=10,
                           log_dir=log_dir, seed=seed),
      keras.callbacks.TensorBoard(log_dir),
  ]


class _Interleave(keras.callbacks.Callback):
  """Runs the bare step `steps` times at the start of each epoch; records
  the bare ms/step, and the previous epoch's ms/step in all (`program_ms`)
  and over its steps alone (`steps_ms`: first step's start to last step's
  end; the rest of the epoch is its per-epoch work, `epoch_work_s`)."""

  def __init__(self, bare_fn, args, steps):
    super().__init__()
    self.bare_fn, self.args, self.steps = bare_fn, args, steps
    self.bare_ms, self.program_ms, self.steps_ms = [], [], []
    self.epoch_work_s = []
    self._epoch_start = self._first_step = self._last_step = None

  def on_train_batch_begin(self, batch, logs=None):
    if self._first_step is None:
      self._first_step = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    # Keras calls this after the step's outputs are fetched (TerminateOnNaN
    # reads the loss every step), so this is when the step ended.
    self._last_step = time.perf_counter()

  def _end_epoch(self):
    if self._epoch_start is not None:
      total = time.perf_counter() - self._epoch_start
      steps = self._last_step - self._first_step
      self.program_ms.append(total * 1e3 / self.steps)
      self.steps_ms.append(steps * 1e3 / self.steps)
      self.epoch_work_s.append(total - steps)
    self._first_step = self._last_step = None

  def on_epoch_begin(self, epoch, logs=None):
    self._end_epoch()
    start = time.perf_counter()
    for _ in range(self.steps):
      timing.sync(self.bare_fn(*self.args))
    self.bare_ms.append((time.perf_counter() - start) * 1e3 / self.steps)
    self._epoch_start = time.perf_counter()

  def on_train_end(self, logs=None):
    self._end_epoch()


def measure(cfg, modes, epochs=4, steps_per_epoch=20, seed=0, log=print):
  """The training program's ms/step against the bare step's, per mode.

  Returns a dict: 'epochs', 'steps_per_epoch', 'images', and per mode
  {'program_ms', 'bare_ms' (medians over the epochs after the first),
  'ratio', 'program_steps_per_s', 'program_ms_epochs', 'bare_ms_epochs'}.
  """
  if epochs < 2:
    raise ValueError(f'epochs must be >= 2 (the first is compilation), got '
                     f'{epochs}.')
  train_images = steps_per_epoch * cfg.batch_size
  count = int(math.ceil(train_images / (1 - VALIDATION_FRACTION)))
  out = dict(epochs=epochs, steps_per_epoch=steps_per_epoch, images=count,
             validation_fraction=VALIDATION_FRACTION)
  x_all = models.images(cfg, seed)
  with tempfile.TemporaryDirectory(prefix='train_program_') as tmp:
    folder = write_images(os.path.join(tmp, 'images'), cfg, count, seed)
    dataset = data_lib.FOLDER_PREFIX + folder
    translate = 1 if cfg.preset == 'digits' else 0  # as the program's default
    for mode in modes:
      keras.utils.set_random_seed(seed)
      train_ds, info = data_lib.load(
          dataset, 'train', batch_size=cfg.batch_size, shuffle=True, seed=seed,
          translate=translate, translate_prob=run_dir.DEFAULTS['translate_prob'],
          validation_fraction=VALIDATION_FRACTION)
      val_ds, _ = data_lib.load(dataset, 'validation', batch_size=256,
                                shuffle=False, seed=seed + 1,
                                validation_fraction=VALIDATION_FRACTION)
      model_config = run_dir.model_config(
          info, dataset=dataset, image_size=None, n_bits=None,
          levels=cfg.levels, steps_per_level=cfg.steps_per_level,
          hidden_width=cfg.hidden_width,
          **{k: run_dir.DEFAULTS[k] for k in (
              'coupling', 'permutation', 'learn_top', 'conditional')})
      model = run_dir.build_model(model_config, seed=seed)
      d = run_dir.DEFAULTS
      optimizer = keras.optimizers.Adam(
          learning_rate=model_lib.WarmupSchedule(d['learning_rate'],
                                                 d['warmup_steps']),
          use_ema=d['ema'], ema_momentum=d['ema_momentum'])
      model.compile(optimizer=optimizer, jit_compile=mode == 'xla')
      bare = models.build('tfp_glow', cfg, x_all, seed=seed)
      interleave = _Interleave(bare.function('train', mode),
                               (tf.constant(x_all[:cfg.batch_size]),),
                               steps_per_epoch)
      model_dir = os.path.join(tmp, f'run_{mode}')
      callbacks = [interleave] + program_callbacks(model, model_dir,
                                                   info.n_bins, seed)
      # The progress bar as the program shows it when its output is not a
      # terminal (kept out of the benchmark's own output).
      with contextlib.redirect_stdout(io.StringIO()):
        model.fit(train_ds.repeat(), epochs=epochs,
                  steps_per_epoch=steps_per_epoch, validation_data=val_ds.cache(),
                  callbacks=callbacks, verbose=1, shuffle=False)
      row = dict(program_ms_epochs=interleave.program_ms[1:],
                 bare_ms_epochs=interleave.bare_ms[1:],
                 steps_ms_epochs=interleave.steps_ms[1:],
                 epoch_work_s_epochs=interleave.epoch_work_s[1:])
      for key in ('program_ms', 'bare_ms', 'steps_ms', 'epoch_work_s'):
        row[key] = statistics.median(row[key + '_epochs'])
      row['ratio'] = row['program_ms'] / row['bare_ms']
      row['steps_ratio'] = row['steps_ms'] / row['bare_ms']
      row['program_steps_per_s'] = 1e3 / row['program_ms']
      out[mode] = row
      log(f"train_program {mode}: fit {row['program_ms']:.1f} ms/step "
          f"({row['steps_ms']:.1f} ms per step + {row['epoch_work_s']:.2f} s "
          f"per epoch), bare step {row['bare_ms']:.1f} ms/step, ratio "
          f"{row['ratio']:.3f} ({row['steps_ratio']:.3f} over the steps)")
      del model, bare
  return out
