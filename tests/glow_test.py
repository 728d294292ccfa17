"""Tests of the whole Glow: the shared harness on small flows, then specifics."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

import harness
import tfp_glow
from tfp_glow import bijectors as gb
from tfp_glow.bijectors import glow as glow_lib
from glow_helpers import MEDIUM, SMALL, CountingWrapper, counting_dist, glow_config, glow_factory, glow_kwargs, init_batch, random_images  # pylint: disable=g-multiple-import,unused-import

def _run(check, dtype, tmp_path, **kw):
  factory, cfg = glow_factory(**kw), glow_config(dtype, **kw)
  if check == 'saved_model':
    harness.check_saved_model(factory, cfg, tmp_path)
  else:
    harness.CHECKS[check](factory, cfg)


COUPLINGS = list(glow_lib.COUPLINGS)
PERMUTATIONS = list(glow_lib.PERMUTATIONS)


# --- the harness -----------------------------------------------------------------------------


@pytest.mark.parametrize('check', ['round_trip', 'log_det'])
@pytest.mark.parametrize('permutation', PERMUTATIONS)
@pytest.mark.parametrize('coupling', COUPLINGS)
def test_harness_cross_product_float64(check, coupling, permutation, tmp_path):
  _run(check, tf.float64, tmp_path, coupling=coupling, permutation=permutation)


@pytest.mark.parametrize('check', ['round_trip', 'log_det'])
@pytest.mark.parametrize('coupling, permutation', [('affine', 'conv'),
                                                   ('additive', 'conv_lu'),
                                                   ('affine', 'shuffle')])
def test_harness_float32(check, coupling, permutation, tmp_path):
  _run(check, tf.float32, tmp_path, coupling=coupling, permutation=permutation)


@pytest.mark.parametrize('check', ['round_trip', 'log_det'])
@pytest.mark.parametrize('coupling, permutation', [('affine', 'conv'),
                                                   ('additive', 'conv_lu')])
def test_harness_medium_image(check, coupling, permutation, tmp_path):
  _run(check, tf.float64, tmp_path, image_shape=MEDIUM, coupling=coupling,
       permutation=permutation)


VARIANTS = {
    'learn_top': dict(learn_top=True),
    'classes': dict(num_classes=3),
    'learn_top_classes': dict(learn_top=True, num_classes=3,
                              permutation='conv_lu'),
    'split_quarter': dict(split_fraction=0.25),
    'split_quarter_additive': dict(split_fraction=0.25, coupling='additive',
                                   permutation='reverse'),
}


@pytest.mark.parametrize('check', ['round_trip', 'log_det', 'batch_shapes'])
@pytest.mark.parametrize('variant', list(VARIANTS))
def test_harness_variants(check, variant, tmp_path):
  _run(check, tf.float64, tmp_path, **VARIANTS[variant])


# The expensive checks (compilation, SavedModel) on a few configurations.
HEAVY = {
    'affine_conv_f32': (tf.float32, dict()),
    'affine_conv_f64': (tf.float64, dict()),
    'additive_conv_lu_f64': (tf.float64, dict(coupling='additive',
                                              permutation='conv_lu')),
    'shuffle_learn_top_classes_f32': (tf.float32, dict(
        permutation='shuffle', learn_top=True, num_classes=3)),
    'split_quarter_reverse_f64': (tf.float64, dict(split_fraction=0.25,
                                                   permutation='reverse')),
}


# XLA compilation of a whole Glow dominates the run time: 'compiled' on three.
HEAVY_CHECKS = [(check, case) for case in HEAVY
                for check in ('compiled', 'gradients', 'saved_model')
                if check != 'compiled' or case in (
                    'affine_conv_f32', 'additive_conv_lu_f64',
                    'shuffle_learn_top_classes_f32')]


# XLA compiles of whole Glows take tens of seconds each: all three with the
# slow tests. The default run compiles a drawn Glow's log_prob and sample
# instead (properties_glow_test.py::test_eager_graph_and_xla_agree). Of the
# five SavedModel round trips, two stay in the default run (affine conv in
# float32, additive LU in float64); the affine/float64, shuffle/classes and
# quarter-split/reverse ones, whose components' own SavedModel checks run by
# default in bijectors_test.py, run with the slow tests.
HEAVY_SLOW = (('compiled', 'affine_conv_f32'),
              ('saved_model', 'affine_conv_f64'),
              ('compiled', 'additive_conv_lu_f64'),
              ('compiled', 'shuffle_learn_top_classes_f32'),
              ('saved_model', 'shuffle_learn_top_classes_f32'),
              ('saved_model', 'split_quarter_reverse_f64'))


@pytest.mark.parametrize('check, case', [
    pytest.param(*c, marks=pytest.mark.slow) if c in HEAVY_SLOW else c
    for c in HEAVY_CHECKS])
def test_harness_heavy(check, case, tmp_path):
  dtype, kw = HEAVY[case]
  _run(check, dtype, tmp_path, **kw)


def test_batch_shapes_float32():
  harness.check_batch_shapes(glow_factory(), glow_config(tf.float32))


# --- split priors start as the identity ------------------------------------------------------


def _perturb_steps(glow, seed=0):
  """Perturbs the steps (ActNorms, permutations, couplings) but not the priors."""
  for level_steps in glow.steps:
    for step in level_steps:
      for bij in step:
        harness.perturb(bij, seed, 0.1)
        seed += 1


def _manual_inverse(glow, x):
  """Data -> latent via the public components; returns (level latents, ldj).

  The exited and top latents are taken before any prior, and the log-det is
  the sum of the steps' own log-dets only (squeezes and splits add nothing).
  """
  squeeze = gb.Squeeze()
  zs, ldj = [], 0.0
  h = x
  for level in range(glow.levels):
    h = squeeze.inverse(h)
    for step in glow.steps[level]:
      for bij in step:
        ldj += bij.inverse_log_det_jacobian(h, event_ndims=3).numpy()
        h = bij.inverse(h)
    if level < glow.levels - 1:
      c_exit = glow.latent_shapes[level][-1]
      c_keep = h.shape[-1] - c_exit
      zs.append(h[..., c_keep:].numpy())
      h = h[..., :c_keep]
  zs.append(h.numpy())
  return zs, ldj


@pytest.mark.parametrize('split_fraction', [0.5, 0.25])
@pytest.mark.parametrize('learn_top', [False, True])
def test_priors_start_at_mean_zero_scale_one(split_fraction, learn_top):
  """TFP's tfb.Glow exits start at scale e^2; ours at exactly N(0, 1)."""
  glow = gb.Glow((8, 8, 2), levels=2, steps_per_level=2, hidden_width=8,
                 split_fraction=split_fraction, learn_top=learn_top, seed=1,
                 dtype=tf.float64)
  _perturb_steps(glow)
  x = tf.constant(np.random.default_rng(0).standard_normal([3, 8, 8, 2]))
  zs, steps_ldj = _manual_inverse(glow, x)
  parts = glow.split_latent(glow.inverse(x))
  assert [p.shape.as_list()[1:] for p in parts] == [
      list(s) for s in glow.latent_shapes]
  for level, (part, z) in enumerate(zip(parts, zs)):
    np.testing.assert_allclose(part.numpy(), z, rtol=1e-12, atol=1e-12,
                               err_msg=f'level {level}: eps != exited latent')
  np.testing.assert_allclose(
      glow.inverse_log_det_jacobian(tf.identity(x), event_ndims=3).numpy(),
      steps_ldj, rtol=1e-12, err_msg='priors add a log-det at init')


