"""The benchmark: its FLOP count, and a tiny run so that it cannot rot.

The FLOP count is checked by hand on a tiny architecture, at two split
fractions: it must follow `split_fraction` (the benchmark's own walk once
ignored it), which holds because it reads `tfp_glow.architecture.plan`.

One subprocess run of `bin/benchmark.py --quick` (8x8x1, L=2, K=2, width 16,
graph mode, 2 repeats; about 30 s on a quiet 2-core machine) goes through the
launcher, the program and its RSS child (`python -m
tfp_glow.programs.benchmark`): it must exit 0, print the table with a finite
time for every (op, library), and write the JSON with the convolution
roofline, the Conv2D op counts, the peak RSS of the training step and the
train_program row (2 epochs of 3 steps of fit against the bare step).
"""

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

from tfp_glow import architecture
from tfp_glow.benchmark import config
from tfp_glow.benchmark import flops
from tfp_glow.benchmark import report

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'bin' / 'benchmark.py'
OPS = ('log_prob', 'train', 'sample')


def _tiny(split_fraction):
  return config.Config(image_size=4, channels=1, levels=2, steps_per_level=1,
                       hidden_width=4, batch_size=1,
                       split_fraction=split_fraction)


def _conv(h, w, k, cin, cout):
  return 2 * h * w * k * k * cin * cout


def test_flops_follow_split_fraction_by_hand():
  """4x4x1, L=2, K=1, width 4; affine couplings, invertible 1x1 convs."""
  # Level 0 is the same at both fractions: 2x2x4, coupling on 2 of 4 channels.
  level0_steps = (_conv(2, 2, 3, 2, 4)      # conv1 3x3, 2 -> width
                  + _conv(2, 2, 1, 4, 4)    # conv2 1x1, width -> width
                  + _conv(2, 2, 3, 4, 4)    # zero conv 3x3, width -> 2 x 2
                  + _conv(2, 2, 1, 4, 4))   # invertible 1x1, 4 -> 4
  # split 0.5: 2 exit, 2 kept; the prior maps the 2 kept to 2 x 2 exit.
  # Level 1: 1x1x8, coupling on 4 of 8 channels.
  half = (level0_steps + _conv(2, 2, 3, 2, 4)
          + _conv(1, 1, 3, 4, 4) + _conv(1, 1, 1, 4, 4)
          + _conv(1, 1, 3, 4, 8) + _conv(1, 1, 1, 8, 8))
  # split 0.25: int(4 * 0.25) = 1 exits, 3 kept; the prior maps 3 -> 2 x 1.
  # Level 1: 1x1x12, coupling on 6 of 12 channels.
  quarter = (level0_steps + _conv(2, 2, 3, 3, 2)
             + _conv(1, 1, 3, 6, 4) + _conv(1, 1, 1, 4, 4)
             + _conv(1, 1, 3, 4, 12) + _conv(1, 1, 1, 12, 12))
  assert (half, quarter) == (3584, 4032)
  assert flops.forward_flops_per_image(_tiny(0.5)) == half
  assert flops.forward_flops_per_image(_tiny(0.25)) == quarter


def test_flops_are_the_plans():
  cfg = config.Config.from_preset('cifar')
  want = architecture.plan((32, 32, 3), levels=3, steps_per_level=8,
                           hidden_width=400).forward_flops_per_image()
  assert flops.forward_flops_per_image(cfg) == want
  # The figure docs/BENCHMARKS.md quotes.
  assert round(want / 1e9, 3) == 1.327
  assert flops.gflops_per_second(cfg, 'train', 1e3) == pytest.approx(
      3 * want * 16 / 1e9)


def test_no_library_module_imports_the_programs():
  """Imports flow downward: the library never depends on the programs."""
  pattern = re.compile(r'^\s*(from|import)\s+tfp_glow(\.programs|\s+import'
                       r'\s+.*\bprograms\b)', re.M)
  for path in (ROOT / 'tfp_glow').rglob('*.py'):
    if 'programs' in path.relative_to(ROOT / 'tfp_glow').parts:
      continue
    assert not pattern.search(path.read_text()), path


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


@pytest.mark.slow
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
  # The table is a function of the JSON alone: it can be re-rendered.
  assert report.render(results) + '\n' == markdown


@pytest.mark.slow
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
  assert results['command'].startswith(os.path.join('bin', 'benchmark.py'))


