"""What the programs print: their own lines only, and one line for a bad command.

Issue 21: by default a program (`bin/<name>.py`, the console script
`tfp-glow-<name>`, `python -m tfp_glow.programs.<name>`) prints no line of
TensorFlow's own log (`tfp_glow/_program_start.py`); a bad flag is one
`Error: ...` line with exit status 2 in every program
(`tfp_glow/programs/launch.py`); a damaged checkpoint is refused by name,
pointing to the other one (`run_dir.check_weights_file`).

The programs run here as subprocesses with the environment a user has: no
`TF_CPP_MIN_LOG_LEVEL`, no `TF_ENABLED_DEVICE_TYPES`. The default set starts
two (a launcher with a bad flag, a console script on a damaged checkpoint),
concurrently; the rest, one per program, is in the slow set.
"""

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys

from glow_helpers import make_model_dir
import pytest

from tfp_glow import _program_start
from tfp_glow import run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, 'bin')
PROGRAMS = ('train', 'sample', 'evaluate', 'interpolate', 'export', 'benchmark',
            'score', 'ablation')
# The programs that read a model directory's weights.
READERS = ('evaluate', 'sample', 'interpolate', 'export', 'score')

# What TensorFlow prints when left alone (seen with TF 2.21 on a CPU machine),
# recognised here independently of the code under test: absl's log prefix
# (severity, date, time, thread, file:line]) and the texts themselves.
TF_LOG = re.compile(
    r'^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]|absl::InitializeLog|oneDNN|'
    r'cuda drivers|cuInit|DT_DOUBLE|cpu_feature_guard|rebuild TensorFlow', re.M)

SAMPLE_TF_LINES = [
    'WARNING: All log messages before absl::InitializeLog() is called are written '
    'to STDERR',
    'I0000 00:00:1796279464.268397    3868 port.cc:153] oneDNN custom operations '
    'are on. You may see slightly different numerical results due to '
    'floating-point round-off errors from different computation orders.',
    'I0000 00:00:1796279464.271946    3868 cudart_stub.cc:31] Could not find cuda '
    'drivers on your machine, GPU will not be used.',
    'E0000 00:00:1796279502.826972    4103 cuda_platform.cc:52] failed call to '
    'cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)',
    'W0000 00:00:1796279502.826972    4103 auto_mixed_precision.cc:1] Not handling '
    'type DT_DOUBLE',
    'I1130 12:01:02.123456 140234 cpu_feature_guard.cc:227] This TensorFlow binary '
    'is optimized to use available CPU instructions.',
    'To enable the following instructions: AVX2 FMA, in other operations, rebuild '
    'TensorFlow with the appropriate compiler flags.',
]
PROGRAM_LINES = [
    'Error: --temperatures must be finite and >= 0, got -1.',
    'Training glow: digits (embedded, 1293 of 1797), images [8, 8, 1]',
    '/x/keras/src/trainers/trainer.py:42: UserWarning: something',
    'Traceback (most recent call last):',
    '  File "bin/train.py", line 9, in <module>',
    'E0000 is a fine name for a test set',
]

# pip's console script, as it writes one (`tfp-glow-<name>` in the venv's bin/).
CONSOLE_SCRIPT = '''\
import re
import sys
from tfp_glow.programs.{name} import run
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(run())
'''


