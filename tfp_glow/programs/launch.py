"""Runs a program module under absl, whoever launched it.

A program's flags are defined in its module (`tfp_glow.programs.train`), but
absl's `--help` lists the flags of the module named `sys.argv[0]` (the launcher:
`bin/train.py`, or the `tfp-glow-train` console script) and prints the
docstring of `__main__`. So before `absl.app.run`, the program's flags (and the
shared ones it defined through `tfp_glow.run_dir`) are registered as key flags
of `sys.argv[0]`, and its docstring becomes the usage text: `--help` reads the
same from `python bin/train.py`, `tfp-glow-train` and
`python -m tfp_glow.programs.train`.

The "failed call to cuInit" error line (issue 15.7). The pip `tensorflow` wheel is
built with CUDA; on a machine without an NVIDIA driver its CUDA platform still
calls `cuInit` when the first op creates the devices, fails, and logs
`E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)` as an ERROR, although
nothing is wrong: the CPU is all there is. `TF_CPP_MIN_LOG_LEVEL=3` hides it, and
every real C++ error with it. Instead, the `bin/` launchers set, before
TensorFlow is imported (the device factories read it when TensorFlow loads, so
setting it later does nothing) and only where the user has not set them:

* `TF_ENABLED_DEVICE_TYPES=CPU`: TensorFlow registers only its CPU device
  factory, so the CUDA platform is never initialised and `cuInit` never called.
  Only when no GPU can be used anyway: on Linux, with neither
  `/proc/driver/nvidia` (NVIDIA's kernel driver) nor `/dev/kfd` (AMD's ROCm)
  present. The programs use CPUs and GPUs only (no TPU strategy); XLA
  (`jit_compile`) and several logical CPUs work as before.
* `TF_CPP_MIN_LOG_LEVEL=1`, with it: hides TensorFlow's C++ INFO lines (among
  them three saying which device factories the variable disabled); warnings and
  errors still show.

Set either variable yourself to override (`TF_ENABLED_DEVICE_TYPES=` empty
enables every device type). The console scripts and `python -m` import
`tfp_glow`, and with it TensorFlow, before any code of the program runs, so they
cannot do this: there, export `TF_ENABLED_DEVICE_TYPES=CPU` on a machine without
a GPU for the same effect.
"""

import sys

from absl import app
from absl import flags

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


def run(main, module_name):
  """`absl.app.run(main)` with the flags and docstring of `module_name`."""
  module = sys.modules[module_name]
  launcher = sys.argv[0]
  for name in (module_name,) + SHARED_FLAG_MODULES:
    for flag in flags.FLAGS.get_flags_for_module(name):
      flags.FLAGS.register_key_flag_for_module(launcher, flag)
  main_module = sys.modules.get('__main__')
  if main_module is not None and main_module is not module and module.__doc__:
    main_module.__doc__ = module.__doc__
  app.run(main)
