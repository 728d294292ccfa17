r"""Trains a Glow model with Keras and reports its test bits per dimension.

Example (the embedded 8x8 digits, offline, a few minutes on a CPU):

  python bin/train.py --model_dir=runs/digits

  python bin/train.py --dataset=cifar10 --data_dir=~/tensorflow_datasets \
      --levels=3 --steps_per_level=32 --hidden_width=512 --model_dir=/tmp/glow_cifar

Writes into --model_dir:
  config.json                    model and data settings (sample/evaluate/interpolate
                                 rebuild the model from it) and the training recipe
  checkpoints/best.weights.h5    weights with the lowest val_bpd (with --validation)
  checkpoints/latest.weights.h5  weights after the last finished epoch
  backup/                        the training state (weights, optimizer, epoch);
                                 rerunning the same command after a crash resumes
                                 from the last finished epoch
  logs/                          TensorBoard (losses, learning rate, sample grids)
  samples/epoch_XXXX.png         sample grids, one row per --temperatures entry
  results.json                   test bits/dim (the mean over --eval_draws noise
                                 draws from --eval_seed, and its standard error),
                                 which weights it used, wall time, the compile modes
                                 chosen, whether --time_limit stopped it

--model_dir defaults to runs/<dataset> under the current directory (also
`tfp-glow-train`, `python -m tfp_glow.programs.train`). Rerunning with the same
--model_dir resumes; a different architecture is refused.
Training stops cleanly when the loss becomes NaN/Inf: the last good checkpoint and
backup are kept (rerun, e.g. with a lower --learning_rate, to resume from them) and
the program exits with status 1.
"""

import json
import math
import os
import sys
import time

from absl import app
from absl import flags

from tfp_glow import run_dir
from tfp_glow.keras import jit as jit_lib
from tfp_glow.programs import launch

D = run_dir.DEFAULTS
FLAGS = flags.FLAGS

# Data.
flags.DEFINE_string(
    'dataset', D['dataset'],
    "'digits' (embedded 8x8 digits, 17 grey levels, offline), 'folder:PATH' (PNG/JPEG "
    "files under PATH; labels from subfolders with --conditional), or a TFDS image "
    'dataset name, e.g. mnist, cifar10, svhn_cropped, celeb_a, '
    'imagenet_resized/32x32.')
flags.DEFINE_string('data_dir', None,
                    'TFDS data directory (default: TFDS\'s, ~/tensorflow_datasets).')
flags.DEFINE_bool('download', False,
                  'Let TFDS download and prepare a missing dataset (needs network).')
flags.DEFINE_integer('image_size', None,
                     'Resize (centre crop, then bilinear) images to this square size. '
                     'Default: the native size (celeb_a: 64).')
flags.DEFINE_integer('n_bits', None,
                     'Keep this many bits (1..8) of 8-bit images, e.g. 5 as in the '
                     'paper\'s CelebA-HQ. Default: all. Must be unset for digits.')
flags.DEFINE_bool('validation', True,
                  'Train on the train split, evaluate the validation split after each '
                  'epoch, keep the best-val_bpd weights and report the test bits/dim '
                  'of those. --novalidation trains on train+validation (train_full) '
                  'and reports the final weights.')
# Model.
flags.DEFINE_integer('levels', D['levels'],
                     'Multi-scale levels L (H and W must divide by 2**L).')
flags.DEFINE_integer('steps_per_level', D['steps_per_level'],
                     'Flow steps K per level (ActNorm, 1x1 conv, coupling).')
flags.DEFINE_integer('hidden_width', D['hidden_width'],
                     'Channels of the coupling networks\' hidden layers.')
flags.DEFINE_enum('coupling', D['coupling'], ['affine', 'additive'],
                  'Coupling layer type.')
flags.DEFINE_enum('permutation', D['permutation'],
                  ['conv', 'conv_lu', 'shuffle', 'reverse'],
                  'Channel mixing: invertible 1x1 conv (plain or LU), or the fixed '
                  'shuffle / reverse of the paper\'s ablation.')
