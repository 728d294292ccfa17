"""How a tfp_glow program starts: TensorFlow loaded quietly, before anything else.

A program (`bin/<name>.py`, the console script `tfp-glow-<name>`, or `python -m
tfp_glow.programs.<name>`) prints its own lines only. TensorFlow, left alone,
prints half a dozen lines of its own on every run (issue 21.2):

* while it loads: "All log messages before absl::InitializeLog() is called are
  written to STDERR", "oneDNN custom operations are on ...", "Could not find
  cuda drivers on your machine", the CPU instruction notice. These are written
  before TensorFlow reads its settings, so no environment variable removes them
  (`TF_CPP_MIN_LOG_LEVEL=3` does not); only file descriptor 2 can: during the
  import it points to a temporary file, and what landed there is written back
  to stderr afterwards, minus TensorFlow's log lines (`is_tf_log_line`).
* later, from C++: `E0000 ... failed call to cuInit ... (303)` when the first
  op creates the devices on a machine without an NVIDIA driver (the pip wheel
  is built with CUDA), and warnings such as grappler's `W0000 ... Not handling
  type DT_DOUBLE`. `TF_ENABLED_DEVICE_TYPES=CPU` (only where no GPU driver is
  present: neither `/proc/driver/nvidia` nor `/dev/kfd`) keeps TensorFlow from
  initialising CUDA at all, and `TF_CPP_MIN_LOG_LEVEL=2` hides its INFO and
  WARNING lines; its ERROR lines still show.
* from Python: the `tensorflow` logger's warnings (set to ERROR).

Each variable is set only where the user has not set it. `TFP_GLOW_TF_LOGS=1`
turns all of this off except the device choice: TensorFlow's logs come back as
TensorFlow prints them (and `TF_CPP_MIN_LOG_LEVEL` works as TensorFlow
documents). If a program ever dies at start without a word, that is the
variable to rerun it with: a crash inside TensorFlow's import would leave its
last words in the temporary file.

`prepare()` runs first thing in `tfp_glow/__init__.py`, before TensorFlow is
imported, and does nothing unless this process is a tfp_glow program
(`started_as_program`): importing `tfp_glow` from your own code changes no
setting and hides nothing. This module imports nothing of TensorFlow or of
tfp_glow.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

# Set by bin/<name>.py (the program's name) before it imports tfp_glow; child
# processes inherit it, so what a program starts is quiet too.
PROGRAM_VAR = 'TFP_GLOW_PROGRAM'
# 1 (or any value but 0 and empty): TensorFlow's own logs, as TensorFlow prints them.
TF_LOGS_VAR = 'TFP_GLOW_TF_LOGS'
# The console scripts of pyproject.toml are named tfp-glow-<program>.
SCRIPT_PREFIX = 'tfp-glow-'
PROGRAM_PACKAGE = 'tfp_glow.programs.'
# Python's options that take a value as the next argument (`python -X dev -m ...`).
_OPTIONS_WITH_VALUE = ('-X', '-W', '--check-hash-based-pycs')

# TensorFlow's C++ log records: absl's prefix `I0000 00:00:1796279464.268397
# 3868 port.cc:153] ...` (severity, month and day, hours:minutes:seconds, where
# the seconds can be a whole epoch as here, thread, file:line), the banner
# absl prints before its logging is set up, and the second line of the CPU
# feature notice.
_TF_LOG_LINE = re.compile(
    r'^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\s:\]]+:\d+\] '
    r'|WARNING: All log messages before absl::InitializeLog\(\) is called '
    r'|To enable the following instructions: .* rebuild TensorFlow )')


def tf_logs_wanted(environ=None):
  """Whether `TFP_GLOW_TF_LOGS` asks for TensorFlow's own logs."""
  environ = os.environ if environ is None else environ
  return environ.get(TF_LOGS_VAR, '').strip() not in ('', '0')


def started_as_program(argv=None, orig_argv=None, environ=None):
  """True in a process started as a tfp_glow program: a `bin/` launcher (which
  sets `TFP_GLOW_PROGRAM`, or a process one started), a `tfp-glow-*` console
  script, or `python -m tfp_glow.programs.<name>`."""
  environ = os.environ if environ is None else environ
  if environ.get(PROGRAM_VAR):
    return True
  argv = sys.argv if argv is None else argv
  if argv and os.path.basename(argv[0] or '').startswith(SCRIPT_PREFIX):
    return True
  # `python -m pkg.mod` imports the packages above the module while sys.argv[0]
  # is still '-m'; the interpreter's own command line says which module it is.
  args = list(getattr(sys, 'orig_argv', ()) if orig_argv is None else orig_argv)
  i = 1
  while i < len(args):
    arg = args[i]
    if arg == '-m':
      return i + 1 < len(args) and args[i + 1].startswith(PROGRAM_PACKAGE)
    if arg in _OPTIONS_WITH_VALUE:
      i += 2
      continue
    if arg == '-c' or not arg.startswith('-'):
      return False  # a command or a script: not a module run
    i += 1
  return False


def no_gpu_driver():
  """On Linux, neither NVIDIA's kernel driver nor AMD's ROCm is present."""
  return os.path.isdir('/proc') and not any(
      os.path.exists(p) for p in ('/proc/driver/nvidia', '/dev/kfd'))


def is_tf_log_line(line):
  """True for a line TensorFlow's C++ logging wrote (see the module docstring)."""
  return bool(_TF_LOG_LINE.match(line))


def without_tf_log_lines(text):
  """`text` without TensorFlow's C++ log lines; every other line is kept, in order."""
  return ''.join(line for line in text.splitlines(keepends=True)
                 if not is_tf_log_line(line))


@contextlib.contextmanager
def stderr_without_tf_log_lines():
  """For the duration, file descriptor 2 (C++ and Python alike) goes to a
  temporary file; afterwards the file is written back to stderr without
  TensorFlow's log lines (all of it, unfiltered, when the body raised: then the
  lines may say why)."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (AttributeError, OSError, ValueError):  # no usable stderr: nothing to hide
    yield
    return
  failed = True
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
      failed = False
    finally:
      try:
        sys.stderr.flush()
      except (AttributeError, OSError, ValueError):
        pass
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode('utf-8', 'replace')
      kept = text if failed else without_tf_log_lines(text)
      if kept:
        sys.stderr.write(kept)
        sys.stderr.flush()


def prepare():
  """In a tfp_glow program only: the device choice and quiet logging, then
  TensorFlow imported with its load-time lines hidden (module docstring)."""
  if not started_as_program():
    return
  if no_gpu_driver():
    os.environ.setdefault('TF_ENABLED_DEVICE_TYPES', 'CPU')
  if tf_logs_wanted() or 'tensorflow' in sys.modules:
    return  # asked for, or too late: TensorFlow has loaded and printed already
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  with stderr_without_tf_log_lines():
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import,import-outside-toplevel
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
