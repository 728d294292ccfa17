"""Runs a program module under absl, whoever launched it.

A program's flags are defined in its module (`tfp_glow.programs.train`), but
absl's `--help` lists the flags of the module named `sys.argv[0]` (the launcher:
`bin/train.py`, or the `tfp-glow-train` console script) and prints the
docstring of `__main__`. So before `absl.app.run`, the program's flags (and the
shared ones it defined through `tfp_glow.run_dir`) are registered as key flags
of `sys.argv[0]`, and its docstring becomes the usage text: `--help` reads the
same from `python bin/train.py`, `tfp-glow-train` and
`python -m tfp_glow.programs.train`.
"""

import sys

from absl import app
from absl import flags

SHARED_FLAG_MODULES = ('tfp_glow.run_dir',)


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
