"""Tests of tfp_glow.scoring and bin/score.py.

The metrics are checked against hand-computed cases and against scikit-learn
(the reference implementation, a test-only use); the scores against their
formulas on tiny models; the program end to end on a tiny model directory.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfp_glow
from tfp_glow import data
from tfp_glow import run_dir
from tfp_glow import scoring
from tfp_glow.keras import callbacks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 8, 1)
N_BINS = 17


def _tiny_dist(seed=1, num_classes=None):
  """An initialised, perturbed tiny Glow over the digits' shape."""
  dist = tfp_glow.glow_distribution(SHAPE, levels=2, steps_per_level=1,
                                    hidden_width=8, learn_top=True,
                                    num_classes=num_classes, seed=seed)
  rng = np.random.default_rng(seed)
  x = tf.constant(rng.uniform(-0.5, 0.5, (32,) + SHAPE), tf.float32)
  labels = None if num_classes is None else tf.zeros([32], tf.int32)
  tfp_glow.initialize(dist, x, labels=labels)
  for v in dist.trainable_variables:
    v.assign_add(tf.constant(0.05 * rng.standard_normal(v.shape), v.dtype))
  return dist


def _images(n, seed):
  rng = np.random.default_rng(seed)
  k = rng.integers(0, N_BINS, (n,) + SHAPE)
  return scoring.dequantize_examples(k, N_BINS, seed=seed)


@pytest.fixture(scope='module')
def models():
  return tfp_glow.GlowModel(_tiny_dist(1), n_bins=N_BINS), _tiny_dist(2)


# ------------------------------------------------------------------------------
# Metrics


def test_evaluate_ood_hand_computed_with_ties():
  # in = [1, 2, 3, 3], out = [3, 4, 5]. AUROC: out=3 beats 1, 2 and ties the
  # two 3s (2 + 2 * 1/2), 4 and 5 beat all four: 11 / 12.
  # AP over thresholds 5, 4, 3 (tied, one threshold): precision 1, 1, 3/5 at
  # recall 1/3, 2/3, 1: 1/3 + 1/3 + 3/15 = 13/15.
  # FPR95: all three OOD flagged first at t = 3, which flags 2 of 4 in.
  r = scoring.evaluate_ood([1, 2, 3, 3], [3, 4, 5])
  assert r['auroc'] == pytest.approx(11 / 12)
  assert r['aupr'] == pytest.approx(13 / 15)
  assert r['fpr95'] == pytest.approx(0.5)
  assert r['threshold95'] == 3.0
  assert (r['n_in'], r['n_out']) == (4, 3)
  perfect = scoring.evaluate_ood([0.1, 0.2], [0.3, np.inf])
  assert (perfect['auroc'], perfect['aupr'], perfect['fpr95']) == (1.0, 1.0, 0.0)
  assert scoring.evaluate_ood([3, 4], [1, 2])['auroc'] == 0.0
  ties = scoring.evaluate_ood([7.0] * 3, [7.0] * 2)
  assert ties['auroc'] == 0.5
  assert ties['aupr'] == pytest.approx(2 / 5)
  assert ties['fpr95'] == 1.0
  json.dumps(r)  # JSON-able


def test_evaluate_ood_matches_scikit_learn():
  metrics = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(0)
  for trial in range(20):
    n_in, n_out = rng.integers(1, 60, 2)
    s_in = rng.normal(0, 1, n_in)
    s_out = rng.normal(rng.uniform(-1, 2), 1, n_out)
    if trial % 2:  # many ties
      s_in, s_out = np.round(s_in), np.round(s_out)
    y = np.r_[np.zeros(n_in), np.ones(n_out)]
    s = np.r_[s_in, s_out]
    r = scoring.evaluate_ood(s_in, s_out)
    assert r['auroc'] == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
    assert r['aupr'] == pytest.approx(metrics.average_precision_score(y, s),
                                      abs=1e-12)
    fpr, tpr, _ = metrics.roc_curve(y, s, drop_intermediate=False)
    assert r['fpr95'] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


def test_evaluate_ood_refuses_bad_input():
  with pytest.raises(ValueError, match='NaN'):
    scoring.evaluate_ood([1.0, np.nan], [2.0])
  with pytest.raises(ValueError, match='scores_out is empty'):
    scoring.evaluate_ood([1.0], [])
  with pytest.raises(ValueError, match='1-D'):
    scoring.evaluate_ood([[1.0, 2.0]], [2.0])


