"""End-to-end tests of the programs in bin/, run as subprocesses on a tiny model."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, 'bin')
PROGRAMS = ('train', 'sample', 'evaluate', 'interpolate')
TINY = ['--levels=2', '--steps_per_level=1', '--hidden_width=8', '--batch_size=64',
        '--warmup_steps=10', '--learning_rate=3e-3', '--verbose=2',
        '--temperatures=0,0.7', '--sample_every=1']


def env():
  e = dict(os.environ)
  path = e.get('PYTHONPATH')
  # Under Bazel the runfiles root is on PYTHONPATH already; keep it first.
  e['PYTHONPATH'] = ROOT if not path else ROOT + os.pathsep + path
  e['TF_CPP_MIN_LOG_LEVEL'] = '3'
  e['CUDA_VISIBLE_DEVICES'] = ''
  e['PYTHONUNBUFFERED'] = '1'  # progress lines reach the log before a SIGKILL
  return e


def command(program, *args):
  return [sys.executable, os.path.join(BIN, f'{program}.py'), *args]


def start(program, *args, **kwargs):
  return subprocess.Popen(command(program, *args), env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(proc, timeout=240):
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def run(program, *args, timeout=240):
  return finish(start(program, *args), timeout)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('model'))
  rc, out = run('train', f'--model_dir={path}', '--epochs=2', *TINY)
  assert rc == 0, out
  return path, out


def defined_flags(program):
  with open(os.path.join(BIN, f'{program}.py')) as f:
    return re.findall(r"flags\.DEFINE_\w+\(\s*'(\w+)'", f.read())


def test_help_lists_every_flag():
  procs = {p: start(p, '--help') for p in PROGRAMS}
  for program, proc in procs.items():
    rc, out = finish(proc)
    assert rc in (0, 1), out  # absl's --help exits with 1
    assert 'Traceback' not in out, out
    names = defined_flags(program)
    assert len(names) >= 3, program
    for name in names:
      assert re.search(rf'--\[?(no)?\]?{name}\b', out), (program, name, out)
  # The recipe's defaults are all in one place.
  _, out = finish(start('train', '--help'))
  assert "--levels: Multi-scale levels" in out


def test_train_writes_everything(model_dir):
  path, out = model_dir
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
  assert 'Test bits/dim (test split, best weights' in out
  # A second run of the same command does not train again.
  rc, again = run('train', f'--model_dir={path}', '--epochs=2', *TINY)
  assert rc == 0 and 'finished run' in again, again


def test_sample_evaluate_interpolate(model_dir, tmp_path):
  path, _ = model_dir
  samples, strip = str(tmp_path / 's.png'), str(tmp_path / 'i.png')
  procs = [
      start('sample', f'--model_dir={path}', '--temperatures=0,0.5,1', '--num=5',
            f'--out={samples}'),
      start('evaluate', f'--model_dir={path}', '--split=test'),
      start('interpolate', f'--model_dir={path}', '--index_a=2', '--index_b=7',
            '--steps=6', f'--out={strip}'),
  ]
  (rc1, out1), (rc2, out2), (rc3, out3) = [finish(p) for p in procs]
  assert rc1 == 0 and rc2 == 0 and rc3 == 0, (out1, out2, out3)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(samples) as img:
    # 3 rows x 5 images of 8x8, one pixel of padding.
    assert img.size == (5 * 9 + 1, 3 * 9 + 1)
  with Image.open(strip) as img:
    assert img.size == (6 * 9 + 1, 9 + 1)
  bpd = float(re.search(r'test bits/dim: ([0-9.]+)', out2).group(1))
  with open(os.path.join(path, 'results.json')) as f:
    # The same weights, split and dequantisation seed as train.py's report.
    assert abs(bpd - json.load(f)['test_bpd']) < 1e-3


def test_different_architecture_is_refused(model_dir):
  path, _ = model_dir
  tiny = [a for a in TINY if not a.startswith('--hidden_width')]
  rc, out = run('train', f'--model_dir={path}', '--hidden_width=16', *tiny)
  assert rc != 0
  assert 'hidden_width: 8 in the model directory, 16 now' in out, out


def _epochs(out):
  return [int(m) for m in re.findall(r'^Epoch (\d+)/\d+', out, re.M)]


def _bpds(out):
  return [float(m) for m in re.findall(r' - bpd: ([0-9.]+)', out)]


def test_sigkill_resumes_from_backup(tmp_path):
  path = str(tmp_path / 'model')
  args = (f'--model_dir={path}', '--epochs=6', '--steps_per_epoch=40', *TINY)
  log = open(str(tmp_path / 'first.log'), 'w+')
  proc = subprocess.Popen(command('train', *args), env=env(), stdout=log,
                          stderr=subprocess.STDOUT, text=True)
  metadata = os.path.join(path, 'backup', 'training_metadata.json')
  deadline = time.time() + 180

  def second_epoch_started():
    log.seek(0)
    return re.search(r'^Epoch 2/', log.read(), re.M) is not None

  # The first backup is written, and epoch 1's line printed (Keras prints it after
  # the callbacks ran): epoch 2 is under way.
  while proc.poll() is None and not (os.path.exists(metadata) and
                                     second_epoch_started()):
    assert time.time() < deadline, 'no backup within 180 s'
    time.sleep(0.05)
  assert proc.poll() is None, 'training finished before it could be killed'
  time.sleep(0.2)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  log.seek(0)
  first = log.read()
  log.close()
  with open(metadata) as f:
    backed_up = json.load(f)['epoch']
  assert 1 <= backed_up < 6
  assert not os.path.exists(os.path.join(path, 'results.json'))

  rc, second = run('train', *args)
  assert rc == 0, second
  epochs = _epochs(second)
  # Resumed after the backed-up epoch, not from epoch 1.
  assert epochs == list(range(backed_up + 1, 7)), (backed_up, epochs, second)
  # ... and from the trained weights: the first resumed epoch is no worse than the
  # first epoch of the killed run (which started from scratch).
  assert _bpds(second)[0] < _bpds(first)[0], (first, second)
  with open(os.path.join(path, 'results.json')) as f:
    results = json.load(f)
  assert math.isfinite(results['test_bpd'])
  assert results['checkpoint_info']['epoch'] >= 1
  rc, out = run('evaluate', f'--model_dir={path}', '--checkpoint=latest')
  assert rc == 0 and 'test bits/dim' in out, out


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
