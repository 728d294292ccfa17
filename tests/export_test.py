"""Tests of tfp_glow.export: SavedModels loaded and called for real.

The loading side runs in fresh subprocesses where `tfp_glow` and
`tensorflow_probability` cannot be imported, and through `saved_model_cli`.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfp_glow
from tfp_glow import run_dir
from tfp_glow.keras import callbacks
from tfp_glow import export
from tfp_glow import scoring

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 8, 1)
N_BINS = 17
NUM_CLASSES = 3


def _tiny_model(num_classes=None, seed=1):
  """An initialised, perturbed (not the identity) tiny Glow."""
  dist = tfp_glow.glow_distribution(SHAPE, levels=2, steps_per_level=1,
                                    hidden_width=8, learn_top=True,
                                    num_classes=num_classes, seed=seed)
  rng = np.random.default_rng(seed)
  x = tf.constant(rng.uniform(-0.5, 0.5, (32,) + SHAPE), tf.float32)
  labels = None if num_classes is None else tf.constant(
      rng.integers(0, num_classes, 32), tf.int32)
  tfp_glow.initialize(dist, x, labels=labels)
  for v in dist.trainable_variables:
    v.assign_add(tf.constant(0.05 * rng.standard_normal(v.shape), v.dtype))
  return dist


def _images(n, seed):
  rng = np.random.default_rng(seed)
  k = rng.integers(0, N_BINS, (n,) + SHAPE)
  return ((k + 0.5) / N_BINS - 0.5).astype(np.float32), k.astype(np.uint8)


def _run(args, **kwargs):
  path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=path)
  return subprocess.run(args, capture_output=True, text=True, env=env,
                        timeout=240, **kwargs)


def _saved_model_cli():
  exe = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  if os.path.exists(exe):
    return [exe]
  return [sys.executable, '-m', 'tensorflow.python.tools.saved_model_cli']


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """An unconditional GlowModel (with a scoring reference, given as the model
  directory it was saved in) and a class-conditional bare distribution, exported."""
  base = tmp_path_factory.mktemp('export')
  model = tfp_glow.GlowModel(_tiny_model(), n_bins=N_BINS)
  reference = scoring.fit_reference(model, _images(16, seed=20)[0])
  scoring.save_reference(reference, str(base))
  cond = _tiny_model(num_classes=NUM_CLASSES, seed=2)
  path = export.save(model, str(base / 'uncond'), reference=str(base))
  cond_path = export.save(cond, str(base / 'cond'), n_bins=N_BINS)
  return dict(model=model, cond=cond, path=path, cond_path=cond_path, base=base,
              reference=reference)


# ----------------------------------------------------------------------------------
# A fresh process with TensorFlow only

_LOADER = r'''
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tfp_glow', 'tensorflow_probability'):
      raise ImportError(f'{name} is blocked in this test')
    return None
sys.meta_path.insert(0, _Block())
for name in ('tfp_glow', 'tensorflow_probability'):
  try:
    __import__(name)
    raise SystemExit(f'{name} was importable')
  except ImportError:
    pass

import concurrent.futures
import numpy as np
import tensorflow as tf

inp = np.load(sys.argv[1])
out = {}
m = tf.saved_model.load(sys.argv[2])
lp = m.signatures['log_prob']
for n in (1, 7, 64):
  r = lp(images=tf.constant(inp['x%d' % n]))
  out['lp%d' % n] = r['log_prob'].numpy()
  out['bpd%d' % n] = r['bits_per_dim'].numpy()
out['serving'] = m.signatures['serving_default'](
    images=tf.constant(inp['x7']))['log_prob'].numpy()
out['lp_u8'] = m.signatures['log_prob_uint8'](
    images=tf.constant(inp['k7']))['log_prob'].numpy()
s = m.signatures['sample'](count=tf.constant(5), temperature=tf.constant(0.7),
                           seed=tf.constant(11, tf.int64))
for key in ('x', 'images', 'bin_indices'):
  out['sample_' + key] = s[key].numpy()
out['sample_lp_u8'] = m.signatures['log_prob_uint8'](
    images=s['bin_indices'])['log_prob'].numpy()
z = m.signatures['encode'](images=tf.constant(inp['x7']))['latents']
out['z'] = z.numpy()
out['x_again'] = m.signatures['decode'](latents=z)['images'].numpy()
out['empty'] = np.array(m.signatures['sample'](
    count=tf.constant(0), temperature=tf.constant(1.0),
    seed=tf.constant(1, tf.int64))['images'].shape)
out['empty_lp'] = np.array(lp(images=tf.zeros([0, 8, 8, 1]))['log_prob'].shape)
meta = m.signatures['metadata']()
out['meta'] = np.concatenate([meta['image_shape'].numpy(),
                              [meta['latent_size'].numpy(), meta['n_bins'].numpy(),
                               meta['num_classes'].numpy()]])
out['meta_reference'] = np.array([meta['reference_mean'].numpy(),
                                  meta['reference_std'].numpy(),
                                  meta['reference_count'].numpy()])
for key, value in m.signatures['score'](images=tf.constant(inp['x7'])).items():
  out['score_' + key] = value.numpy()

# Eight threads, different batches, several rounds each: exactly the serial answers.
batches = [inp['x64'][i * 8:(i + 1) * 8] for i in range(8)]
serial = [lp(images=tf.constant(b))['log_prob'].numpy() for b in batches]
def work(i):
  return [lp(images=tf.constant(batches[i]))['log_prob'].numpy() for _ in range(5)]
with concurrent.futures.ThreadPoolExecutor(8) as pool:
  results = list(pool.map(work, range(8)))
out['threads_exact'] = np.array(all(
    np.array_equal(r, serial[i]) for i, rs in enumerate(results) for r in rs))

c = tf.saved_model.load(sys.argv[3])
labels = tf.constant(inp['labels7'])
out['cond_lp'] = c.signatures['log_prob'](
    images=tf.constant(inp['x7']), labels=labels)['log_prob'].numpy()
cs = c.signatures['sample'](count=tf.constant(7), temperature=tf.constant(0.8),
                            seed=tf.constant(3, tf.int64), labels=labels)
out['cond_sample'] = cs['x'].numpy()
cscore = c.signatures['score'](images=tf.constant(inp['x7']), labels=labels)
out['cond_score_keys'] = np.array(sorted(cscore))
out['cond_meta_keys'] = np.array(sorted(c.signatures['metadata']()))
cz = c.signatures['encode'](images=tf.constant(inp['x7']), labels=labels)['latents']
out['cond_x_again'] = c.signatures['decode'](latents=cz, labels=labels)['images'].numpy()

blocked = [k for k in sys.modules if k.split('.')[0] in ('tfp_glow', 'tensorflow_probability')]
assert not blocked, blocked
np.savez(sys.argv[4], **out)
'''


# Slow set (run by .ci/run): one of the default run's slowest (issue 22: under 4 minutes).
@pytest.mark.slow
def test_loads_and_matches_in_a_process_without_tfp(exported, tmp_path):
  model, cond = exported['model'], exported['cond']
  inputs = {}
  for n in (1, 7, 64):
    inputs[f'x{n}'], inputs[f'k{n}'] = _images(n, seed=n)
  inputs['labels7'] = np.arange(7, dtype=np.int32) % NUM_CLASSES
  np.savez(tmp_path / 'in.npz', **inputs)
  script = tmp_path / 'load.py'
  script.write_text(_LOADER)
  # No PYTHONPATH: only site-packages, and the finder blocks the two packages.
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['TF_CPP_MIN_LOG_LEVEL'] = '3'
  proc = subprocess.run(
      [sys.executable, str(script), str(tmp_path / 'in.npz'), exported['path'],
       exported['cond_path'], str(tmp_path / 'out.npz')],
      capture_output=True, text=True, env=env, timeout=240, cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = np.load(tmp_path / 'out.npz')

  dist = model.distribution
  for n in (1, 7, 64):
    x = inputs[f'x{n}']
    want = dist.log_prob(x).numpy()
    np.testing.assert_allclose(out[f'lp{n}'], want, rtol=1e-5)
    assert out[f'lp{n}'].shape == (n,)
    np.testing.assert_allclose(
        out[f'bpd{n}'], tfp_glow.bits_per_dim(want, SHAPE, N_BINS).numpy(),
        rtol=1e-5)
  np.testing.assert_allclose(out['serving'], out['lp7'], rtol=0)
  # uint8 bin indices are scored at the bin centres, i.e. exactly x7.
  np.testing.assert_allclose(out['lp_u8'], out['lp7'], rtol=1e-6)

  # Same seed, same samples as in memory.
  want = tfp_glow.sample(dist, 5, temperature=0.7, seed=11).numpy()
  np.testing.assert_allclose(out['sample_x'], want, rtol=1e-5, atol=1e-6)
  assert out['sample_images'].dtype == np.uint8
  assert out['sample_images'].shape == (5,) + SHAPE
  np.testing.assert_array_equal(
      out['sample_images'], tfp_glow.data.postprocess(want, N_BINS).numpy())
  assert out['sample_bin_indices'].max() < N_BINS
  assert np.all(np.isfinite(out['sample_lp_u8']))
  np.testing.assert_array_equal(out['empty'], [0, 8, 8, 1])
  np.testing.assert_array_equal(out['empty_lp'], [0])

  np.testing.assert_allclose(out['z'], tfp_glow.encode(dist, inputs['x7']).numpy(),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out['x_again'], inputs['x7'], atol=1e-4)
  np.testing.assert_array_equal(out['meta'], [8, 8, 1, 64, N_BINS, 0])
  ref = exported['reference']
  np.testing.assert_allclose(out['meta_reference'],
                             [ref['mean'], ref['std'], ref['count']], rtol=1e-6)
  # The score signature: the numbers tfp_glow.scoring computes in memory.
  want = scoring.score_all(model, inputs['x7'], ('bpd', 'typicality', 'complexity'),
                           reference=ref)
  np.testing.assert_allclose(out['score_bits_per_dim'], want['bpd'], rtol=1e-5)
  np.testing.assert_allclose(out['score_png_bits_per_dim'], want['png_bpd'],
                             rtol=1e-6)
  np.testing.assert_allclose(out['score_complexity'], want['complexity'],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out['score_typicality'], want['typicality'],
                             rtol=1e-4, atol=1e-4)
  # Without a reference: no typicality, no reference metadata (never made up).
  assert list(out['cond_score_keys']) == ['bits_per_dim', 'complexity',
                                          'png_bits_per_dim']
  assert not any(k.startswith('reference') for k in out['cond_meta_keys'])
  assert out['threads_exact']

  labels = inputs['labels7']
  np.testing.assert_allclose(
      out['cond_lp'],
      cond.log_prob(inputs['x7'], bijector_kwargs={'labels': labels}).numpy(),
      rtol=1e-5)
  np.testing.assert_allclose(
      out['cond_sample'],
      tfp_glow.sample(cond, 7, temperature=0.8, seed=3, labels=labels).numpy(),
      rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['cond_x_again'], inputs['x7'], atol=1e-4)


# ----------------------------------------------------------------------------------
# saved_model_cli

@pytest.mark.slow
def test_saved_model_cli_show_lists_every_signature_with_dynamic_batch(exported):
  proc = _run(_saved_model_cli() + ['show', '--dir', exported['cond_path'], '--all'])
  assert proc.returncode == 0, proc.stderr[-2000:]
  text = proc.stdout
  for name in export.SIGNATURES:
    assert f"signature_def['{name}']" in text, name
  blocks = re.split(r"signature_def\['", text)[1:]
  for block in blocks:
    name = block.split("'")[0]
    if name in ('__saved_model_init_op', 'metadata'):
      continue
    shapes = re.findall(r'shape: (\S.*)', block)
    assert shapes, name
    batch_dynamic = [s for s in shapes if s.startswith('(-1')]
    # Every input and output except the scalar sample arguments has a dynamic batch.
    scalars = [s for s in shapes if s == '()']
    assert len(batch_dynamic) + len(scalars) == len(shapes), (name, shapes)
    assert batch_dynamic, (name, shapes)


@pytest.mark.slow
def test_saved_model_cli_run_prints_the_log_likelihoods(exported, tmp_path):
  x, _ = _images(3, seed=5)
  np.save(tmp_path / 'x.npy', x)
  proc = _run(_saved_model_cli() + [
      'run', '--dir', exported['path'], '--tag_set', 'serve', '--signature_def',
      'serving_default', '--inputs', f'images={tmp_path / "x.npy"}'])
  assert proc.returncode == 0, proc.stderr[-2000:]
  want = exported['model'].distribution.log_prob(x).numpy()
  bpd = tfp_glow.bits_per_dim(want, SHAPE, N_BINS).numpy()
  for key, expected in (('log_prob', want), ('bits_per_dim', bpd)):
    match = re.search(r'Result for output key %s:\s*\[([^\]]*)\]' % key,
                      proc.stdout)
    assert match, proc.stdout
    got = np.array(match.group(1).split(), np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# ----------------------------------------------------------------------------------
# Bad input, refused inside the graph

@pytest.fixture(scope='module')
def loaded(exported):
  return (tf.saved_model.load(exported['path']),
          tf.saved_model.load(exported['cond_path']))


def _error(fn, **kwargs):
  with pytest.raises(tf.errors.InvalidArgumentError) as info:
    fn(**kwargs)
  return str(info.value)


def test_bad_images_are_refused_with_a_named_problem(loaded):
  m, _ = loaded
  for name in ('log_prob', 'encode', 'serving_default', 'score'):
    lp = m.signatures[name]
    assert 'wrong image shape' in _error(lp, images=tf.zeros([2, 4, 4, 1]))
    assert 'wrong image shape' in _error(lp, images=tf.zeros([8, 8, 1]))
    assert 'wrong image shape' in _error(lp, images=tf.zeros([2, 8]))
    assert 'wrong channel count' in _error(lp, images=tf.zeros([2, 8, 8, 3]))
    nan = np.zeros((2,) + SHAPE, np.float32)
    nan[1, 3, 3, 0] = np.nan
    message = _error(lp, images=tf.constant(nan))
    assert 'NaN' in message and '[[1 3 3 0]] [value] [nan]' in message, message
    assert 'out of range' in _error(lp, images=tf.fill([2, 8, 8, 1], 3.0))
    # The error names an offending pixel, its position and value, not the
    # tensor's first values (issue 15.7).
    x = np.zeros((3,) + SHAPE, np.float32)
    x[1, 2, 5, 0], x[2, 0, 0, 0] = 0.75, -3.0
    message = _error(lp, images=tf.constant(x))
    assert 'out of range' in message
    assert 'first offending pixel at [n, h, w, c] =] [[1 2 5 0]] [value] [0.75] ' \
        '[offending pixels:] [2]' in message, message
    message = _error(lp, images=tf.zeros([2, 8, 8, 1], tf.float64))
    assert 'double' in message or 'float64' in message
  u8 = m.signatures['log_prob_uint8']
  assert 'out of range' in _error(u8, images=tf.fill([2, 8, 8, 1],
                                                     tf.constant(N_BINS, tf.uint8)))
  k = np.zeros((2,) + SHAPE, np.uint8)
  k[1, 4, 6, 0] = 200
  assert '[[1 4 6 0]] [value] [200] [offending pixels:] [1]' in _error(
      u8, images=tf.constant(k))
  assert 'wrong channel count' in _error(u8, images=tf.zeros([2, 8, 8, 3], tf.uint8))
  assert 'uint8' in _error(u8, images=tf.zeros([2, 8, 8, 1]))


def test_bad_latents_and_sample_arguments_are_refused(loaded):
  m, c = loaded
  dec = m.signatures['decode']
  assert 'wrong latent shape' in _error(dec, latents=tf.zeros([2, 10]))
  assert 'NaN' in _error(dec, latents=tf.fill([2, 64], np.nan))
  smp = m.signatures['sample']
  args = dict(temperature=tf.constant(1.0), seed=tf.constant(1, tf.int64))
  assert 'count must be >= 0' in _error(smp, count=tf.constant(-1), **args)
  assert 'temperature must be >= 0' in _error(
      smp, count=tf.constant(2), temperature=tf.constant(-1.0),
      seed=tf.constant(1, tf.int64))
  x = tf.zeros([2, 8, 8, 1])
  lp = c.signatures['log_prob']
  assert 'labels must be < num_classes=3' in _error(
      lp, images=x, labels=tf.constant([0, 3]))
  assert 'labels must be >= 0' in _error(lp, images=x, labels=tf.constant([0, -1]))
  assert 'wrong labels shape' in _error(lp, images=x, labels=tf.constant([0, 1, 2]))
  assert 'wrong labels shape' in _error(
      c.signatures['sample'], count=tf.constant(3), labels=tf.constant([0]), **args)


# Slow set (run by .ci/run): one of the default run's slowest (issue 22: under 4 minutes).
@pytest.mark.slow
def test_sample_refuses_non_finite_samples_and_too_many(loaded, exported, tmp_path):
  """Issue 15.1 and 15.8, through tf.saved_model.load: a temperature at which the
  flow overflows fails the request naming how many samples (of how many) and the
  temperature, never NaN `x` and black `images`; a `count` above the `max_count`
  fixed at export time is refused by name before any noise is drawn."""
  m, _ = loaded
  smp = m.signatures['sample']
  seed = tf.constant(1, tf.int64)
  message = _error(smp, count=tf.constant(5), temperature=tf.constant(1e30),
                   seed=seed)
  assert 'generated images not finite (count, of, at temperature):] [5] [5] ' \
      '[1e+30]' in message, message
  assert int(m.signatures['metadata']()['max_count']) == export.DEFAULT_MAX_COUNT
  over = export.DEFAULT_MAX_COUNT + 1
  message = _error(smp, count=tf.constant(over), temperature=tf.constant(0.7),
                   seed=seed)
  assert f'count must be <= max_count={export.DEFAULT_MAX_COUNT}' in message
  assert f'[{over}]' in message, message
  small = tf.saved_model.load(export.save(exported['model'], str(tmp_path / 'e'),
                                          max_count=4))
  assert int(small.signatures['metadata']()['max_count']) == 4
  assert 'count must be <= max_count=4' in _error(
      small.signatures['sample'], count=tf.constant(5),
      temperature=tf.constant(0.7), seed=seed)
  out = small.signatures['sample'](count=tf.constant(4),
                                   temperature=tf.constant(0.7), seed=seed)
  assert out['images'].shape == (4,) + SHAPE
  assert np.all(np.isfinite(out['x'].numpy()))
  with pytest.raises(ValueError, match='max_count must be a positive int, got 0'):
    export.save(exported['model'], str(tmp_path / 'f'), max_count=0)


# ----------------------------------------------------------------------------------
# Writing: refusals, versions, atomicity

def test_uninitialised_model_is_refused(tmp_path):
  dist = tfp_glow.glow_distribution(SHAPE, levels=2, steps_per_level=1,
                                    hidden_width=8, seed=0)
  with pytest.raises(ValueError, match='uninitialised'):
    export.save(tfp_glow.GlowModel(dist, n_bins=N_BINS), str(tmp_path / 'e'))
  assert not (tmp_path / 'e').exists()


def test_a_reference_for_another_model_is_refused(exported, tmp_path):
  ref = exported['reference']
  with pytest.raises(ValueError, match='n_bins=256'):
    export.save(exported['model'], str(tmp_path / 'e'),
                reference=dict(ref, n_bins=256))
  with pytest.raises(ValueError, match='class-conditional'):
    export.save(exported['cond'], str(tmp_path / 'e'), n_bins=N_BINS,
                reference=ref)
  with pytest.raises(FileNotFoundError, match='No scoring reference'):
    export.save(exported['model'], str(tmp_path / 'e'),
                reference=str(tmp_path / 'missing.json'))
  assert not (tmp_path / 'e').exists()


def test_bare_distribution_needs_n_bins(exported, tmp_path):
  with pytest.raises(ValueError, match='n_bins'):
    export.save(exported['cond'], str(tmp_path / 'e'))
  with pytest.raises(ValueError, match='n_bins'):
    export.save(exported['cond'], str(tmp_path / 'e'), n_bins=1000)


@pytest.mark.slow
def test_versions_and_atomic_writes(exported, tmp_path, monkeypatch):
  base = tmp_path / 'e'
  model = exported['model']
  assert export.next_version(str(base)) == 1
  (base / '3').mkdir(parents=True)  # versions made elsewhere
  (base / '7').mkdir()
  (base / '.tmp-9-x').mkdir()   # a crashed export's leftovers are not versions
  assert export.next_version(str(base)) == 8
  assert export.save(model, str(base)) == str(base / '8')
  with pytest.raises(FileExistsError):
    export.save(model, str(base), version=7)

  real_save = tf.saved_model.save

  def crash(obj, path, signatures=None):
    real_save(obj, path, signatures=signatures)  # written, then the "crash"
    raise RuntimeError('simulated crash')

  monkeypatch.setattr(tf.saved_model, 'save', crash)
  with pytest.raises(RuntimeError, match='simulated crash'):
    export.save(model, str(base))
  assert sorted(os.listdir(base)) == ['.tmp-9-x', '3', '7', '8']
  assert os.path.exists(base / '8' / 'saved_model.pb')


# ----------------------------------------------------------------------------------
# bin/export.py

@pytest.mark.slow
def test_bin_export_from_a_model_dir(exported, tmp_path):
  model = exported['model']
  model_dir = tmp_path / 'model'
  glow = model.glow
  config = {'model': dict(
      dataset='digits', image_size=None, n_bits=None, image_shape=list(SHAPE),
      n_bins=N_BINS, levels=glow.levels, steps_per_level=glow.steps_per_level,
      hidden_width=8, coupling='affine', permutation='conv', learn_top=True,
      num_classes=None), 'training': {}}
  run_dir.write_config(str(model_dir), config)
  callbacks.save_weights(model, run_dir.checkpoint_path(str(model_dir), 'latest'))
  export_dir = tmp_path / 'serving'
  proc = _run([sys.executable, os.path.join(ROOT, 'bin', 'export.py'),
               f'--model_dir={model_dir}', f'--export_dir={export_dir}',
               '--version=5', '--max_count=3'],
              cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.listdir(export_dir) == ['5']
  # tf.saved_model.save's INFO lines (renamed inputs, sharding callback,
  # assets, fingerprint) are not shown (issue 15.7).
  for noise in ('unsupported characters', 'Sharding callback', 'Assets written',
                'Writing fingerprint'):
    assert noise not in proc.stdout + proc.stderr, (noise, proc.stderr[-3000:])
  assert 'sample takes up to 3 images per request' in proc.stdout
  assert int(tf.saved_model.load(str(export_dir / '5')).signatures['metadata']()[
      'max_count']) == 3
  m = tf.saved_model.load(str(export_dir / '5'))
  x, _ = _images(4, seed=9)
  np.testing.assert_allclose(
      m.signatures['log_prob'](images=tf.constant(x))['log_prob'].numpy(),
      model.distribution.log_prob(x).numpy(), rtol=1e-5)
  # A directory without config.json: a clear error, exit status 2.
  proc = _run([sys.executable, os.path.join(ROOT, 'bin', 'export.py'),
               f'--model_dir={tmp_path / "nothing"}', f'--export_dir={export_dir}'],
              cwd=ROOT)
  assert proc.returncode == 2
  assert 'config.json' in proc.stderr



def test_distribution_model_and_export_agree(exported, loaded):
  """dist.log_prob, GlowModel (predict, evaluate's bpd) and the export's
  signatures compute the same numbers on the same weights, conditional and
  not: all of them go through Glow.log_prob_parts."""
  uncond, cond = loaded
  x, _ = _images(10, seed=31)
  labels = np.arange(10, dtype=np.int32) % NUM_CLASSES
  for model, signatures, kw in [
      (exported['model'], uncond, {}),
      (tfp_glow.GlowModel(exported['cond'], n_bins=N_BINS), cond,
       {'labels': labels})]:
    dist = model.distribution
    expected = dist.log_prob(
        x, bijector_kwargs=kw or None).numpy() if kw else dist.log_prob(x).numpy()
    data = (x, labels) if kw else x
    # predict() for the unconditional model; Keras's predict drops the second
    # element of a tuple, so the conditional one is called directly.
    predicted = (model(data).numpy() if kw else
                 model.predict(data, batch_size=4, verbose=0))
    served = signatures.signatures['log_prob'](
        images=tf.constant(x), **{k: tf.constant(v) for k, v in kw.items()})
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(served['log_prob'].numpy(), expected, rtol=1e-5,
                               atol=1e-5)
    model.compile(jit_compile=False)
    bpd = model.evaluate(tf.data.Dataset.from_tensor_slices(data).batch(4),
                         verbose=0, return_dict=True)['bpd']
    np.testing.assert_allclose(bpd, served['bits_per_dim'].numpy().mean(),
                               rtol=1e-5)
