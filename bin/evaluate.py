r"""Prints the bits per dimension of a trained Glow on one split of its dataset.

  python bin/evaluate.py --model_dir=/tmp/tfp_glow/digits --split=test

bits/dim = (-log p(x) + D log(n_bins)) / (D ln 2), D = H*W*C, averaged over the split,
with x uniformly dequantised (fixed --seed) as in the papers; --nodequantize puts every
value at its bin centre instead. The model and the dataset settings come from
--model_dir/config.json.
"""

import os
import sys

# Run from a checkout (`python bin/evaluate.py`): the repository's package first.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(1, _REPO_ROOT)

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string('model_dir', None, 'Model directory written by bin/train.py.')
flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'],
                  'Which weights: the best validation bits/dim (falls back to latest '
                  'when the run had no validation) or the last epoch.')
flags.DEFINE_enum('split', 'test', ['train', 'validation', 'test', 'train_full'],
                  'Split to evaluate (folders have no test split: use validation).')
flags.DEFINE_string('data_dir', None,
                    'TFDS data directory (default: the one in config.json, else TFDS\'s).')
flags.DEFINE_integer('batch_size', 256, 'Images per evaluation batch.')
flags.DEFINE_bool('dequantize', True,
                  'Uniform dequantisation noise (the papers\' number); False: bin '
                  'centres.')
flags.DEFINE_integer('seed', 0, 'Seed of the dequantisation noise.')
flags.mark_flag_as_required('model_dir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.batch_size < 1:
    raise app.UsageError(f'--batch_size must be >= 1, got {FLAGS.batch_size}.')
  from tfp_glow import cli  # pylint: disable=g-import-not-at-top

  try:
    model, config, path = cli.load_trained(FLAGS.model_dir, FLAGS.checkpoint)
    data_dir = FLAGS.data_dir or config.get('training', {}).get('data_dir')
    ds, info = cli.load_split(config, FLAGS.split, batch_size=FLAGS.batch_size,
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


if __name__ == '__main__':
  app.run(main)
