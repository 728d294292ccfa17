"""The grid: configurations, shared settings, one run, the runner.

See `tfp_glow.ablation` for what is written where.
"""

import concurrent.futures
import dataclasses
import gc
import io
import json
import math
import multiprocessing
import os
import threading
import time
import traceback

import numpy as np

from tfp_glow import architecture
from tfp_glow.ablation import files
from tfp_glow.ablation import results as results_lib

__all__ = ['Config', 'Settings', 'DEFAULT_GRID', 'parse_config', 'run_path',
           'check_settings', 'run_one', 'run_grid']

PERMUTATIONS = architecture.PERMUTATIONS
COUPLINGS = architecture.COUPLINGS
ACTNORM_INITS = architecture.ACTNORM_INITS


@dataclasses.dataclass(frozen=True)
class Config:
  """One configuration of the grid: the options the ablation varies."""
  permutation: str
  coupling: str
  actnorm_init: str = 'data'

  def __post_init__(self):
    for name, value, choices in (
        ('permutation', self.permutation, PERMUTATIONS),
        ('coupling', self.coupling, COUPLINGS),
        ('actnorm_init', self.actnorm_init, ACTNORM_INITS)):
      if value not in choices:
        raise ValueError(f'{name} must be one of {list(choices)}, got '
                         f'{value!r}.')

  @property
  def name(self):
    """'conv-affine', and 'conv-affine-identity' for the identity init."""
    base = f'{self.permutation}-{self.coupling}'
    return base if self.actnorm_init == 'data' else (
        f'{base}-{self.actnorm_init}')


DEFAULT_GRID = tuple(
    [Config(p, c) for c in ('additive', 'affine')
     for p in ('reverse', 'shuffle', 'conv')]
    + [Config('conv', 'affine', 'identity')])


def parse_config(name):
  """`Config` from 'PERMUTATION-COUPLING[-ACTNORM_INIT]', e.g. 'conv-affine'."""
  parts = str(name).strip().split('-')
  if len(parts) not in (2, 3) or not all(parts):
    raise ValueError(
        f'Configuration {name!r}: expected PERMUTATION-COUPLING or '
        'PERMUTATION-COUPLING-ACTNORM_INIT, e.g. conv-affine or '
        'conv-affine-identity.')
  try:
    return Config(*parts)
  except ValueError as e:
    raise ValueError(f'Configuration {name!r}: {e}') from e


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every run of a grid shares. Defaults: bin/train.py's digits model
  (without its Polyak averaging and translations, and without XLA).

  `steps` training steps of `batch_size` images, evaluated every `eval_every`
  steps (and at step 0, after the ActNorm init); Adam at `learning_rate` with
  a linear warm-up over `warmup_steps`.
  """
  dataset: str = 'digits'
  image_size: int | None = None
  n_bits: int | None = None
  levels: int = 2
  steps_per_level: int = 8
  hidden_width: int = 128
  learn_top: bool = True
  batch_size: int = 64
  learning_rate: float = 1e-3
  warmup_steps: int = 200
  steps: int = 3000
  eval_every: int = 100
  init_batch_size: int = 256
  # Graph mode: on this CPU TF's oneDNN kernels train the digits model faster
  # than XLA (9.0 against 7.4 steps/s for conv-affine, and no compile time;
  # see also docs/BENCHMARKS.md), unlike bin/train.py's default.
  jit_compile: bool = False
  eval_seed: int = 0
  eval_batch_size: int = 256
  temperature: float = 0.7
  num_samples: int = 64
  sample_seed: int = 0

  def __post_init__(self):
    for name in ('levels', 'steps_per_level', 'hidden_width', 'batch_size',
                 'steps', 'eval_every', 'init_batch_size', 'eval_batch_size',
                 'num_samples'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be an integer >= 1, got {value!r}.')
    if self.steps % self.eval_every:
      raise ValueError(f'steps ({self.steps}) must be a multiple of '
                       f'eval_every ({self.eval_every}).')
    if not self.learning_rate > 0:
      raise ValueError(f'learning_rate must be > 0, got '
                       f'{self.learning_rate!r}.')
    if self.warmup_steps < 0:
      raise ValueError(f'warmup_steps must be >= 0, got '
                       f'{self.warmup_steps!r}.')
    if not (math.isfinite(self.temperature) and self.temperature >= 0):
      raise ValueError(f'temperature must be finite and >= 0, got '
                       f'{self.temperature!r}.')

  def to_dict(self):
    return dataclasses.asdict(self)


def run_path(out_dir, config, seed):
  return os.path.join(out_dir, 'runs', config.name, f'seed{seed}.json')


def _samples_path(out_dir, config, seed):
  return os.path.join(out_dir, 'runs', config.name, f'seed{seed}_samples.npy')


def check_settings(out_dir, settings):
  """Writes `out_dir/settings.json`, or checks that it holds `settings`.

  Raises:
    ValueError naming every setting that differs: the finished runs there
      were made with other settings and cannot be compared with new ones.
  """
  path = os.path.join(out_dir, 'settings.json')
  new = settings.to_dict()
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    diffs = [f'{k}: {old.get(k)!r} there, {new.get(k)!r} now'
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diffs:
      raise ValueError(
          f'{out_dir} holds runs made with other settings ('
          + '; '.join(diffs) + '). Use another --out_dir, or the same '
          'settings to resume or extend the grid.')
  else:
    files.write_json(path, new)


# --- one run ---------------------------------------------------------------------


def set_threads(threads):
  """Caps this process's TensorFlow threads (before TF starts its runtime)."""
  if threads:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    tf.config.threading.set_inter_op_parallelism_threads(
        max(1, min(2, int(threads))))