# ------------------------------------------------------------------------------
# PNG bits/dim


def test_png_bits_per_dim_is_the_encode_png_length():
  rng = np.random.default_rng(0)
  for shape in ((5, 8, 8, 1), (3, 4, 6, 3), (2, 5, 5, 4)):
    k = rng.integers(0, N_BINS, shape).astype(np.uint8)
    k[0] = 3  # a flat image compresses far better
    got = scoring.png_bits_per_dim(k).numpy()
    d = np.prod(shape[1:])
    want = [8 * len(tf.io.encode_png(im, compression=9).numpy()) / d for im in k]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0] < got[1:].min()
  fn = tf.function(scoring.png_bits_per_dim,
                   input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.uint8)])
  k = rng.integers(0, N_BINS, (4, 8, 8, 1)).astype(np.uint8)
  np.testing.assert_array_equal(fn(k).numpy(), scoring.png_bits_per_dim(k).numpy())
  assert fn(np.zeros((0, 8, 8, 1), np.uint8)).shape == (0,)
  with pytest.raises(TypeError, match='uint8'):
    scoring.png_bits_per_dim(k.astype(np.int32))
  with pytest.raises(ValueError, match='1 to 4 channels'):
    scoring.png_bits_per_dim(np.zeros((1, 8, 8, 5), np.uint8))


# ------------------------------------------------------------------------------
# Scores


def test_scores_follow_their_formulas(models):
  model, background = models
  dist = model.distribution
  x_ref, x = _images(40, seed=1), _images(9, seed=2)
  ref = scoring.fit_reference(model, x_ref, batch_size=16,
                              description={'what': 'test'})
  bpd_ref = tfp_glow.bits_per_dim(dist.log_prob(x_ref), SHAPE, N_BINS).numpy()
  assert ref['count'] == 40 and ref['data'] == {'what': 'test'}
  assert ref['mean'] == pytest.approx(np.mean(bpd_ref), rel=1e-6)
  assert ref['std'] == pytest.approx(np.std(bpd_ref, ddof=1), rel=1e-5)
  assert ref['quantiles']['0.5'] == pytest.approx(np.median(bpd_ref), rel=1e-6)
  assert (ref['n_bins'], ref['image_shape']) == (N_BINS, list(SHAPE))

  s = scoring.score_all(model, x, scoring.METHODS, reference=ref,
                        background=background, batch_size=4)
  bpd = tfp_glow.bits_per_dim(dist.log_prob(x), SHAPE, N_BINS).numpy()
  np.testing.assert_allclose(s['bpd'], bpd, rtol=1e-6)
  np.testing.assert_allclose(
      s['typicality'], np.abs(bpd - np.mean(bpd_ref)) / np.std(bpd_ref, ddof=1),
      rtol=1e-4)
  k = np.floor((x + 0.5) * N_BINS).astype(np.uint8)
  png = [8 * len(tf.io.encode_png(im, compression=9).numpy()) / 64 for im in k]
  np.testing.assert_allclose(s['png_bpd'], png)
  np.testing.assert_allclose(s['complexity'], bpd - png, rtol=1e-6)
  bg = tfp_glow.bits_per_dim(background.log_prob(x), SHAPE, N_BINS).numpy()
  np.testing.assert_allclose(s['ratio'], bpd - bg, rtol=1e-5, atol=1e-5)
  # One method at a time, a bare distribution, a tf.data pipeline: the same.
  np.testing.assert_allclose(
      scoring.score(dist, x, 'complexity', n_bins=N_BINS), s['complexity'])
  ds = tf.data.Dataset.from_tensor_slices(x).batch(4)
  np.testing.assert_allclose(scoring.score(model, ds, 'bpd'), s['bpd'])


def test_reference_saves_and_loads(models, tmp_path):
  model, _ = models
  ref = scoring.fit_reference(model, _images(8, seed=3))
  path = scoring.save_reference(ref, str(tmp_path))
  assert path == str(tmp_path / scoring.REFERENCE_NAME)
  assert scoring.load_reference(str(tmp_path)) == ref
  with pytest.raises(FileNotFoundError, match='No scoring reference'):
    scoring.load_reference(str(tmp_path / 'nothing.json'))
  bad = dict(ref, std=0.0)
  with pytest.raises(ValueError, match='std'):
    scoring.save_reference(bad, str(tmp_path / 'bad.json'))
  (tmp_path / 'nan.json').write_text(json.dumps(dict(ref, mean=None)))
  with pytest.raises(ValueError, match='mean'):
    scoring.load_reference(str(tmp_path / 'nan.json'))


