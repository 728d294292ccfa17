"""A model directory: what the programs share, and how a trained model is rebuilt.

`bin/train.py` writes `config.json` into its model directory; `bin/sample.py`,
`bin/evaluate.py`, `bin/interpolate.py` and `bin/export.py` rebuild the same model
from that directory alone (`load_trained`). Layout of a model directory:

    config.json                    the model/data settings (MODEL_KEYS) and the recipe
    checkpoints/latest.weights.h5  weights after the last finished epoch
    checkpoints/best.weights.h5    weights of the best val_bpd so far (with --validation)
    checkpoints/{best,latest}.json epoch and logs of that checkpoint (a copy of what
                                   the weights file holds)
    backup/                        the training state after the last finished epoch
                                   (resume after a crash); removed when training
                                   finishes
    logs/                          TensorBoard
    samples/epoch_XXXX.png         sample grids, one row per temperature
    results.json                   final test bits/dim, which weights, wall time

Every file is written to a temporary name and renamed (`os.replace`), so a crash or
SIGKILL mid-write never leaves a half-written file under the real name (see
`tfp_glow.keras.callbacks`). A file damaged afterwards (a full disk, a copy cut
short) is refused by name, with what to do instead (`DamagedCheckpointError`):
`load_trained` checks the checkpoint it loads, `check_resumable` what a resumed
training run would read.

The default model directory is `runs/<dataset>` under the current directory
(`default_model_dir`). Not `/tmp/tfp_glow/...`: a folder named `tfp_glow` in the
directory Python runs from is a namespace package that hides the installed
`tfp_glow` (issue 15.4), so no default path has a `tfp_glow` component.

The absl flags several programs share are defined by functions here
(`define_model_dir_flags`), which only the programs call: importing this module
defines no flag, so library code (e.g. `tfp_glow.export`) may import it.
"""

import json
import math
import os
import re

import h5py

from tfp_glow import data as data_lib
from tfp_glow import distribution as dist_lib
from tfp_glow.keras import callbacks as callbacks_lib
from tfp_glow.keras import model as model_lib

__all__ = [
    'DEFAULTS', 'MODEL_KEYS', 'CONFIG_NAME', 'RUNS_DIR', 'checkpoint_path',
    'default_model_dir', 'build_model', 'model_config', 'read_config',
    'write_config', 'check_config', 'load_trained', 'load_split',
    'resolve_flip', 'resolve_learning_rate', 'resolve_lr_schedule',
    'resolve_translate', 'write_json', 'DIGITS_LEARNING_RATE',
    'define_model_dir_flags', 'NO_FLIP_DATASETS',
    'define_eval_flags', 'check_data_matches', 'evaluate_bpd', 'format_bpd',
    'DamagedCheckpointError', 'check_weights_file', 'check_resumable',
]

# The architecture and the training recipe, in ONE place: the training program
# (tfp_glow/programs/train.py) takes its flag defaults from here.
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
    learning_rate=1e-3,  # the digits: DIGITS_LEARNING_RATE (resolve_learning_rate)
    warmup_steps=200,
    optimizer='adam',
    ema=True,
    ema_momentum=0.99,
    clipnorm=None,
    init_batch_size=256,
    class_loss_weight=0.01,
    translate=None,  # 1 for digits, 0 elsewhere: see resolve_translate
    translate_prob=0.5,
    flip='auto',  # photos yes, digits and letters no: see resolve_flip
    # Measured before training: the faster of XLA and graph mode for this model
    # on this machine (tfp_glow.keras.jit).
    jit_compile='auto',
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


def write_json(path, obj):
  """Writes `obj` as JSON atomically (temporary file + `os.replace`)."""
  callbacks_lib.write_json(path, obj)


def read_config(model_dir):
  """The dict in `model_dir/config.json`; a clear error when there is none."""
  path = os.path.join(model_dir, CONFIG_NAME)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} does not exist: {model_dir!r} is not a model directory written by '
        'bin/train.py (pass the --model_dir you trained with).')
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is damaged: it is not JSON ({e}).') from e


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
  return model_lib.GlowModel(dist, model['n_bins'], init_batch_size=init_batch_size,
                             class_loss_weight=class_loss_weight)


class DamagedCheckpointError(ValueError):
  """A weights file that cannot be read (truncated, or not HDF5): not a model
  of another architecture, which Keras refuses by itself."""


_TRUNCATED = re.compile(r'truncated file: eof = (\d+).*stored_eof = (\d+)')