flags.DEFINE_bool('learn_top', D['learn_top'],
                  'Learn the mean and scale of the top-level prior.')
flags.DEFINE_bool('conditional', D['conditional'],
                  'Class-conditional model (needs labels); adds the classifier loss '
                  '(weight --class_loss_weight).')
flags.DEFINE_float('class_loss_weight', D['class_loss_weight'],
                   'Weight of the class prediction loss (--conditional).')
# Recipe.
flags.DEFINE_integer('batch_size', D['batch_size'], 'Images per training step.')
flags.DEFINE_integer('epochs', D['epochs'], 'Training epochs.')
flags.DEFINE_integer('steps_per_epoch', None,
                     'Steps per epoch (the data repeats as needed). Default: one pass '
                     'over the training split.')
flags.DEFINE_float('learning_rate', None,
                   'Peak learning rate. Default: %g for the embedded digits, %g '
                   'elsewhere (docs/BENCHMARKS.md).' % (run_dir.DIGITS_LEARNING_RATE,
                                                        D['learning_rate']))
flags.DEFINE_integer('warmup_steps', D['warmup_steps'],
                     'Linear learning-rate warmup from 0, in steps.')
flags.DEFINE_float('warmup_epochs', None,
                   'Warmup in epochs instead (overrides --warmup_steps).')
flags.DEFINE_enum('optimizer', D['optimizer'], ['adam', 'adamax'], 'Optimizer.')
flags.DEFINE_bool('ema', D['ema'],
                  'Polyak averaging: evaluate, checkpoint and report the exponential '
                  'moving average of the weights.')
flags.DEFINE_float('ema_momentum', D['ema_momentum'], 'Momentum of --ema.')
flags.DEFINE_float('clipnorm', D['clipnorm'],
                   'Clip each gradient to this norm. Default: no clipping.')
flags.DEFINE_integer('init_batch_size', D['init_batch_size'],
                     'Images for ActNorm\'s data-dependent initialisation.')
flags.DEFINE_integer('seed', 0, 'Seed of the weights, the data order and noise.')


class _JitCompileParser(flags.ArgumentParser):
  """'auto', true or false; a boolean-style flag, so --jit_compile and
  --nojit_compile (the syntax of earlier versions) keep working."""

  def parse(self, argument):
    return jit_lib.parse_jit_compile(argument)

  def flag_type(self):
    return 'auto|true|false'


flags.DEFINE_flag(flags.Flag(
    _JitCompileParser(), flags.ArgumentSerializer(), 'jit_compile',
    D['jit_compile'],
    "XLA or not: 'auto' (default) is graph mode on a machine without GPU or "
    'TPU (faster there; TFP_GLOW_JIT_AUTO=measure measures anyway) and elsewhere '
    'compiles the training and the evaluation step both ways, times a few steps '
    'of each on the first training batches and keeps the faster (printed, and '
    'recorded in config.json and results.json; the timed steps do not change the '
    'model); '
    '--jit_compile=true (or --jit_compile) forces '
    'XLA, --jit_compile=false (or --nojit_compile) graph mode. With several '
    'replicas XLA is always off.', boolean=True))
flags.DEFINE_float('time_limit', None,
                   'Stop training after this many minutes (counted from the start of '
                   'the program): the step that crosses the limit is the last, its '
                   'epoch ends there, is validated and checkpointed, and the test '
                   'bits/dim is reported as usual; results.json says '
                   'stopped_by_time_limit. Not with --strategy=multi_worker.')
flags.DEFINE_enum('compute_dtype', 'auto', ['auto', 'float32', 'bfloat16'],
                  'Precision of the coupling networks\' convolutions. auto (default): '
                  'bfloat16 where the hardware runs it natively (a CPU with '
                  'AVX512_BF16 or AMX, a GPU of compute capability >= 8.0), float32 '
                  'elsewhere; printed and recorded in config.json. Log-dets, 1x1 '
                  'convolutions, priors and weights stay float32 either way '
                  '(docs/BENCHMARKS.md: the held-out bits/dim agree within the '
                  'dequantisation noise).')
