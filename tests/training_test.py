"""Tests of Keras training (tfp_glow.keras: GlowModel and the checkpoint callbacks)."""

import json
import math
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_glow
from tfp_glow import data as data_lib
from tfp_glow import distribution as dist_lib
from tfp_glow.keras import callbacks
from tfp_glow.keras import jit

SHAPE = (8, 8, 1)
N_BINS = data_lib.DIGITS_N_BINS


def tiny_model(seed=0, num_classes=None, **kwargs):
  dist = tfp_glow.glow_distribution(SHAPE, levels=2, steps_per_level=1,
                                    hidden_width=8, learn_top=True,
                                    num_classes=num_classes, seed=seed)
  model = tfp_glow.GlowModel(dist, N_BINS, **kwargs)
  return model, dist


def compile_(model, lr=3e-3, warmup=10):
  # Graph mode, as Keras's own 'auto' gave on a CPU before GlowModel measured:
  # these tests are about training, not about the compile mode.
  model.compile(optimizer=keras.optimizers.Adam(tfp_glow.WarmupSchedule(lr, warmup)),
                jit_compile=False)
  return model


def digits(split='train', **kwargs):
  kwargs.setdefault('batch_size', 64)
  return data_lib.load('digits', split, **kwargs)[0]


def fixed_batch(n=64):
  ds = digits('test', batch_size=n, shuffle=False, dequantize=False)
  return next(iter(ds))


def test_fit_decreases_bpd():
  model, _ = tiny_model()
  compile_(model)
  history = model.fit(digits(seed=1), epochs=3, verbose=0)
  bpd = history.history['bpd']
  assert len(bpd) == 3 and all(math.isfinite(b) for b in bpd)
  assert bpd[-1] < bpd[0] - 0.1, bpd
  # 'loss' is the objective (mean bpd of each batch, for an unconditional model;
  # the last, smaller batch weighs as much as the others); TerminateOnNaN watches it.
  np.testing.assert_allclose(history.history['loss'], bpd, rtol=1e-2)


def test_trainable_weights_are_the_flow_variables_once():
  model, dist = tiny_model()
  ids = [id(v) for v in model.trainable_weights]
  assert len(ids) == len(set(ids))
  flow = {id(v) for v in dist.trainable_variables}
  assert len(flow) == len(dist.trainable_variables)
  assert set(ids) == flow
  # Non-trainable state (ActNorm's `initialized` flags) is saved but not trained.
  assert {id(v) for v in dist.variables} == {id(v) for v in model.weights}


def test_save_load_round_trip_into_other_seed(tmp_path):
  model, dist = tiny_model(seed=0)
  compile_(model)
  model.fit(digits(seed=2), epochs=1, steps_per_epoch=5, verbose=0)
  x = fixed_batch()
  path = os.path.join(tmp_path, 'w.weights.h5')
  model.save_weights(path)
  other, other_dist = tiny_model(seed=123)
  assert not other.initialized
  before = other_dist.log_prob(x).numpy()
  other.load_weights(path)
  assert other.initialized
  expected = dist.log_prob(x).numpy()
  got = other_dist.log_prob(x).numpy()
  assert not np.allclose(before, expected)
  np.testing.assert_array_equal(got, expected)


def test_evaluate_bpd_matches_numpy_formula():
  model, dist = tiny_model()
  compile_(model)
  model.fit(digits(seed=3), epochs=1, steps_per_epoch=5, verbose=0)
  x = fixed_batch(100)
  got = model.evaluate(x, batch_size=100, verbose=0, return_dict=True)['bpd']
  log_prob = dist.log_prob(x).numpy().astype(np.float64)
  d = np.prod(SHAPE)
  expected = np.mean((-log_prob + d * np.log(N_BINS)) / (d * np.log(2.0)))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize('num_classes', [None, 10])
