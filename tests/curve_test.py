"""The time-to-quality curve (bin/curve.py, tfp_glow.benchmark.curve).

Default tests: the pure parts (minute marks, the value of a curve at a
mark, the table, the resume rules) and the `History` callback that writes
the training program's points. The slow test runs the program end to end
on a tiny model (8x8 photos, budget 0.2 min, tfp_glow and tfb, and the
PyTorch port when torch and $TORCH_GLOW_DIR are there): the JSON, table
and plot are written, every point is finite, and a rerun keeps the
finished runs.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfp_glow.benchmark import curve
from tfp_glow.keras import callbacks

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'bin' / 'curve.py'


def _points(*pairs):
  return [dict(step=10 * i, elapsed_s=t, val_bpd=v)
          for i, (t, v) in enumerate(pairs, 1)]


def test_minute_marks():
  assert curve.minute_marks(30, 5) == [5, 10, 15, 20, 25, 30]
  assert curve.minute_marks(12, 5) == [5, 10]
  assert curve.minute_marks(0.2, 5) == [0.2]      # shorter than one mark
  assert curve.minute_marks(0.3, 0.1) == pytest.approx([0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match='every must be > 0'):
    curve.minute_marks(30, 0)


def test_value_at_is_the_last_evaluation_by_then():
  points = _points((50, 4.0), (290, 3.0), (300, 2.9), (610, 2.5))
  assert curve.value_at(points, 0.5) is None      # nothing evaluated yet
  assert curve.value_at(points, 5) == 2.9         # 300 s is inside 5 min
  assert curve.value_at(points, 10) == 2.9        # 610 s is not
  assert curve.value_at(points, 11) == 2.5
  # Not the best so far: the curve as it was (a worse last value shows).
  assert curve.value_at(_points((10, 3.0), (20, 3.5)), 1) == 3.5


def test_render_table():
  settings = curve.Settings(budget_minutes=10)
  runs = {
      'torch': dict(points=_points((100, 3.0), (590, 2.6), (650, 2.55)),
                    steps_run=900, test_bpd=2.56),
      'tfp_glow': dict(points=_points((200, 2.9), (420, 2.4), (640, 2.3)),
                       steps_run=1000, test_bpd=2.31),
  }
  table = curve.render_table(runs, settings, every_minutes=5)
  lines = table.splitlines()
  assert lines[2] == ('| implementation | 5 min | 10 min | end | steps | '
                      'test bits/dim |')
  # In the fixed order tfp_glow, tfb, torch; tfb did not run.
  assert lines[4] == ('| tfp_glow (bin/train.py) | 2.9000 | 2.4000 | 2.3000 '
                      '| 1000 | 2.3100 |')
  assert lines[5] == ('| PyTorch port (rosinality) | 3.0000 | 2.6000 | '
                      '2.5500 | 900 | 2.5600 |')
  assert len(lines) == 6


def test_resume_keeps_finished_runs_and_refuses_other_settings(tmp_path):
  out = str(tmp_path)
  s = curve.Settings(budget_minutes=1, train_args=('--nojit_compile',))
  assert curve.load_finished(out, 'tfb', s) is None
  result = dict(points=_points((30, 3.0)), settings=s.identity('tfb'))
  curve.write_result(out, 'tfb', result)
  assert curve.load_finished(out, 'tfb', s) == result
  # Another implementation's own option does not concern tfb's run ...
  assert curve.load_finished(out, 'tfb', curve.Settings(
      budget_minutes=1, train_args=('--jit_compile',))) == result
  # ... but a shared setting does, and the error names it.
  with pytest.raises(ValueError, match=r'budget_minutes=1 \(now 2\)'):
    curve.load_finished(out, 'tfb', curve.Settings(budget_minutes=2))
  with pytest.raises(ValueError, match=r'tfb_jit_compile=False \(now True\)'):
    curve.load_finished(out, 'tfb', curve.Settings(
        budget_minutes=1, tfb_jit_compile=True))
  assert s.identity('tfp_glow')['train_args'] == ['--nojit_compile']
  assert 'train_args' not in s.identity('torch')


def test_history_callback(tmp_path):
  """One entry per epoch, rewritten after each: the step count, the time
  the validated weights existed, the validation time, the logs; a resumed
  fit keeps the earlier epochs' entries and replaces the later ones."""
  keras.utils.set_random_seed(0)
  x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
  y = x.sum(1, keepdims=True)
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
  model.compile(optimizer='sgd', loss='mse')
  path = str(tmp_path / 'history.json')
  history = callbacks.History(path)
  model.fit(x, y, batch_size=10, epochs=3, validation_data=(x[:20], y[:20]),
            callbacks=[history], verbose=0)
  epochs = json.loads(pathlib.Path(path).read_text())['epochs']
  assert [e['epoch'] for e in epochs] == [1, 2, 3]
  assert [e['step'] for e in epochs] == [4, 8, 12]
  for e in epochs:
    assert 0 < e['elapsed_s'] <= e['epoch_end_s']
    assert math.isfinite(e['val_loss']) and math.isfinite(e['loss'])
  assert [e['elapsed_s'] for e in epochs] == sorted(
      e['elapsed_s'] for e in epochs)
  eval_s = [e['eval_s'] for e in epochs]
  assert 0 < eval_s[0] < eval_s[1] < eval_s[2]   # validation is timed
  # Resumed after epoch 1 (a new process would read the file the same way).
  model.fit(x, y, batch_size=10, epochs=2, initial_epoch=1,
            validation_data=(x[:20], y[:20]),
            callbacks=[callbacks.History(path)], verbose=0)
  again = json.loads(pathlib.Path(path).read_text())['epochs']
  assert [e['epoch'] for e in again] == [1, 2]
  assert again[0] == epochs[0]
  assert again[1]['step'] == 16


