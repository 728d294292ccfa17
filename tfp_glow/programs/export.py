r"""Exports a trained Glow as a SavedModel that TensorFlow Serving can serve.

  python bin/export.py --model_dir=runs/digits --export_dir=/tmp/export

writes `--export_dir/<version>/` (the next version after the largest present, or
--version) through a temporary directory and a rename. Signatures (see
`tfp_glow/export.py`): `serving_default` / `log_prob` (float images in [-0.5, 0.5]
-> log-likelihood in nats and bits/dim), `log_prob_uint8` (uint8 bin indices),
`sample` (count, temperature, seed -> uint8 images), `encode`, `decode`,
`metadata`. `sample` refuses a `count` above --max_count (recorded in `metadata`).
A SavedModel is a program: serve only exports you trust. Loading needs TensorFlow
only:

  saved_model_cli show --dir /tmp/export/1 --all
  saved_model_cli run --dir /tmp/export/1 --tag_set serve \
      --signature_def serving_default --inputs images=/tmp/x.npy
"""

import contextlib
import logging
import os
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging

from tfp_glow import run_dir
from tfp_glow.programs import launch

FLAGS = flags.FLAGS
run_dir.define_model_dir_flags()
flags.DEFINE_string('export_dir', None,
                    'Base directory of the exports (TF Serving\'s model base path); '
                    'the SavedModel goes to export_dir/<version>/.')
flags.DEFINE_integer('version', None,
                     'Version number (default: one more than the largest present). '
                     'An existing version is never overwritten.')
flags.DEFINE_integer('max_count', 1024,
                     'The most images one request to the `sample` signature may ask '
                     'for; larger counts are refused (one request must not exhaust '
                     'the server\'s memory). Recorded in `metadata`.', lower_bound=1)
flags.mark_flag_as_required('export_dir')


@contextlib.contextmanager
def quiet_tensorflow_logger():
  """TensorFlow's Python loggers at WARNING for the duration.

  `tf.saved_model.save` logs about nine INFO lines per export (inputs renamed to
  `..._resource`, sharding callback durations, assets and fingerprint written),
  through `tf.get_logger()` and through absl's logger (which `absl.app` shows at
  INFO), that say nothing to someone exporting a model. Warnings and errors
  still show; the levels are restored afterwards.
  """
  tf_logger = logging.getLogger('tensorflow')
  tf_level, absl_verbosity = tf_logger.level, absl_logging.get_verbosity()
  tf_logger.setLevel(max(logging.WARNING, tf_logger.getEffectiveLevel()))
  absl_logging.set_verbosity(min(absl_logging.WARNING, absl_verbosity))
  try:
    yield
  finally:
    tf_logger.setLevel(tf_level)
    absl_logging.set_verbosity(absl_verbosity)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.version is not None and FLAGS.version < 1:
    raise app.UsageError(f'--version must be >= 1, got {FLAGS.version}.')
  from tfp_glow import export  # pylint: disable=g-import-not-at-top
  from tfp_glow import scoring  # pylint: disable=g-import-not-at-top

  try:
    model, _, _ = run_dir.load_trained(FLAGS.model_dir, FLAGS.checkpoint)
    # bin/score.py saves the in-distribution reference next to the model;
    # with it the export's `score` signature also gives typicality.
    reference = os.path.join(FLAGS.model_dir, scoring.REFERENCE_NAME)
    reference = scoring.load_reference(reference) if os.path.exists(
        reference) else None
    with quiet_tensorflow_logger():
      path = export.save(model, FLAGS.export_dir, version=FLAGS.version,
                         max_count=FLAGS.max_count, reference=reference)
  except (FileNotFoundError, FileExistsError, ValueError,
          NotADirectoryError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  print(f'Exported {FLAGS.model_dir} ({FLAGS.checkpoint} weights) to {path}')
  print(f'Signatures: {", ".join(export.SIGNATURES)}; sample takes up to '
        f'{FLAGS.max_count} images per request')
  return 0


def run():
  """The entry point of bin/export.py and of the console script tfp-glow-export."""
  launch.run(main, __name__)


if __name__ == '__main__':
  run()