def test_split_latent_channel_counts():
  glow = gb.Glow((8, 8, 2), levels=2, steps_per_level=1, hidden_width=8,
                 split_fraction=0.25, seed=0)
  # level 0: 8 channels after squeeze, floor(8 / 4) = 2 exit, 6 kept;
  # level 1: 24 channels at 2x2.
  assert glow.latent_shapes == [(4, 4, 2), (2, 2, 24)]
  assert glow.latent_size == 8 * 8 * 2


# --- ActNorm data-dependent initialisation -------------------------------------------------


def _uninitialised_perturbed_glow(**kw):
  glow = gb.Glow(seed=2, **glow_kwargs(**kw))
  harness.perturb(glow, 0, 0.1)
  for an in glow.actnorms():
    an.initialized.assign(0.0)
  return glow


def _standardised(a, what):
  a = np.asarray(a, np.float64).reshape(-1, a.shape[-1])
  np.testing.assert_allclose(a.mean(0), 0, atol=2e-4, err_msg=f'{what}: mean')
  np.testing.assert_allclose(a.std(0), 1, atol=2e-3, err_msg=f'{what}: std')


@pytest.mark.parametrize('image_shape', [SMALL, MEDIUM])
def test_initialize_standardises_every_actnorm(image_shape):
  glow = _uninitialised_perturbed_glow(image_shape=image_shape)
  x = init_batch(image_shape)
  actnorms = glow.actnorms()
  assert len(actnorms) == 2 * 2 * 3
  assert tfp_glow.initialize(glow, x) == len(actnorms)
  assert all(an.is_initialized for an in actnorms)

  # Replay the data -> latent pass through the components, checking what
  # leaves each ActNorm (the steps' and the two inside each coupling network).
  checked = []
  h = x
  for level in range(glow.levels):
    h = gb.Squeeze().inverse(h)
    for k, (an, perm, cp) in enumerate(glow.steps[level]):
      h = an.inverse(h)
      _standardised(h.numpy(), f'level {level} step {k} actnorm')
      checked.append(an.state)
      h = perm.inverse(h)
      net = cp.network
      xa = h[..., :h.shape[-1] // 2]
      a1 = net.actnorm1.normalize(tf.nn.conv2d(xa, net.kernel1, 1, 'SAME'))
      _standardised(a1.numpy(), f'level {level} step {k} network actnorm1')
      a2 = net.actnorm2.normalize(
          tf.nn.conv2d(tf.nn.relu(a1), net.kernel2, 1, 'SAME'))
      _standardised(a2.numpy(), f'level {level} step {k} network actnorm2')
      checked += [net.actnorm1, net.actnorm2]
      h = cp.inverse(h)
    if level < glow.levels - 1:
      h = h[..., :h.shape[-1] - glow.latent_shapes[level][-1]]
  assert [id(a) for a in checked] == [id(a) for a in actnorms]  # the order


def test_second_initialize_changes_nothing():
  dist = tfp_glow.glow_distribution(**glow_kwargs(), seed=0)
  assert tfp_glow.initialize(dist, init_batch(SMALL, 0)) == 12
  values = [v.numpy().copy() for v in dist.variables]
  assert tfp_glow.initialize(dist, init_batch(SMALL, 1)) == 0
  for v, before in zip(dist.variables, values):
    np.testing.assert_array_equal(v.numpy(), before, err_msg=v.name)


def test_sampling_before_initialize_does_not_initialise():
  dist = tfp_glow.glow_distribution(**glow_kwargs(), seed=0)
  tfp_glow.sample(dist, 2, seed=1)
  dist.sample(2, seed=(1, 2))
  dist.experimental_sample_and_log_prob(2, seed=(1, 2))
  for an in tfp_glow.get_glow(dist).actnorms():
    assert float(an.initialized.numpy()) == 0.0, an.name
    np.testing.assert_array_equal(an.bias.numpy(), 0)
  assert tfp_glow.initialize(dist, init_batch(SMALL)) == 12


def test_validate_args_requires_initialize():
  dist = tfp_glow.glow_distribution(**glow_kwargs(), seed=0, validate_args=True)
  x = init_batch(SMALL)
  with pytest.raises(tf.errors.InvalidArgumentError, match='initiali'):
    dist.log_prob(x)
  tfp_glow.initialize(dist, x)
  assert np.all(np.isfinite(dist.log_prob(tf.identity(x)).numpy()))
  bad = x.numpy().copy()
  bad[0, 0, 0, 0] = np.nan
  with pytest.raises(tf.errors.InvalidArgumentError, match='NaN or Inf'):
    dist.log_prob(tf.constant(bad))


def test_initialize_rejects_bad_batches():
  glow = gb.Glow(seed=0, **glow_kwargs())
  with pytest.raises(ValueError, match='empty'):
    tfp_glow.initialize(glow, tf.zeros([0, 4, 4, 2]))
  bad = np.zeros([2, 4, 4, 2], np.float32)
  bad[1, 1, 1, 1] = np.inf
  with pytest.raises(ValueError, match='NaN or Inf'):
    tfp_glow.initialize(glow, bad)
  assert not any(an.is_initialized for an in glow.actnorms())


def test_actnorm_init_identity_skips_data_dependent_init():
  """actnorm_init='identity' (the ablation's zero init): every ActNorm starts at
  scale 1, bias 0, counts as initialised, and `initialize` changes nothing."""
  dist = tfp_glow.glow_distribution(**glow_kwargs(), seed=0,
                                    actnorm_init='identity', validate_args=True)
  glow = tfp_glow.get_glow(dist)
  assert glow.actnorm_init == 'identity'
  actnorms = glow.actnorms()
  assert len(actnorms) == 12 and all(a.is_initialized for a in actnorms)
  for a in actnorms:
    np.testing.assert_array_equal(a.bias.numpy(), 0, err_msg=a.label)
    np.testing.assert_array_equal(a.log_scale.numpy(), 0, err_msg=a.label)
  x = init_batch(SMALL)
  # validate_args: log_prob runs without an initialize() call.
  assert np.all(np.isfinite(dist.log_prob(x).numpy()))
  values = [v.numpy().copy() for v in dist.variables]
  assert tfp_glow.initialize(dist, x) == 0
  for v, before in zip(dist.variables, values):
    np.testing.assert_array_equal(v.numpy(), before, err_msg=v.name)
  # The first step's ActNorm is the identity map with log-det 0.
  first = glow.steps[0][0][0]
  h = gb.Squeeze().inverse(x)
  np.testing.assert_array_equal(first.inverse(h).numpy(), h.numpy())
  np.testing.assert_array_equal(
      first.inverse_log_det_jacobian(h, event_ndims=3).numpy(), 0)


def test_actnorm_init_data_and_identity_differ_only_in_actnorm():
  """The same seed gives the same other weights under either init."""
  data = gb.Glow(seed=3, **glow_kwargs())
  identity = gb.Glow(seed=3, actnorm_init='identity', **glow_kwargs())
  assert data.actnorm_init == 'data'
  assert not any(a.is_initialized for a in data.actnorms())
  actnorm_ids = {id(v) for a in data.actnorms() for v in a.variables}
  for a, b in zip(data.variables, identity.variables):
    assert a.name == b.name
    if id(a) not in actnorm_ids:
      np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


# --- sampling and temperature ------------------------------------------------------------


@pytest.fixture(scope='module')
def trained_like_glow():
  """A perturbed, initialised float64 Glow (the tests do not modify it)."""
  glow = gb.Glow(seed=0, dtype=tf.float64, **glow_kwargs())
  return harness.perturb(glow, 0, 0.1)


@pytest.mark.parametrize('temperature', [0.3, 0.7, 1.0])
def test_temperature_scales_every_level(trained_like_glow, temperature):
  glow = trained_like_glow
  images = tfp_glow.sample(glow, 500, temperature=temperature, seed=7)
  assert images.shape.as_list() == [500] + list(SMALL)
  parts = glow.split_latent(tfp_glow.encode(glow, images))
  for level, part in enumerate(parts):
    part = part.numpy()
    assert abs(part.mean()) < 0.1 * temperature, level
    np.testing.assert_allclose(part.std(), temperature, rtol=0.05,
                               err_msg=f'level {level}')


def test_temperature_zero_is_deterministic(trained_like_glow):
  glow = trained_like_glow
  a = tfp_glow.sample(glow, 3, temperature=0.0, seed=1).numpy()
  b = tfp_glow.sample(glow, 3, temperature=0.0, seed=2).numpy()
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[0], a[2])
  mode = tfp_glow.decode(glow, tf.zeros([1, glow.latent_size], tf.float64))
  np.testing.assert_allclose(a, np.repeat(mode.numpy(), 3, 0), atol=1e-12)