def user_env(**overrides):
  """A user's environment: TensorFlow's variables unset, this checkout first on
  the import path (as the editable install has it)."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('TF_CPP_', 'TF_ENABLED_DEVICE', 'TFP_GLOW_'))}
  path = env.get('PYTHONPATH')
  env['PYTHONPATH'] = ROOT if not path else ROOT + os.pathsep + path
  env['CUDA_VISIBLE_DEVICES'] = ''
  env.update(overrides)
  return env


def start(cmd, env=None, cwd=None):
  return subprocess.Popen(cmd, env=env or user_env(), cwd=cwd, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc, timeout=600):
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def run_all(commands, parallel=2):
  """{name: command or (command, env)} -> {name: (rc, out, err)}, at most
  `parallel` at a time (each loads TensorFlow)."""
  def one(item):
    cmd, env = item if isinstance(item, tuple) else (item, None)
    return finish(start(cmd, env))

  with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    futures = {name: pool.submit(one, item) for name, item in commands.items()}
    return {name: f.result() for name, f in futures.items()}


def launcher(name, *args):
  return [sys.executable, os.path.join(BIN, f'{name}.py'), *args]


def console_script(folder, name, *args):
  """The command `tfp-glow-<name> ARGS`, from a copy of pip's script in `folder`
  (the installed one would run the installed checkout, not this one)."""
  path = os.path.join(folder, f'tfp-glow-{name}')
  with open(path, 'w') as f:
    f.write(CONSOLE_SCRIPT.format(name=name))
  return [sys.executable, path, *args]


def truncate(path, keep=0.5):
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:int(len(data) * keep)])
  return len(data)


def assert_quiet(err):
  match = TF_LOG.search(err)
  assert not match, f'a TensorFlow log line: {match.group(0)!r} in\n{err}'


def assert_one_error_line(rc, out, err, *fragments):
  assert rc == 2, (rc, out, err)
  lines = err.splitlines()
  assert len(lines) == 1 and lines[0].startswith('Error: '), err
  for fragment in fragments:
    assert fragment in lines[0], (fragment, err)
  assert 'Traceback' not in out + err and 'USAGE' not in out + err, out + err


# --- the library parts, in this process -------------------------------------------


def test_tf_log_lines_are_told_from_program_lines():
  for line in SAMPLE_TF_LINES:
    assert _program_start.is_tf_log_line(line), line
  for line in PROGRAM_LINES:
    assert not _program_start.is_tf_log_line(line), line
  text = '\n'.join(PROGRAM_LINES[:2] + SAMPLE_TF_LINES + PROGRAM_LINES[2:]) + '\n'
  assert _program_start.without_tf_log_lines(text) == '\n'.join(PROGRAM_LINES) + '\n'


def test_which_processes_are_programs():
  started = _program_start.started_as_program
  none = {}
  assert started(['/venv/bin/tfp-glow-train'], [], none)
  assert started(['-m'], ['python', '-m', 'tfp_glow.programs.train', '--x'], none)
  assert started(['-m'], ['python3', '-X', 'dev', '-u', '-m',
                          'tfp_glow.programs.score'], none)
  assert started(['anything'], ['python', 'x.py'], {'TFP_GLOW_PROGRAM': 'sample'})
  # Your own code, a notebook, pytest: not a program; nothing is changed.
  assert not started(['my_script.py'], ['python', 'my_script.py'], none)
  assert not started(['-c'], ['python', '-c', 'import tfp_glow', '-m',
                              'tfp_glow.programs.train'], none)
  assert not started(['-m'], ['python', '-m', 'pytest', 'tests'], none)
  assert not started([''], ['python'], none)
  assert not started(sys.argv, None, none)  # this very process
  assert not _program_start.tf_logs_wanted({})
  assert not _program_start.tf_logs_wanted({'TFP_GLOW_TF_LOGS': '0'})
  assert _program_start.tf_logs_wanted({'TFP_GLOW_TF_LOGS': '1'})


def test_stderr_is_given_back_without_tf_log_lines(capfd):
  """File descriptor 2 itself (what C++ writes to) is captured; the program's
  own lines come back in order, TensorFlow's do not."""
  with _program_start.stderr_without_tf_log_lines():
    os.write(2, (SAMPLE_TF_LINES[0] + '\n' + SAMPLE_TF_LINES[1] + '\n').encode())
    print('kept 1', file=sys.stderr)
    os.write(2, (SAMPLE_TF_LINES[2] + '\nkept 2\n').encode())
  assert capfd.readouterr().err == 'kept 1\nkept 2\n'
  # When the body fails, everything comes back: the lines may say why.
  with pytest.raises(ImportError):
    with _program_start.stderr_without_tf_log_lines():
      os.write(2, (SAMPLE_TF_LINES[3] + '\n').encode())
      raise ImportError('no such library')
  assert capfd.readouterr().err == SAMPLE_TF_LINES[3] + '\n'


def test_flag_errors_read_as_one_line():
  from tfp_glow.programs import launch  # pylint: disable=g-import-not-at-top
  one = 'flag --model_dir=None: Flag --model_dir must have a value other than None.'
  two = one + '\nflag --export_dir=None: Flag --export_dir must have a value other than None.'
  assert launch.error_line(one).startswith('Error: --model_dir is required')
  assert launch.error_line(two) == 'Error: --model_dir and --export_dir are required.'
  assert launch.error_line('--num must be >= 1,\n got 0.') == (
      'Error: --num must be >= 1, got 0.')
  assert launch.error_line(one + ' And more.').startswith('Error: flag --model_dir=None')


