"""End-to-end tests of the programs, run as subprocesses on a tiny model.

Each program is `tfp_glow/programs/<name>.py`; `bin/<name>.py` (run here) and the
console script `tfp-glow-<name>` only call its `run()`.
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import tomllib

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, 'bin')
PROGRAM_DIR = os.path.join(ROOT, 'tfp_glow', 'programs')
PROGRAMS = ('train', 'sample', 'evaluate', 'interpolate')
# The console scripts tfp-glow-<name>, each running tfp_glow.programs.<name>:run.
SCRIPTS = ('train', 'sample', 'evaluate', 'interpolate', 'export', 'benchmark',
           'score', 'ablation', 'curve')
# No --verbose: its default, auto, must give one line per epoch when stdout is a pipe.
TINY = ['--levels=2', '--steps_per_level=1', '--hidden_width=8', '--batch_size=64',
        '--warmup_steps=10', '--learning_rate=3e-3',
        '--temperatures=0,0.7', '--sample_every=1']


def env(**overrides):
  """The programs' environment; an override of None removes the variable."""
  e = dict(os.environ)
  path = e.get('PYTHONPATH')
  # Under Bazel the runfiles root is on PYTHONPATH already; keep it first.
  e['PYTHONPATH'] = ROOT if not path else ROOT + os.pathsep + path
  e['TF_CPP_MIN_LOG_LEVEL'] = '3'
  e['CUDA_VISIBLE_DEVICES'] = ''
  e['PYTHONUNBUFFERED'] = '1'  # progress lines reach the log before a SIGKILL
  for name, value in overrides.items():
    if value is None:
      e.pop(name, None)
    else:
      e[name] = value
  return e


def command(program, *args):
  return [sys.executable, os.path.join(BIN, f'{program}.py'), *args]


def start(program, *args, **kwargs):
  return start_command(command(program, *args), **kwargs)


