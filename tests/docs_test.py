"""Every code block of docs/*.md runs in a test, as README.md's do (issue 21.6).

A block is `sh` (commands), `python` or `text` (a diagram, never run). The
default set checks, cheaply, that every command names a program of bin/ and only
flags that program defines (README's commands too), that the one `text` block's
paths exist, and runs docs/SCORING.md's Python block on a small model. The slow
set runs every `sh` and `python` block of each page, in order, in a temporary
folder (with `bin` linked there, as tests/readme_test.py does), exactly as
written except for one thing: each `python bin/<program>.py` command gets the
flags of `SMALLER` appended (absl keeps a flag's last value), so that the
measurement recipes (100 epochs, the full ablation grid, the CIFAR-shaped
benchmark) run in seconds on a tiny model. Every flag as written is still
parsed, and every command runs end to end; the figures on the pages are not
re-measured here.
"""

import os
import pathlib
import re
import shlex
import subprocess
import sys

from glow_helpers import make_model_dir
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / 'docs').glob('*.md'))
FENCE = re.compile(r'^```(\w*)\n(.*?)^```$', re.S | re.M)
# The one block that is not code: the layer diagram.
TEXT_BLOCKS = {'ARCHITECTURE.md': 1}
# A program command, up to the end of its line, a comment, `&`, `;` or `|`.
COMMAND = re.compile(r'python bin/(\w+)\.py([^\n#&;|]*)')
# absl's own flags, which every program takes.
ABSL_FLAGS = {'help', 'helpshort', 'helpfull', 'helpxml', 'verbosity', 'v',
              'logtostderr', 'alsologtostderr', 'log_dir', 'stderrthreshold',
              'only_check_args', 'flagfile', 'undefok'}
# Per program, what makes a recipe small: the digits at L=2 (or 1), K=1, width
# 8, a few steps, graph mode, one repeat.
TINY_FLOW = ['--levels=2', '--steps_per_level=1', '--hidden_width=8']
SMALLER = {
    'train': TINY_FLOW + ['--epochs=1', '--steps_per_epoch=2', '--nojit_compile',
                          '--temperatures=0'],
    'evaluate': [],
    'score': [],
    'ablation': ['--configs=conv-affine,reverse-additive', '--seeds=1', '--steps=4',
                 '--eval_every=2', '--levels=1', '--steps_per_level=1',
                 '--hidden_width=8', '--init_batch_size=64', '--nojit_compile',
                 '--num_samples=4'],
    'benchmark': ['--preset=quick', '--image_size=8', '--channels=1'] + TINY_FLOW +
                 ['--batch_size=4', '--modes=graph', '--repeats=1', '--warmup=0',
                  '--conv_repeats=1', '--program_epochs=2',
                  '--program_steps_per_epoch=2', '--memory_table_steps=1',
                  '--backprops=store', '--numerics_batch=4',
                  '--rss_libraries=tfp_glow'],
}


def blocks(path):
  """`(language, text)` of every fenced block of a Markdown file, in order."""
  return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text())]


def commands(text):
  """`(program, [flag names])` of every `python bin/X.py` command of a block."""
  joined = text.replace('\\\n', ' ')
  out = []
  for match in COMMAND.finditer(joined):
    names = []
    for token in shlex.split(match.group(2)):
      if token.startswith('--'):
        names.append(token[2:].split('=', 1)[0])
    out.append((match.group(1), names))
  return out


def defined_flags(program):
  """The flags a program defines, read from its source: DEFINE_* (aliases
  too), flags.Flag(...), and the shared ones of tfp_glow.run_dir."""
  text = (ROOT / 'tfp_glow' / 'programs' / f'{program}.py').read_text()
  names = set(re.findall(r"flags\.DEFINE_\w+\(\s*'(\w+)'", text))
  names |= set(re.findall(r"flags\.Flag\(\s*[^']*?'(\w+)'", text))
  if 'run_dir.define_model_dir_flags()' in text:
    names |= {'model_dir', 'checkpoint'}
  if 'run_dir.define_eval_flags()' in text:
    names |= {'eval_seed', 'eval_draws'}
  return names


def test_every_block_is_code_or_the_diagram():
  for path in DOCS:
    langs = [lang for lang, _ in blocks(path)]
    assert set(langs) <= {'sh', 'python', 'text'}, (path.name, langs)
    assert langs.count('text') == TEXT_BLOCKS.get(path.name, 0), (path.name, langs)
  # No indented (four-space) code block: each would be code no test sees.
  for path in DOCS:
    outside = FENCE.sub('', path.read_text())
    assert not re.search(r'\n\n    \S', outside), path.name