def test_negative_temperature_raises(trained_like_glow):
  with pytest.raises(ValueError, match='-0.5'):
    tfp_glow.sample(trained_like_glow, 2, temperature=-0.5)
  with pytest.raises(tf.errors.InvalidArgumentError, match='temperature'):
    tfp_glow.sample(trained_like_glow, 2,
                    temperature=tf.constant(-0.5, tf.float64))


def test_same_seed_same_samples(trained_like_glow):
  glow = trained_like_glow
  a = tfp_glow.sample(glow, 4, temperature=0.8, seed=5).numpy()
  b = tfp_glow.sample(glow, 4, temperature=0.8, seed=5).numpy()
  c = tfp_glow.sample(glow, 4, temperature=0.8, seed=6).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  d = tfp_glow.sample(glow, 4, temperature=0.8, seed=[5, 0]).numpy()
  np.testing.assert_array_equal(a, d)   # int seed s == stateless seed [s, 0]


# --- class conditioning ------------------------------------------------------------------


@pytest.fixture(scope='module')
def conditional_dist():
  dist = tfp_glow.glow_distribution(**glow_kwargs(num_classes=3), seed=0)
  harness.perturb(tfp_glow.get_glow(dist), 0, 0.1)
  return dist


def test_labels_change_log_prob(conditional_dist):
  x = random_images()
  lps = [conditional_dist.log_prob(tf.identity(x), bijector_kwargs={
      'labels': tf.constant([c] * 3)}).numpy() for c in range(3)]
  for i in range(3):
    for j in range(i):
      assert np.all(np.abs(lps[i] - lps[j]) > 1e-4), (i, j)
  # Each example only depends on its own label.
  mixed = conditional_dist.log_prob(tf.identity(x), bijector_kwargs={
      'labels': tf.constant([0, 1, 2])}).numpy()
  np.testing.assert_allclose(mixed, [lps[0][0], lps[1][1], lps[2][2]],
                             rtol=1e-5)
  # Conditional sampling and encoding take the same kwarg.
  images = tfp_glow.sample(conditional_dist, 3, seed=1, labels=[0, 1, 2])
  eps = tfp_glow.encode(conditional_dist, images, labels=[0, 1, 2])
  np.testing.assert_allclose(
      tfp_glow.decode(conditional_dist, eps, labels=[0, 1, 2]).numpy(),
      images.numpy(), atol=1e-5)