flags.DEFINE_enum('lr_schedule', 'auto', ['auto', 'linear', 'cosine', 'constant'],
                  'Learning rate after the warmup: linear or cosine decay to zero at '
                  'the end of the budget (--epochs x steps per epoch, or the step at '
                  'which --time_limit runs out, estimated from the measured pace and '
                  're-estimated as training goes), or constant (the peak until the '
                  'end). auto (default): constant for the embedded digits (the decay '
                  'overfits their 1,293 images), linear elsewhere. results.json '
                  'records the schedule followed.')
flags.DEFINE_float('lr_decay_fraction', 1.0,
                   'With a decaying --lr_schedule: the share of the budget after the '
                   'warmup over which the rate decays to zero; before it the rate '
                   'stays at its peak (warmup-stable-decay). 1 (default): the decay '
                   'fills the budget.')
flags.DEFINE_enum('backprop', 'store', ['store', 'invert'],
                  "Gradient through the steps of flow: 'store' keeps every step's "
                  "activations; 'invert' rebuilds them by the inverse in the backward "
                  'pass (memory flat in --steps_per_level; docs/BENCHMARKS.md).')
flags.DEFINE_integer('translate', D['translate'],
                     'Augmentation: shift training images by up to this many whole '
                     'pixels (zero-padded; never inside the flow). Default: 1 for '
                     'digits, 0 for other datasets.')
flags.DEFINE_float('translate_prob', D['translate_prob'],
                   'With --translate, the share of training images shifted.')
flags.DEFINE_enum('flip', D['flip'], ['auto', 'true', 'false'],
                  'Augmentation: mirror a random half of the training images '
                  'left-right, drawn anew each epoch. auto (default): on for photos '
                  '(photos, folders, cifar10, celeb_a, ...), off for datasets of '
                  'digits, letters or characters (digits, mnist, emnist, kmnist, '
                  'fashion_mnist, svhn_cropped, omniglot), whose mirror images are not '
                  'samples of them; a folder is taken to hold photos. Recorded in '
                  'config.json.')
# Scale.
flags.DEFINE_enum('strategy', 'default', ['default', 'mirrored', 'multi_worker'],
                  'tf.distribute strategy: default (one device), mirrored (all GPUs '
                  'of this machine), multi_worker (the cluster in TF_CONFIG; every '
                  'worker runs the same command). --batch_size is the global batch.')
flags.DEFINE_float('collective_timeout', 600.0,
                   'multi_worker: seconds a collective may wait before failing (0: '
                   'none); a dead peer is also detected by heartbeat in about 10 s.')
# Output.
flags.DEFINE_string('model_dir', None,
                    'Where config, checkpoints, logs and samples go. Default: '
                    'runs/<dataset> under the current directory.')
flags.DEFINE_list('temperatures', ['0.0', '0.5', '0.7', '1.0'],
                  'Temperatures of the sample grid rows.')
flags.DEFINE_integer('sample_every', 10,
                     'Write a sample grid every this many epochs (and at the end).')
flags.DEFINE_enum('verbose', 'auto', ['auto', '0', '1', '2'],
                  'Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch; '
                  'auto: 1 when stdout is a terminal, else 2 (a progress bar '
                  'redrawn in a log file floods it).')
run_dir.define_eval_flags()


class UsageError(Exception):
  """A mistake in the flags or the data: printed without a traceback."""


