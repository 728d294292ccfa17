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

import numpy as np
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
  # 2 Conv2D per coupling network (its 3x3 layers; the hidden 1x1 layer runs
  # as a MatMul, tfp_glow/nn.py), 2 steps x 2 levels, 1 split prior.
  assert ours == 2 * 2 * 2 + 1
  assert models['tfp_glow']['conv2d_sample'] == ours
  # tfb.Glow: 3 Conv2D per network (1x1 as a convolution), each network run
  # twice, and its split prior's.
  assert models['tfb']['conv2d_log_prob'] == 2 * (3 * 2 * 2 + 1)
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


def test_memory_table_gpu_columns():
  """With a GPU the children also report TensorFlow's allocator figures
  (memory.train_step_rss): in use once built, the peak during the steps (and
  its ratio to the smallest K), and the gradient alone's peak."""
  rows = [dict(steps_per_level=k, backprop='invert', mode='graph',
               peak_rss_mb=800.0, step_ms=130.0, rss_built_mb=700.0,
               gradient_peak_rss_mb=750.0, device_built_mb=10.0 * k,
               device_peak_mb=100.0 * k, gradient_device_peak_mb=90.0 * k)
          for k in (8, 16)]
  results = dict(memory_table=dict(config=_tiny(0.5).as_dict(),
                                   backprops=['invert'], rows=rows))
  table = report.render(results)
  assert 'GPU peak (MB)' in table and 'get_memory_info' in table
  assert ('| 16 | invert | 800 | 1.00x | - | 700 | 750 | 1.00x | 160 | 1600 | '
          '2.00x | 1440 | 130 | - |') in table, table


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


# --- the PyTorch port as a peer (tfp_glow.benchmark.torch_peer) -------------
# These need torch (requirements-peers.txt) and a checkout of
# rosinality/glow-pytorch named by $TORCH_GLOW_DIR; without either they skip.
# The missing-port error itself is tested always.


def test_torch_peer_missing_dir_names_the_flag(monkeypatch, tmp_path):
  from tfp_glow.benchmark import torch_peer
  monkeypatch.delenv(torch_peer.ENV_VAR, raising=False)
  with pytest.raises(torch_peer.PeerUnavailable,
                     match='--torch_glow_dir=PATH.*TORCH_GLOW_DIR'):
    torch_peer.port_dir(None)
  # A folder without the port's model.py: named, with where it came from.
  with pytest.raises(torch_peer.PeerUnavailable,
                     match=f'--torch_glow_dir={tmp_path}: there is no model.py'):
    torch_peer.load_port(str(tmp_path))
  monkeypatch.setenv(torch_peer.ENV_VAR, str(tmp_path))
  with pytest.raises(torch_peer.PeerUnavailable,
                     match=f'TORCH_GLOW_DIR={tmp_path}: there is no model.py'):
    torch_peer.port_dir(None)
  with pytest.raises(ValueError, match="Unknown library 'jax'.*'torch'"):
    from tfp_glow.benchmark import models  # pylint: disable=g-import-not-at-top
    models.build('jax', _tiny(0.5), None)


def _torch_port():
  """(torch, torch_peer, the port's module), or skip."""
  torch = pytest.importorskip('torch')
  from tfp_glow.benchmark import torch_peer  # pylint: disable=g-import-not-at-top
  if not os.environ.get(torch_peer.ENV_VAR):
    pytest.skip(f'{torch_peer.ENV_VAR} is not set (a checkout of '
                'rosinality/glow-pytorch)')
  return torch, torch_peer, torch_peer.load_port()


def test_torch_coupling_width_reaches_every_coupling():
  torch, torch_peer, port = _torch_port()
  original = port.AffineCoupling
  glow = torch_peer.build_glow(port, (8, 8, 3), levels=2, steps_per_level=2,
                               hidden_width=12)
  couplings = [m for m in glow.modules() if isinstance(m, original)]
  assert len(couplings) == 2 * 2
  for c in couplings:
    assert (c.net[0].out_channels, c.net[2].in_channels,
            c.net[2].out_channels, c.net[4].conv.in_channels) == (12,) * 4
  # The port's own default is back for anyone else.
  assert port.AffineCoupling is original
  import inspect  # pylint: disable=g-import-not-at-top
  assert inspect.signature(original.__init__).parameters[
      'filter_size'].default == 512
  assert isinstance(glow, torch.nn.Module)


def _port_bpd(log_p, logdet, image_size, n_bins):
  """The port's train.py `calc_loss` per image, as it is written there
  (n_pixel = image_size^2 * 3), in float64."""
  n_pixel = image_size * image_size * 3
  loss = -math.log(n_bins) * n_pixel + logdet + log_p
  return -loss / (math.log(2) * n_pixel)