def test_model_and_distribution_share_the_one_likelihood(num_classes, monkeypatch):
  model, dist = tiny_model(num_classes=num_classes)
  x = fixed_batch(16)
  labels = tf.range(16) % 10 if num_classes else None
  model.initialize_from(x if labels is None else (x, labels))
  glow = dist_lib.get_glow(dist)
  calls = []
  real = type(glow).log_prob_parts
  monkeypatch.setattr(type(glow), 'log_prob_parts',
                      lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
  inputs = x if labels is None else (x, labels)
  got = model(inputs).numpy()
  assert calls, 'GlowModel does not call Glow.log_prob_parts'
  kwargs = {} if labels is None else {'bijector_kwargs': {'labels': labels}}
  np.testing.assert_allclose(got, dist.log_prob(x, **kwargs).numpy(), rtol=1e-5,
                             atol=1e-3)
  # An empty batch is handled by the likelihood itself.
  empty = x[:0] if labels is None else (x[:0], labels[:0])
  assert model(empty).shape == (0,)


def test_data_dependent_init_before_first_step_and_only_once(monkeypatch):
  model, _ = tiny_model()
  compile_(model)
  calls = []
  real = dist_lib.initialize
  monkeypatch.setattr(dist_lib, 'initialize',
                      lambda *a, **k: calls.append(1) or real(*a, **k))
  seen = []

  class Probe(keras.callbacks.Callback):

    def on_train_batch_begin(self, batch, logs=None):
      if batch == 0:
        seen.append((len(calls), self.model.initialized))

  assert not model.initialized
  model.fit(digits(seed=4), epochs=1, steps_per_epoch=2, callbacks=[Probe()],
            verbose=0)
  assert seen == [(1, True)]
  actnorm = model.glow.actnorms()[0]
  values = actnorm.bias.numpy().copy()
  # A second fit neither re-initialises nor calls initialize.
  model.fit(digits(seed=5), epochs=1, steps_per_epoch=1, callbacks=[Probe()],
            verbose=0)
  assert len(calls) == 1 and seen[-1] == (1, True)
  assert not np.array_equal(actnorm.bias.numpy(), values)  # trained, not re-set


def test_conditional_fit_reports_class_loss_and_accuracy():
  model, _ = tiny_model(num_classes=10)
  compile_(model)
  history = model.fit(digits(seed=6, with_labels=True), epochs=1, steps_per_epoch=4,
                      validation_data=digits('validation', with_labels=True,
                                             shuffle=False),
                      verbose=0)
  for key in ('bpd', 'class_loss', 'accuracy', 'val_bpd', 'val_class_loss',
              'val_accuracy'):
    assert key in history.history and math.isfinite(history.history[key][0]), key
  assert 0.0 <= history.history['accuracy'][0] <= 1.0
  # The objective includes the weighted class loss.
  h = history.history
  assert h['loss'][0] > h['bpd'][0]
  with pytest.raises(ValueError, match='labels'):
    model.fit(digits(), epochs=1, steps_per_epoch=1, verbose=0)


def test_terminate_on_nan_keeps_last_good_checkpoint(tmp_path):
  model, _ = tiny_model(init_batch_size=32)  # the init sees the first batch only
  compile_(model)
  good = np.stack([b.numpy() for b in digits('train', seed=7, batch_size=32).take(3)])
  poisoned = good[0].copy()
  poisoned[0, 0, 0, 0] = np.nan
  # Epoch 1: three good batches; epoch 2 starts with the NaN batch.
  batches = np.concatenate([good, poisoned[None], good])
  ds = tf.data.Dataset.from_tensor_slices(batches)
  path = str(tmp_path / 'latest.weights.h5')
  checkpoint = callbacks.Checkpoint(path)
  backup = callbacks.Backup(str(tmp_path / 'backup'))
  history = model.fit(ds, epochs=4, steps_per_epoch=3, verbose=0,
                      callbacks=[keras.callbacks.TerminateOnNaN(), backup, checkpoint])
  assert len(history.history['bpd']) == 2  # stopped in epoch 2
  assert not math.isfinite(history.history['loss'][-1])
  assert checkpoint.skipped_non_finite and backup.non_finite
  assert not all(np.all(np.isfinite(v.numpy())) for v in model.weights)
  # The checkpoint is the one of epoch 1, loadable and finite.
  with open(str(tmp_path / 'latest.json')) as f:
    assert '"epoch": 1' in f.read()
  restored, dist = tiny_model(seed=9)
  restored.load_weights(path)
  assert np.all(np.isfinite(dist.log_prob(fixed_batch()).numpy()))
  # The backup of epoch 1 is kept for a resume.
  assert callbacks.read_info(backup.state_path)['epoch'] == 1
  assert backup.initial_epoch() == 1


def test_checkpoint_keeps_best_only(tmp_path):
  model, _ = tiny_model()
  path = str(tmp_path / 'best.weights.h5')
  cb = callbacks.Checkpoint(path, monitor='val_bpd')
  cb.set_model(model)
  cb.on_epoch_end(0, {'val_bpd': 3.0})
  cb.on_epoch_end(1, {'val_bpd': 3.5})
  with open(str(tmp_path / 'best.json')) as f:
    assert json.load(f) == {'epoch': 1, 'val_bpd': 3.0}
  # The epoch travels inside the weights file: the two cannot disagree.
  assert callbacks.read_info(path) == {'epoch': 1, 'logs': {'val_bpd': 3.0}}
  # A resumed run reads the best value back: only a better one replaces it.
  cb2 = callbacks.Checkpoint(path, monitor='val_bpd')
  assert cb2.best == 3.0
  assert not [f for f in os.listdir(tmp_path) if 'tmp' in f]
  with pytest.raises(KeyError, match="'val_bpd' is not in the logs"):
    cb2.set_model(model)
    cb2.on_epoch_end(2, {'bpd': 1.0})
  with pytest.raises(ValueError, match="got 'best.h5'"):
    callbacks.Checkpoint('best.h5')


def test_weights_file_is_replaced_atomically(tmp_path, monkeypatch):
  """A writer that dies mid-write leaves the previous file whole; a temporary
  left by a killed writer is removed by the next write."""
  model, _ = tiny_model()
  path = str(tmp_path / 'latest.weights.h5')
  callbacks.save_weights(model, path, {'epoch': 1})
  with open(path, 'rb') as f:
    before = f.read()
  real_save = type(model).save_weights

  def dies_mid_write(self, filepath, overwrite=True):
    with open(filepath, 'wb') as f:
      f.write(b'half a file')
    raise OSError('disk full')

  monkeypatch.setattr(type(model), 'save_weights', dies_mid_write)
  with pytest.raises(OSError, match='disk full'):
    callbacks.save_weights(model, path, {'epoch': 2})
  with open(path, 'rb') as f:
    assert f.read() == before
  assert os.listdir(tmp_path) == ['latest.weights.h5']
  monkeypatch.setattr(type(model), 'save_weights', real_save)
  # A SIGKILLed writer's temporary (its pid is gone) is cleaned up.
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  stale = tmp_path / f'latest.tmp{int(dead.stdout)}.weights.h5'
  stale.write_bytes(b'half a file')
  callbacks.save_weights(model, path, {'epoch': 3})
  assert os.listdir(tmp_path) == ['latest.weights.h5']
  assert callbacks.read_info(path) == {'epoch': 3}
  callbacks.write_json(str(tmp_path / 'x.json'), {'a': 1})
  assert sorted(os.listdir(tmp_path)) == ['latest.weights.h5', 'x.json']


def _fixed_batches():
  """Three fixed batches (no shuffle, no dequantisation noise), repeated: every
  epoch sees the same data, in a fresh process or after a restart alike."""
  ds = digits('train', batch_size=32, shuffle=False, dequantize=False)
  return tf.data.Dataset.from_tensor_slices(
      np.stack([b.numpy() for b in ds.take(3)])).repeat()


def _fit_for_resume(seed, epochs, extra_callbacks=()):
  model, _ = tiny_model(seed=seed, init_batch_size=32)
  # Warmup and Adam's moments: the run only resumes exactly if the optimizer's
  # step count and state come back with the weights.
  model.compile(optimizer=keras.optimizers.Adam(tfp_glow.WarmupSchedule(3e-3, 5)),
                jit_compile=False)
  history = model.fit(_fixed_batches(), epochs=epochs, steps_per_epoch=3,
                      verbose=0, callbacks=list(extra_callbacks))
  return model, history


# Slow set (run by .ci/run): one of the default run's slowest (issue 22: under 4 minutes).
@pytest.mark.slow
def test_backup_resumes_exactly_where_training_stopped(tmp_path):
  backup_dir = str(tmp_path / 'backup')
  reference, _ = _fit_for_resume(seed=0, epochs=4)

  class Crash(keras.callbacks.Callback):

    def on_epoch_begin(self, epoch, logs=None):
      if epoch == 2:
        raise RuntimeError('crash')

  with pytest.raises(RuntimeError, match='crash'):
    _fit_for_resume(0, 4, [callbacks.Backup(backup_dir), Crash()])
  backup = callbacks.Backup(backup_dir)
  assert backup.initial_epoch() == 2
  # A restart with other initial weights: everything comes from the backup.
  resumed, history = _fit_for_resume(123, 4, [backup])
  assert len(history.history['bpd']) == 2  # epochs 3 and 4 only
  assert int(resumed.optimizer.iterations.numpy()) == 12
  for a, b in zip(resumed.glow.variables, reference.glow.variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6,
                               err_msg=a.name)
  for a, b in zip(resumed.optimizer.variables, reference.optimizer.variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6,
                               err_msg=a.name)
  assert not os.path.exists(backup_dir)  # removed when training finished


def test_backup_refuses_to_train_epochs_it_holds(tmp_path):
  model, _ = tiny_model()
  compile_(model)
  model.fit(fixed_batch(), epochs=1, verbose=0,
            callbacks=[callbacks.Checkpoint(str(tmp_path / 'x.weights.h5'))])
  backup = callbacks.Backup(str(tmp_path / 'backup'))
  backup.set_model(model)
  backup.on_epoch_end(2, {'loss': 1.0})
  assert backup.initial_epoch() == 3
  backup.on_train_begin()
  # What a plain keras.Model.fit without initial_epoch would do.
  with pytest.raises(ValueError, match='holds 3 finished epochs, but fit'):
    backup.on_epoch_begin(0)



# Slow set (run by .ci/run): one of the default run's slowest (issue 22: under 4 minutes).
@pytest.mark.slow
def test_fit_with_invert_backprop_gives_the_store_weights():
  """GlowModel.fit under backprop='invert' (class-conditional, so labels and
  the classifier loss go through it) makes the updates of 'store': the same
  weights after a few steps, under XLA (bin/train.py's default; a plain
  graph is checked in glow_test.py and, through fit, distribute_test.py).

  Plain SGD, so that a weight moves by lr x its gradient: Adam divides every
  gradient element by its own magnitude, so an element whose gradient is
  float32 rounding noise (an ActNorm bias right after the data-dependent
  init, whose gradient is 0 in exact arithmetic) moves by +-lr whichever the
  mode; measured, 'store' in a graph and 'store' under XLA differ by 5.6x
  relative on such a gradient, and Adam makes that a weight difference of
  ~lr/2.
  """
  weights = {}
  for backprop in ('store', 'invert'):
    dist = tfp_glow.glow_distribution(SHAPE, levels=1, steps_per_level=2,
                                      hidden_width=8, learn_top=True,
                                      num_classes=10, seed=0,
                                      backprop=backprop)
    model = tfp_glow.GlowModel(dist, N_BINS, init_batch_size=32)
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
    ds = digits(shuffle=False, dequantize=False, with_labels=True,
                batch_size=32).take(3)
    history = model.fit(ds, epochs=1, verbose=0)
    assert math.isfinite(history.history['loss'][0])
    weights[backprop] = [v.numpy() for v in model.trainable_weights]
  for a, b in zip(weights['store'], weights['invert']):
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4)


