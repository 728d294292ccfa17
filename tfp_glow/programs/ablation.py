r"""The paper's ablation: permutation x coupling x ActNorm init, with plots.

Trains every configuration of a grid on one dataset, several seeds each, with
everything else fixed (model size, data order and dequantisation noise per
seed, weights' seed, optimizer, number of steps), and writes the curves, the
plots of Kingma & Dhariwal (2018)'s Figure 3 and a summary table to
--out_dir. No Polyak averaging, no augmentation: the flows themselves are
compared.

Configurations are named PERMUTATION-COUPLING[-ACTNORM_INIT]:

  permutation    reverse (RealNVP), shuffle (fixed random), conv (invertible
                 1x1 convolution), conv_lu (its LU form)
  coupling       additive (NICE), affine (RealNVP, Glow)
  actnorm_init   data (the paper's data-dependent initialisation, the
                 default) or identity (every ActNorm at scale 1, bias 0)

The default grid: {reverse, shuffle, conv} x {additive, affine}, plus
conv-affine-identity.

Usage:

  python bin/ablation.py                  # into runs/ablation_digits
  python bin/ablation.py --configs=shuffle-affine,conv-affine --seeds=2 \
      --steps=1000 --out_dir=/tmp/ablation_small
  python bin/ablation.py --parallel=2 --out_dir=...   # 2 runs at a time
  python bin/ablation.py --report_only --out_dir=...  # redo plots and tables

Writes into --out_dir: runs/<config>/seed<k>.json (one per finished run),
settings.json, results.json, results.csv, val_bpd_vs_steps.png,
val_bpd_vs_seconds.png, train_bpd_vs_steps.png, samples.png,
samples/<config>.png and summary.md (see `tfp_glow.ablation`).

Resumable: rerunning the same command skips every finished configuration and
seed (a killed grid loses only the runs in progress); more --configs or
--seeds extend the grid; other settings in the same --out_dir are refused.
"""

import os
import sys
import time

from absl import app
from absl import flags

from tfp_glow import ablation
from tfp_glow import run_dir
from tfp_glow.programs import launch

_DEFAULTS = ablation.Settings()
FLAGS = flags.FLAGS

# The grid.
flags.DEFINE_list(
    'configs', [c.name for c in ablation.DEFAULT_GRID],
    'Configurations to run, each PERMUTATION-COUPLING[-ACTNORM_INIT] with '
    'permutation in reverse|shuffle|conv|conv_lu, coupling in '
    'additive|affine, actnorm_init in data|identity (default data): any '
    'sub-grid of the default, or other combinations.')
flags.DEFINE_integer('seeds', 3, 'Seeds per configuration: seeds 0 .. N-1. '
                     'Seed k fixes the weights, the data order and the '
                     'training noise of run k, the same for every '
                     'configuration.')
flags.DEFINE_integer('steps', _DEFAULTS.steps,
                     'Training steps of every run (a multiple of '
                     '--eval_every).')
flags.DEFINE_integer('eval_every', _DEFAULTS.eval_every,
                     'Evaluate validation and test bits/dim every this many '
                     'steps (and at step 0).')
flags.DEFINE_string('out_dir', None, 'Where the runs, results, plots and '
                    'summary go (default runs/ablation_<dataset>).')
flags.DEFINE_integer('parallel', 1, 'Runs at the same time, each in its own '
                     'process with --threads/N TensorFlow threads; 1 runs '
                     'them one after another in this process.')
flags.DEFINE_integer('threads', None, 'CPU threads to use in all (default: '
                     'all cores with --parallel > 1, TensorFlow\'s default '
                     'otherwise).')
flags.DEFINE_bool('report_only', False, 'Train nothing: rewrite results, '
                  'plots and summary from the finished runs in --out_dir.')
# Data, as bin/train.py.
flags.DEFINE_string(
    'dataset', _DEFAULTS.dataset,
    "'digits' (embedded 8x8 digits, 17 grey levels, offline), 'folder:PATH' "
    '(PNG/JPEG files under PATH; no test split, validation only), or a TFDS '
    'image dataset name, e.g. mnist, cifar10.')
flags.DEFINE_string('data_dir', None, "TFDS data directory (default: TFDS's, "
                    '~/tensorflow_datasets).')
flags.DEFINE_bool('download', False, 'Let TFDS download and prepare a missing '
                  'dataset (needs network).')
flags.DEFINE_integer('image_size', None, 'Resize (centre crop, then bilinear) '
                     'images to this square size. Default: the native size.')
flags.DEFINE_integer('n_bits', None, 'Keep this many bits (1..8) of 8-bit '
                     'images. Default: all. Must be unset for digits.')