@pytest.mark.slow
def test_roofline_times_the_plans_convolutions(quick_run):
  _, results, _ = quick_run
  cfg = results['config']
  plan = architecture.plan(
      (cfg['image_size'], cfg['image_size'], cfg['channels']),
      levels=cfg['levels'], steps_per_level=cfg['steps_per_level'],
      hidden_width=cfg['hidden_width'],
      split_fraction=cfg['split_fraction'])
  keys = ('level', 'what', 'h', 'w', 'k', 'cin', 'cout', 'count', 'flops')
  assert [{k: r[k] for k in keys} for r in results['conv_roofline']] == (
      plan.conv_shapes())
  assert results['forward_gflop_per_image'] == pytest.approx(
      plan.forward_flops_per_image() / 1e9)


@pytest.mark.slow
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


def test_memory_table_section_ratios():
  """The --memory_table rows render with the ratios the targets are judged
  by: against the mode's own smallest K, and against 'store' at the same K
  (a failed child shows as failed, a missing time as '-')."""
  rows = [dict(steps_per_level=8, backprop='store', mode='graph',
               peak_rss_mb=1000.0, step_ms=100.0, rss_built_mb=700.0,
               gradient_peak_rss_mb=900.0),
          dict(steps_per_level=8, backprop='invert', mode='graph',
               peak_rss_mb=800.0, step_ms=130.0, rss_built_mb=700.0,
               gradient_peak_rss_mb=750.0),
          dict(steps_per_level=32, backprop='store', mode='graph',
               peak_rss_mb=4000.0, step_ms=None, rss_built_mb=900.0,
               gradient_peak_rss_mb=2700.0),
          dict(steps_per_level=32, backprop='invert', error='exit 1')]
  results = dict(memory_table=dict(config=_tiny(0.5).as_dict(),
                                   backprops=['store', 'invert'], rows=rows))
  table = report.render(results)
  assert ('| 8 | invert | 800 | 1.00x | 80% | 700 | 750 | 1.00x | 130 | '
          '1.30x |') in table
  assert ('| 32 | store | 4000 | 4.00x | 100% | 900 | 2700 | 3.00x | - | - |'
          in table)
  assert '| 32 | invert | failed: exit 1 |' in table


@pytest.mark.slow
def test_memory_table_run(tmp_path):
  """`--memory_table` end to end on the quick preset: every child (training
  step and gradient alone, per K and mode, and the timing child) reports,
  and the table renders each row."""
  json_path = tmp_path / 'memory.json'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(ROOT))
  proc = subprocess.run(
      [sys.executable, str(SCRIPT), '--memory_table', '--preset=quick',
       '--memory_table_steps=1,2', '--repeats=1', '--warmup=1',
       f'--json_out={json_path}'],
      capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=900,
      check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  rows = json.loads(json_path.read_text())['memory_table']['rows']
  assert [(r['steps_per_level'], r['backprop']) for r in rows] == [
      (1, 'store'), (1, 'invert'), (2, 'store'), (2, 'invert')]
  for r in rows:
    assert 'error' not in r and r.get('gradient_error') is None, r
    assert r['peak_rss_mb'] >= r['rss_built_mb'] > r['rss_start_mb'] > 0, r
    assert r['gradient_peak_rss_mb'] > r['rss_start_mb'], r
    assert r['op'] == 'train' and r['step_ms'] > 0, r
  assert re.search(r'\| 2 \| invert \| \d+ \| [\d.]+x \| \d+% \|',
                   proc.stdout), proc.stdout


@pytest.mark.slow
def test_train_program_row(quick_run):
  """fit with the program's callbacks, EMA and pipeline against the bare step."""
  _, results, markdown = quick_run
  tp = results['train_program']
  assert tp['epochs'] == 2 and tp['steps_per_epoch'] == 3
  row = tp['graph']
  for key in ('bare_ms', 'steps_ms', 'program_ms', 'ratio', 'steps_ratio'):
    assert math.isfinite(row[key]) and row[key] > 0, (key, row)
  assert row['epoch_work_s'] >= 0
  assert row['program_ms'] >= row['steps_ms']
  assert 'Training program (`GlowModel.fit`' in markdown


def test_report_written_into_a_new_folder(tmp_path):
  """--json_out / --markdown_out in a folder that does not exist yet: created,
  not a FileNotFoundError after minutes of measuring (docs/BENCHMARKS.md's
  memory-table command writes to runs/inv5/)."""
  from tfp_glow.benchmark import report  # pylint: disable=g-import-not-at-top
  json_out = tmp_path / 'a' / 'b' / 'r.json'
  markdown_out = tmp_path / 'c' / 'r.md'
  report.write({'x': 1}, '| t |', str(json_out), str(markdown_out))
  assert json.loads(json_out.read_text()) == {'x': 1}
  assert markdown_out.read_text() == '| t |\n'