def validate_flags():
  if FLAGS.n_bits is not None and not 1 <= FLAGS.n_bits <= 8:
    raise UsageError(f'--n_bits must be in 1..8, got {FLAGS.n_bits}.')
  if FLAGS.dataset == 'digits' and FLAGS.n_bits is not None:
    raise UsageError('--n_bits must be unset for digits (17 native levels).')
  for name in ('levels', 'steps_per_level', 'hidden_width', 'batch_size', 'epochs',
               'init_batch_size', 'sample_every'):
    if getattr(FLAGS, name) < 1:
      raise UsageError(f'--{name} must be >= 1, got {getattr(FLAGS, name)}.')
  if FLAGS.steps_per_epoch is not None and FLAGS.steps_per_epoch < 1:
    raise UsageError(f'--steps_per_epoch must be >= 1, got {FLAGS.steps_per_epoch}.')
  if FLAGS.learning_rate is not None and FLAGS.learning_rate <= 0:
    raise UsageError(f'--learning_rate must be > 0, got {FLAGS.learning_rate}.')
  if FLAGS.warmup_steps < 0:
    raise UsageError(f'--warmup_steps must be >= 0, got {FLAGS.warmup_steps}.')
  if not 0 < FLAGS.lr_decay_fraction <= 1:
    raise UsageError('--lr_decay_fraction must be in (0, 1], got '
                     f'{FLAGS.lr_decay_fraction}.')
  if FLAGS.clipnorm is not None and FLAGS.clipnorm <= 0:
    raise UsageError(f'--clipnorm must be > 0, got {FLAGS.clipnorm}.')
  if FLAGS.time_limit is not None:
    if not FLAGS.time_limit > 0 or not math.isfinite(FLAGS.time_limit):
      raise UsageError(f'--time_limit must be > 0 minutes, got {FLAGS.time_limit}.')
    if FLAGS.strategy == 'multi_worker':
      # Each worker reads its own clock: they could stop at different steps and
      # leave a collective waiting forever.
      raise UsageError('--time_limit does not work with --strategy=multi_worker '
                       f'(got --time_limit={FLAGS.time_limit}); use --epochs.')
  try:
    temps = [float(t) for t in FLAGS.temperatures]
  except ValueError as e:
    raise UsageError(f'--temperatures must be numbers: {e}') from e
  if not temps or min(temps) < 0:
    raise UsageError(f'--temperatures must be >= 0, got {FLAGS.temperatures}.')
  return temps


def load_data(config, split, **kwargs):
  try:
    return run_dir.load_split(config, split, data_dir=FLAGS.data_dir,
                              download=FLAGS.download, **kwargs)
  except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as e:
    raise UsageError(f'Cannot load {config["model"]["dataset"]!r} split {split!r}: '
                     f'{e}') from e


def _learning_rate():
  return run_dir.resolve_learning_rate(FLAGS.dataset, FLAGS.learning_rate)


def _recipe(translate, flip):
  recipe = {k: getattr(FLAGS, k) for k in (
      'batch_size', 'epochs', 'steps_per_epoch', 'learning_rate', 'warmup_steps',
      'warmup_epochs', 'lr_schedule', 'lr_decay_fraction', 'optimizer', 'ema',
      'ema_momentum', 'clipnorm', 'init_batch_size', 'class_loss_weight', 'seed', 'jit_compile', 'validation',
      'data_dir', 'translate_prob', 'compute_dtype', 'backprop', 'time_limit')}
  recipe['learning_rate'] = _learning_rate()
  recipe['translate'] = translate
  recipe['flip'] = flip
  return recipe


def _augmentation_line(recipe):
  """One line saying which augmentations the training split gets, and why."""
  flip = recipe['flip']
  why = f'--flip={FLAGS.flip}' + (
      (': photos' if flip else ': digits or characters') if FLAGS.flip == 'auto' else '')
  parts = [f"left-right flips {'on' if flip else 'off'} ({why})"]
  if recipe['translate']:
    parts.append(f"shifts of up to {recipe['translate']} pixel(s) on "
                 f"{recipe['translate_prob']:.0%} of the images")
  return 'Augmentation: ' + '; '.join(parts) + '.'