# --- the compile mode, chosen by measurement ---------------------------------------


@pytest.mark.parametrize('value, want', [
    ('auto', 'auto'), ('AUTO', 'auto'), (None, 'auto'), (True, True),
    (False, False), ('true', True), ('false', False), ('1', True), ('0', False),
    ('xla', True), ('graph', False)])
def test_parse_jit_compile(value, want):
  assert jit.parse_jit_compile(value) == want


@pytest.mark.parametrize('value', ['fast', 2, 0.5, ''])
def test_parse_jit_compile_names_bad_value(value):
  with pytest.raises(ValueError, match=repr(value).replace('.', r'\.')):
    jit.parse_jit_compile(value)


class _FakeModel:
  """What choose_jit_compile uses of a Keras model, with steps whose speed we
  set: each call of a step function adds to a weight and to an optimizer
  variable (so restoring them is checked) and advances a fake clock."""

  def __init__(self, train_ms, test_ms, xla_fails=False):
    self.train_ms, self.test_ms, self.xla_fails = train_ms, test_ms, xla_fails
    self.clock = 0.0
    self.jit_compile = False
    self.weights = [tf.Variable([1.0, 2.0], name='w')]
    self.optimizer = keras.optimizers.Adam()
    self.optimizer.build(self.weights)
    self.trainable_variables = self.weights
    self.distribute_strategy = tf.distribute.get_strategy()
    self.train_function = self.test_function = self.predict_function = None
    self.metrics_reset = 0

  def _function(self, kind):
    mode = 'xla' if self.jit_compile else 'graph'
    ms = (self.train_ms if kind == 'train' else self.test_ms)[mode]

    def fn(iterator):
      if mode == 'xla' and self.xla_fails:
        raise tf.errors.InvalidArgumentError(None, None, 'No kernel for Foo')
      next(iterator)
      self.clock += ms / 1e3
      if kind == 'train':
        self.weights[0].assign_add([1.0, 1.0])
        self.optimizer.iterations.assign_add(1)
      return {'loss': tf.constant(1.0)}

    fn.mode = mode
    return fn

  def make_train_function(self, force=False):
    self.train_function = self._function('train')

  def make_test_function(self, force=False):
    self.test_function = self._function('test')

  def reset_metrics(self):
    self.metrics_reset += 1