def start_command(cmd, environ=None, **kwargs):
  return subprocess.Popen(cmd, env=environ or env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(proc, timeout=240):
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def run(program, *args, timeout=240):
  return finish(start(program, *args), timeout)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  """A trained tiny model in the DEFAULT model directory (no --model_dir), run
  from an empty working directory: `runs/digits` there."""
  cwd = str(tmp_path_factory.mktemp('cwd'))
  # No --learning_rate: the digits' default peak (3e-3, as TINY's) comes from
  # run_dir.resolve_learning_rate.
  tiny = [f for f in TINY if not f.startswith('--learning_rate=')]
  rc, out = finish(start('train', '--epochs=2', *tiny, cwd=cwd))
  assert rc == 0, out
  return os.path.join(cwd, 'runs', 'digits'), out


def defined_flags(program):
  """The flags a program defines: in its module, and through run_dir."""
  with open(os.path.join(PROGRAM_DIR, f'{program}.py')) as f:
    text = f.read()
  names = re.findall(r"flags\.DEFINE_\w+\(\s*'(\w+)'", text)
  if 'run_dir.define_model_dir_flags()' in text:
    names += ['model_dir', 'checkpoint']
  return names


@pytest.mark.slow
def test_help_lists_every_flag():
  procs = {p: start(p, '--help') for p in PROGRAMS}
  # The same program through `python -m` (what a console script runs).
  module = start_command([sys.executable, '-m', 'tfp_glow.programs.sample', '--help'])
  for program, proc in procs.items():
    rc, out = finish(proc)
    assert rc in (0, 1), out  # absl's --help exits with 1
    assert 'Traceback' not in out, out
    names = defined_flags(program)
    assert len(names) >= 3, program
    for name in names:
      assert re.search(rf'--\[?(no)?\]?{name}\b', out), (program, name, out)
    if program == 'sample':
      # The program's own docstring is the usage text, not the launcher's.
      assert 'Writes a grid of images sampled from a trained Glow' in out, out
  rc, out = finish(module)
  assert rc in (0, 1) and 'Traceback' not in out, out
  for name in defined_flags('sample'):
    assert re.search(rf'--\[?(no)?\]?{name}\b', out), (name, out)
  # The recipe's defaults are all in one place.
  _, out = finish(start('train', '--help'))
  assert "--levels: Multi-scale levels" in out
  assert 'runs/<dataset> under the current directory' in out


def test_console_scripts_and_launchers():
  """pyproject's commands and bin/ run the same `run()` of each program."""
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    scripts = tomllib.load(f)['project']['scripts']
  assert scripts == {f'tfp-glow-{p}': f'tfp_glow.programs.{p}:run'
                     for p in SCRIPTS}
  programs = sorted(f[:-3] for f in os.listdir(PROGRAM_DIR)
                    if f.endswith('.py') and f not in ('__init__.py', 'launch.py'))
  assert set(PROGRAMS) <= set(programs) <= set(SCRIPTS), programs
  texts = set()
  for program in programs:
    with open(os.path.join(PROGRAM_DIR, f'{program}.py')) as f:
      assert '\ndef run():\n' in f.read(), program
    with open(os.path.join(BIN, f'{program}.py')) as f:
      launcher = f.read()
    # A launcher marks the process as a program (before tfp_glow, and with it
    # TensorFlow, loads: see tfp_glow/_program_start.py) and calls the
    # program: no flags, no import-path edits, the same text in every launcher.
    assert f'from tfp_glow.programs import {program}  #' in launcher
    assert launcher.rstrip().endswith(f'{program}.run()'), launcher
    assert f"os.environ.setdefault('TFP_GLOW_PROGRAM', '{program}')" in launcher
    assert launcher.index('TFP_GLOW_PROGRAM') < launcher.index('from tfp_glow')
    assert len(launcher.splitlines()) <= 13, launcher
    texts.add(launcher.replace(program, 'PROGRAM'))
  assert len(texts) == 1, texts


@pytest.mark.slow
def test_train_writes_everything(model_dir):
  path, out = model_dir
  # The default model directory is runs/<dataset> under the working directory,
  # and nothing named tfp_glow appeared there (issue 15.4: a folder tfp_glow in
  # the working directory hides the package), so tfp_glow imports from there.
  cwd = os.path.dirname(os.path.dirname(path))
  for _, dirs, _ in os.walk(cwd):
    assert 'tfp_glow' not in dirs, dirs
  code = ('import tfp_glow; assert tfp_glow.__file__, "a namespace package"; '
          'print(tfp_glow.data.load)')
  rc, imported = finish(start_command([sys.executable, '-c', code], cwd=cwd))
  assert rc == 0, imported
  with open(os.path.join(path, 'config.json')) as f:
    config = json.load(f)
  assert config['model']['levels'] == 2 and config['model']['hidden_width'] == 8
  assert config['model']['image_shape'] == [8, 8, 1]
  assert config['model']['n_bins'] == 17
  for name in ('best', 'latest'):
    assert os.path.getsize(os.path.join(path, 'checkpoints', f'{name}.weights.h5'))
  assert os.path.exists(os.path.join(path, 'samples', 'epoch_0002.png'))
  assert os.path.exists(os.path.join(path, 'samples', 'final.png'))
  # TensorBoard: scalars from Keras's callback, sample grids from SampleGrid.
  tags = set()
  for sub in ('train', 'samples'):
    folder = os.path.join(path, 'logs', sub)
    events = [f for f in os.listdir(folder) if f.startswith('events.out')]
    assert events, f'no TensorBoard events in {folder}'
    for event in tf.compat.v1.train.summary_iterator(
        os.path.join(folder, events[0])):
      tags.update(v.tag for v in event.summary.value)
  assert any(t.startswith('samples/T=0.7') for t in tags), tags
  assert any('loss' in t or 'bpd' in t for t in tags), tags
  assert not os.path.exists(os.path.join(path, 'backup'))  # removed when finished
  with open(os.path.join(path, 'results.json')) as f:
    results = json.load(f)
  assert results['weights'] == 'best' and results['split'] == 'test'
  assert math.isfinite(results['test_bpd']) and 1.0 < results['test_bpd'] < 6.0
  assert results['wall_time_s'] > 0
  assert results['eval_seed'] == 0 and results['eval_draws'] == 1
  assert results['test_bpd_se'] is None and results['test_bpd_draws'] == [
      results['test_bpd']]
  assert 'Test bits/dim (test split, best weights' in out
  # --jit_compile=auto (the default): graph mode on a CPU without measuring
  # (tfp_glow/keras/jit.py), said so and recorded it.
  assert results['jit_compile']['how'] == 'cpu'
  assert results['jit_compile']['train_mode'] == 'graph'
  assert results['jit_compile']['evaluate_mode'] == 'graph'
  assert 'jit_compile=auto on a CPU' in out and results['stopped_by_time_limit'] is False
  assert config['training']['jit_compile'] == 'auto'
  # --flip=auto: the digits are not mirrored (their mirror images are not digits);
  # the 1-pixel shifts are on.
  assert config['training']['flip'] is False and config['training']['translate'] == 1
  # --learning_rate unset: the digits' peak, recorded and followed.
  from tfp_glow import run_dir  # pylint: disable=g-import-not-at-top
  assert config['training']['learning_rate'] == run_dir.DIGITS_LEARNING_RATE == 3e-3
  assert results['learning_rate_schedule']['peak_learning_rate'] == 3e-3
  assert results['learning_rate_schedule']['decay'] == 'constant'
  assert ('Augmentation: left-right flips off (--flip=auto: digits or characters); '
          'shifts of up to 1 pixel(s) on 50% of the images.') in out, out
  with open(os.path.join(path, 'config.json')) as f:
    assert json.load(f)['training']['jit_choice'] == results['jit_compile']
  # Grey levels of the data, not the flow's --levels (issue 15.7).
  assert 'images [8, 8, 1], 17 grey levels,' in out, out
  # --verbose=auto with stdout a pipe: one line per epoch, no progress bar.
  assert len(re.findall(r'^21/21 - .*bpd: [0-9.]+ .*val_bpd', out, re.M)) == 2, out
  assert '\r' not in out and '\x08' not in out and '━' not in out, out
  # A second run of the same command does not train again.
  rc, again = finish(start('train', '--epochs=2', *TINY, cwd=cwd))
  assert rc == 0 and 'finished run' in again, again


@pytest.mark.slow
def test_sample_interpolate(model_dir, tmp_path):
  path, _ = model_dir
  samples, strip = str(tmp_path / 's.png'), str(tmp_path / 'i.png')
  nan_out = tmp_path / 'nan' / 'never.png'
  procs = [
      start('sample', f'--model_dir={path}', '--temperatures=0,0.5,1', '--num=5',
            f'--out={samples}'),
      start('interpolate', f'--model_dir={path}', '--index_a=2', '--index_b=7',
            '--steps=6', f'--out={strip}'),
      # The flow overflows at T = 1e30: the whole command fails, naming the
      # temperature and the count, and writes nothing (issue 15.1).
      start('sample', f'--model_dir={path}', '--temperatures=0.7,1e30', '--num=4',
            f'--out={nan_out}'),
  ]
  (rc1, out1), (rc2, out2), (rc3, out3) = [finish(p) for p in procs]
  assert rc1 == 0 and rc2 == 0, (out1, out2)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tfp_glow import images  # pylint: disable=g-import-not-at-top
  # 8x8 tiles upscaled by the default factor (8: a 64-pixel tile), one pixel of
  # padding, written with a new file's usual mode.
  tile = 8 * images.default_scale(8, 8) + 1
  assert tile == 65
  mode = 0o666 & ~images._umask()  # pylint: disable=protected-access
  with Image.open(samples) as img:
    assert img.size == (5 * tile + 1, 3 * tile + 1)  # 3 rows x 5 images
  with Image.open(strip) as img:
    assert img.size == (6 * tile + 1, tile + 1)
  for png in (samples, strip):
    assert os.stat(png).st_mode & 0o777 == mode, oct(os.stat(png).st_mode)
  assert rc3 == 1, out3
  assert ('Error: temperature 1e+30: glow: 4 of 4 generated images are not finite '
          'at temperature 1e+30') in out3, out3
  assert f'Nothing was written to {nan_out}' in out3 and 'Traceback' not in out3
  assert not nan_out.parent.exists()
  # --max_count bounds --num times the number of temperatures; non-finite
  # temperatures are refused before anything runs.
  procs = [start('sample', f'--model_dir={path}', '--temperatures=0,1', '--num=513',
                 f'--out={nan_out}'),
           start('sample', f'--model_dir={path}', '--temperatures=0.5,inf',
                 f'--out={nan_out}')]
  (rc1, out1), (rc2, out2) = [finish(p) for p in procs]
  assert rc1 != 0 and ('--num=513 times 2 temperature(s) is 1026 images, more than '
                       '--max_count=1024') in out1, out1
  assert rc2 != 0 and '--temperatures must be finite and >= 0, got inf' in out2, out2
  assert not nan_out.parent.exists()


def _bpd(out, split='test'):
  return re.search(rf'^{split} bits/dim: ([0-9.]+)', out, re.M).group(1)


@pytest.mark.slow
def test_evaluation_is_a_function_of_weights_split_and_seed(model_dir):
  """Issue 15.2: evaluate.py, train.py's results.json and GlowModel.evaluate give
  the same number for the same weights, split and seed, at any batch size; and
  --eval_draws=K reports the mean over K draws with its standard error."""
  path, _ = model_dir
  procs = [
      # Also the one run with TensorFlow's C++ log at its default level: no
      # "failed call to cuInit" on a machine without a GPU (issue 15.7).
      start_command(command('evaluate', f'--model_dir={path}', '--batch_size=256'),
                    environ=env(TF_CPP_MIN_LOG_LEVEL=None)),
      start('evaluate', f'--model_dir={path}', '--batch_size=7'),
      start('evaluate', f'--model_dir={path}', '--eval_draws=3', '--batch_size=100'),
  ]
  (rc1, out1), (rc2, out2), (rc3, out3) = [finish(p) for p in procs]
  assert rc1 == 0 and rc2 == 0 and rc3 == 0, (out1, out2, out3)
  if not os.path.exists('/proc/driver/nvidia'):
    assert 'cuInit' not in out1, out1
  assert _bpd(out1) == _bpd(out2), (out1, out2)
  with open(os.path.join(path, 'results.json')) as f:
    results = json.load(f)
  assert abs(float(_bpd(out1)) - results['test_bpd']) <= 5e-5 + 1e-6, (out1, results)
  match = re.search(r'^test bits/dim: ([0-9.]+) \+/- ([0-9.]+) \(standard error over '
                    r'3 dequantisation draws, seeds 0\.\.2\)', out3, re.M)
  assert match, out3
  # The same numbers in this process, through GlowModel.evaluate at yet another
  # batch size: draw k is data.load(..., shuffle=False, seed=k).
  from tfp_glow import data  # pylint: disable=g-import-not-at-top
  from tfp_glow import run_dir  # pylint: disable=g-import-not-at-top
  model, _, _ = run_dir.load_trained(path)
  model.compile()
  draws = []
  for seed in range(3):
    ds, _ = data.load('digits', 'test', batch_size=50, shuffle=False, seed=seed)
    draws.append(float(model.evaluate(ds, verbose=0, return_dict=True)['bpd']))
  assert abs(draws[0] - results['test_bpd']) < 1e-5, (draws, results)
  mean = sum(draws) / 3
  se = math.sqrt(sum((d - mean)**2 for d in draws) / 2 / 3)
  assert se > 0 and len(set(draws)) == 3, draws
  assert abs(float(match.group(1)) - mean) <= 5e-5 + 1e-6, (match.group(0), mean)
  assert abs(float(match.group(2)) - se) <= 5e-5 + 1e-6, (match.group(0), se)


def _write_pngs(folder, n, shape, seed):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  folder.mkdir()
  rng = np.random.default_rng(seed)
  for i in range(n):
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if shape[-1] == 1 else pixels).save(
        folder / f'{i:02d}.png')


