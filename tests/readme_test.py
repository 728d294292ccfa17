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
  assert 'pip install -r requirements.txt' in setup
  assert 'python bin/train.py' in setup
  test_cmd = test.split('&&')[-1].strip()
  ci = (ROOT / '.ci' / 'run').read_text()
  assert test_cmd in ci, f'.ci/run must run the README test command {test_cmd!r}'
