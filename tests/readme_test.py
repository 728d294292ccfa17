"""The README's example must run as written, and its commands must stay true."""

import pathlib
import re

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _readme():
  return (ROOT / 'README.md').read_text()


def test_ten_line_example_runs():
  text = _readme()
  section = text[text.index('## Ten lines'):]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  assert len([l for l in code.splitlines() if l.strip()]) <= 12
  scope = {}
  exec(compile(code, 'README.md', 'exec'), scope)  # pylint: disable=exec-used
  images = scope['images'].numpy()
  assert images.shape == (16, 8, 8, 1)
  assert np.all(np.isfinite(images))
  bpd = scope['bpd'].numpy()
  assert bpd.shape == (256,) and np.all(np.isfinite(bpd))
  # An untrained flow on digits is far from good, but not absurd: between
  # the best published figures and a uniform model's ~4.09 plus slack.
  assert 1.0 < bpd.mean() < 8.0


def test_first_commands_match_ci():
  lines = _readme().splitlines()
  block = lines[lines.index('```sh') + 1:lines.index('```')]
  assert len(block) == 2, block
  setup, test = block
  # The pins and the package itself (editable): then `import tfp_glow` works from
  # anywhere and `python bin/train.py` needs no edit of Python's import path.
  install = 'pip install -r requirements.txt -e .'
  assert install in setup
  assert setup.endswith('python bin/train.py')
  test_cmd = test.split('&&')[-1].strip()
  ci = (ROOT / '.ci' / 'run').read_text()
  assert test_cmd in ci, f'.ci/run must run the README test command {test_cmd!r}'
  assert install in ci, f'.ci/run must install as the README does: {install!r}'


def test_nothing_edits_the_import_path():
  """The package is found because it is installed (or run from the checkout
  with `python -m`), never because a file edits Python's import path."""
  needle = '.'.join(['sys', 'path'])  # spelled so that this file has no match
  offenders = []
  for top in ('bin', 'tests', 'tfp_glow'):
    for path in sorted((ROOT / top).rglob('*.py')):
      if needle in path.read_text():
        offenders.append(str(path.relative_to(ROOT)))
  assert not offenders, offenders