@pytest.mark.slow
def test_curve_program_end_to_end(tmp_path):
  """A tiny curve: files written, points finite, the rerun keeps them."""
  implementations = ['tfp_glow', 'tfb']
  extra = []
  glow_dir = os.environ.get('TORCH_GLOW_DIR')
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    if glow_dir:
      implementations.append('torch')
      extra.append(f'--torch_glow_dir={glow_dir}')
  except ImportError:
    pass
  out = tmp_path / 'curve'
  cmd = [sys.executable, str(SCRIPT), f'--out_dir={out}', '--image_size=8',
         '--levels=2', '--steps_per_level=1', '--hidden_width=8',
         '--batch_size=64', '--budget_minutes=0.2', '--eval_every_steps=20',
         '--warmup_steps=10', '--threads=1', '--table_every_minutes=0.1',
         f'--implementations={",".join(implementations)}', *extra,
         '--', '--nojit_compile', '--sample_every=1000']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(ROOT),
             PYTHONUNBUFFERED='1')
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        cwd=str(tmp_path), timeout=1200, check=False)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  results = json.loads((out / 'curve.json').read_text())
  assert sorted(results['runs']) == sorted(implementations)
  for impl, run in results['runs'].items():
    assert run['points'], impl
    for p in run['points']:
      assert math.isfinite(p['val_bpd']) and p['elapsed_s'] > 0, (impl, p)
      assert p['step'] >= 1
    assert math.isfinite(run['test_bpd']), impl
    assert run['best']['val_bpd'] == min(p['val_bpd'] for p in run['points'])
    assert run['settings']['budget_minutes'] == 0.2
  tfp = results['runs']['tfp_glow']
  assert tfp['points_source'].startswith(('history.json', 'TensorBoard'))
  assert '--time_limit=0.2' in tfp['command']
  assert '--nojit_compile' in tfp['command']
  # The photos get --flip=auto's left-right flips through bin/train.py's defaults.
  tfp_config = json.loads((out / 'tfp_glow' / 'config.json').read_text())
  assert tfp_config['training']['flip'] is True
  table = (out / 'curve.md').read_text()
  assert '| tfp_glow (bin/train.py) |' in table
  assert '| tfb.Glow (TFP) |' in table
  assert (out / 'curve.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  # The rerun trains nothing: every run is kept, its file untouched.
  before = {i: (out / i / curve.RESULT_NAME).stat().st_mtime_ns
            for i in implementations}
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        cwd=str(tmp_path), timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  for impl in implementations:
    assert f'{impl}: finished run kept' in proc.stdout
    assert (out / impl / curve.RESULT_NAME).stat().st_mtime_ns == before[impl]
  assert '== ' not in proc.stdout
