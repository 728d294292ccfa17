"""Runs pytest on the test files named in argv; the `main` of every py_test in BUILD.

Bazel runs each py_test from its runfiles tree (the working directory is the
workspace's runfiles root). This runner puts that root on sys.path and on
PYTHONPATH (for subprocesses such as `python bin/train.py`), so `import tfp_glow`
and `import tests.harness` work even with PYTHONSAFEPATH=1, and then hands the
arguments to pytest. It also maps Bazel's test protocol onto pytest:
XML_OUTPUT_FILE -> --junitxml, TESTBRIDGE_TEST_ONLY (--test_filter) -> -k.

Outside Bazel it works too: `python tools/bazel_pytest.py tests/build_test.py`.
"""

import os
import sys

# Not os.path.realpath: inside runfiles the files are symlinks and the root we
# want is the runfiles tree itself, not the source tree the links point to.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
    """Runs pytest with argv plus Bazel's settings; returns its exit code."""
    # tests/ too: the test files `import harness`. Outside Bazel pytest's own
    # rootdir insertion finds it; from a runfiles tree of symlinks it does not.
    for path in (os.path.join(ROOT, "tests"), ROOT):
        if path not in sys.path:
            sys.path.insert(0, path)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if ROOT not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + paths)
    # The runfiles tree is not ours to write into (no .pyc, no .pytest_cache).
    sys.dont_write_bytecode = True
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")

    import pytest  # pylint: disable=g-import-not-at-top

    args = list(argv) + ["-q", "-p", "no:cacheprovider", "--rootdir", ROOT]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append("--junitxml=" + xml)
    test_filter = os.environ.get("TESTBRIDGE_TEST_ONLY")
    if test_filter:
        args += ["-k", test_filter]
    code = pytest.main(args)
    # pyproject's addopts deselect the slow tests (`-m 'not slow'`); a target
    # whose tests are all slow then selects none (pytest's exit 5). Those run
    # in .ci/run's `pytest -m slow` step, so that is not a failure here.
    return 0 if code == pytest.ExitCode.NO_TESTS_COLLECTED else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
