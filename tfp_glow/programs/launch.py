"""Runs a program module under absl, whoever launched it.

A program's flags are defined in its module (`tfp_glow.programs.train`), but
absl's `--help` lists the flags of the module named `sys.argv[0]` (the launcher:
`bin/train.py`, or the `tfp-glow-train` console script) and prints the
docstring of `__main__`. So before `absl.app.run`, the program's flags (and the
shared ones it defined through `tfp_glow.run_dir`) are registered as key flags
of `sys.argv[0]`, and its docstring becomes the usage text: `--help` reads the
same from `python bin/train.py`, `tfp-glow-train` and
`python -m tfp_glow.programs.train`.

Errors in the command line read the same in every program (issue 21.4): one
line, `Error: ...`, on stderr and exit status 2, whether absl's flag parser
refuses a flag (unknown, unparsable, a required one missing) or the program's
`main` raises `app.UsageError` (a value out of range). absl's own handling
would print the whole usage text before the error and exit with 1; `--help`
still prints the usage.

What TensorFlow prints by itself (its load-time lines, the "failed call to
cuInit" error on a machine without a GPU, C++ warnings) is hidden before this
module runs, by `tfp_glow/_program_start.py`, which `tfp_glow/__init__.py`
calls before TensorFlow is imported: for `bin/<name>.py`, `tfp-glow-<name>`
and `python -m tfp_glow.programs.<name>` alike. Here, the libraries' Python
log (absl's, which `absl.app` would show from INFO up: TFDS says "Failed to
load dataset ..." for every name it looks up) is kept to warnings and errors.
`TFP_GLOW_TF_LOGS=1` brings all of it back; `--verbosity=0` (absl's flag) the
INFO lines alone.
"""

import functools
import re
import sys

from absl import app
from absl import flags

from tfp_glow import _program_start

SHARED_FLAG_MODULES = ('tfp_glow.run_dir',)


def keras_verbosity(verbose, stream=None):
  """A --verbose flag's value as Keras takes it: '0', '1', '2' as they are; 'auto'
  is 1 (the progress bar) when `stream` (default stdout) is a terminal, else 2 (one
  line per epoch): a progress bar redrawn into a log file floods it."""
  if verbose != 'auto':
    return int(verbose)
  stream = sys.stdout if stream is None else stream
  try:
    return 1 if stream.isatty() else 2
  except (AttributeError, ValueError):  # no isatty(), or a closed stream
    return 2


# absl's words for a required flag left out (one sentence per flag).
_REQUIRED = re.compile(r'flag --(\w+)=None: Flag --\1 must have a value other than '
                       r'None\.?')
EXIT_USAGE = 2


def error_line(message):
  """The one line a program prints for a bad command line."""
  text = ' '.join(str(message).split())
  names = _REQUIRED.findall(text)
  if names and not _REQUIRED.sub('', text).strip():
    if len(names) == 1:
      flag = flags.FLAGS[names[0]] if names[0] in flags.FLAGS else None
      text = f'--{names[0]} is required' + (
          f': {flag.help}' if flag is not None else '.')
    else:
      text = ' and '.join(f'--{n}' for n in names) + ' are required.'
  return f'Error: {text}'


def parse_flags(argv):
  """absl's flag parsing, with a refused flag reported in one line (exit 2)."""
  try:
    argv = flags.FLAGS(argv)
  except flags.Error as e:
    print(f'{error_line(e)} (--help lists the flags)', file=sys.stderr)
    sys.exit(EXIT_USAGE)
  if (flags.FLAGS['verbosity'].using_default_value and
      not _program_start.tf_logs_wanted()):
    # absl.app would raise its Python logging to INFO here, and libraries log
    # through it (TFDS: "Failed to load dataset ... from files"): warnings and
    # errors only, unless --verbosity (absl's flag) or TFP_GLOW_TF_LOGS says so.
    flags.FLAGS.verbosity = -1
  return argv


def one_line_usage_errors(main):
  """`main` with `app.UsageError` reported in one line and exit status 2."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except app.UsageError as e:
      print(error_line(e), file=sys.stderr)
      return EXIT_USAGE

  return wrapped


def run(main, module_name):
  """`absl.app.run(main)` with the flags and docstring of `module_name`, and bad
  command lines reported in one line with exit status 2."""
  module = sys.modules[module_name]
  launcher = sys.argv[0]
  for name in (module_name,) + SHARED_FLAG_MODULES:
    for flag in flags.FLAGS.get_flags_for_module(name):
      flags.FLAGS.register_key_flag_for_module(launcher, flag)
  main_module = sys.modules.get('__main__')
  if main_module is not None and main_module is not module and module.__doc__:
    main_module.__doc__ = module.__doc__
  app.run(one_line_usage_errors(main), flags_parser=parse_flags)
