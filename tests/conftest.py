"""Puts the repository root on sys.path, so `pytest tests` finds `tfp_glow`,
and this folder, so the tests' `import harness` works under any runner (Bazel
runs with PYTHONSAFEPATH=1 from a runfiles tree, where pytest's own path
insertion may follow the symlinks out of it)."""

import os
import sys

_TESTS = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_TESTS)
for _path in (_TESTS, _ROOT):
  if _path not in sys.path:
    sys.path.insert(0, _path)