# The model and recipe every configuration shares (bin/train.py's digits
# defaults, without Polyak averaging or augmentation, and at the rate of datasets
# other than the digits, 1e-3: bin/train.py's 3e-3 for the digits was measured
# with the averaging and the shifts, which the ablation leaves out, and
# docs/ABLATION.md was measured at 1e-3).
flags.DEFINE_integer('levels', _DEFAULTS.levels, 'L, levels of the flow.')
flags.DEFINE_integer('steps_per_level', _DEFAULTS.steps_per_level,
                     'K, steps of flow per level.')
flags.DEFINE_integer('hidden_width', _DEFAULTS.hidden_width,
                     'Hidden width of the coupling networks.')
flags.DEFINE_bool('learn_top', _DEFAULTS.learn_top,
                  'Learned top prior (the paper\'s learntop).')
flags.DEFINE_integer('batch_size', _DEFAULTS.batch_size,
                     'Images per training step.')
flags.DEFINE_float('learning_rate', _DEFAULTS.learning_rate,
                   'Peak learning rate of Adam.')
flags.DEFINE_integer('warmup_steps', _DEFAULTS.warmup_steps,
                     'Linear learning-rate warm-up steps.')
flags.DEFINE_integer('init_batch_size', _DEFAULTS.init_batch_size,
                     'Images of the data-dependent ActNorm init (the first '
                     'of each seed\'s training stream).')
flags.DEFINE_bool('jit_compile', _DEFAULTS.jit_compile,
                  'Compile the training and evaluation steps with XLA.')
flags.DEFINE_integer('eval_seed', _DEFAULTS.eval_seed,
                     'Seed of the fixed dequantisation noise of the '
                     'validation and test images (the same for every run).')
flags.DEFINE_integer('eval_batch_size', _DEFAULTS.eval_batch_size,
                     'Images per evaluation batch.')
# Samples.
flags.DEFINE_float('temperature', _DEFAULTS.temperature,
                   'Temperature of the sample grids.')
flags.DEFINE_integer('num_samples', _DEFAULTS.num_samples,
                     'Samples per configuration.')
flags.DEFINE_integer('sample_seed', _DEFAULTS.sample_seed,
                     'Seed of the latent noise of the samples (the same for '
                     'every configuration).')

_SETTINGS_FLAGS = tuple(f.name for f in
                        ablation.Settings.__dataclass_fields__.values())


def _settings():
  return ablation.Settings(**{name: FLAGS[name].value
                              for name in _SETTINGS_FLAGS})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Under runs/ like every program's default, never under a folder named
  # tfp_glow, which would hide the package (see tfp_glow/run_dir.py).
  out_dir = FLAGS.out_dir or run_dir.default_model_dir(
      'ablation_' + FLAGS.dataset)
  if FLAGS.report_only:
    if not os.path.isdir(os.path.join(out_dir, 'runs')):
      raise app.UsageError(f'--report_only: {out_dir} holds no runs.')
    results = ablation.report(out_dir, order=[c for c in FLAGS.configs if c])
    print(f"Rewrote the results of {len(results['runs'])} run(s) in {out_dir}.")
    return 0
  if FLAGS.dataset == 'digits' and FLAGS.n_bits is not None:
    raise app.UsageError('--n_bits must be unset for digits (17 native '
                         'levels).')
  if FLAGS.seeds < 1:
    raise app.UsageError(f'--seeds must be >= 1, got {FLAGS.seeds}.')
  if FLAGS.parallel < 1:
    raise app.UsageError(f'--parallel must be >= 1, got {FLAGS.parallel}.')
  if FLAGS.threads is not None and FLAGS.threads < 1:
    raise app.UsageError(f'--threads must be >= 1, got {FLAGS.threads}.')
  try:
    configs = [ablation.parse_config(c) for c in FLAGS.configs if c]
    settings = _settings()
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if FLAGS.parallel == 1 and FLAGS.threads:
    ablation.grid.set_threads(FLAGS.threads)
  t0 = time.perf_counter()
  try:
    outcome = ablation.run_grid(
        settings, configs, range(FLAGS.seeds), out_dir,
        parallel=FLAGS.parallel, threads=FLAGS.threads,
        data_dir=FLAGS.data_dir, download=FLAGS.download,
        log=lambda line: print(line, flush=True))
  except ValueError as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  print()
  with open(os.path.join(out_dir, 'summary.md')) as f:
    print(f.read())
  print(f'Total wall time {time.perf_counter() - t0:.0f} s; results in '
        f'{out_dir}.')
  return 1 if outcome['failed'] else 0


def run():
  """The entry point of bin/ablation.py and of tfp-glow-ablation."""
  launch.run(main, __name__)


if __name__ == '__main__':
  run()