def load_training_data():
  """The training split (shape, levels and labels come from it) and the config."""
  model_flags = dict(dataset=FLAGS.dataset, image_size=FLAGS.image_size,
                     n_bits=FLAGS.n_bits, levels=FLAGS.levels,
                     steps_per_level=FLAGS.steps_per_level,
                     hidden_width=FLAGS.hidden_width, coupling=FLAGS.coupling,
                     permutation=FLAGS.permutation, learn_top=FLAGS.learn_top,
                     conditional=FLAGS.conditional)
  train_split = 'train' if FLAGS.validation else 'train_full'
  probe = {'model': dict(model_flags, num_classes=1 if FLAGS.conditional else None)}
  translate = run_dir.resolve_translate(FLAGS.dataset, FLAGS.translate)
  flip = run_dir.resolve_flip(FLAGS.dataset, FLAGS.flip)
  train_ds, info = load_data(probe, train_split, batch_size=FLAGS.batch_size,
                             shuffle=True, seed=FLAGS.seed, translate=translate,
                             translate_prob=FLAGS.translate_prob, flip=flip)
  try:
    model_config = run_dir.model_config(info, **model_flags)
  except ValueError as e:
    raise UsageError(str(e)) from e
  return train_ds, info, {'model': model_config,
                          'training': _recipe(translate, flip)}


def has_training_state(model_dir):
  """Whether a run in `model_dir` got as far as leaving something to resume or
  report: a backup, a checkpoint or results.json. A config.json without any of them
  is from a run that failed before training (it does not hold the folder)."""
  return (os.path.exists(os.path.join(model_dir, 'backup')) or
          os.path.exists(os.path.join(model_dir, 'results.json')) or
          any(os.path.exists(run_dir.checkpoint_path(model_dir, w))
              for w in ('best', 'latest')))


def check_model_dir(model_dir, config):
  """Refuses a model directory that holds another model; True when it holds this
  finished run (nothing to do)."""
  results_path = os.path.join(model_dir, 'results.json')
  if not (os.path.exists(os.path.join(model_dir, run_dir.CONFIG_NAME)) and
          has_training_state(model_dir)):
    return False
  try:
    run_dir.check_config(run_dir.read_config(model_dir), config)
  except ValueError as e:
    raise UsageError(str(e)) from e
  if os.path.exists(results_path) and not os.path.exists(
      os.path.join(model_dir, 'backup')):
    with open(results_path) as f:
      results = json.load(f)
    print(f'{model_dir} holds a finished run (results.json); nothing to do. Use a '
          f'new --model_dir to train again.\n{json.dumps(results, indent=2)}')
    return True
  return False


def make_schedule(steps_per_epoch):
  """The learning-rate schedule: warmup, then the --lr_schedule decay over the
  --epochs budget (a --time_limit budget is shaped later, by TimeBudget)."""
  from tfp_glow.keras import model as model_lib  # pylint: disable=g-import-not-at-top
  warmup = FLAGS.warmup_steps
  if FLAGS.warmup_epochs is not None:
    warmup = model_lib.warmup_steps_for(FLAGS.warmup_epochs, steps_per_epoch)
  decay = run_dir.resolve_lr_schedule(FLAGS.dataset, FLAGS.lr_schedule)
  total = None if decay == 'constant' else FLAGS.epochs * steps_per_epoch
  return model_lib.WarmupSchedule(_learning_rate(), warmup, total_steps=total,
                                  decay=decay,
                                  decay_fraction=FLAGS.lr_decay_fraction)


def build_and_compile(strategy, config, schedule):
  """The model and its optimizer, inside the strategy's scope."""
  import keras  # pylint: disable=g-import-not-at-top
  compute_dtype = config['training']['compute_dtype_used']
  with strategy.scope():
    try:
      model = run_dir.build_model(
          config['model'], seed=FLAGS.seed, init_batch_size=FLAGS.init_batch_size,
          class_loss_weight=FLAGS.class_loss_weight,
          compute_dtype=None if compute_dtype == 'float32' else compute_dtype,
          backprop=FLAGS.backprop)
    except ValueError as e:
      raise UsageError(f'Cannot build the model: {e}') from e
    optimizer_cls = {'adam': keras.optimizers.Adam,
                     'adamax': keras.optimizers.Adamax}[FLAGS.optimizer]
    optimizer = optimizer_cls(learning_rate=schedule, clipnorm=FLAGS.clipnorm,
                              use_ema=FLAGS.ema, ema_momentum=FLAGS.ema_momentum)
    model.compile(optimizer=optimizer, jit_compile=FLAGS.jit_compile)
  return model