def test_damaged_checkpoints_are_named(tmp_path):
  model_dir = str(tmp_path / 'model')
  make_model_dir(model_dir)
  best = run_dir.checkpoint_path(model_dir, 'best')
  size = truncate(best)
  with pytest.raises(run_dir.DamagedCheckpointError) as e:
    run_dir.load_trained(model_dir)
  assert str(e.value).startswith(f'{best} is damaged: it is truncated '
                                 f'({size // 2} of {size} bytes).')
  assert 'Use --checkpoint=latest' in str(e.value)
  model, _, path = run_dir.load_trained(model_dir, 'latest')  # still loads
  assert path.endswith('latest.weights.h5') and model.initialized
  # The latest one damaged as well: nothing to point to.
  truncate(run_dir.checkpoint_path(model_dir, 'latest'), keep=0.0)
  with pytest.raises(run_dir.DamagedCheckpointError, match='holds no other readable '
                     'checkpoint') as e:
    run_dir.load_trained(model_dir, 'latest')
  assert 'latest.weights.h5 is damaged: it cannot be read' in str(e.value)
  # Before training resumes: the backup and the best checkpoint it reads.
  with pytest.raises(run_dir.DamagedCheckpointError,
                     match='best.weights.h5 is damaged.*every epoch with it'):
    run_dir.check_resumable(model_dir)
  backup = os.path.join(model_dir, 'backup', 'backup.weights.h5')
  os.makedirs(os.path.dirname(backup))
  with open(backup, 'wb') as f:
    f.write(b'not HDF5 at all')
  with pytest.raises(run_dir.DamagedCheckpointError,
                     match=r'backup.weights.h5 is damaged: .* cannot resume from it: '
                     r'remove .*backup to train again'):
    run_dir.check_resumable(model_dir)
  shutil.rmtree(os.path.dirname(backup))
  os.remove(best)
  run_dir.check_resumable(model_dir)  # nothing left to read: a fresh start
  with open(os.path.join(model_dir, 'config.json'), 'w') as f:
    f.write('{"model": ')
  with pytest.raises(ValueError, match='config.json is damaged: it is not JSON'):
    run_dir.read_config(model_dir)


# --- the programs, as subprocesses ------------------------------------------------


@pytest.fixture(scope='module')
def default_runs(tmp_path_factory):
  """The default set's two program runs, started together."""
  folder = str(tmp_path_factory.mktemp('programs'))
  model_dir = os.path.join(folder, 'model')
  make_model_dir(model_dir)
  truncate(run_dir.checkpoint_path(model_dir, 'best'))
  return model_dir, run_all({
      # The case: a flag value out of range.
      'bad_flag': launcher('sample', f'--model_dir={model_dir}', '--temperatures=-1'),
      # A console script on a damaged checkpoint: it builds the model (so
      # TensorFlow creates its devices) before it refuses the file.
      'damaged': console_script(folder, 'evaluate', f'--model_dir={model_dir}'),
  })


def test_a_bad_flag_is_one_line_with_exit_2(default_runs):
  _, runs = default_runs
  rc, out, err = runs['bad_flag']
  assert_one_error_line(rc, out, err,
                        '--temperatures must be finite and >= 0, got -1.')
  assert out == ''


def test_a_console_script_prints_no_tensorflow_log(default_runs):
  model_dir, runs = default_runs
  rc, out, err = runs['damaged']
  assert_quiet(out + err)
  best = run_dir.checkpoint_path(model_dir, 'best')
  assert_one_error_line(rc, out, err, f'{best} is damaged: it is truncated',
                        'Use --checkpoint=latest')


@pytest.mark.slow
def test_every_program_refuses_bad_flags_in_one_line(tmp_path):
  cases = {name: ('--no_such_flag=1', "Unknown command line flag 'no_such_flag'")
           for name in PROGRAMS}
  required = {'sample': '--model_dir is required: Model directory written by '
                        'bin/train.py.',
              'export': '--model_dir and --export_dir are required.'}
  commands = {name: launcher(name, flag) for name, (flag, _) in cases.items()}
  commands.update({f'{name} required': launcher(name) for name in required})
  commands['train value'] = launcher('train', '--epochs=x')
  commands['score value'] = launcher('score', '--model_dir=m', '--count=1')
  for name, (rc, out, err) in run_all(commands).items():
    assert_quiet(out + err)
    if name in cases:
      assert_one_error_line(rc, out, err, cases[name][1], '(--help lists the flags)')
    elif name.endswith('required'):
      assert_one_error_line(rc, out, err, required[name.split()[0]])
    elif name == 'train value':
      assert_one_error_line(rc, out, err, "flag --epochs=x: invalid literal for int()")
    else:
      assert_one_error_line(rc, out, err, '--count must be >= 2, got 1.')