@pytest.mark.slow
def test_evaluate_other_data(tmp_path):
  """Issue 15.6: --dataset scores other data with the model, and refuses data
  whose size, channels or bit depth differ from the model's, by name."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tfp_glow  # pylint: disable=g-import-not-at-top
  from tfp_glow import data  # pylint: disable=g-import-not-at-top
  from tfp_glow import run_dir  # pylint: disable=g-import-not-at-top
  from tfp_glow.keras import callbacks  # pylint: disable=g-import-not-at-top
  _write_pngs(tmp_path / 'train', 12, (8, 8, 1), seed=0)
  _write_pngs(tmp_path / 'right', 10, (8, 8, 1), seed=1)
  _write_pngs(tmp_path / 'big', 4, (16, 16, 1), seed=2)
  _write_pngs(tmp_path / 'rgb', 4, (8, 8, 3), seed=3)
  # A model directory as train.py writes it, for a model of 8x8 grey 8-bit
  # images (an initialised tiny Glow: no training needed to score data).
  model_dir = str(tmp_path / 'model')
  ds, info = data.load(f'folder:{tmp_path / "train"}', 'all', batch_size=12,
                       shuffle=False)
  config = {'model': run_dir.model_config(
      info, dataset=info.name, image_size=None, n_bits=None, levels=2,
      steps_per_level=1, hidden_width=8, coupling='affine', permutation='conv',
      learn_top=True, conditional=False), 'training': {}}
  assert config['model']['n_bins'] == 256
  model = run_dir.build_model(config['model'], seed=1)
  model.initialize_from(ds)
  run_dir.write_config(model_dir, config)
  callbacks.save_weights(model, run_dir.checkpoint_path(model_dir, 'latest'))
  procs = [start('evaluate', f'--model_dir={model_dir}',
                 f'--dataset=folder:{tmp_path / name}', '--batch_size=3')
           for name in ('right', 'big', 'rgb')]
  procs.append(start('evaluate', f'--model_dir={model_dir}', '--dataset=digits'))
  (rc1, out1), (rc2, out2), (rc3, out3), (rc4, out4) = [finish(p) for p in procs]
  assert rc1 == 0, out1
  assert f'(10 images of folder:{tmp_path / "right"},' in out1, out1
  model.compile()
  right, _ = data.load(f'folder:{tmp_path / "right"}', 'all', batch_size=4,
                       shuffle=False, seed=0)
  want = float(model.evaluate(right, verbose=0, return_dict=True)['bpd'])
  assert np.isfinite(want)
  assert abs(float(_bpd(out1, 'all')) - want) <= 5e-5 + 1e-6, (out1, want)
  for rc, out in ((rc2, out2), (rc3, out3), (rc4, out4)):
    assert rc == 2 and 'Traceback' not in out, out
    assert 'does not match the model' in out, out
  assert 'images are 16x16, the model takes 8x8' in out2, out2
  assert 'images have 3 channel(s), the model takes 1' in out3, out3
  assert 'the data has 17 levels per pixel (n_bins), the model was trained on ' \
      '256' in out4, out4
  assert 'images are' not in out3 and 'channel' not in out2


@pytest.mark.slow
def test_verbose_auto_follows_the_terminal():
  """train.py's --verbose=auto: the progress bar on a terminal, one line per epoch
  in a log file (issue 15.7; the pipe case runs for real in the model_dir fixture)."""
  from tfp_glow.programs import launch  # pylint: disable=g-import-not-at-top

  class Stream:

    def __init__(self, tty):
      self.tty = tty

    def isatty(self):
      return self.tty

  assert launch.keras_verbosity('auto', Stream(True)) == 1
  assert launch.keras_verbosity('auto', Stream(False)) == 2
  assert launch.keras_verbosity('auto', object()) == 2
  assert [launch.keras_verbosity(v, Stream(True)) for v in '012'] == [0, 1, 2]


@pytest.mark.slow
def test_different_architecture_is_refused(model_dir):
  path, _ = model_dir
  tiny = [a for a in TINY if not a.startswith('--hidden_width')]
  rc, out = run('train', f'--model_dir={path}', '--hidden_width=16', *tiny)
  assert rc != 0
  assert 'hidden_width: 8 in the model directory, 16 now' in out, out


def _epochs(out):
  return [int(m) for m in re.findall(r'^Epoch (\d+)/\d+', out, re.M)]


def _optimizer_steps(model_dir, path):
  """The optimizer's step count stored in a checkpoint of `model_dir`."""
  import keras  # pylint: disable=g-import-not-at-top
  import tfp_glow  # pylint: disable=g-import-not-at-top
  from tfp_glow import run_dir  # pylint: disable=g-import-not-at-top
  model = run_dir.build_model(run_dir.read_config(model_dir)['model'])
  # The optimizer train.py builds (its variables must match the file's).
  model.compile(optimizer=keras.optimizers.Adam(tfp_glow.WarmupSchedule(1e-3, 1),
                                                use_ema=True))
  model.optimizer.build(model.trainable_variables)
  model.load_weights(path)
  return int(model.optimizer.iterations.numpy())


