"""What the programs in bin/ share: defaults, config.json, model rebuilding, checkpoints.

`bin/train.py` writes `config.json` into its model directory; `bin/sample.py`,
`bin/evaluate.py` and `bin/interpolate.py` rebuild the same model from that directory
alone (`load_trained`). Layout of a model directory:

    config.json                  the model/data settings (MODEL_KEYS) and the recipe
    checkpoints/latest.weights.h5  weights after the last finished epoch
    checkpoints/best.weights.h5    weights of the best val_bpd so far (with --validation)
    checkpoints/best.json          epoch and val_bpd of that checkpoint
    backup/                      BackupAndRestore state (resume after a crash); removed
                                 when training finishes
    logs/                        TensorBoard
    samples/epoch_XXXX.png       sample grids, one row per temperature
    results.json                 final test bits/dim, which weights, wall time

Every checkpoint file is written to a temporary name and renamed (`os.replace`), so a
crash or SIGKILL mid-write never leaves a half-written file under the real name.
"""

import json
import math
import os

import keras
import numpy as np

from tfp_glow import data as data_lib
from tfp_glow import distribution as dist_lib
from tfp_glow import training

__all__ = [
    'DEFAULTS', 'MODEL_KEYS', 'CONFIG_NAME', 'checkpoint_path', 'build_model',
    'read_config', 'write_config', 'check_config', 'load_trained',
    'AtomicCheckpoint', 'AtomicBackupAndRestore', 'all_finite',
]

# The architecture and the training recipe, in ONE place: bin/train.py takes its flag
# defaults from here.
DEFAULTS = dict(
    # The recipe was chosen on the digits' validation split (docs/BENCHMARKS.md):
    # the model is small for the data, Polyak averaging (EMA 0.99) and 1-pixel
    # translations of half the images keep it from overfitting 1293 images.
    dataset='digits',
    levels=2,
    steps_per_level=8,
    hidden_width=128,
    coupling='affine',
    permutation='conv',
    learn_top=True,
    conditional=False,
    batch_size=64,
    epochs=100,
    learning_rate=1e-3,
    warmup_steps=200,
    optimizer='adam',
    ema=True,
    ema_momentum=0.99,
    clipnorm=None,
    init_batch_size=256,
    class_loss_weight=0.01,
    translate=None,  # 1 for digits, 0 elsewhere: see resolve_translate
    translate_prob=0.5,
    jit_compile=True,
)

# The settings that define the model (and the data it models): a resumed run must agree
# on every one of them.
MODEL_KEYS = ('dataset', 'image_size', 'n_bits', 'image_shape', 'n_bins', 'levels',
              'steps_per_level', 'hidden_width', 'coupling', 'permutation',
              'learn_top', 'num_classes')
CONFIG_NAME = 'config.json'
CHECKPOINTS = ('latest', 'best')


def checkpoint_path(model_dir, which):
  """`model_dir/checkpoints/{which}.weights.h5` for which in ('latest', 'best')."""
  if which not in CHECKPOINTS:
    raise ValueError(f'which must be one of {CHECKPOINTS}, got {which!r}.')
  return os.path.join(model_dir, 'checkpoints', f'{which}.weights.h5')


def _atomic_write_text(path, text):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path, obj):
  """Writes `obj` as JSON atomically."""
  _atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def read_config(model_dir):
  """The dict in `model_dir/config.json`; a clear error when there is none."""
  path = os.path.join(model_dir, CONFIG_NAME)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} does not exist: {model_dir!r} is not a model directory written by '
        'bin/train.py (pass the --model_dir you trained with).')
  with open(path) as f:
    return json.load(f)


def write_config(model_dir, config):
  write_json(os.path.join(model_dir, CONFIG_NAME), config)


def _normal(value):
  """JSON round trip, so tuples and lists compare equal."""
  return json.loads(json.dumps(value))