def load_validation(config):
  if not FLAGS.validation:
    return None
  validation_ds, val_info = load_data(config, 'validation', batch_size=256,
                                      shuffle=False, seed=FLAGS.seed + 1)
  # The same dequantisation noise every epoch, so epochs compare; only when small.
  if val_info.num_examples * int(math.prod(val_info.image_shape)) * 4 < 2**30:
    validation_ds = validation_ds.cache()
  return validation_ds


def shard_for_workers(*datasets):
  """multi_worker: every worker reads the same files and takes its share of every
  batch."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if FLAGS.strategy != 'multi_worker':
    return datasets
  opts = tf.data.Options()
  opts.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return tuple(None if ds is None else ds.with_options(opts) for ds in datasets)


def make_callbacks(model, model_dir, info, chief, temperatures, schedule, start_clock,
                   max_steps):
  """The callbacks in their order, and the ones read after training (by name)."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_glow.keras import callbacks as callbacks_lib  # pylint: disable=g-import-not-at-top
  from tfp_glow.keras import model as model_lib  # pylint: disable=g-import-not-at-top
  log_dir = os.path.join(model_dir, 'logs') if chief else None
  try:
    import tensorboard  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    print('tensorboard is not installed: no TensorBoard logs (pip install '
          'tensorboard to get them).', file=sys.stderr)
    log_dir = None
  named = {'backup': callbacks_lib.Backup(os.path.join(model_dir, 'backup'))}
  callbacks = [keras.callbacks.TerminateOnNaN(), named['backup']]
  if FLAGS.time_limit is not None:
    named['time_limit'] = callbacks_lib.TimeLimit(FLAGS.time_limit, start=start_clock)
    callbacks.append(named['time_limit'])
    if schedule.total_steps is not None:
      named['budget'] = callbacks_lib.TimeBudget(
          schedule, FLAGS.time_limit, start=start_clock, max_steps=max_steps)
      callbacks.append(named['budget'])
  if FLAGS.ema:
    # After the backup (which keeps the raw weights and the optimizer's averages):
    # evaluation, checkpoints and samples below see the averaged weights.
    callbacks.append(callbacks_lib.SwapEMAWeights(swap_on_epoch=True))
  named['latest'] = callbacks_lib.Checkpoint(run_dir.checkpoint_path(model_dir, 'latest'))
  callbacks.append(named['latest'])
  if FLAGS.validation:
    callbacks.append(callbacks_lib.Checkpoint(
        run_dir.checkpoint_path(model_dir, 'best'), monitor='val_bpd'))
  if chief:  # Per-epoch points with their times (history.json), samples, logs.
    callbacks.append(callbacks_lib.History(os.path.join(model_dir, 'history.json'),
                                           start=start_clock))
    labels = tf.range(8) % model.glow.num_classes if model.conditional else None
    callbacks.append(model_lib.SampleGrid(
        os.path.join(model_dir, 'samples'), info.n_bins, temperatures=temperatures,
        every_epochs=FLAGS.sample_every, log_dir=log_dir, seed=FLAGS.seed,
        labels=labels))
  if log_dir:
    callbacks.append(keras.callbacks.TensorBoard(log_dir))
  return callbacks, named