@pytest.mark.parametrize('labels, match', [
    ([0, 1], 'batch shape'),
    ([[0, 1, 2]], 'batch shape'),
    ([0, 1, 3], 'num_classes=3'),
    ([0, -1, 2], '>= 0'),
])
def test_bad_labels_raise(conditional_dist, labels, match):
  with pytest.raises(tf.errors.InvalidArgumentError, match=match):
    conditional_dist.log_prob(random_images(), bijector_kwargs={'labels': labels})


def test_float_labels_raise(conditional_dist):
  with pytest.raises(TypeError, match='integers'):
    conditional_dist.log_prob(random_images(), bijector_kwargs={'labels': [0., 1., 2.]})


def test_out_of_range_label_under_xla_is_nan(conditional_dist):
  fn = tf.function(lambda x, l: conditional_dist.log_prob(
      x, bijector_kwargs={'labels': l}), jit_compile=True)
  out = fn(random_images(), tf.constant([0, 7, 1])).numpy()
  assert np.isfinite(out[0]) and np.isfinite(out[2])
  assert np.isnan(out[1])


def test_labels_for_unconditional_model_raise():
  glow = gb.Glow(seed=0, **glow_kwargs())
  with pytest.raises(ValueError, match='labels.*unconditional'):
    glow.inverse(random_images(), labels=tf.constant([0, 1, 2]))
  with pytest.raises(ValueError, match='labels.*unconditional'):
    tfp_glow.sample(glow, 2, labels=[0, 1])