def _unreadable_because(error):
  """What h5py's error says about a file, in a few words."""
  text = ' '.join(str(error).split())
  match = _TRUNCATED.search(text)
  if match:
    return f'it is truncated ({match.group(1)} of {match.group(2)} bytes)'
  return f'it cannot be read as a weights file ({text})'


def check_weights_file(path, advice=''):
  """Raises `DamagedCheckpointError` when `path` is not a whole HDF5 weights file.

  The file is opened (HDF5 compares its length with the one it recorded, so a
  file cut short fails here) and every array in it read. The message names the
  file, says it is damaged and why, then `advice` (what to use instead). A file
  whose bytes were changed in place, without a read error, is not detected:
  HDF5 keeps no checksums.
  """
  def read(_, obj):
    if isinstance(obj, h5py.Dataset):
      obj[()]  # pylint: disable=pointless-statement

  try:
    with h5py.File(path, 'r') as f:
      f.visititems(read)
  except (OSError, KeyError, RuntimeError, ValueError) as e:
    raise DamagedCheckpointError(
        f'{path} is damaged: {_unreadable_because(e)}.' +
        (f' {advice}' if advice else '')) from e


def _other_checkpoint_advice(model_dir, path):
  """What to use instead of the damaged checkpoint `path` of `model_dir`."""
  for which, what in (('latest', 'the weights after the last finished epoch'),
                      ('best', 'the weights of the best validation bits/dim')):
    other = checkpoint_path(model_dir, which)
    if other == path or not os.path.exists(other):
      continue
    try:
      check_weights_file(other)
    except DamagedCheckpointError:
      continue
    return f'Use --checkpoint={which} ({what}).'
  return (f'{model_dir!r} holds no other readable checkpoint: restore the file from '
          'a copy, or train again into a new --model_dir.')


def check_resumable(model_dir):
  """Raises `DamagedCheckpointError` naming a damaged file that training resumed
  in `model_dir` would read: the backup (weights, optimizer state and epoch,
  `backup/backup.weights.h5`) and the best checkpoint (each new epoch must beat
  the validation bits/dim stored in it). Files that are absent are fine: a run
  that has none starts from the first epoch. bin/train.py calls this before it
  resumes."""
  backup_dir = os.path.join(model_dir, 'backup')
  backup = os.path.join(backup_dir, callbacks_lib.Backup.STATE_NAME)
  if os.path.exists(backup):
    check_weights_file(backup, advice=(
        f'Training cannot resume from it: remove {backup_dir} to train again from '
        'the first epoch in this folder (the checkpoints stay; the best one is '
        'replaced only by a better one), or train into a new --model_dir.'))
  best = checkpoint_path(model_dir, 'best')
  if os.path.exists(best):
    check_weights_file(best, advice=(
        'A resumed run compares every epoch with it: remove it (the next epoch '
        'that validates writes a new one), or train into a new --model_dir.'))