def test_bad_input_is_refused_by_name(models):
  model, background = models
  x = _images(4, seed=4)
  ref = scoring.fit_reference(model, _images(8, seed=5))
  with pytest.raises(TypeError, match='uint8'):
    scoring.score(model, (x * 17 + 8).astype(np.uint8))
  with pytest.raises(ValueError, match=r'\[N, 8, 8, 1\]'):
    scoring.score(model, np.zeros((2, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match='one image'):
    scoring.score(model, x[0])
  nan = x.copy()
  nan[1, 2, 3, 0] = np.nan
  with pytest.raises(ValueError, match='NaN'):
    scoring.score(model, nan)
  with pytest.raises(ValueError, match=r'\[-0.5, 0.5\]'):
    scoring.score(model, x * 3)
  with pytest.raises(ValueError, match='no images'):
    scoring.score(model, x[:0])
  with pytest.raises(ValueError, match='needs a reference'):
    scoring.score(model, x, 'typicality')
  with pytest.raises(ValueError, match='n_bins=256'):
    scoring.score(model, x, 'typicality', reference=dict(ref, n_bins=256))
  with pytest.raises(ValueError, match='needs a background'):
    scoring.score(model, x, 'ratio')
  other = tfp_glow.GlowModel(background, n_bins=256)
  with pytest.raises(ValueError, match='same data space'):
    scoring.score(model, x, 'ratio', background=other)
  with pytest.raises(ValueError, match='Unknown scoring method'):
    scoring.score(model, x, 'likelihood')
  with pytest.raises(ValueError, match='needs n_bins'):
    scoring.score(background, x)
  with pytest.raises(ValueError, match='contradicts'):
    scoring.score(model, x, n_bins=256)
  with pytest.raises(ValueError, match='(?i)class-conditional'):
    scoring.score(_tiny_dist(3, num_classes=2), x, n_bins=N_BINS)
  with pytest.raises(ValueError, match='at least 2'):
    scoring.fit_reference(model, x[:1])


# ------------------------------------------------------------------------------
# Built-in OOD sets


def test_synthetic_sets():
  digits, _ = data.load('digits', 'test', batch_size=500, shuffle=False, seed=3)
  x = next(iter(digits)).numpy()
  k = data.to_bins(x, N_BINS).numpy().astype(np.uint8)
  # Built-in sets are dequantised exactly as the evaluation pipelines are.
  np.testing.assert_array_equal(scoring.dequantize_examples(k, N_BINS, seed=3), x)
  inv = scoring.synthetic_bins('inverted', 0, SHAPE, N_BINS, like=k)
  np.testing.assert_array_equal(inv.astype(int), 16 - k.astype(int))
  for name in ('noise', 'constant', 'sklearn_patches'):
    a = scoring.synthetic_bins(name, 50, SHAPE, N_BINS, seed=1)
    assert a.shape == (50,) + SHAPE and a.dtype == np.uint8
    assert a.max() < N_BINS
    np.testing.assert_array_equal(
        a, scoring.synthetic_bins(name, 50, SHAPE, N_BINS, seed=1))
    assert not np.array_equal(
        a, scoring.synthetic_bins(name, 50, SHAPE, N_BINS, seed=2))
  const = scoring.synthetic_bins('constant', 50, SHAPE, N_BINS)
  assert np.all(const == const[:, :1, :1])
  rgb = scoring.synthetic_bins('sklearn_patches', 4, (16, 16, 3), 32)
  assert rgb.shape == (4, 16, 16, 3) and rgb.max() < 32
  with pytest.raises(ValueError, match='Unknown synthetic set'):
    scoring.synthetic_bins('stripes', 5, SHAPE, N_BINS)
  with pytest.raises(ValueError, match='bin indices'):
    scoring.synthetic_bins('inverted', 0, SHAPE, N_BINS, like=k.astype(int) + 1)


# ------------------------------------------------------------------------------
# bin/score.py


def _model_dir(path, dist):
  glow = tfp_glow.get_glow(dist)
  config = {'model': dict(
      dataset='digits', image_size=None, n_bits=None, image_shape=list(SHAPE),
      n_bins=N_BINS, levels=glow.levels, steps_per_level=glow.steps_per_level,
      hidden_width=8, coupling='affine', permutation='conv', learn_top=True,
      num_classes=None), 'training': {}}
  run_dir.write_config(str(path), config)
  model = tfp_glow.GlowModel(dist, n_bins=N_BINS)
  callbacks.save_weights(model, run_dir.checkpoint_path(str(path), 'latest'))
  return str(path), config, model


def _score_program(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', CUDA_VISIBLE_DEVICES='')
  path = env.get('PYTHONPATH')
  env['PYTHONPATH'] = ROOT if not path else ROOT + os.pathsep + path
  return subprocess.run([sys.executable, os.path.join(ROOT, 'bin', 'score.py'),
                         *args], capture_output=True, text=True, env=env,
                        timeout=240, cwd=ROOT)


@pytest.mark.slow
def test_score_program_end_to_end(models, tmp_path):
  model_dir, config, model = _model_dir(tmp_path / 'model', models[0].distribution)
  bg_dir, _, background = _model_dir(tmp_path / 'bg', models[1])
  # A folder of 16x16 RGB images: refused by name (shape), exit status 2.
  folder = tmp_path / 'rgb'
  folder.mkdir()
  for i in range(3):
    png = tf.io.encode_png(tf.fill([16, 16, 3], tf.constant(i * 40, tf.uint8)))
    (folder / f'{i}.png').write_bytes(png.numpy())
  out_dir = tmp_path / 'scores'
  proc = _score_program(f'--model_dir={model_dir}', f'--ood=noise,folder:{folder}')
  assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
  assert 'refusing to score data of another shape' in proc.stderr
  assert '[16, 16, 3]' in proc.stderr
  # An unknown name lists the built-in sets; the old flag name says what it
  # became (both one line, exit status 2, nothing written).
  proc = _score_program(f'--model_dir={model_dir}', '--ood=noise,stripes',
                        f'--output_dir={out_dir}')
  assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
  assert proc.stderr.startswith("Error: --ood: 'stripes' is neither a built-in set "
                                '(noise, constant, inverted, sklearn_patches) nor a '
                                "dataset. Unknown dataset 'stripes'."), proc.stderr
  assert len(proc.stderr.splitlines()) == 1 and not out_dir.exists()
  proc = _score_program(f'--model_dir={model_dir}', '--out=noise,constant')
  assert proc.returncode == 2 and proc.stderr.startswith(
      'Error: --out is now --ood (the out-of-distribution sets): pass '
      '--ood=noise,constant.'), proc.stderr

  proc = _score_program(
      f'--model_dir={model_dir}', f'--background_dir={bg_dir}',
      '--ood=noise,constant,inverted,sklearn_patches', '--seeds=0,1',
      '--count=24', f'--output_dir={out_dir}')
  assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
  results = json.loads((out_dir / 'results.json').read_text())
  assert results['methods'] == list(scoring.METHODS)
  assert set(results['metrics']) == {'noise', 'constant', 'inverted',
                                     'sklearn_patches'}
  for name, per_method in results['metrics'].items():
    for method in scoring.METHODS:
      assert name in proc.stdout
      for metric in ('auroc', 'aupr', 'fpr95'):
        values = per_method[method][metric]['values']
        assert len(values) == 2 and all(0 <= v <= 1 for v in values)
  assert (out_dir / 'scores.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  saved = scoring.load_reference(model_dir)
  assert saved['data']['seed'] == 0 and saved['count'] == 144

  # The program's numbers are the library's on the same images (seed 0).
  ds, _ = run_dir.load_split(config, 'test', batch_size=24, shuffle=False, seed=0)
  x_in = next(iter(ds)).numpy()
  ref_ds, _ = run_dir.load_split(config, 'validation', batch_size=256, shuffle=False,
                             seed=0)
  ref = scoring.fit_reference(model, ref_ds)
  assert saved['mean'] == pytest.approx(ref['mean'], rel=1e-6)
  k = scoring.synthetic_bins('noise', 24, SHAPE, N_BINS, seed=0)
  x_out = scoring.dequantize_examples(k, N_BINS, seed=0)
  kwargs = dict(reference=ref, background=background)
  s_in = scoring.score_all(model, x_in, scoring.METHODS, **kwargs)
  s_out = scoring.score_all(model, x_out, scoring.METHODS, **kwargs)
  for method in scoring.METHODS:
    want = scoring.evaluate_ood(s_in[method], s_out[method])['auroc']
    got = results['metrics']['noise'][method]['auroc']['values'][0]
    assert got == pytest.approx(want, abs=1e-9), method