def test_missing_labels_raise(conditional_dist):
  with pytest.raises(ValueError, match=r'num_classes=3.*labels'):
    conditional_dist.log_prob(random_images())
  with pytest.raises(ValueError, match=r'num_classes=3.*labels'):
    tfp_glow.sample(conditional_dist, 2)
  with pytest.raises(ValueError, match=r'num_classes=3.*labels'):
    tfp_glow.initialize(gb.Glow(seed=0, **glow_kwargs(num_classes=3)), random_images())


def test_classifier_trains_from_cross_entropy(conditional_dist):
  glow = tfp_glow.get_glow(conditional_dist)
  labels = tf.constant([0, 1, 2])
  with tf.GradientTape() as tape:
    parts = glow.log_prob_parts(random_images(), labels)
    z_top = parts.z_top
    assert z_top.shape.as_list() == [3] + list(glow.latent_shapes[-1])
    logits = glow.class_logits(z_top)
    np.testing.assert_allclose(logits.numpy(), parts.class_logits.numpy(),
                               rtol=1e-6)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, logits))
  variables = glow.top.classifier.trainable_variables
  assert len(variables) == 3
  for v, g in zip(variables, tape.gradient(loss, variables)):
    assert g is not None and np.any(g.numpy() != 0), v.name
  with pytest.raises(ValueError, match='num_classes'):
    gb.Glow(seed=0, **glow_kwargs()).class_logits(z_top)


# --- tf.function, dynamic batch, XLA -----------------------------------------------------------


def _compiled_dist(dtype):
  dist = tfp_glow.glow_distribution(**glow_kwargs(), seed=0, dtype=dtype)
  harness.perturb(tfp_glow.get_glow(dist), 0, 0.1)
  tol = dict(rtol=2e-5, atol=2e-4) if dtype == tf.float32 else dict(
      rtol=1e-10, atol=1e-10)
  return dist, tol


@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('dtype', [tf.float32, tf.float64])
def test_log_prob_compiled_dynamic_batch(dtype, jit):
  dist, tol = _compiled_dist(dtype)
  log_prob = tf.function(dist.log_prob, jit_compile=jit, input_signature=[
      tf.TensorSpec([None] + list(SMALL), dtype)])
  for n in (3, 5):
    x = random_images(n, seed=n, dtype=dtype)
    got = log_prob(x).numpy()
    assert got.shape == (n,)
    np.testing.assert_allclose(got, dist.log_prob(tf.identity(x)).numpy(), **tol)
  assert log_prob.experimental_get_tracing_count() == 1


@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('dtype', [tf.float32, tf.float64])
def test_sample_compiled(dtype, jit):
  dist, tol = _compiled_dist(dtype)
  if jit:   # XLA needs the sample count at compile time.
    sampler = tf.function(lambda: tfp_glow.sample(dist, 4, temperature=0.7,
                                                  seed=3), jit_compile=True)
    got = sampler().numpy()
  else:
    sampler = tf.function(
        lambda n: tfp_glow.sample(dist, n, temperature=0.7, seed=3),
        input_signature=[tf.TensorSpec([], tf.int32)])
    got = sampler(tf.constant(4)).numpy()
    assert sampler(tf.constant(2)).shape[0] == 2
  assert got.shape == (4,) + SMALL and got.dtype == dtype.as_numpy_dtype
  assert np.all(np.isfinite(got))
  expected = tfp_glow.sample(dist, 4, temperature=0.7, seed=3).numpy()
  np.testing.assert_allclose(got, expected, **tol)


