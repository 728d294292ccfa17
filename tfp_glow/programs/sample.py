r"""Writes a grid of images sampled from a trained Glow, one row per temperature.

  python bin/sample.py --model_dir=runs/digits --temperatures=0,0.5,0.7,1 \
      --num=8 --out=/tmp/samples.png

Temperature T scales the latent noise at every level (eps ~ N(0, T^2)): T=1 samples the
model's own distribution, T=0 gives the image of the prior means, T ~ 0.7 usually looks
best. The model is rebuilt from --model_dir/config.json alone. A class-conditional model
samples classes 0, 1, 2, ... along each row (or --label for all).

A sample that is not finite (the flow overflows at a high temperature) fails the whole
command with exit status 1 and an error naming the temperature and how many samples:
nothing is written, never a grid with black tiles passed off as samples. --num times the
number of temperatures may not exceed --max_count (default 1024, as the export's
`sample` signature), so one command cannot ask for more memory than the machine has.
"""

import math
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
flags.DEFINE_integer('max_count', 1024,
                     'The most images one command draws (--num times the number of '
                     '--temperatures); the same default as the export\'s sample '
                     'signature.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    temperatures = [float(t) for t in FLAGS.temperatures]
  except ValueError as e:
    raise app.UsageError(f'--temperatures must be numbers: {e}')
  if not temperatures:
    raise app.UsageError('--temperatures must name at least one temperature.')
  for t in temperatures:
    if not math.isfinite(t) or t < 0:
      raise app.UsageError(f'--temperatures must be finite and >= 0, got {t:g}.')
  if FLAGS.num < 1:
    raise app.UsageError(f'--num must be >= 1, got {FLAGS.num}.')
  if FLAGS.max_count < 1:
    raise app.UsageError(f'--max_count must be >= 1, got {FLAGS.max_count}.')
  total = FLAGS.num * len(temperatures)
  if total > FLAGS.max_count:
    raise app.UsageError(
        f'--num={FLAGS.num} times {len(temperatures)} temperature(s) is {total} '
        f'images, more than --max_count={FLAGS.max_count}; ask for fewer, or raise '
        '--max_count if the machine has the memory.')
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
  out = FLAGS.out or os.path.join(FLAGS.model_dir, 'samples.png')
  rows = []
  for i, t in enumerate(temperatures):
    try:
      x = model.sample(FLAGS.num, temperature=t, seed=[FLAGS.seed, i], labels=labels)
    except FloatingPointError as e:
      # The library names the count and the temperature; every row is drawn before
      # anything is written, so a failure leaves no partial grid behind.
      print(f'Error: temperature {t:g}: {e} Nothing was written to {out}.',
            file=sys.stderr)
      return 1
    rows.append(np.asarray(data_lib.postprocess(x, config['model']['n_bins'])))
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