def test_the_diagram_names_files_that_exist():
  (_, diagram), = [b for b in blocks(ROOT / 'docs' / 'ARCHITECTURE.md')
                   if b[0] == 'text']
  paths = re.findall(r'tfp_glow/[\w/.*]+', diagram)
  assert len(paths) >= 10, paths
  for path in paths:
    path = path.rstrip('.:')
    if '*' in path:
      assert list(ROOT.glob(path)), path
    else:
      assert (ROOT / path).exists(), path


def test_every_command_uses_flags_its_program_defines():
  """docs/*.md and README.md: each command's program exists and takes each of
  its flags (`--noX` for a boolean X)."""
  seen = set()
  for path in DOCS + [ROOT / 'README.md']:
    for lang, text in blocks(path):
      if lang != 'sh':
        continue
      for program, names in commands(text):
        assert (ROOT / 'bin' / f'{program}.py').exists(), (path.name, program)
        known = defined_flags(program) | ABSL_FLAGS
        for name in names:
          plain = name[2:] if name.startswith('no') and name[2:] in known else name
          assert plain in known, f'{path.name}: bin/{program}.py has no --{name}'
        seen.add(program)
  assert {'train', 'evaluate', 'score', 'ablation', 'benchmark'} <= seen, seen
  # The reduced sizes of the slow test are real flags too.
  for program, extra in SMALLER.items():
    known = defined_flags(program)
    for flag in extra:
      name = flag[2:].split('=', 1)[0]
      assert name in known or (name.startswith('no') and name[2:] in known), flag


def test_scoring_python_block_runs(tmp_path, monkeypatch):
  """docs/SCORING.md's "Use" block, as written, on a small model in the folder
  the page's first command trains into."""
  (code,) = [text for lang, text in blocks(ROOT / 'docs' / 'SCORING.md')
             if lang == 'python']
  make_model_dir(str(tmp_path / 'runs' / 'score_digits'))
  monkeypatch.chdir(tmp_path)
  scope = {}
  exec(compile(code, 'docs/SCORING.md', 'exec'), scope)  # pylint: disable=exec-used
  scores = np.asarray(scope['scores'])
  assert scores.shape == (360,) and scores.dtype == np.float64
  assert np.all(np.isfinite(scores))


def smaller(text):
  """A block with `SMALLER`'s flags appended to each program command."""
  joined = text.replace('\\\n', ' ')

  def add(match):
    command = match.group(0).rstrip()
    extra = ' '.join(SMALLER.get(match.group(1), []))
    trailing = match.group(0)[len(command):]
    return f'{command} {extra}{trailing}' if extra else match.group(0)

  return COMMAND.sub(add, joined)


def test_smaller_appends_before_comments_and_ampersands():
  text = ('python bin/train.py   # all defaults\n'
          'for m in a b; do\n  python bin/train.py --x=$m \\\n    --y=1 &\ndone\n'
          'python bin/evaluate.py --model_dir=d\n')
  out = smaller(text).splitlines()
  assert out[0] == 'python bin/train.py ' + ' '.join(SMALLER['train']) + '   # all defaults'
  assert out[2] == ('  python bin/train.py --x=$m      --y=1 ' +
                    ' '.join(SMALLER['train']) + ' &')
  assert out[4] == 'python bin/evaluate.py --model_dir=d'


def setup_for(page, folder):
  """What a page takes as given: docs/SCORING.md's background model for
  'ratio' came from a script outside the repository; a small stand-in here."""
  if page == 'SCORING.md':
    make_model_dir(str(folder / 'runs' / 'score_digits_ren'), seed=7)


@pytest.mark.slow
@pytest.mark.parametrize('page', [p.name for p in DOCS])
def test_every_block_runs(page, tmp_path):
  runnable = [(lang, text) for lang, text in blocks(ROOT / 'docs' / page)
              if lang in ('sh', 'python')]
  if not runnable:
    pytest.skip(f'{page} has no code to run')
  (tmp_path / 'bin').symlink_to(ROOT / 'bin', target_is_directory=True)
  setup_for(page, tmp_path)
  env = dict(os.environ, HOME=str(tmp_path), PYTHONUNBUFFERED='1')
  env['PATH'] = os.pathsep.join([os.path.dirname(sys.executable), env['PATH']])
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p)
  for i, (lang, text) in enumerate(runnable):
    cmd = (['bash', '-euo', 'pipefail', '-c', smaller(text)] if lang == 'sh' else
           [sys.executable, '-c', text])
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    out = proc.stdout + proc.stderr
    where = f'{page} block {i + 1} ({lang}):\n{text}\n{out[-5000:]}'
    assert proc.returncode == 0, where
    assert 'Traceback' not in out and not re.search(r'^Error: ', out, re.M), where