def _load(settings, split, data_dir, download, **kwargs):
  from tfp_glow import data  # pylint: disable=g-import-not-at-top
  return data.load(settings.dataset, split, data_dir=data_dir,
                   download=download, n_bits=settings.n_bits,
                   image_size=settings.image_size, **kwargs)


def _held_out_splits(dataset):
  """(validation split, test split or None) of a dataset."""
  from tfp_glow import data  # pylint: disable=g-import-not-at-top
  if dataset.startswith(data.FOLDER_PREFIX):
    return 'validation', None  # a folder has no test split
  return 'validation', 'test'


def run_one(settings, config, seed, out_dir, data_dir=None, download=False,
            log=print):
  """Trains one configuration with one seed; writes and returns its result.

  The result (a dict, also `run_path(out_dir, config, seed)`) holds `curve`:
  one entry per evaluation (step 0 after the ActNorm init, then every
  `eval_every` steps) with `step`, `train_bpd` (the mean bits/dim of the
  training batches since the previous evaluation, each with fresh
  dequantisation noise; None at step 0), `val_bpd`, `test_bpd` (the whole
  split, fixed noise) and `train_seconds` (training time so far: compiled
  steps only, without evaluation; the first block includes the compilation).
  Also `parameter_count`, `wall_seconds` (the whole run), `steps_per_second`
  (after the first block, so without the compilation), `diverged` (the loss
  became NaN/Inf: training stopped there).
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tfp_glow  # pylint: disable=g-import-not-at-top

  t_start = time.perf_counter()
  keras.utils.set_random_seed(seed)
  train_ds, info, held_out = _run_data(settings, seed, data_dir, download)
  image_shape = tuple(info.image_shape)
  n_bins = int(info.n_bins)
  dist = _initialized_flow(settings, config, seed, train_ds, image_shape)
  train_step, point = _compiled_steps(settings, dist, image_shape, n_bins,
                                      held_out)
  curve, train_seconds, first_block_seconds, diverged = _train(
      settings, config, seed, train_step, point, train_ds, log)
  steps_run = curve[-1]['step']
  samples, samples_note = (None, None) if diverged else _write_samples(
      settings, dist, n_bins, _samples_path(out_dir, config, seed))
  result = {
      'config': config.name,
      'permutation': config.permutation,
      'coupling': config.coupling,
      'actnorm_init': config.actnorm_init,
      'seed': seed,
      'image_shape': list(image_shape),
      'n_bins': n_bins,
      'parameter_count': int(tfp_glow.parameter_count(dist)),
      'steps': steps_run,
      'diverged': diverged,
      'curve': curve,
      'train_seconds': train_seconds,
      'first_block_seconds': first_block_seconds,
      'steps_per_second': _steps_per_second(settings, steps_run, train_seconds,
                                            first_block_seconds, diverged),
      'wall_seconds': time.perf_counter() - t_start,
      'samples': (os.path.relpath(samples, out_dir) if samples is not None
                  else None),
      'samples_note': samples_note,
      'settings': settings.to_dict(),
  }
  files.write_json(run_path(out_dir, config, seed), result)
  return result


# --- the steps of run_one, in order ----------------------------------------------


def _run_data(settings, seed, data_dir, download):
  """The shuffled training stream (seeded by `seed`), its `DatasetInfo`, and the
  held-out splits ('val', 'test' where the dataset has them) with fixed noise,
  cached."""
  train_ds, info = _load(settings, 'train', data_dir, download,
                         batch_size=settings.batch_size, shuffle=True,
                         seed=seed)
  val_split, test_split = _held_out_splits(settings.dataset)
  held_out = {}
  for key, split in (('val', val_split), ('test', test_split)):
    if split is not None:
      ds, _ = _load(settings, split, data_dir, download,
                    batch_size=settings.eval_batch_size, shuffle=False,
                    seed=settings.eval_seed)
      held_out[key] = ds.cache()
  return train_ds, info, held_out


def _initialized_flow(settings, config, seed, train_ds, image_shape):
  """The configuration's Glow distribution, ActNorm-initialised on the first
  images of the training stream (its own iterator, so the training order is
  the same under either ActNorm init)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfp_glow  # pylint: disable=g-import-not-at-top
  dist = tfp_glow.glow_distribution(
      image_shape, levels=settings.levels,
      steps_per_level=settings.steps_per_level,
      hidden_width=settings.hidden_width, coupling=config.coupling,
      permutation=config.permutation, learn_top=settings.learn_top,
      seed=seed, actnorm_init=config.actnorm_init)
  init_batches = math.ceil(settings.init_batch_size / settings.batch_size)
  x_init = tf.concat(list(train_ds.take(init_batches)), 0)
  tfp_glow.initialize(dist, x_init[:settings.init_batch_size])
  return dist