def test_sample_under_xla_is_the_flow_of_its_noise():
  """Under XLA the sampler is decode(T * eps) of the seed's Philox noise."""
  dist, tol = _compiled_dist(tf.float32)
  fn = tf.function(lambda: tfp_glow.sample(dist, 4, temperature=0.7, seed=3),
                   jit_compile=True)
  images = fn()
  eps = tfp_glow.encode(dist, images).numpy()
  # The same Philox noise as eager sampling draws with this seed.
  noise = tf.random.stateless_normal(
      [4, 32], seed=[3, 0], alg='philox').numpy() * 0.7
  np.testing.assert_allclose(eps, noise, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('what, mode', [
    ('log_prob', 'eager'),
    ('log_prob', 'tf.function'),
    ('sample_and_log_prob', 'eager'),
    ('sample', 'eager'),
])
def test_each_network_runs_once(what, mode):
  dist, wrappers = counting_dist()
  x = random_images()
  ops = {'log_prob': lambda: dist.log_prob(x),
         'sample_and_log_prob': lambda: dist.experimental_sample_and_log_prob(
             2, seed=(1, 2)),
         'sample': lambda: tfp_glow.sample(dist, 2, seed=1)}
  fn = ops[what] if mode == 'eager' else tf.function(ops[what])
  fn()
  assert [w.calls for w in wrappers] == [1] * len(wrappers)


# --- parameter count -----------------------------------------------------------------


@pytest.mark.parametrize('config', [
    dict(),
    dict(coupling='additive'),
    dict(permutation='conv_lu'),
    dict(permutation='shuffle', coupling='additive'),
    dict(permutation='reverse'),
    dict(learn_top=True),
    dict(num_classes=5),
    dict(learn_top=True, num_classes=4, permutation='conv_lu'),
    dict(split_fraction=0.25),
    dict(split_fraction=0.25, image_shape=(8, 8, 3), levels=3,
         coupling='additive', hidden_width=6),
    dict(image_shape=(8, 8, 1), levels=3, steps_per_level=1, hidden_width=5,
         learn_top=True, num_classes=2),
], ids=str)
def test_parameter_count(config):
  kw = glow_kwargs(**config)
  glow = gb.Glow(seed=0, **kw)
  actual = sum(int(np.prod(v.shape)) for v in glow.trainable_variables)
  assert tfp_glow.parameter_count(**kw) == actual


def test_parameter_count_of_a_built_distribution():
  kw = glow_kwargs(split_fraction=0.25, learn_top=True)
  dist = tfp_glow.glow_distribution(seed=0, **kw)
  actual = sum(int(np.prod(v.shape)) for v in dist.trainable_variables)
  assert tfp_glow.parameter_count(dist) == actual
  assert tfp_glow.parameter_count(tfp_glow.get_glow(dist)) == actual


@pytest.mark.parametrize('overrides, match', [
    (dict(permutation='random'), 'permutation'),
    (dict(coupling='spline'), 'coupling'),
])
def test_parameter_count_refuses_unknown_options(overrides, match):
  with pytest.raises(ValueError, match=match):
    tfp_glow.parameter_count(**glow_kwargs(**overrides))


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize('overrides, match', [
    (dict(image_shape=(6, 6, 2)), r'\[6, 6, 2\].*2\*\*levels = 4'),
    (dict(image_shape=(8, 12, 2), levels=3), r'\[8, 12, 2\].*levels=3'),
    (dict(levels=0), 'levels.*got 0'),
    (dict(levels=-1), 'levels.*got -1'),
    (dict(steps_per_level=0), 'steps_per_level.*got 0'),
    (dict(image_shape=(4, 4, 1), split_fraction=0.2), 'split_fraction=0.2'),
    (dict(split_fraction=0.0), 'split_fraction.*0.0'),
    (dict(split_fraction=1.0), 'split_fraction.*1.0'),
    (dict(coupling='bogus'), "coupling.*'bogus'"),
    (dict(permutation='lu'), "permutation.*'lu'"),
    (dict(actnorm_init='zero'), "actnorm_init.*'zero'"),
    (dict(num_classes=1), 'num_classes.*1'),
    (dict(image_shape=(4, 4)), r'image_shape.*\(4, 4\)'),
    (dict(image_shape=(4, 4, 0)), 'image_shape'),
])
def test_bad_construction(overrides, match):
  with pytest.raises(ValueError, match=match):
    gb.Glow(seed=0, **glow_kwargs(**overrides))


def test_bad_dtype_raises():
  with pytest.raises(TypeError, match='int32'):
    gb.Glow(seed=0, dtype=tf.int32, **glow_kwargs())


def test_wrong_image_shape_at_call():
  glow = gb.Glow(seed=0, **glow_kwargs())
  with pytest.raises(ValueError, match=r'images must have shape \[\.\.\., 4, 4'):
    glow.inverse(tf.zeros([2, 8, 8, 2]))
  with pytest.raises(ValueError, match='2 channels'):
    glow.inverse(tf.zeros([2, 4, 4, 3]))
  with pytest.raises(ValueError, match='rank'):
    glow.inverse(tf.zeros([4, 2]))
  with pytest.raises(ValueError, match='32'):
    glow.forward(tf.zeros([2, 31]))
  fn = tf.function(glow.inverse,
                   input_signature=[tf.TensorSpec([None, None, None, 2])])
  with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
    fn(tf.zeros([2, 8, 8, 2]))


# --- bits/dim, encode/decode, latent packing -------------------------------------------------


@pytest.mark.parametrize('n_bins', [32, 256])
def test_bits_per_dim_vs_numpy(n_bins):
  dist = tfp_glow.glow_distribution(**glow_kwargs(), seed=0, dtype=tf.float64)
  harness.perturb(tfp_glow.get_glow(dist), 0, 0.1)
  x = random_images(4, dtype=tf.float64)
  log_prob = dist.log_prob(x).numpy()
  bpd = tfp_glow.bits_per_dim(dist.log_prob(tf.identity(x)), SMALL,
                              n_bins=n_bins).numpy()
  d = 4 * 4 * 2
  assert bpd.shape == (4,)
  np.testing.assert_allclose(bpd, (-log_prob / d + np.log(n_bins)) / np.log(2),
                             rtol=1e-12)
  # Per image, not per batch.
  one = tfp_glow.bits_per_dim(dist.log_prob(x[:1]), SMALL, n_bins=n_bins)
  np.testing.assert_allclose(one.numpy(), bpd[:1], rtol=1e-10)


def test_bits_per_dim_known_values():
  d = 4 * 4 * 2
  np.testing.assert_allclose(
      tfp_glow.bits_per_dim(tf.constant([0.0, -d * math.log(2.0)]), SMALL,
                            n_bins=256).numpy(), [8.0, 9.0], rtol=1e-6)
  with pytest.raises(ValueError, match='n_bins'):
    tfp_glow.bits_per_dim(tf.zeros([2]), SMALL, n_bins=1)


@pytest.mark.parametrize('dtype', [tf.float32, tf.float64])
def test_encode_decode_round_trip(dtype):
  dist = tfp_glow.glow_distribution(**glow_kwargs(), seed=0, dtype=dtype)
  harness.perturb(tfp_glow.get_glow(dist), 0, 0.1)
  x = random_images(3, dtype=dtype)
  eps = tfp_glow.encode(dist, x)
  assert eps.shape.as_list() == [3, 32]
  x_again = tfp_glow.decode(dist, eps)
  tol = 1e-5 if dtype == tf.float32 else 1e-10
  assert np.max(np.abs(x_again.numpy() - x.numpy())) <= tol
  assert tfp_glow.get_glow(dist) is dist.bijector
  with pytest.raises(TypeError, match='str'):
    tfp_glow.get_glow('glow')


def test_split_and_merge_latent():
  glow = gb.Glow(seed=0, **glow_kwargs(image_shape=MEDIUM))
  eps = tf.random.normal([2, 3, 192])
  parts = glow.split_latent(eps)
  assert [p.shape.as_list() for p in parts] == [[2, 3, 4, 4, 6],
                                                [2, 3, 2, 2, 24]]
  np.testing.assert_array_equal(glow.merge_latent(parts).numpy(), eps.numpy())
  flat = glow.split_latent(eps[0])
  np.testing.assert_array_equal(flat[1].numpy(), parts[1][0].numpy())
  with pytest.raises(ValueError, match='2 latent parts, got 1'):
    glow.merge_latent(parts[:1])
  with pytest.raises(ValueError, match='shape'):
    glow.merge_latent([parts[1], parts[0]])


def test_distribution_shapes():
  dist = tfp_glow.glow_distribution(**glow_kwargs(image_shape=MEDIUM), seed=0)
  assert dist.event_shape.as_list() == list(MEDIUM)
  assert dist.batch_shape.as_list() == []
  glow = tfp_glow.get_glow(dist)
  assert glow.inverse_event_shape(MEDIUM).as_list() == [192]
  assert glow.forward_event_shape([192]).as_list() == list(MEDIUM)
  assert dist.sample([2, 3], seed=(0, 1)).shape.as_list() == [2, 3] + list(MEDIUM)


def test_checkpoint_restore_is_not_reinitialised(tmp_path):
  dist = tfp_glow.glow_distribution(**glow_kwargs(), seed=0)
  harness.perturb(tfp_glow.get_glow(dist), 0, 0.1)
  for an in tfp_glow.get_glow(dist).actnorms():
    an.initialized.assign(0.0)
  tfp_glow.initialize(dist, init_batch(SMALL, 0))
  path = tf.train.Checkpoint(model=dist).save(str(tmp_path / 'ckpt'))
  fresh = tfp_glow.glow_distribution(**glow_kwargs(), seed=1)  # other init
  tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
  assert tfp_glow.initialize(fresh, init_batch(SMALL, 1)) == 0
  x = random_images()
  np.testing.assert_allclose(fresh.log_prob(x).numpy(),
                             dist.log_prob(tf.identity(x)).numpy(), rtol=1e-6)


def test_empty_batch_eager_and_graph():
  dist = tfp_glow.glow_distribution([4, 4, 2], levels=2, steps_per_level=1,
                                    hidden_width=8, seed=0, num_classes=3)
  kw = {'bijector_kwargs': {'labels': tf.zeros([0], tf.int32)}}
  empty = tf.zeros([0, 4, 4, 2])
  assert dist.log_prob(empty, **kw).shape == (0,)
  graph = tf.function(
      lambda x, l: dist.log_prob(x, bijector_kwargs={'labels': l}),
      input_signature=[tf.TensorSpec([None, 4, 4, 2]),
                       tf.TensorSpec([None], tf.int32)])
  assert graph(empty, tf.zeros([0], tf.int32)).shape == (0,)
  # The padding must not change a non-empty batch.
  x = tf.random.stateless_uniform([3, 4, 4, 2], [1, 1], -0.5, 0.5)
  labels = tf.constant([0, 1, 2])
  np.testing.assert_allclose(graph(x, labels).numpy(),
                             dist.log_prob(x, bijector_kwargs={'labels': labels}),
                             rtol=1e-5)
  assert tfp_glow.sample(dist, 0, labels=tf.zeros([0], tf.int32)).shape == (
      0, 4, 4, 2)


# --- composable by users: a plain tfb.Chain of the public components ---------------------


@pytest.mark.parametrize('mode', ['eager', 'tf.function'])
def test_one_level_flow_as_a_plain_chain(mode):
  """A one-level Glow written by hand as a `tfb.Chain` of the public
  components inside a `tfd.TransformedDistribution` gives the same log_prob,
  and each coupling network still runs once."""
  tfb = tfp.bijectors
  kw = glow_kwargs(image_shape=(4, 4, 2), levels=1, learn_top=True)
  glow = gb.Glow(seed=0, **kw)
  harness.perturb(glow, 0, 0.1)
  h, w, c = glow.latent_shapes[-1]
  components = [gb.Squeeze()]
  for an, perm, cp in glow.steps[0]:
    components += [an, perm, cp]
  # Chain applies its list last-to-first in the forward (latent -> image)
  # direction: reshape the flat latent, the top prior, the steps in reverse,
  # then unsqueeze.
  chain = tfb.Chain(components + [
      glow.top, tfb.Reshape(event_shape_out=[h, w, c],
                            event_shape_in=[h * w * c])])
  base = tfd.Sample(tfd.Normal(tf.constant(0., tf.float32), 1.),
                    [glow.latent_size])
  by_hand = tfd.TransformedDistribution(base, chain)
  reference = tfp_glow.get_glow(tfp_glow.glow_distribution(seed=0, **kw))
  for mine, theirs in zip(reference.variables, glow.variables):
    mine.assign(theirs)
  reference_dist = tfd.TransformedDistribution(base, reference)

  wrappers = []
  for _, _, cp in glow.steps[0]:
    cp.network = CountingWrapper(cp.network)
    wrappers.append(cp.network)
  x = tf.random.stateless_uniform([3, 4, 4, 2], seed=[1, 2], minval=-0.5,
                                  maxval=0.5)
  fn = (lambda: by_hand.log_prob(x))
  if mode == 'tf.function':
    fn = tf.function(fn)
  got = fn()
  # Inside tf.function (every Keras step) each network runs once. Eagerly, a
  # Chain asks each component for its log-det after re-running its inverse,
  # and the eager cache deliberately does not survive a second transform (the
  # variables may have changed in between), so each network runs twice there.
  expected = 1 if mode == 'tf.function' else 2
  assert [wr.calls for wr in wrappers] == [expected] * len(wrappers)
  np.testing.assert_allclose(got.numpy(), reference_dist.log_prob(x).numpy(),
                             rtol=1e-5, atol=1e-5)
  # And the round trip through the hand-made chain.
  np.testing.assert_allclose(chain.forward(chain.inverse(x)).numpy(),
                             x.numpy(), atol=1e-5)


# --- sampling never returns a non-finite image ----------------------------------------------


def _overflowing_glow():
  glow = gb.Glow(seed=0, **glow_kwargs(learn_top=True))
  harness.perturb(glow, 0, 0.1)
  return glow


def test_sample_at_a_huge_temperature_raises_naming_count_and_temperature():
  glow = _overflowing_glow()
  with pytest.raises(FloatingPointError,
                     match=r'of 4 generated images are not finite at '
                     r'temperature 1e\+30'):
    tfp_glow.sample(glow, 4, temperature=1e30, seed=1)
  # A sane temperature still samples.
  assert np.all(np.isfinite(tfp_glow.sample(glow, 4, temperature=0.7,
                                            seed=1).numpy()))


def test_dist_sample_and_graph_sampling_refuse_non_finite_images():
  glow = _overflowing_glow()
  dist = tfp_glow.distribution.distribution_from_glow(glow)
  eps = tf.fill([2, glow.latent_size], 1e30)
  with pytest.raises(FloatingPointError, match='2 of 2 generated images'):
    tfp_glow.decode(dist, eps)
  fn = tf.function(lambda t: tfp_glow.sample(glow, 3, temperature=t, seed=2))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'not finite \(count, of, at temperature\)'):
    fn(tf.constant(1e30))
  # TFP's own sampling path goes through the same check.
  big = tfd.TransformedDistribution(
      tfd.Sample(tfd.Normal(0., 1e30), [glow.latent_size]), glow)
  with pytest.raises(FloatingPointError, match='not finite'):
    big.sample(2, seed=(1, 2))