@pytest.mark.slow
def test_every_reader_names_a_damaged_checkpoint(tmp_path):
  model_dir = str(tmp_path / 'model')
  make_model_dir(model_dir)
  best = run_dir.checkpoint_path(model_dir, 'best')
  truncate(best, keep=0.9)
  extra = {'export': [f'--export_dir={tmp_path / "export"}'],
           'sample': [f'--out={tmp_path / "s.png"}'],
           'interpolate': [f'--out={tmp_path / "i.png"}']}
  commands = {name: launcher(name, f'--model_dir={model_dir}', *extra.get(name, []))
              for name in READERS}
  commands['benchmark'] = launcher('benchmark', f'--inversion_numerics={model_dir}')
  commands['latest'] = launcher('evaluate', f'--model_dir={model_dir}',
                                '--checkpoint=latest')
  for name, (rc, out, err) in run_all(commands).items():
    assert_quiet(out + err)
    if name == 'latest':  # what the message points to works
      assert rc == 0 and 'test bits/dim: ' in out, (out, err)
      assert err == '', err
      continue
    assert_one_error_line(rc, out, err, f'{best} is damaged: it is truncated',
                          'Use --checkpoint=latest')
  assert not os.path.exists(tmp_path / 'export') and not os.path.exists(
      tmp_path / 's.png')


@pytest.mark.slow
def test_quiet_unless_asked(tmp_path):
  """A good run prints no TensorFlow line from a launcher or `python -m`;
  TFP_GLOW_TF_LOGS=1 brings them back (so the quiet runs are quiet because of
  tfp_glow, not because TensorFlow had nothing to say)."""
  model_dir = str(tmp_path / 'model')
  make_model_dir(model_dir)
  args = [f'--model_dir={model_dir}', '--split=validation']
  runs = run_all({
      'launcher': launcher('evaluate', *args),
      'module': [sys.executable, '-m', 'tfp_glow.programs.evaluate', *args],
      'logs': (launcher('evaluate', *args),
               user_env(TFP_GLOW_TF_LOGS='1', TF_CPP_MIN_LOG_LEVEL='0')),
  })
  for name, (rc, out, err) in runs.items():
    assert rc == 0 and out.startswith('validation bits/dim: '), (name, out, err)
  for name in ('launcher', 'module'):
    assert runs[name][2] == '', (name, runs[name][2])
  assert TF_LOG.search(runs['logs'][2]), runs['logs'][2]


@pytest.mark.slow
def test_train_refuses_to_resume_from_a_damaged_backup(tmp_path):
  """An unfinished run (config.json, checkpoints, a backup, no results.json)
  whose backup was cut short: the same command names the file, says what to do
  and exits 2 before training; with the backup removed as it says, it trains."""
  model_dir = str(tmp_path / 'model')
  make_model_dir(model_dir)
  backup_dir = os.path.join(model_dir, 'backup')
  os.makedirs(backup_dir)
  backup = os.path.join(backup_dir, 'backup.weights.h5')
  shutil.copy(run_dir.checkpoint_path(model_dir, 'latest'), backup)
  truncate(backup)
  args = [f'--model_dir={model_dir}', '--levels=2', '--steps_per_level=1',
          '--hidden_width=8', '--epochs=1', '--steps_per_epoch=2',
          '--nojit_compile', '--temperatures=0']
  rc, out, err = finish(start(launcher('train', *args)))
  assert_quiet(out + err)
  assert_one_error_line(rc, out, err, f'{backup} is damaged: it is truncated',
                        f'Training cannot resume from it: remove {backup_dir}')
  assert not os.path.exists(os.path.join(model_dir, 'results.json'))
  shutil.rmtree(backup_dir)
  rc, out, err = finish(start(launcher('train', *args)))
  assert rc == 0 and 'Test bits/dim' in out, (out, err)