def test_choose_jit_compile_keeps_the_faster_and_restores_the_state():
  model = _FakeModel(train_ms={'graph': 150, 'xla': 240},
                     test_ms={'graph': 60, 'xla': 40})
  batches = [tf.zeros([2, 4, 4, 1])] * 2
  lines = []
  choice = jit.choose_jit_compile(model, batches, steps=3,
                                  timer=lambda: model.clock, log=lines.append)
  assert (choice.train, choice.evaluate, choice.how) == (False, True, 'measured')
  assert choice.train_ms == pytest.approx({'graph': 150, 'xla': 240})
  assert choice.evaluate_ms == pytest.approx({'graph': 60, 'xla': 40})
  # The model keeps the compiled functions of the chosen modes.
  assert model.jit_compile is False
  assert model.train_function.mode == 'graph'
  assert model.test_function.mode == 'xla'
  # The timed steps left no trace.
  np.testing.assert_array_equal(model.weights[0].numpy(), [1.0, 2.0])
  assert int(model.optimizer.iterations.numpy()) == 0
  assert model.metrics_reset == 1
  assert 'graph 150.0 ms, xla 240.0 ms -> graph' in lines[0], lines
  assert 'graph 60.0 ms, xla 40.0 ms -> xla' in lines[0], lines
  assert choice.as_dict()['train_mode'] == 'graph'
  json.dumps(choice.as_dict())