@pytest.mark.slow
def test_sigkill_resumes_from_backup(tmp_path):
  """Killed mid-training, the same command resumes after the last backed-up
  epoch, with the optimizer's state: deterministic checks only (epoch numbers,
  step counts, file integrity), no comparison of two noisy runs."""
  from tfp_glow.keras import callbacks  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'model')
  epochs, steps = 6, 40
  args = (f'--model_dir={path}', f'--epochs={epochs}', f'--steps_per_epoch={steps}',
          *TINY)
  log = open(str(tmp_path / 'first.log'), 'w+')
  proc = subprocess.Popen(command('train', *args), env=env(), stdout=log,
                          stderr=subprocess.STDOUT, text=True)
  backup_info = os.path.join(path, 'backup', 'backup.json')
  backup_state = os.path.join(path, 'backup', 'backup.weights.h5')
  deadline = time.time() + 180

  def second_epoch_started():
    log.seek(0)
    return re.search(r'^Epoch 2/', log.read(), re.M) is not None

  # The first backup is written, and epoch 1's line printed (Keras prints it after
  # the callbacks ran): epoch 2 is under way.
  while proc.poll() is None and not (os.path.exists(backup_info) and
                                     second_epoch_started()):
    assert time.time() < deadline, 'no backup within 180 s'
    time.sleep(0.05)
  assert proc.poll() is None, 'training finished before it could be killed'
  time.sleep(0.2)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  log.close()
  # What the kill left is whole: the backup's weights file holds its own epoch
  # (the JSON copy is written after it, so it may be one behind) and the
  # optimizer's steps of exactly that many epochs.
  backed_up = callbacks.read_info(backup_state)['epoch']
  with open(backup_info) as f:
    assert json.load(f)['epoch'] in (backed_up - 1, backed_up)
  assert 1 <= backed_up < epochs
  assert _optimizer_steps(path, backup_state) == backed_up * steps
  # The latest checkpoint is written after the backup, at each epoch's end.
  latest = os.path.join(path, 'checkpoints', 'latest.weights.h5')
  assert callbacks.read_info(latest)['epoch'] in (backed_up - 1, backed_up)
  assert not os.path.exists(os.path.join(path, 'results.json'))

  rc, second = run('train', *args)
  assert rc == 0, second
  # Resumed after the backed-up epoch, not from epoch 1 ...
  assert _epochs(second) == list(range(backed_up + 1, epochs + 1)), (
      backed_up, second)
  # ... with the optimizer's state: its step count went on from the backup's,
  # so the last checkpoint comes after exactly epochs * steps steps.
  assert callbacks.read_info(latest)['epoch'] == epochs
  assert _optimizer_steps(path, latest) == epochs * steps
  assert not os.path.exists(os.path.join(path, 'backup'))
  with open(os.path.join(path, 'results.json')) as f:
    results = json.load(f)
  assert math.isfinite(results['test_bpd'])
  assert results['epochs_run'] == epochs - backed_up
  assert results['checkpoint_info']['epoch'] >= 1
  rc, out = run('evaluate', f'--model_dir={path}', '--checkpoint=latest')
  assert rc == 0 and 'test bits/dim' in out, out


