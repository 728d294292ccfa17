r"""Writes a grid of images sampled from a trained Glow, one row per temperature.

  python bin/sample.py --model_dir=runs/digits --temperatures=0,0.5,0.7,1 \
      --num=8 --out=/tmp/samples.png

Temperature T scales the latent noise at every level (eps ~ N(0, T^2)): T=1 samples the
model's own distribution, T=0 gives the image of the prior means, T ~ 0.7 usually looks
best. The model is rebuilt from --model_dir/config.json alone. A class-conditional model
samples classes 0, 1, 2, ... along each row (or --label for all).
"""

import os
import sys

from absl import app
from absl import flags

from tfp_glow import run_dir
from tfp_glow.programs import launch

FLAGS = flags.FLAGS
run_dir.define_model_dir_flags()
flags.DEFINE_list('temperatures', ['0.0', '0.5', '0.7', '1.0'],
                  'Comma-separated temperatures, one grid row each.')
flags.DEFINE_integer('num', 8, 'Images per row.')
flags.DEFINE_integer('seed', 0, 'Sampling seed; the same seed gives the same grid.')
flags.DEFINE_integer('label', None,
                     'Class of every image (class-conditional models only).')
flags.DEFINE_string('out', None, 'Output PNG (default: MODEL_DIR/samples.png).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    temperatures = [float(t) for t in FLAGS.temperatures]
  except ValueError as e:
    raise app.UsageError(f'--temperatures must be numbers: {e}')
  if not temperatures or min(temperatures) < 0:
    raise app.UsageError(f'--temperatures must be >= 0, got {FLAGS.temperatures}.')
  if FLAGS.num < 1:
    raise app.UsageError(f'--num must be >= 1, got {FLAGS.num}.')
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_glow import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_glow import images as images_lib  # pylint: disable=g-import-not-at-top

  try:
    model, config, path = run_dir.load_trained(FLAGS.model_dir, FLAGS.checkpoint)
  except (FileNotFoundError, ValueError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  labels = None
  if model.conditional:
    n_classes = model.glow.num_classes
    if FLAGS.label is not None and not 0 <= FLAGS.label < n_classes:
      raise app.UsageError(f'--label must be in 0..{n_classes - 1}, got {FLAGS.label}.')
    labels = (tf.fill([FLAGS.num], FLAGS.label) if FLAGS.label is not None
              else tf.range(FLAGS.num) % n_classes)
  elif FLAGS.label is not None:
    raise app.UsageError('--label needs a class-conditional model.')
  rows = []
  for i, t in enumerate(temperatures):
    x = model.sample(FLAGS.num, temperature=t, seed=[FLAGS.seed, i], labels=labels)
    rows.append(np.asarray(data_lib.postprocess(x, config['model']['n_bins'])))
  out = FLAGS.out or os.path.join(FLAGS.model_dir, 'samples.png')
  images_lib.save_grid_png(np.concatenate(rows), out, nrow=FLAGS.num)
  print(f'Wrote {out}: {len(temperatures)} rows (T = '
        f'{", ".join(f"{t:g}" for t in temperatures)}) of {FLAGS.num} samples, weights '
        f'{path}.')
  return 0


def run():
  """The entry point of bin/sample.py and of the console script tfp-glow-sample."""
  launch.run(main, __name__)


if __name__ == '__main__':
  run()