def test_choose_jit_compile_falls_back_when_xla_fails():
  model = _FakeModel(train_ms={'graph': 150, 'xla': 10},
                     test_ms={'graph': 60, 'xla': 5}, xla_fails=True)
  choice = jit.choose_jit_compile(model, [tf.zeros([2, 4, 4, 1])], steps=2,
                                  timer=lambda: model.clock)
  assert (choice.train, choice.evaluate) == (False, False)
  assert 'No kernel for Foo' in choice.errors['training xla']
  assert 'xla failed' in choice.describe()


def test_choose_jit_compile_several_replicas_keeps_xla_off():
  model = _FakeModel(train_ms={'graph': 150, 'xla': 10},
                     test_ms={'graph': 60, 'xla': 5})
  model.jit_compile = True
  model.distribute_strategy = types.SimpleNamespace(num_replicas_in_sync=2)
  choice = jit.choose_jit_compile(model, [], steps=2)  # nothing timed
  assert (choice.train, choice.evaluate, choice.how) == (False, False, 'replicas')
  assert model.jit_compile is False and model.train_function is None


def test_auto_jit_on_a_cpu_is_graph_mode_unmeasured(monkeypatch, capsys):
  """No GPU or TPU: `auto` trains and evaluates in graph mode, compiles
  nothing in XLA, and says so; TFP_GLOW_JIT_AUTO=measure measures."""
  if tf.config.list_logical_devices('GPU'):
    pytest.skip('a GPU is visible: auto measures')
  monkeypatch.delenv(jit.MEASURE_ENV, raising=False)
  assert jit.cpu_only()
  model, _ = tiny_model(seed=0, init_batch_size=64)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  model.fit(digits(batch_size=32), epochs=1, steps_per_epoch=2, verbose=2)
  choice = model.jit_choice
  assert (choice.train, choice.evaluate, choice.how) == (False, False, 'cpu')
  assert choice.train_ms == {} and choice.compile_s == {}
  assert model.jit_compile is False
  assert 'jit_compile=auto on a CPU: graph mode' in capsys.readouterr().out
  monkeypatch.setenv(jit.MEASURE_ENV, 'measure')
  assert not jit.cpu_only()