def load_trained(model_dir, which='best'):
  """Rebuilds the model of `model_dir` and loads a checkpoint into it.

  Args:
    model_dir: a directory written by bin/train.py.
    which: 'best' (falls back to 'latest' when there is no best checkpoint, i.e. the
      run had no validation split) or 'latest'.

  Returns:
    `(model, config, path)`: the GlowModel, the config dict, the weights file loaded.

  Raises:
    FileNotFoundError: no config.json, or no checkpoint yet.
    DamagedCheckpointError: the checkpoint cannot be read (truncated, not HDF5);
      the message names it and the other checkpoint to use, if there is one.
    ValueError: a damaged config.json, or weights of an uninitialised model.
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
  advice = _other_checkpoint_advice(model_dir, path)
  check_weights_file(path, advice)
  try:
    callbacks_lib.load_weights(model, path)
  except OSError as e:  # read errors that the check above did not meet
    raise DamagedCheckpointError(
        f'{path} is damaged: {_unreadable_because(e)}. {advice}') from e
  if not model.initialized:
    raise ValueError(f'{path} holds an uninitialised model (ActNorm never set).')
  return model, config, path


def load_split(config, split, *, batch_size, data_dir=None, download=False, shuffle,
               dequantize=True, seed=None, translate=0, translate_prob=0.5,
               flip=False, dataset=None):
  """`data.load` for the dataset of a config.json (labels when conditional).

  `dataset` (any spec `data.load` takes) reads other data through the model's
  preprocessing (its `image_size` and `n_bits`) instead; `check_data_matches`
  then says whether the model can score it.
  """
  m = config['model']
  return data_lib.load(dataset or m['dataset'], split, data_dir=data_dir,
                       download=download, n_bits=m['n_bits'],
                       image_size=m['image_size'], batch_size=batch_size,
                       shuffle=shuffle, dequantize=dequantize, seed=seed,
                       with_labels=m['num_classes'] is not None,
                       translate=translate, translate_prob=translate_prob,
                       flip=flip)


def check_data_matches(model, info):
  """Raises ValueError naming each way the data of `info` (a `DatasetInfo`) does not
  fit the `model` section of a config.json: height and width, channels, bit depth
  (`n_bins`), labels. A model scores only images of the shape and the levels it was
  trained on; anything else would give a number that means nothing."""
  want_h, want_w, want_c = model['image_shape']
  h, w, c = info.image_shape
  problems = []
  if (h, w) != (want_h, want_w):
    problems.append(f'images are {h}x{w}, the model takes {want_h}x{want_w}')
  if c != want_c:
    problems.append(f'images have {c} channel(s), the model takes {want_c}')
  if info.n_bins != model['n_bins']:
    problems.append(f'the data has {info.n_bins} levels per pixel (n_bins), the model '
                    f'was trained on {model["n_bins"]}')
  if model['num_classes'] is not None:
    if info.num_classes is None:
      problems.append('the model is class-conditional, the data has no labels')
    elif info.num_classes > model['num_classes']:
      problems.append(f'the data has {info.num_classes} classes, the model '
                      f'{model["num_classes"]}')
  if problems:
    raise ValueError(f'{info.name!r} ({info.split}) does not match the model of '
                     f'dataset {model["dataset"]!r}: ' + '; '.join(problems) + '.')


def evaluate_bpd(model, config, split, *, batch_size=256, seed=0, draws=1,
                 dataset=None, data_dir=None, download=False, dequantize=True):
  """Mean test bits/dim of a `GlowModel` over `draws` dequantisation draws.

  Draw k uses the unshuffled pipeline with seed `seed + k`: example i's noise
  comes from the stateless seed `[seed + k, i]` (see `tfp_glow.data`), so each
  draw's number is a function of (weights, split, seed) alone, whatever the
  batch size or the process, and equals `model.evaluate` on
  `data.load(..., shuffle=False, seed=seed + k)`. Every program that reports a
  held-out bits/dim (train.py's results, evaluate.py) calls this.

  Returns:
    A dict: `bpd` (the mean over draws), `se` (its standard error, the sample
    standard deviation over draws / sqrt(draws); None for one draw), `draws` (each
    draw's bits/dim), `seeds`, `num_examples`, `dataset`, `split`.

  Raises:
    ValueError: bad `draws` / `seed`, data the model does not fit
      (`check_data_matches`), or a load error.
  """
  if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
    raise ValueError(f'draws must be an int >= 1, got {draws!r}.')
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ValueError(f'seed must be an int >= 0, got {seed!r}.')
  values, info = [], None
  for k in range(draws):
    ds, info = load_split(config, split, batch_size=batch_size, data_dir=data_dir,
                          download=download, shuffle=False, dequantize=dequantize,
                          seed=seed + k, dataset=dataset)
    if k == 0:
      check_data_matches(config['model'], info)
    values.append(float(model.evaluate(ds, verbose=0, return_dict=True)['bpd']))
  mean = math.fsum(values) / draws
  se = None
  if draws > 1:
    var = math.fsum((v - mean)**2 for v in values) / (draws - 1)
    se = math.sqrt(var / draws)
  return dict(bpd=mean, se=se, draws=values, seeds=list(range(seed, seed + draws)),
              num_examples=info.num_examples, dataset=info.name, split=split)


def format_bpd(result):
  """`2.0752` for one draw, `2.0752 +/- 0.0004 (standard error over 3 ...)` for several."""
  if result['se'] is None:
    return f'{result["bpd"]:.4f}'
  return (f'{result["bpd"]:.4f} +/- {result["se"]:.4f} (standard error over '
          f'{len(result["draws"])} dequantisation draws, seeds '
          f'{result["seeds"][0]}..{result["seeds"][-1]})')


def resolve_lr_schedule(dataset, lr_schedule):
  """--lr_schedule's default ('auto'): constant for the embedded digits, linear decay
  to zero at the end of the budget elsewhere.

  Measured (docs/BENCHMARKS.md): on the digits' 1,293 training images the decay
  overfits (seed 0: best validation 2.110 at epoch 56 and rising, test 2.1070, against
  2.079 at epoch 60 and still falling with the constant rate): there the constant rate
  and Polyak averaging are part of the regularisation the recipe was tuned with. On
  the photos, where a budget ends before the model overfits, the decay to zero wins.
  """
  if lr_schedule != 'auto':
    return lr_schedule
  return 'constant' if dataset == 'digits' else 'linear'


# Datasets whose mirror image is not a sample of them (digits, letters, characters,
# house numbers): --flip=auto leaves them unflipped.
NO_FLIP_DATASETS = ('digits', 'mnist', 'emnist', 'kmnist', 'fashion_mnist',
                    'svhn_cropped', 'omniglot', 'binarized_mnist')


def resolve_flip(dataset, flip):
  """--flip's default ('auto'): random horizontal flips for photos (the embedded
  photos, folders, CIFAR, CelebA, ImageNet, ...), none for datasets of digits,
  letters or characters (`NO_FLIP_DATASETS`), whose mirror images are not samples.

  A folder is taken to hold photos; pass --flip=false for one that does not. On the
  photos (5,746 overlapping patches of three pictures) the 30-minute run overfits
  after a few minutes; the flips double the distinct images it sees
  (docs/BENCHMARKS.md).
  """
  if isinstance(flip, bool):
    return flip
  if flip in ('true', 'false'):
    return flip == 'true'
  if flip != 'auto':
    raise ValueError(f"flip must be 'auto', 'true', 'false' or a bool, got {flip!r}.")
  # 'folder:PATH' -> 'folder'; a TFDS name may carry a version ('mnist:3.0.1') and a
  # config ('emnist/letters').
  return dataset.split(':', 1)[0].split('/', 1)[0] not in NO_FLIP_DATASETS


# The digits' peak learning rate (docs/BENCHMARKS.md, issue 19): 3x the rate of
# other datasets, DEFAULTS['learning_rate'].
DIGITS_LEARNING_RATE = 3e-3


def resolve_learning_rate(dataset, learning_rate):
  """--learning_rate's default: `DIGITS_LEARNING_RATE` for the embedded digits,
  `DEFAULTS['learning_rate']` elsewhere.

  Measured on the digits (three training seeds each, same 100 epochs and wall
  time): a constant 3e-3 reaches a lower test bits/dim than 1e-3 on every seed.
  On 1,293 images the noise of a high constant rate, averaged by Polyak averaging,
  regularises; every decay tried (to zero over the epochs, or over their last 10-30%)
  overfitted and lost to the constant rate at the same peak.
  """
  if learning_rate is not None:
    return learning_rate
  return DIGITS_LEARNING_RATE if dataset == 'digits' else DEFAULTS['learning_rate']


def resolve_translate(dataset, translate):
  """--translate's default: 1 pixel for the embedded digits, none elsewhere."""
  if translate is not None:
    return translate
  return 1 if dataset == 'digits' else 0


# Relative to the working directory: the README's commands, run one after the other
# from the same place, find what the first one wrote.
RUNS_DIR = 'runs'


def default_model_dir(dataset):
  """`runs/<dataset>` (relative to the working directory), the dataset name made
  safe for a folder name (`folder:/a/b` -> `folder__a_b`)."""
  safe = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in dataset)
  return os.path.join(RUNS_DIR, safe)


