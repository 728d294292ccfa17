r"""Prints the bits per dimension of a trained Glow on its data or on other data.

  python bin/evaluate.py --model_dir=runs/digits --split=test
  python bin/evaluate.py --model_dir=runs/digits --eval_draws=5
  python bin/evaluate.py --model_dir=runs/faces --dataset=folder:more_faces

bits/dim = (-log p(x) + D log(n_bins)) / (D ln 2), D = H*W*C, averaged over the split,
with x uniformly dequantised as in the papers; --nodequantize puts every value at its
bin centre instead. The noise of example i is drawn from the stateless seed
[--eval_seed, i], so the same weights, split and seed give the same number at any
--batch_size, here and in bin/train.py's results.json (which uses the same flags).
--eval_draws=K averages K draws (seeds eval_seed .. eval_seed + K - 1) and reports the
standard error of that mean.

The model and its data settings come from --model_dir/config.json. --dataset scores
other data (any spec bin/train.py accepts: digits, a TFDS name, folder:PATH), read
through the model's --image_size and --n_bits; data whose height and width, channels
or bit depth (n_bins) differ from the model's is refused, naming the difference.
"""

import sys

from absl import app
from absl import flags

from tfp_glow import run_dir
from tfp_glow.programs import launch

FLAGS = flags.FLAGS
run_dir.define_model_dir_flags()
run_dir.define_eval_flags()
flags.DEFINE_string('dataset', None,
                    'Score this data instead of the model\'s own (any --dataset '
                    'bin/train.py accepts: digits, a TFDS name, folder:PATH).')
flags.DEFINE_enum('split', None, ['train', 'validation', 'test', 'train_full', 'all'],
                  'Split to evaluate. Default: test; for a folder (which has no '
                  'test split), validation of the model\'s own folder, all of a '
                  'folder given by --dataset.')
flags.DEFINE_string('data_dir', None,
                    'TFDS data directory (default: the one in config.json, else TFDS\'s).')
flags.DEFINE_integer('batch_size', 256, 'Images per evaluation batch (the result does '
                     'not depend on it).')
flags.DEFINE_bool('dequantize', True,
                  'Uniform dequantisation noise (the papers\' number); False: bin '
                  'centres.')


def default_split(dataset, other):
  """--split's default: test, except for folders, which have none."""
  from tfp_glow import data as data_lib  # pylint: disable=g-import-not-at-top
  if not dataset.startswith(data_lib.FOLDER_PREFIX):
    return 'test'
  return 'all' if other else 'validation'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.batch_size < 1:
    raise app.UsageError(f'--batch_size must be >= 1, got {FLAGS.batch_size}.')
  if FLAGS.eval_draws > 1 and not FLAGS.dequantize:
    raise app.UsageError(f'--eval_draws={FLAGS.eval_draws} averages dequantisation '
                         'draws; with --nodequantize there is no noise to average.')

  try:
    model, config, path = run_dir.load_trained(FLAGS.model_dir, FLAGS.checkpoint)
    dataset = FLAGS.dataset or config['model']['dataset']
    split = FLAGS.split or default_split(dataset, FLAGS.dataset is not None)
    data_dir = FLAGS.data_dir or config.get('training', {}).get('data_dir')
    model.compile()
    result = run_dir.evaluate_bpd(
        model, config, split, batch_size=FLAGS.batch_size, seed=FLAGS.eval_seed,
        draws=FLAGS.eval_draws, dataset=FLAGS.dataset, data_dir=data_dir,
        dequantize=FLAGS.dequantize)
  except (FileNotFoundError, ValueError, TypeError, NotADirectoryError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  noise = (f'dequantised, seed {FLAGS.eval_seed}' if FLAGS.eval_draws == 1 else
           'dequantised') if FLAGS.dequantize else 'bin centres'
  of = f' of {result["dataset"]}' if FLAGS.dataset else ''
  print(f'{split} bits/dim: {run_dir.format_bpd(result)}  ({result["num_examples"]} '
        f'images{of}, weights {path}, {noise})')
  return 0


def run():
  """The entry point of bin/evaluate.py and of the console script tfp-glow-evaluate."""
  launch.run(main, __name__)


if __name__ == '__main__':
  run()