# Slow set (run by .ci/run): one of the default run's slowest (issue 22: under 4 minutes).
@pytest.mark.slow
def test_auto_jit_then_steps_equal_steps_in_the_chosen_mode(monkeypatch):
  """`jit_compile='auto'` measures (timed steps on the first batches of the
  real, reshuffling pipeline; on a CPU when asked to), then trains: the
  weights and optimizer state after N steps are those of N steps in the
  chosen mode alone."""
  monkeypatch.setenv(jit.MEASURE_ENV, 'measure')

  def fit(jit_compile):
    keras.utils.set_random_seed(0)
    model, _ = tiny_model(seed=0, init_batch_size=64)
    model.compile(optimizer=keras.optimizers.Adam(
        tfp_glow.WarmupSchedule(3e-3, 3), use_ema=True, ema_momentum=0.9),
                  jit_compile=jit_compile)
    model.fit(digits(batch_size=32, shuffle=True, seed=3), epochs=2,
              steps_per_epoch=3, verbose=0)
    return model

  auto = fit('auto')
  choice = auto.jit_choice
  assert choice.how == 'measured' and choice.steps == auto.jit_timing_steps
  assert set(choice.train_ms) == set(choice.evaluate_ms) == {'graph', 'xla'}
  assert auto.jit_compile == choice.train
  forced = fit(choice.train)
  assert forced.jit_choice.how == 'forced'
  assert int(auto.optimizer.iterations.numpy()) == 6
  for a, b in zip(auto.weights + auto.optimizer.variables,
                  forced.weights + forced.optimizer.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


# Slow set (run by .ci/run): one of the default run's slowest (issue 22: under 4 minutes).
@pytest.mark.slow
def test_compiled_ema_swap_is_kerass_swap():
  """callbacks.SwapEMAWeights runs Keras's swap as one compiled call: after
  training with it, the weights (averaged) and the optimizer's averages (raw)
  are those of Keras's own SwapEMAWeights."""

  def train(swap):
    model, _ = tiny_model(seed=0, init_batch_size=64)
    model.compile(optimizer=keras.optimizers.Adam(
        tfp_glow.WarmupSchedule(3e-3, 3), use_ema=True, ema_momentum=0.5),
                  jit_compile=False)
    model.fit(_fixed_batches(), epochs=3, steps_per_epoch=2, verbose=0,
              validation_data=fixed_batch(), callbacks=[swap])
    return model

  ours = train(callbacks.SwapEMAWeights(swap_on_epoch=True))
  theirs = train(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
  for a, b in zip(ours.weights + ours.optimizer.variables,
                  theirs.weights + theirs.optimizer.variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7,
                               err_msg=a.name)


def test_all_finite_checks_every_float_variable():
  good = [tf.Variable([1.0, 2.0]), keras.Variable(np.ones([2, 2], np.float32)),
          tf.Variable([3, 4])]
  assert callbacks.all_finite({'loss': 1.0}, good)
  assert not callbacks.all_finite({'loss': float('nan')}, good)
  assert not callbacks.all_finite({}, good + [tf.Variable([1.0, np.inf])])
  assert not callbacks.all_finite(
      {}, good + [keras.Variable(np.array([np.nan], np.float32))])
  assert not callbacks.all_finite({}, [np.array([np.nan])])


# --------------------------------------------------------------------------------------
# The learning-rate budget (issue 19): warmup, decay to zero at the end of the budget


def _reference_lr(step, peak, warmup, total, decay):
  """The schedule written out on its own, in float64, from its definition."""
  lr = peak * (min(1.0, (step + 1) / warmup) if warmup else 1.0)
  if total is None or decay == 'constant':
    return lr
  u = min(1.0, max(0.0, (step - warmup) / max(total - warmup, 1)))
  return lr * ((1 - u) if decay == 'linear' else 0.5 * (1 + math.cos(math.pi * u)))


@pytest.mark.parametrize('decay', ['linear', 'cosine', 'constant'])
def test_schedule_warms_up_then_decays_to_zero_at_the_budget(decay):
  schedule = tfp_glow.WarmupSchedule(2e-3, 10, total_steps=110, decay=decay)
  for step in (0, 4, 9, 10, 37, 60, 109, 110, 500):
    np.testing.assert_allclose(schedule.value(step),
                               _reference_lr(step, 2e-3, 10, 110, decay),
                               rtol=1e-5, atol=1e-9)
  if decay != 'constant':
    assert schedule.value(110) == 0.0 and schedule.value(109) < 2e-3 * 0.02
  else:
    assert schedule.value(500) == pytest.approx(2e-3) and schedule.total_steps is None
  # The old two-argument form is the constant schedule it always was.
  assert tfp_glow.WarmupSchedule(1e-3, 5).value(1000) == pytest.approx(1e-3)


@pytest.mark.parametrize('decay', ['linear', 'cosine'])
def test_schedule_with_a_decay_fraction_holds_the_peak_then_decays_to_zero(decay):
  """Warmup-stable-decay: 10 warmup steps, then of the 100 that remain the first 70
  at the peak and the decay over the last 30 (an independent float64 form: the
  full-budget reference over the last 30 steps only)."""
  schedule = tfp_glow.WarmupSchedule(2e-3, 10, total_steps=110, decay=decay,
                                     decay_fraction=0.3)
  for step in (0, 9, 10, 50, 79, 80):
    np.testing.assert_allclose(schedule.value(step), 2e-3 * min(1, (step + 1) / 10),
                               rtol=1e-5)
  for step in (81, 95, 109, 110, 300):
    # Over the last 30 steps it is the full-length decay of a 30-step budget.
    np.testing.assert_allclose(schedule.value(step),
                               _reference_lr(step - 80, 2e-3, 0, 30, decay),
                               rtol=1e-5, atol=1e-9)
  assert schedule.value(110) == 0.0
  assert tfp_glow.WarmupSchedule.from_config(
      schedule.get_config()).value(95) == pytest.approx(schedule.value(95))
  for bad in (0.0, 1.5, -0.2, True):
    with pytest.raises(ValueError, match='decay_fraction must be in'):
      tfp_glow.WarmupSchedule(1e-3, 0, 10, decay_fraction=bad)


def test_learning_rate_default_is_higher_for_the_digits_only():
  from tfp_glow import run_dir  # pylint: disable=g-import-not-at-top
  assert run_dir.resolve_learning_rate('digits', None) == 3e-3
  assert run_dir.resolve_learning_rate('photos', None) == 1e-3
  assert run_dir.resolve_learning_rate('folder:/x', None) == 1e-3
  assert run_dir.resolve_learning_rate('digits', 5e-4) == 5e-4


def test_lr_schedule_auto_is_constant_for_the_digits_only():
  from tfp_glow import run_dir  # pylint: disable=g-import-not-at-top
  assert run_dir.resolve_lr_schedule('digits', 'auto') == 'constant'
  assert run_dir.resolve_lr_schedule('photos', 'auto') == 'linear'
  assert run_dir.resolve_lr_schedule('folder:/x', 'auto') == 'linear'
  assert run_dir.resolve_lr_schedule('digits', 'cosine') == 'cosine'


def test_flip_auto_mirrors_photos_but_not_digits_or_characters():
  from tfp_glow import run_dir  # pylint: disable=g-import-not-at-top
  for dataset in ('photos', 'folder:/data/mnist', 'cifar10', 'celeb_a',
                  'imagenet_resized/32x32'):
    assert run_dir.resolve_flip(dataset, 'auto') is True, dataset
  for dataset in ('digits', 'mnist', 'mnist:3.0.1', 'svhn_cropped', 'emnist',
                  'emnist/letters', 'omniglot'):
    assert run_dir.resolve_flip(dataset, 'auto') is False, dataset
  assert run_dir.resolve_flip('digits', 'true') is True
  assert run_dir.resolve_flip('photos', 'false') is False
  assert run_dir.resolve_flip('photos', False) is False
  with pytest.raises(ValueError, match="flip must be 'auto'"):
    run_dir.resolve_flip('photos', 'sometimes')


def test_schedule_total_is_read_by_a_compiled_step_without_retracing():
  schedule = tfp_glow.WarmupSchedule(1e-3, 0, total_steps=100)
  traces = []

  @tf.function(jit_compile=True)
  def rate(step):
    traces.append(1)
    return schedule(step)

  np.testing.assert_allclose(rate(tf.constant(50)).numpy(), 5e-4, rtol=1e-6)
  schedule.set_total_steps(200)
  np.testing.assert_allclose(rate(tf.constant(50)).numpy(), 7.5e-4, rtol=1e-6)
  assert len(traces) == 1
  with pytest.raises(ValueError, match='no total to set'):
    tfp_glow.WarmupSchedule(1e-3, 0).set_total_steps(10)
  with pytest.raises(ValueError, match="decay must be one of"):
    tfp_glow.WarmupSchedule(1e-3, 0, 10, decay='step')


def test_time_budget_estimates_the_step_where_time_runs_out(monkeypatch):
  """A fake clock at 0.5 s a step after 3 slow (compiling) steps, a 2-minute budget
  counted from t=0: the estimate must be where the clock reaches 120 s."""
  now = [0.0]
  monkeypatch.setattr(callbacks.time, 'monotonic', lambda: now[0])
  schedule = tfp_glow.WarmupSchedule(1e-3, 0, total_steps=10_000)
  budget = callbacks.TimeBudget(schedule, 2.0, start=0.0, max_steps=10_000,
                                update_every=5, skip_steps=3)
  budget.set_model(types.SimpleNamespace(
      optimizer=types.SimpleNamespace(iterations=tf.Variable(0, dtype=tf.int64))))
  budget.on_train_begin()
  now[0] = 10.0  # build and compile
  for step in range(1, 60):
    now[0] += 5.0 if step <= 3 else 0.5
    budget.on_train_batch_end(step - 1)
  # After step 59 (t = 10 + 15 + 56 * 0.5 = 53 s): 67 s left at 0.5 s a step.
  assert budget.steps == 59
  last_update = 58  # updates every 5 steps after the 3rd: 8, 13, ..., 58
  t = 10 + 15 + (last_update - 3) * 0.5
  assert schedule.total_steps == pytest.approx(last_update + (120 - t) / 0.5)
  budget.on_train_end()
  assert budget.estimates[-1] == (59, pytest.approx(schedule.total_steps, abs=0.05))
  # The --epochs budget caps the estimate.
  capped = callbacks.TimeBudget(schedule, 60.0, start=0.0, max_steps=300,
                                update_every=1, skip_steps=1)
  capped.set_model(budget.model)
  capped.on_train_begin()
  for step in range(3):
    now[0] += 0.5
    capped.on_train_batch_end(step)
  assert schedule.total_steps == 300
  with pytest.raises(TypeError, match='set_total_steps'):
    callbacks.TimeBudget(object(), 1.0)


def test_compute_dtype_auto_follows_the_hardware(tmp_path, monkeypatch):
  from tfp_glow.keras import precision  # pylint: disable=g-import-not-at-top
  with_bf16 = tmp_path / 'bf16'
  with_bf16.write_text('processor : 0\nflags : fpu sse2 avx512f avx512_bf16 amx_tile\n')
  without = tmp_path / 'plain'
  without.write_text('processor : 0\nflags : fpu sse2 avx2\n')
  monkeypatch.delenv('TFP_GLOW_COMPUTE_DTYPE', raising=False)
  dtype, why = precision.resolve_compute_dtype('auto', cpuinfo=str(with_bf16))
  assert dtype == 'bfloat16' and 'avx512_bf16' in why
  dtype, why = precision.resolve_compute_dtype('auto', cpuinfo=str(without))
  assert dtype == 'float32' and 'none of' in why
  assert precision.resolve_compute_dtype('float32', cpuinfo=str(with_bf16))[0] == 'float32'
  monkeypatch.setenv('TFP_GLOW_COMPUTE_DTYPE', 'float32')
  assert precision.resolve_compute_dtype('auto', cpuinfo=str(with_bf16))[0] == 'float32'
  monkeypatch.setenv('TFP_GLOW_COMPUTE_DTYPE', 'half')
  with pytest.raises(ValueError, match='TFP_GLOW_COMPUTE_DTYPE'):
    precision.resolve_compute_dtype('auto')
  with pytest.raises(ValueError, match="compute_dtype must be one of"):
    precision.resolve_compute_dtype('float16')


def test_keras_save_and_load_model_round_trip(tmp_path):
  """Issue 21.8: `model.save('glow.keras')` then `keras.models.load_model`
  gives the same architecture (from `get_config`), every weight and optimizer
  variable bit for bit, and the same log_prob; the next optimizer step of the
  loaded model is the original's, bit for bit (moments, step count and the
  warmup schedule came back). Eager steps: no training function to trace."""
  model, _ = tiny_model(seed=4, num_classes=3, class_loss_weight=0.5)
  x, y = fixed_batch(16), tf.range(16) % 3
  kwargs = {'bijector_kwargs': {'labels': y}}
  model.initialize_from((x, y))
  compile_(model)

  def step(m):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(m.distribution.log_prob(x, **kwargs))
    m.optimizer.apply_gradients(zip(tape.gradient(loss, m.trainable_variables),
                                    m.trainable_variables))

  step(model)
  path = str(tmp_path / 'glow.keras')
  model.save(path)
  loaded = keras.models.load_model(path)
  assert type(loaded) is tfp_glow.GlowModel and loaded is not model
  config = loaded.get_config()
  assert config == model.get_config()
  assert config['glow']['num_classes'] == 3 and config['n_bins'] == N_BINS
  assert config['class_loss_weight'] == 0.5 and loaded.conditional
  assert [v.name for v in loaded.weights] == [v.name for v in model.weights]
  assert len(loaded.optimizer.variables) == len(model.optimizer.variables) > 1
  for a, b in zip(model.weights + model.optimizer.variables,
                  loaded.weights + loaded.optimizer.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
  assert int(loaded.optimizer.iterations.numpy()) == 1
  np.testing.assert_array_equal(loaded.distribution.log_prob(x, **kwargs).numpy(),
                                model.distribution.log_prob(x, **kwargs).numpy())
  # A fresh, differently seeded model of the same architecture differs, so the
  # equality above is the weights' doing, not the seed's.
  other = tfp_glow.GlowModel.from_config(dict(config, glow=dict(config['glow'],
                                                                seed=5)))
  other.initialize_from((x, y))
  assert not np.array_equal(other.distribution.log_prob(x, **kwargs).numpy(),
                            model.distribution.log_prob(x, **kwargs).numpy())
  step(model)
  step(loaded)
  for a, b in zip(model.weights, loaded.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


def test_keras_config_is_json_and_export_is_refused_by_name(tmp_path):
  dist = tfp_glow.glow_distribution(SHAPE, levels=2, steps_per_level=1,
                                    hidden_width=8, compute_dtype=tf.bfloat16)
  config = tfp_glow.GlowModel(dist, N_BINS).get_config()
  assert json.loads(json.dumps(config)) == config
  assert config['glow']['compute_dtype'] == 'bfloat16'
  assert config['glow']['dtype'] == 'float32'
  rebuilt = tfp_glow.GlowModel.from_config(config)
  assert rebuilt.get_config() == config
  assert rebuilt.glow.steps[0][0][2].network.compute_dtype == tf.bfloat16
  model, dist = tiny_model()
  with pytest.raises(NotImplementedError, match=r'tfp_glow\.export\.save\(model, '
                     'export_dir\\)'):
    model.export(str(tmp_path / 'export'))
  assert not (tmp_path / 'export').exists()
  tfd = dist_lib.tfd
  wide = tfd.TransformedDistribution(
      tfd.Sample(tfd.Normal(0., 2.), [64]), dist_lib.get_glow(dist))
  with pytest.raises(ValueError, match='not the one glow_distribution makes'):
    tfp_glow.GlowModel(wide, N_BINS).get_config()


def test_sample_grid_leaves_out_a_temperature_that_overflows(tmp_path, capsys):
  """A temperature whose samples are not finite gets no row, a line says so,
  and training goes on (a T=1 overflow at epoch 10 of a 20-minute photos run
  used to end the run with a FloatingPointError)."""
  model, _ = tiny_model(seed=0, init_batch_size=64)
  compile_(model)
  real_sample = model.sample

  def sample(n, temperature=1.0, **kw):
    if temperature == 1.0:
      raise FloatingPointError('glow: 1 of 4 generated images are not finite')
    return real_sample(n, temperature=temperature, **kw)

  model.sample = sample
  grid = tfp_glow.SampleGrid(str(tmp_path), N_BINS, temperatures=(0.0, 1.0, 0.5),
                             per_row=4)
  model.fit(digits(batch_size=32), epochs=2, steps_per_epoch=2, verbose=0,
            callbacks=[grid])
  assert int(model.optimizer.iterations.numpy()) == 4   # both epochs ran
  images, temperatures = grid.grid()
  assert temperatures == (0.0, 0.5) and images.shape == (2, 4, 8, 8, 1)
  assert images.dtype == np.uint8
  for name in ('epoch_0001.png', 'epoch_0002.png', 'final.png'):
    assert (tmp_path / name).stat().st_size > 0, name
  assert 'Sample grid: no row for T=1: glow: 1 of 4' in capsys.readouterr().out
  # Every temperature failing: no PNG, no error.
  grid_none = tfp_glow.SampleGrid(str(tmp_path / 'none'), N_BINS,
                                  temperatures=(1.0,), per_row=4)
  grid_none.set_model(model)
  assert grid_none.write('x', 0) is None
  assert not (tmp_path / 'none').exists()
