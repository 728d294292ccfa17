r"""Prints the bits per dimension of a trained Glow on one split of its dataset.

  python bin/evaluate.py --model_dir=runs/digits --split=test

bits/dim = (-log p(x) + D log(n_bins)) / (D ln 2), D = H*W*C, averaged over the split,
with x uniformly dequantised (fixed --seed) as in the papers; --nodequantize puts every
value at its bin centre instead. The model and the dataset settings come from
--model_dir/config.json.
"""

import sys

from absl import app
from absl import flags

from tfp_glow import run_dir
from tfp_glow.programs import launch

FLAGS = flags.FLAGS
run_dir.define_model_dir_flags()
flags.DEFINE_enum('split', 'test', ['train', 'validation', 'test', 'train_full'],
                  'Split to evaluate (folders have no test split: use validation).')
flags.DEFINE_string('data_dir', None,
                    'TFDS data directory (default: the one in config.json, else TFDS\'s).')
flags.DEFINE_integer('batch_size', 256, 'Images per evaluation batch.')
flags.DEFINE_bool('dequantize', True,
                  'Uniform dequantisation noise (the papers\' number); False: bin '
                  'centres.')
flags.DEFINE_integer('seed', 0, 'Seed of the dequantisation noise.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.batch_size < 1:
    raise app.UsageError(f'--batch_size must be >= 1, got {FLAGS.batch_size}.')

  try:
    model, config, path = run_dir.load_trained(FLAGS.model_dir, FLAGS.checkpoint)
    data_dir = FLAGS.data_dir or config.get('training', {}).get('data_dir')
    ds, info = run_dir.load_split(config, FLAGS.split, batch_size=FLAGS.batch_size,
                                  data_dir=data_dir, shuffle=False,
                                  dequantize=FLAGS.dequantize, seed=FLAGS.seed)
  except (FileNotFoundError, ValueError, NotADirectoryError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  model.compile()
  bpd = float(model.evaluate(ds, verbose=0, return_dict=True)['bpd'])
  print(f'{FLAGS.split} bits/dim: {bpd:.4f}  ({info.num_examples} images, weights '
        f'{path}, {"dequantised" if FLAGS.dequantize else "bin centres"})')
  return 0


def run():
  """The entry point of bin/evaluate.py and of the console script tfp-glow-evaluate."""
  launch.run(main, __name__)


if __name__ == '__main__':
  run()