def schedule_followed(schedule, steps_run, budget):
  """What results.json records of the learning rate that was actually used."""
  last = max(0, steps_run - 1)
  return {
      'decay': schedule.decay if schedule.total_steps is not None else 'constant',
      'decay_fraction': schedule.decay_fraction,
      'peak_learning_rate': schedule.learning_rate,
      'warmup_steps': schedule.warmup_steps,
      'total_steps': schedule.total_steps,
      'steps_run': steps_run,
      'final_learning_rate': schedule.value(last),
      # Which budget ended the decay: the clock, or --epochs when it came first.
      'budget': None if schedule.total_steps is None else (
          'time_limit' if budget is not None and
          schedule.total_steps < budget.max_steps else 'epochs'),
      'total_steps_estimates': budget.estimates if budget is not None else None,
  }


def evaluate_test(model, config, results, model_dir):
  """The test bits/dim of the best-validation (else the final) weights, into
  `results`; False when no finite checkpoint exists."""
  from tfp_glow import data as data_lib  # pylint: disable=g-import-not-at-top
  which = 'best' if FLAGS.validation else 'latest'
  path = run_dir.checkpoint_path(model_dir, which)
  if not os.path.exists(path):
    print(f'No finite checkpoint was written ({path}); the loss was NaN/Inf from the '
          'first epoch. Try a lower --learning_rate or a longer warmup.',
          file=sys.stderr)
    return False
  test_split = 'test'
  if FLAGS.dataset.startswith(data_lib.FOLDER_PREFIX):
    test_split = 'validation' if FLAGS.validation else None
  results.update(weights=which, checkpoint=os.path.relpath(path, model_dir))
  info_path = path[:-len('.weights.h5')] + '.json'
  if os.path.exists(info_path):
    with open(info_path) as f:
      results['checkpoint_info'] = json.load(f)
  eval_model = run_dir.build_model(config['model'])
  eval_model.load_weights(path)
  # The evaluation step's mode as measured (or forced) for this model.
  eval_model.compile(jit_compile=model.jit_choice.evaluate if model.jit_choice
                     else False)
  if test_split is None:
    print('A folder has no test split and --novalidation holds out nothing: no held-'
          'out bits/dim to report.')
    return True
  # The same function, seeds and noise as bin/evaluate.py: its number for these
  # weights, split and --eval_seed is this one, at any batch size.
  try:
    test = run_dir.evaluate_bpd(eval_model, config, test_split, batch_size=256,
                                seed=FLAGS.eval_seed, draws=FLAGS.eval_draws,
                                data_dir=FLAGS.data_dir, download=FLAGS.download)
  except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as e:
    raise UsageError(f'Cannot evaluate the {test_split!r} split: {e}') from e
  results.update(split=test_split, test_bpd=test['bpd'], test_bpd_se=test['se'],
                 test_bpd_draws=test['draws'], eval_seed=FLAGS.eval_seed,
                 eval_draws=FLAGS.eval_draws)
  epoch = results.get('checkpoint_info', {}).get('epoch', '?')
  print(f'Test bits/dim ({test_split} split, {which} weights, from epoch {epoch}): '
        f'{run_dir.format_bpd(test)}')
  return True


