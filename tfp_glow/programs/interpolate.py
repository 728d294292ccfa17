r"""Interpolates between two test images in a trained Glow's latent space (PNG strip).

  python bin/interpolate.py --model_dir=runs/digits --index_a=0 --index_b=1 \
      --steps=8 --out=/tmp/interp.png

Both images (at their bin centres) are encoded with `tfp_glow.encode` to the
standardised latent eps, mixed linearly, eps(t) = (1 - t) eps_a + t eps_b for `--steps`
values of t from 0 to 1, and decoded with `tfp_glow.decode`; the ends reproduce the two
images. The model is rebuilt from --model_dir/config.json alone.
"""

import os
import sys

from absl import app
from absl import flags

from tfp_glow import run_dir
from tfp_glow.programs import launch

FLAGS = flags.FLAGS
run_dir.define_model_dir_flags()
flags.DEFINE_enum('split', 'test', ['train', 'validation', 'test', 'train_full'],
                  'Split the two images come from (folders: use validation).')
flags.DEFINE_string('data_dir', None,
                    'TFDS data directory (default: the one in config.json, else TFDS\'s).')
flags.DEFINE_integer('index_a', 0, 'Index of the first image in the split.')
flags.DEFINE_integer('index_b', 1, 'Index of the second image in the split.')
flags.DEFINE_integer('steps', 8, 'Images in the strip, both ends included (>= 2).')
flags.DEFINE_string('out', None, 'Output PNG (default: MODEL_DIR/interpolation.png).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.steps < 2:
    raise app.UsageError(f'--steps must be >= 2, got {FLAGS.steps}.')
  if min(FLAGS.index_a, FLAGS.index_b) < 0:
    raise app.UsageError('--index_a and --index_b must be >= 0.')
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfp_glow  # pylint: disable=g-import-not-at-top
  from tfp_glow import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_glow import images as images_lib  # pylint: disable=g-import-not-at-top

  try:
    model, config, _ = run_dir.load_trained(FLAGS.model_dir, FLAGS.checkpoint)
    data_dir = FLAGS.data_dir or config.get('training', {}).get('data_dir')
    ds, info = run_dir.load_split(config, FLAGS.split, batch_size=256,
                                  data_dir=data_dir, shuffle=False, dequantize=False)
  except (FileNotFoundError, ValueError, NotADirectoryError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  last = max(FLAGS.index_a, FLAGS.index_b)
  if last >= info.num_examples:
    print(f'Error: index {last} is out of range: the {FLAGS.split} split has '
          f'{info.num_examples} images.', file=sys.stderr)
    return 2
  images, labels = [], []
  for batch in ds.unbatch().take(last + 1):
    x, y = batch if isinstance(batch, tuple) else (batch, None)
    images.append(x)
    labels.append(y)
  x = tf.stack([images[FLAGS.index_a], images[FLAGS.index_b]])
  y = None
  if model.conditional:
    y = tf.stack([labels[FLAGS.index_a], labels[FLAGS.index_b]])
  eps = tfp_glow.encode(model.distribution, x, labels=y)
  t = tf.linspace(0.0, 1.0, FLAGS.steps)[:, None]
  mixed = (1.0 - t) * eps[0] + t * eps[1]
  y_mixed = None
  if y is not None:
    # The class embedding cannot be mixed: the first half uses a's class, the rest b's.
    y_mixed = tf.where(tf.range(FLAGS.steps) < (FLAGS.steps + 1) // 2, y[0], y[1])
  strip = tfp_glow.decode(model.distribution, mixed, labels=y_mixed)
  out = FLAGS.out or os.path.join(FLAGS.model_dir, 'interpolation.png')
  images_lib.save_grid_png(np.asarray(data_lib.postprocess(
      strip, config['model']['n_bins'])), out, nrow=FLAGS.steps)
  print(f'Wrote {out}: {FLAGS.steps} images from {FLAGS.split}[{FLAGS.index_a}] to '
        f'{FLAGS.split}[{FLAGS.index_b}].')
  return 0


def run():
  """The entry point of bin/interpolate.py and of the console script tfp-glow-interpolate."""
  launch.run(main, __name__)


if __name__ == '__main__':
  run()