def check_config(old, new):
  """Raises ValueError naming every model setting where `new` differs from `old`."""
  diffs = []
  for key in MODEL_KEYS:
    a, b = _normal(old['model'].get(key)), _normal(new['model'].get(key))
    if a != b:
      diffs.append(f'{key}: {a!r} in the model directory, {b!r} now')
  if diffs:
    raise ValueError(
        'The model directory holds a different model; refusing to resume it with '
        'another architecture (' + '; '.join(diffs) + '). Use a new --model_dir, or '
        'the flags it was trained with.')


def model_config(info, *, dataset, image_size, n_bits, levels, steps_per_level,
                 hidden_width, coupling, permutation, learn_top, conditional):
  """The `model` section of config.json, from a loaded dataset's `DatasetInfo`."""
  if conditional and not info.num_classes:
    raise ValueError(f'--conditional needs class labels, but dataset {dataset!r} has '
                     'none (folders: put each class in a subfolder).')
  return dict(
      dataset=dataset, image_size=image_size, n_bits=n_bits,
      image_shape=list(info.image_shape), n_bins=int(info.n_bins), levels=levels,
      steps_per_level=steps_per_level, hidden_width=hidden_width, coupling=coupling,
      permutation=permutation, learn_top=bool(learn_top),
      num_classes=int(info.num_classes) if conditional else None)


def build_model(model, seed=None, init_batch_size=DEFAULTS['init_batch_size'],
                class_loss_weight=DEFAULTS['class_loss_weight'], compute_dtype=None,
                backprop='store'):
  """A fresh (uninitialised) `GlowModel` from the `model` section of config.json.

  `compute_dtype` ('bfloat16' for mixed precision) changes how the coupling
  networks compute, not the weights: a model trained either way loads into either.
  So does `backprop` ('store' or 'invert': how gradients are computed).
  """
  dist = dist_lib.glow_distribution(
      tuple(model['image_shape']), levels=model['levels'],
      steps_per_level=model['steps_per_level'], hidden_width=model['hidden_width'],
      coupling=model['coupling'], permutation=model['permutation'],
      learn_top=model['learn_top'], num_classes=model['num_classes'], seed=seed,
      compute_dtype=compute_dtype, backprop=backprop)
  return training.GlowModel(dist, model['n_bins'], init_batch_size=init_batch_size,
                            class_loss_weight=class_loss_weight)


def load_trained(model_dir, which='best'):
  """Rebuilds the model of `model_dir` and loads a checkpoint into it.

  Args:
    model_dir: a directory written by bin/train.py.
    which: 'best' (falls back to 'latest' when there is no best checkpoint, i.e. the
      run had no validation split) or 'latest'.

  Returns:
    `(model, config, path)`: the GlowModel, the config dict, the weights file loaded.
  """
  config = read_config(model_dir)
  model = build_model(config['model'])
  path = checkpoint_path(model_dir, which)
  if which == 'best' and not os.path.exists(path):
    path = checkpoint_path(model_dir, 'latest')
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'No checkpoint {path}: training in {model_dir!r} has not finished an epoch '
        'yet.')
  model.load_weights(path)
  if not model.initialized:
    raise ValueError(f'{path} holds an uninitialised model (ActNorm never set).')
  return model, config, path


def load_split(config, split, *, batch_size, data_dir=None, download=False, shuffle,
               dequantize=True, seed=None, translate=0, translate_prob=0.5):
  """`data.load` for the dataset of a config.json (labels when conditional)."""
  m = config['model']
  return data_lib.load(m['dataset'], split, data_dir=data_dir, download=download,
                       n_bits=m['n_bits'], image_size=m['image_size'],
                       batch_size=batch_size, shuffle=shuffle, dequantize=dequantize,
                       seed=seed, with_labels=m['num_classes'] is not None,
                       translate=translate, translate_prob=translate_prob)


def resolve_translate(dataset, translate):
  """--translate's default: 1 pixel for the embedded digits, none elsewhere."""
  if translate is not None:
    return translate
  return 1 if dataset == 'digits' else 0