def train(model_dir, temperatures):
  """Trains into `model_dir` and reports the test bits/dim: the steps in order."""
  import keras  # pylint: disable=g-import-not-at-top
  from tfp_glow.keras import distribute  # pylint: disable=g-import-not-at-top
  from tfp_glow.keras import precision  # pylint: disable=g-import-not-at-top

  start = time.time()
  start_clock = time.monotonic()  # --time_limit counts from here
  # The strategy first: multi-worker setup must precede any other TF op.
  try:
    strategy = distribute.make_strategy(
        FLAGS.strategy, collective_timeout=FLAGS.collective_timeout or None)
  except ValueError as e:
    raise UsageError(str(e)) from e
  chief = distribute.is_chief(strategy)
  keras.utils.set_random_seed(FLAGS.seed)
  train_ds, info, config = load_training_data()
  if check_model_dir(model_dir, config):
    return 0
  run_dir.check_resumable(model_dir)  # a damaged backup or best checkpoint: named
  dtype, why = precision.resolve_compute_dtype(FLAGS.compute_dtype)
  config['training']['compute_dtype_used'] = dtype
  print(f'Coupling networks in {dtype} (--compute_dtype={FLAGS.compute_dtype}: {why}).',
        flush=True)

  steps_per_epoch = FLAGS.steps_per_epoch
  if steps_per_epoch is not None:
    train_ds = train_ds.repeat()
  else:
    steps_per_epoch = math.ceil(info.num_examples / FLAGS.batch_size)
  schedule = make_schedule(steps_per_epoch)
  model = build_and_compile(strategy, config, schedule)
  validation_ds = load_validation(config)
  train_ds, validation_ds = shard_for_workers(train_ds, validation_ds)
  callbacks, named = make_callbacks(model, model_dir, info, chief, temperatures,
                                    schedule, start_clock,
                                    max_steps=FLAGS.epochs * steps_per_epoch)
  # Written only now that everything is built: a run that fails before this point
  # leaves no config.json to hold the folder (and one that fails before training
  # leaves no training state, which check_model_dir also accepts).
  os.makedirs(model_dir, exist_ok=True)
  if chief:
    run_dir.write_config(model_dir, config)

  print(f'Training {model.glow.name}: {info.source}, images {list(info.image_shape)}, '
        f'{info.n_bins} grey levels, {sum(int(math.prod(v.shape)) for v in model.trainable_variables)} '
        f'parameters, model_dir {model_dir}', flush=True)
  print(_augmentation_line(config['training']), flush=True)
  history = model.fit(train_ds, epochs=FLAGS.epochs, steps_per_epoch=steps_per_epoch,
                      validation_data=validation_ds, callbacks=callbacks,
                      verbose=launch.keras_verbosity(FLAGS.verbose), shuffle=False)
  nan_stop = named['latest'].skipped_non_finite or named['backup'].non_finite
  jit_choice = model.jit_choice.as_dict() if model.jit_choice else None
  if chief and jit_choice:
    config['training']['jit_choice'] = jit_choice
    run_dir.write_config(model_dir, config)
  time_limit = named.get('time_limit')
  stopped_by_time = bool(time_limit and time_limit.stopped)
  if stopped_by_time:
    print(f'Training stopped by --time_limit={FLAGS.time_limit:g} min after '
          f'{time_limit.elapsed_s / 60:.2f} min (epoch {time_limit.stopped_epoch + 1}, '
          f'step {time_limit.stopped_step}); that epoch was validated and '
          'checkpointed.', flush=True)
  steps_run = int(model.optimizer.iterations.numpy())
  results = {
      'epochs_run': len(history.history.get('bpd', [])),
      'terminated_on_nan': bool(nan_stop),
      'stopped_by_time_limit': stopped_by_time,
      'time_limit_min': FLAGS.time_limit,
      'elapsed_at_stop_s': (time_limit.elapsed_s if time_limit else None),
      'steps_run': steps_run,
      'learning_rate_schedule': schedule_followed(schedule, steps_run,
                                                  named.get('budget')),
      'compute_dtype': dtype,
      'jit_compile': jit_choice,
      'wall_time_s': None,
  }
  if not evaluate_test(model, config, results, model_dir):
    return 1
  results['wall_time_s'] = time.time() - start
  if chief:
    run_dir.write_json(os.path.join(model_dir, 'results.json'), results)
  if nan_stop:
    print('Training stopped: the loss became NaN/Inf. The last good checkpoint and '
          'backup were kept; rerun (e.g. with a lower --learning_rate) to resume.',
          file=sys.stderr)
    return 1
  return 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    temperatures = validate_flags()
    model_dir = FLAGS.model_dir or run_dir.default_model_dir(FLAGS.dataset)
    return train(model_dir, temperatures)
  except (UsageError, run_dir.DamagedCheckpointError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2


def run():
  """The entry point of bin/train.py and of the console script tfp-glow-train."""
  launch.run(main, __name__)


if __name__ == '__main__':
  run()