def test_torch_bits_per_dim_on_an_identity_model():
  """Additive couplings with zero networks, identity ActNorm and identity
  1x1 convolutions, zero priors: the port's flow is a permutation of the
  pixels (its squeezes) with standard normal latents, so log p(x) is
  sum log N(x_i; 0, 1) whatever the order. Our bits/dim of the adapter's
  log p, that closed form, and the port's own calc_loss agree."""
  torch, torch_peer, port = _torch_port()
  glow = torch_peer.build_glow(port, (8, 8, 3), levels=2, steps_per_level=2,
                               hidden_width=4, coupling='additive',
                               permutation='conv_lu').double()
  with torch.no_grad():
    for m in glow.modules():
      if isinstance(m, port.ActNorm):
        m.loc.zero_()
        m.scale.fill_(1.0)
        m.initialized.fill_(1)
      elif isinstance(m, port.InvConv2dLU):
        m.w_p.copy_(torch.eye(m.w_p.shape[0]))
        m.s_sign.fill_(1.0)
        for p in (m.w_l, m.w_s, m.w_u):
          p.zero_()
      elif isinstance(m, port.ZeroConv2d):  # zero-initialised; keep them so
        assert float(m.conv.weight.abs().sum()) == 0.0
  rng = np.random.default_rng(0)
  x = rng.uniform(-0.5, 0.5, [5, 3, 8, 8])
  x_t = torch.from_numpy(x)
  ours = torch_peer.bits_per_dim(glow, x_t, (8, 8, 3), 256)
  d = 8 * 8 * 3
  log_p = -0.5 * (x**2).reshape(5, -1).sum(1) - 0.5 * d * math.log(2 * math.pi)
  closed = (-log_p + d * math.log(256)) / (d * math.log(2))
  np.testing.assert_allclose(ours, closed, rtol=1e-12)
  with torch.no_grad():
    lp, logdet, _ = glow(x_t)
  port_bpd = _port_bpd(lp.numpy(), logdet.numpy(), 8, 256)
  np.testing.assert_allclose(ours, port_bpd, rtol=1e-12)
  # The affine map a + b log p that the torch training loss uses is ours.
  a, b = torch_peer.bpd_affine((8, 8, 3), 256)
  np.testing.assert_allclose(a + b * log_p, closed, rtol=1e-12)


def _standardised_latents(port, glow, x):
  """x (one NCHW image) -> every level's latent standardised by its prior,
  flattened and concatenated: the port's networks, but not its log-det or
  log-density bookkeeping."""
  import torch  # pylint: disable=g-import-not-at-top
  out, parts = x, []
  for block in glow.blocks:
    b, c, h, w = out.shape
    out = out.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    out = out.reshape(b, c * 4, h // 2, w // 2)
    for flow in block.flows:
      out = flow(out)[0]
    if block.split:
      out, z = out.chunk(2, 1)
      mean, log_sd = block.prior(out).chunk(2, 1)
    else:
      z = out
      mean, log_sd = block.prior(torch.zeros_like(out)).chunk(2, 1)
    parts.append(((z - mean) * torch.exp(-log_sd)).reshape(-1))
  del port
  return torch.cat(parts)


def test_torch_log_prob_is_the_change_of_variables():
  """At random (non-identity) parameters, float64: the adapter's log p(x)
  equals log N(eps; 0, I) + log|det d eps / dx| with the Jacobian of the
  whole map by autodiff."""
  torch, torch_peer, port = _torch_port()
  glow = torch_peer.build_glow(port, (4, 4, 3), levels=2, steps_per_level=2,
                               hidden_width=6, seed=3).double()
  g = torch.Generator().manual_seed(0)
  rng = np.random.default_rng(1)
  x = torch.from_numpy(rng.uniform(-0.5, 0.5, [2, 3, 4, 4]))
  with torch.no_grad():
    glow(x)  # ActNorm's data-dependent init
    for p in glow.parameters():  # away from the zero-initialised identity
      p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    ours = torch_peer.log_prob(glow, x).numpy()
  for i in range(2):
    xi = x[i:i + 1]
    eps = _standardised_latents(port, glow, xi).detach()
    jac = torch.autograd.functional.jacobian(
        lambda v: _standardised_latents(port, glow, v.reshape(xi.shape)),
        xi.reshape(-1))
    logdet = float(torch.linalg.slogdet(jac)[1])
    want = float(-0.5 * (eps**2).sum() - 0.5 * eps.numel() *
                 math.log(2 * math.pi)) + logdet
    assert ours[i] == pytest.approx(want, rel=1e-10, abs=1e-9)


def test_torch_quick_benchmark(tmp_path):
  """bin/benchmark.py --quick with the PyTorch peer, at 8x8 and 16x16 in
  the same rounds: every op of every library gets a finite time, the ratio
  table shows both sizes, the port's parameters are those it built."""
  _, torch_peer, _ = _torch_port()
  json_path = tmp_path / 'peers.json'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(ROOT))
  proc = subprocess.run(
      [sys.executable, str(SCRIPT), '--quick', '--peers=tfb,torch',
       f'--torch_glow_dir={os.environ[torch_peer.ENV_VAR]}', '--threads=1',
       '--also_image_sizes=16', '--nomixed_precision', '--notrain_program',
       '--norss', '--noconv_roofline', '--repeats=1', f'--json_out={json_path}'],
      capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=900,
      check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  results = json.loads(json_path.read_text())
  assert results['libraries'] == ['tfp_glow', 'tfb', 'torch']
  assert results['threads']['torch'] == 1
  assert [s['config']['levels'] for s in results['scales']] == [3]
  for entry in [results] + results['scales']:
    for lib in results['libraries']:
      for op in OPS:
        ms = entry['best'][lib][op]['median_ms']
        assert math.isfinite(ms) and ms > 0, (lib, op)
    assert entry['best']['torch']['train']['mode'] == 'eager'
  assert results['models']['torch']['parameters'] > 0
  row = re.search(r'\| torch \| train \| [\d.]+ \| [\d.]+x \| [\d.]+ \| '
                  r'[\d.]+x \| [\d.]+x \|', proc.stdout)
  assert row, proc.stdout[-3000:]
  assert '8x8x1 L=2 ms | vs tfp_glow | 16x16x1 L=3 ms' in proc.stdout


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