def define_model_dir_flags(flag_values=None):
  """Defines --model_dir (required) and --checkpoint, for the programs that read
  a model directory (sample, evaluate, interpolate, export)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if flag_values is None:
    flag_values = flags.FLAGS
  flags.DEFINE_string('model_dir', None, 'Model directory written by bin/train.py.',
                      flag_values=flag_values)
  flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'],
                    'Which weights: the best validation bits/dim (falls back to '
                    'latest when the run had no validation) or the last epoch.',
                    flag_values=flag_values)
  flags.mark_flag_as_required('model_dir', flag_values=flag_values)


def define_eval_flags(flag_values=None):
  """Defines --eval_seed and --eval_draws, for the programs that report a held-out
  bits/dim (train, evaluate): the same seed gives the same number in both."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if flag_values is None:
    flag_values = flags.FLAGS
  flags.DEFINE_integer(
      'eval_seed', 0, 'Seed of the held-out bits/dim\'s dequantisation noise: example '
      'i of draw k gets the noise of the stateless seed [eval_seed + k, i], so the '
      'same weights, split and seed give the same number in train.py and '
      'evaluate.py, at any batch size.', lower_bound=0, flag_values=flag_values)
  flags.DEFINE_integer(
      'eval_draws', 1, 'Dequantisation draws (seeds eval_seed .. eval_seed + K - 1) '
      'the held-out bits/dim is averaged over; with K >= 2 the standard error of the '
      'mean is reported too.', lower_bound=1, flag_values=flag_values)