@pytest.mark.slow
def test_bad_input_clear_errors(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  procs = [
      start('train', '--dataset=no_such_dataset', f'--model_dir={tmp_path}/a'),
      start('train', '--dataset=cifar10', '--n_bits=9', f'--model_dir={tmp_path}/b'),
      start('train', f'--dataset=folder:{empty}', f'--model_dir={tmp_path}/c'),
      start('evaluate', f'--model_dir={tmp_path}/nothing'),
  ]
  (rc1, out1), (rc2, out2), (rc3, out3), (rc4, out4) = [finish(p) for p in procs]
  assert rc1 != 0 and "Unknown dataset 'no_such_dataset'" in out1, out1
  assert 'digits' in out1 and 'cifar10' in out1 and 'folder:' in out1
  assert rc2 != 0 and '--n_bits must be in 1..8, got 9' in out2, out2
  assert rc3 != 0 and 'No images' in out3, out3
  assert rc4 != 0 and 'config.json does not exist' in out4, out4
  for out in (out1, out2, out3, out4):
    assert 'Traceback' not in out, out


@pytest.mark.slow
def test_time_limit_stops_after_the_crossing_step(tmp_path):
  """--time_limit: the step that crosses the limit is the last; that cut-short
  epoch is still validated and checkpointed, and the test bits/dim comes from
  the best checkpoint. The limit here (0.001 min) has passed before the first
  step ends. Also: the old boolean syntax --nojit_compile still parses."""
  model_dir = str(tmp_path / 'run')
  rc, out = run('train', f'--model_dir={model_dir}', '--epochs=5', *TINY,
                '--time_limit=0.001', '--nojit_compile')
  assert rc == 0, out
  assert 'Training stopped by --time_limit=0.001 min' in out, out
  with open(os.path.join(model_dir, 'results.json')) as f:
    results = json.load(f)
  assert results['stopped_by_time_limit'] is True
  assert results['steps_run'] == 1 and results['epochs_run'] == 1, results
  assert results['elapsed_at_stop_s'] >= 0.06
  assert results['weights'] == 'best' and results['checkpoint_info']['epoch'] == 1
  assert 'val_bpd' in results['checkpoint_info']  # validated
  assert math.isfinite(results['test_bpd'])
  assert results['jit_compile']['how'] == 'forced'
  assert results['jit_compile']['train'] is False
  assert os.path.exists(os.path.join(model_dir, 'checkpoints', 'latest.weights.h5'))
  with open(os.path.join(model_dir, 'config.json')) as f:
    assert json.load(f)['training']['time_limit'] == 0.001


@pytest.mark.slow
def test_inversion_numerics_of_a_trained_model(model_dir, tmp_path):
  """bin/benchmark.py --inversion_numerics on a trained model: rebuilt inputs
  and 'invert' gradients against 'store' in float64 (exact to rounding) and
  float32, the table printed and the JSON written."""
  path, _ = model_dir
  out = tmp_path / 'numerics.json'
  rc, text = run('benchmark', f'--inversion_numerics={path}',
                 '--numerics_batch=16', f'--json_out={out}')
  assert rc == 0, text
  assert "| float32 |" in text and "'invert' vs 'store'" in text, text
  results = json.loads(out.read_text())
  assert results['images'] == 16
  f64, f32 = results['numerics']['float64'], results['numerics']['float32']
  assert f64['reconstruction_max'] < 1e-12 and f64['gradient_global'] < 1e-10
  assert 0 < f32['reconstruction_max'] < 1e-4
  assert f32['gradient_global'] < 1e-3
  assert f32['invert_vs_float64_store']['global_error'] < 1e-2


@pytest.mark.slow
def test_time_budget_ends_near_zero_learning_rate(tmp_path):
  """--time_limit with the linear schedule (the default except on the digits): the
  decay is fitted to the clock, so the run stops with the learning rate near zero, and reports the test
  bits/dim of the best checkpoint."""
  model_dir = str(tmp_path / 'run')
  rc, out = run('train', f'--model_dir={model_dir}', '--epochs=10000',
                '--steps_per_epoch=20', *TINY, '--time_limit=0.5', '--nojit_compile',
                '--compute_dtype=float32', '--sample_every=100000',
                '--lr_schedule=linear')
  assert rc == 0, out
  assert 'Coupling networks in float32' in out, out
  with open(os.path.join(model_dir, 'results.json')) as f:
    results = json.load(f)
  schedule = results['learning_rate_schedule']
  assert results['stopped_by_time_limit'] is True
  assert schedule['budget'] == 'time_limit' and schedule['decay'] == 'linear'
  assert schedule['steps_run'] == results['steps_run'] > 100, results
  assert schedule['peak_learning_rate'] == 3e-3
  assert 0 <= schedule['final_learning_rate'] <= 0.1 * 3e-3, schedule
  assert abs(schedule['total_steps'] - results['steps_run']) <= 0.1 * results['steps_run']
  assert len(schedule['total_steps_estimates']) >= 2
  assert results['weights'] == 'best' and math.isfinite(results['test_bpd'])


@pytest.mark.slow
def test_a_run_that_failed_before_training_does_not_hold_its_folder(tmp_path):
  """Issue 21.1: --levels=4 cannot work on 8x8 images; the folder it was given
  is then free for a run with another architecture."""
  model_dir = str(tmp_path / 'run')
  rc, out = run('train', f'--model_dir={model_dir}', '--levels=4', '--epochs=1')
  assert rc == 2 and 'Traceback' not in out, out
  rc, out = run('train', f'--model_dir={model_dir}', '--epochs=1', *TINY,
                '--nojit_compile')
  assert rc == 0 and 'different model' not in out, out
  with open(os.path.join(model_dir, 'config.json')) as f:
    assert json.load(f)['model']['levels'] == 2