def _compiled_steps(settings, dist, image_shape, n_bins, held_out):
  """`(train_step, point)`: one Adam step on a batch (its mean bits/dim
  returned), and the curve entry at a step (held-out bits/dim evaluated)."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfp_glow  # pylint: disable=g-import-not-at-top
  variables = list(dist.trainable_variables)
  optimizer = keras.optimizers.Adam(learning_rate=tfp_glow.WarmupSchedule(
      settings.learning_rate, settings.warmup_steps))
  optimizer.build(variables)

  def mean_bpd(x):
    return tf.reduce_mean(
        tfp_glow.bits_per_dim(dist.log_prob(x), image_shape, n_bins))

  # One signature with a free batch size: the last batch of an epoch and of
  # a split is smaller (XLA compiles each shape once, nothing is retraced).
  spec = [tf.TensorSpec([None, *image_shape], tf.float32)]

  @tf.function(jit_compile=settings.jit_compile, input_signature=spec)
  def train_step(x):
    with tf.GradientTape() as tape:
      loss = mean_bpd(x)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return loss

  @tf.function(jit_compile=settings.jit_compile, input_signature=spec)
  def bpd_sum(x):
    return tf.reduce_sum(
        tfp_glow.bits_per_dim(dist.log_prob(x), image_shape, n_bins))

  def evaluate(ds):
    total, count = 0.0, 0
    for x in ds:
      total += float(bpd_sum(x))
      count += int(x.shape[0])
    return total / count

  def point(step, train_bpd, train_seconds):
    entry = {'step': step, 'train_bpd': train_bpd,
             'train_seconds': train_seconds}
    for key in ('val', 'test'):
      entry[f'{key}_bpd'] = evaluate(held_out[key]) if key in held_out else None
    return entry

  return train_step, point


def _train(settings, config, seed, train_step, point, train_ds, log):
  """Blocks of `eval_every` steps, each followed by an evaluation, until
  `steps` or until the loss is not finite. Returns `(curve, train_seconds,
  first_block_seconds, diverged)`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  curve = [point(0, None, 0.0)]
  train_seconds, first_block_seconds, diverged = 0.0, None, False
  iterator = iter(train_ds.repeat())
  for block in range(settings.steps // settings.eval_every):
    t0 = time.perf_counter()
    losses = [train_step(next(iterator)) for _ in range(settings.eval_every)]
    block_loss = float(tf.reduce_mean(tf.stack(losses)))
    seconds = time.perf_counter() - t0
    train_seconds += seconds
    if first_block_seconds is None:
      first_block_seconds = seconds
    step = (block + 1) * settings.eval_every
    if not math.isfinite(block_loss):
      diverged = True
      curve.append({'step': step, 'train_bpd': None, 'val_bpd': None,
                    'test_bpd': None, 'train_seconds': train_seconds})
      log(f'{config.name} seed {seed}: the loss became {block_loss} by step '
          f'{step}; stopping this run.')
      break
    curve.append(point(step, block_loss, train_seconds))
    last = curve[-1]
    log(f'{config.name} seed {seed}: step {step}, train {block_loss:.3f}, '
        f"val {_fmt(last['val_bpd'])}, test {_fmt(last['test_bpd'])} "
        f'bits/dim, {train_seconds:.0f} s')
  return curve, train_seconds, first_block_seconds, diverged


def _steps_per_second(settings, steps_run, train_seconds, first_block_seconds,
                      diverged):
  """Training speed after the first block (which includes the compilation),
  or over every block when there was only one (or the run diverged)."""
  if steps_run > settings.eval_every and not diverged:
    return (steps_run - settings.eval_every) / max(
        train_seconds - first_block_seconds, 1e-9)
  return steps_run / max(train_seconds, 1e-9)


def _write_samples(settings, dist, n_bins, path):
  """Samples from the trained flow saved to `path` (uint8, .npy); returns
  `(path, None)`, or `(None, why)` when the samples are not finite."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfp_glow  # pylint: disable=g-import-not-at-top
  from tfp_glow import data  # pylint: disable=g-import-not-at-top
  try:
    x = tfp_glow.sample(dist, settings.num_samples,
                        temperature=settings.temperature,
                        seed=settings.sample_seed)
  except (FloatingPointError, tf.errors.InvalidArgumentError) as e:
    return None, f'no samples: {e}'
  buf = io.BytesIO()
  np.save(buf, data.postprocess(x, n_bins).numpy())
  files.atomic_write(path, buf.getvalue(), 'wb')
  return path, None


def _fmt(value, digits=3):
  return '-' if value is None else f'{value:.{digits}f}'


# --- the grid --------------------------------------------------------------------


def exit_with_parent(parent_pid, interval=2.0):
  """Ends this process (exit status 1) soon after `parent_pid` stops being its
  parent: a worker whose grid process was killed (`kill PID` sends SIGTERM to
  that process only) would otherwise train on, unseen, and write its run into
  `out_dir`, where a new grid started there would take it as its own."""
  def watch():
    while True:
      time.sleep(interval)
      if os.getppid() != parent_pid:
        os._exit(1)  # pylint: disable=protected-access
  threading.Thread(target=watch, name='exit-with-parent', daemon=True).start()


def _worker_init(threads, parent_pid):
  set_threads(threads)
  exit_with_parent(parent_pid)


def _worker_run(settings, config, seed, out_dir, data_dir, download):
  """One run in a worker process; its log lines go to its stdout."""
  try:
    return run_one(settings, config, seed, out_dir, data_dir=data_dir,
                   download=download,
                   log=lambda line: print(line, flush=True))
  finally:
    import keras  # pylint: disable=g-import-not-at-top
    keras.backend.clear_session()
    gc.collect()


def run_grid(settings, configs, seeds, out_dir, *, parallel=1, threads=None,
             data_dir=None, download=False, log=print):
  """Runs every (configuration, seed) not yet finished in `out_dir`.

  Runs go seed by seed (every configuration with seed 0 first), so that a
  grid stopped early still compares every configuration. Then rewrites the
  aggregate files (`results.report`).

  Args:
    settings: `Settings` shared by every run.
    configs: `Config`s.
    seeds: ints; seed k fixes the weights, data order and noise of run k.
    out_dir: where everything goes (see the module docstring).
    parallel: runs at the same time, each in its own process (spawned, with
      `threads // parallel` TensorFlow threads); 1 runs them in this process.
    threads: CPU threads to share (default `os.cpu_count()`); with
      `parallel == 1`, None leaves TensorFlow's default.
    data_dir, download: as `tfp_glow.data.load`.
    log: prints progress.

  Returns:
    `{'ran': [...], 'skipped': [...], 'failed': [...]}` of `(config name,
    seed)` pairs, and `'results'`: what `results.report` wrote.
  """
  configs = list(configs)
  seeds = [int(s) for s in seeds]
  if not configs or not seeds:
    raise ValueError(f'Nothing to run: configs={configs!r}, seeds={seeds!r}.')
  if len({c.name for c in configs}) != len(configs):
    raise ValueError(f'Configurations repeat: {[c.name for c in configs]}.')
  if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
    raise ValueError(f'parallel must be an integer >= 1, got {parallel!r}.')
  os.makedirs(out_dir, exist_ok=True)
  check_settings(out_dir, settings)
  todo, skipped = [], []
  for seed in seeds:
    for config in configs:
      if os.path.exists(run_path(out_dir, config, seed)):
        skipped.append((config.name, seed))
      else:
        todo.append((config, seed))
  if skipped:
    log(f'Skipping {len(skipped)} finished run(s) in {out_dir}: '
        + ', '.join(f'{n} seed {s}' for n, s in skipped))
  log(f'{len(todo)} run(s) to do'
      + (f', {parallel} at a time' if parallel > 1 and todo else '') + '.')
  ran, failed = [], []
  t0 = time.perf_counter()
  if parallel == 1:
    for i, (config, seed) in enumerate(todo):
      log(f'[{i + 1}/{len(todo)}] {config.name} seed {seed}')
      try:
        run_one(settings, config, seed, out_dir, data_dir=data_dir,
                download=download, log=log)
        ran.append((config.name, seed))
      except Exception:  # pylint: disable=broad-except
        log(f'{config.name} seed {seed} FAILED:\n{traceback.format_exc()}')
        failed.append((config.name, seed))
      finally:
        import keras  # pylint: disable=g-import-not-at-top
        keras.backend.clear_session()
        gc.collect()
  elif todo:
    share = max(1, (threads or os.cpu_count() or 1) // parallel)
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=parallel, mp_context=context, initializer=_worker_init,
        initargs=(share, os.getpid())) as pool:
      futures = {pool.submit(_worker_run, settings, config, seed, out_dir,
                             data_dir, download): (config.name, seed)
                 for config, seed in todo}
      for future in concurrent.futures.as_completed(futures):
        name, seed = futures[future]
        try:
          future.result()
          ran.append((name, seed))
          log(f'[{len(ran) + len(failed)}/{len(todo)}] finished {name} seed '
              f'{seed}')
        except Exception:  # pylint: disable=broad-except
          log(f'{name} seed {seed} FAILED:\n{traceback.format_exc()}')
          failed.append((name, seed))
  grid_seconds = time.perf_counter() - t0
  results = results_lib.report(out_dir, order=[c.name for c in configs])
  if todo:
    log(f'Ran {len(ran)} run(s) in {grid_seconds:.0f} s'
        + (f'; {len(failed)} failed' if failed else '') + '.')
  return {'ran': ran, 'skipped': skipped, 'failed': failed,
          'results': results, 'grid_seconds': grid_seconds}