def all_finite(logs=None, model=None):
  """True when every number in `logs` and (if given) every weight of `model` is finite."""
  for value in (logs or {}).values():
    try:
      if not math.isfinite(float(value)):
        return False
    except (TypeError, ValueError):
      continue
  if model is not None:
    for w in model.weights:
      v = np.asarray(w.numpy() if hasattr(w, 'numpy') else w)
      if v.dtype.kind == 'f' and not np.all(np.isfinite(v)):
        return False
  return True


def _is_chief(model):
  """False on the non-chief workers of a multi-worker strategy (they never write)."""
  is_chief = getattr(training, 'is_chief', None)
  return True if is_chief is None else is_chief(model.distribute_strategy)


def save_weights_atomic(model, path):
  """`model.save_weights(path)` through a temporary file and `os.replace`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # Keras wants the suffix `.weights.h5`.
  tmp = path[:-len('.weights.h5')] + f'.tmp{os.getpid()}.weights.h5'
  model.save_weights(tmp, overwrite=True)
  os.replace(tmp, path)


class AtomicCheckpoint(keras.callbacks.Callback):
  """Saves the weights at each epoch end, atomically; never a non-finite model.

  With `monitor` (e.g. 'val_bpd'), only when it improves (lower is better) on the best
  so far; the best value and its epoch go to `<path without .weights.h5>.json`, and a
  resumed run reads them back so it only replaces the checkpoint with a better one.
  An epoch whose logs or weights hold NaN/Inf (e.g. stopped by TerminateOnNaN) is never
  saved, so the last good checkpoint stays.
  """

  def __init__(self, path, monitor=None):
    super().__init__()
    if not path.endswith('.weights.h5'):
      raise ValueError(f'path must end in .weights.h5, got {path!r}.')
    self.path = path
    self.monitor = monitor
    self.info_path = path[:-len('.weights.h5')] + '.json'
    self.best = math.inf
    if monitor and os.path.exists(self.info_path) and os.path.exists(path):
      with open(self.info_path) as f:
        self.best = float(json.load(f)[monitor])
    self.skipped_non_finite = False

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    if not all_finite(logs, self.model):
      self.skipped_non_finite = True
      return
    if not _is_chief(self.model):
      return
    if self.monitor:
      if self.monitor not in logs:
        raise KeyError(f'AtomicCheckpoint: {self.monitor!r} not in the logs '
                       f'({sorted(logs)}); is there validation data?')
      value = float(logs[self.monitor])
      if not value < self.best:
        return
      self.best = value
    save_weights_atomic(self.model, self.path)
    write_json(self.info_path, {'epoch': epoch + 1,
                                **{k: float(v) for k, v in logs.items()}})


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
  """`BackupAndRestore` (per epoch) whose files are written atomically.

  Keras writes the backup in place (a SIGKILL mid-write leaves a damaged file) and the
  weights before the epoch number (a kill between them repeats an epoch on newer
  weights). Here the weights go through a temporary file and `os.replace`, then the
  metadata. An epoch with non-finite logs or weights is not backed up, and then the
  backup is kept at the end of training (not deleted), so that rerunning (e.g. with a
  lower --learning_rate) resumes from the last good epoch.
  """

  def __init__(self, backup_dir):
    super().__init__(backup_dir, save_freq='epoch', delete_checkpoint=True)
    self.non_finite = False

  def on_epoch_end(self, epoch, logs=None):
    if not all_finite(logs, self.model):
      self.non_finite = True
      return
    if not _is_chief(self.model):
      return
    os.makedirs(self.backup_dir, exist_ok=True)
    save_weights_atomic(self.model, self._weights_path)
    write_json(self._training_metadata_path, {'epoch': epoch + 1, 'batch': 0})

  def on_train_batch_end(self, batch, logs=None):
    pass

  def on_train_end(self, logs=None):
    if not self.non_finite and _is_chief(self.model):
      super().on_train_end(logs)
