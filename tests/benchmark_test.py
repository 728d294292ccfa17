"""Runs bin/benchmark.py at a tiny size so that it cannot rot.

One subprocess run of `bin/benchmark.py --quick` (8x8x1, L=2, K=2, width 16,
graph mode, 2 repeats; about 30 s on a quiet 2-core machine): it must exit 0,
print the table with a finite time for every (op, library), and write the JSON
with the convolution roofline, the Conv2D op counts and the peak RSS of the
training step.
"""

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'bin' / 'benchmark.py'
OPS = ('log_prob', 'train', 'sample')


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('benchmark')
  json_path = out / 'bench.json'
  md_path = out / 'bench.md'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(ROOT))
  proc = subprocess.run(
      [sys.executable, str(SCRIPT), '--quick', f'--json_out={json_path}',
       f'--markdown_out={md_path}'],
      capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=600,
      check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return proc.stdout, json.loads(json_path.read_text()), md_path.read_text()


def test_prints_table_with_finite_times(quick_run):
  stdout, results, markdown = quick_run
  rows = [line for line in stdout.splitlines()
          if re.match(r'\| (log_prob|train|sample) \|', line)]
  seen = set()
  for row in rows:
    cells = [c.strip() for c in row.strip('|').split('|')]
    op, lib, mode, ms = cells[0], cells[1], cells[2], float(cells[3])
    assert mode in ('graph', 'xla')
    assert math.isfinite(ms) and ms > 0, row
    seen.add((op, lib))
  libs = results['libraries']
  assert {'tfp_glow', 'tfp_glow_bf16', 'tfb'} <= set(libs)
  assert seen == {(op, lib) for op in OPS for lib in libs}
  assert rows[0] in markdown


def test_json_has_every_measurement(quick_run):
  _, results, _ = quick_run
  assert results['forward_gflop_per_image'] > 0
  roof = results['conv_roofline_summary']
  assert math.isfinite(roof['attainable_f32_gflops'])
  assert roof['attainable_f32_gflops'] > 0
  for lib in results['libraries']:
    for op in OPS:
      best = results['best'][lib][op]
      assert math.isfinite(best['median_ms']) and best['median_ms'] > 0
      assert math.isfinite(best['fraction']) and best['fraction'] > 0
  assert results['rss']['tfp_glow']['peak_rss_mb'] > 0


def test_conv2d_counts(quick_run):
  """tfp_glow runs each coupling network once per log_prob; tfb.Glow twice."""
  _, results, _ = quick_run
  models = results['models']
  ours = models['tfp_glow']['conv2d_log_prob']
  # 3 convolutions per coupling network, 2 steps x 2 levels, 1 split prior.
  assert ours == 3 * 2 * 2 + 1
  assert models['tfp_glow']['conv2d_sample'] == ours
  assert models['tfb']['conv2d_log_prob'] == 2 * ours
  # TFP 0.25 builds its networks with tf_keras, whose variables tf.Module
  # tracking sees: none is silently left out of training.
  assert models['tfb']['tracked_variables'] == models['tfb']['variables']
