"""Time-to-quality: held-out bits/dim against minutes of training, per library.

The library half of `tfp_glow.programs.curve` (`bin/curve.py`): what one
run of a peer does, how a finished run is recognised, and the table and
plot of the curves. Each implementation trains for the same wall-clock
budget, one after the other, in a process of its own:

* tfp_glow through its training program (`python -m
  tfp_glow.programs.train --time_limit=...`, exactly what a user runs); its
  points come from the run's `history.json` (`callbacks.History`), or, for
  a training program without that callback, from its TensorBoard logs;
* TFP's `tfb.Glow` and the PyTorch port through `train_peer` here: the
  adapters of `models` / `torch_peer`, Adam at the same learning rate with
  the same linear warm-up (`WarmupSchedule`, flat after it: the peers'
  users' recipe), the same batch and architecture, minimising the mean
  bits/dim as tfp_glow does, no Polyak averaging.

The same data for all three: the training batches of `data.load(dataset,
'train', shuffle=True, seed=seed)`; held-out images from the unshuffled
pipeline, whose dequantisation noise is a function of (seed, example) alone
(see `tfp_glow.data`): validation with seed `seed + 1` (what the training
program validates on), test with `eval_seed` (what it reports). The peers
receive these float arrays (NCHW for torch), not their own copies.

The clock of a run starts when its process starts training (before data
loading and model building: the clock `--time_limit` counts from), and the
budget is wall-clock: evaluations are inside it for all three, after every
epoch (or every `eval_every_steps` steps). The step that crosses the budget
is the last; its weights are evaluated, as the training program does. A
point's time is when its weights existed (the end of the steps before the
evaluation). The test bits/dim is that of the best-validation weights.
"""

import dataclasses
import json
import math
import os
import time

import numpy as np

__all__ = ['IMPLEMENTATIONS', 'Settings', 'result_path', 'load_finished',
           'write_result', 'history_points', 'tensorboard_points',
           'train_peer', 'minute_marks', 'value_at', 'render_table',
           'plot', 'RESULT_NAME']

IMPLEMENTATIONS = ('tfp_glow', 'tfb', 'torch')
RESULT_NAME = 'curve_result.json'
_LABELS = {'tfp_glow': 'tfp_glow (bin/train.py)', 'tfb': 'tfb.Glow (TFP)',
           'torch': 'PyTorch port (rosinality)'}
_COLORS = {'tfp_glow': 'tab:blue', 'tfb': 'tab:orange', 'torch': 'tab:red'}


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every implementation of one curve shares (and a resumed run must
  agree on). `train_args` are extra flags of tfp_glow's training program,
  `tfb_jit_compile` and `permutation` the peers' own options."""
  dataset: str = 'photos'
  image_size: int = None
  n_bits: int = None
  levels: int = 3
  steps_per_level: int = 8
  hidden_width: int = 128
  batch_size: int = 32
  budget_minutes: float = 30.0
  learning_rate: float = 1e-3
  warmup_steps: int = 200
  eval_every_steps: int = None
  seed: int = 0
  eval_seed: int = 0
  permutation: str = 'conv'
  train_args: tuple = ()
  tfb_jit_compile: bool = False

  def identity(self, implementation):
    """The settings a finished run of `implementation` must match (the
    other implementations' own options do not concern it)."""
    d = dataclasses.asdict(self)
    d['train_args'] = list(self.train_args)
    if implementation != 'tfp_glow':
      del d['train_args']
    if implementation != 'tfb':
      del d['tfb_jit_compile']
    return d

  def load_kwargs(self):
    return dict(n_bits=self.n_bits, image_size=self.image_size)


def result_path(out_dir, implementation):
  return os.path.join(out_dir, implementation, RESULT_NAME)


def load_finished(out_dir, implementation, settings):
  """The result of a finished run of `implementation` in `out_dir`, or None.

  Raises:
    ValueError: the finished run was made with other settings (naming each
      difference): mixing them in one curve would compare different runs.
  """
  path = result_path(out_dir, implementation)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  want = settings.identity(implementation)
  have = result.get('settings', {})
  diff = [f'{k}={have.get(k)!r} (now {v!r})' for k, v in want.items()
          if have.get(k) != v]
  if diff:
    raise ValueError(
        f'{path} is a finished {implementation} run with other settings: '
        f"{', '.join(diff)}. Use another --out_dir, or delete "
        f'{os.path.dirname(path)} to run it again.')
  return result


def write_result(out_dir, implementation, result):
  from tfp_glow.keras import callbacks  # pylint: disable=g-import-not-at-top
  callbacks.write_json(result_path(out_dir, implementation), result)


# --- tfp_glow's points, from its run directory --------------------------------


def history_points(model_dir):
  """Points from the training program's `history.json`, or None without it."""
  path = os.path.join(model_dir, 'history.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    epochs = json.load(f)['epochs']
  return [dict(step=e['step'], elapsed_s=e['elapsed_s'],
               eval_s=e.get('eval_s'), val_bpd=e.get('val_bpd'),
               train_bpd=e.get('bpd'), learning_rate=e.get('learning_rate'))
          for e in epochs]


def tensorboard_points(model_dir, launch_time, steps_per_epoch, steps_run):
  """Points from the TensorBoard logs (for a training program that writes no
  history.json): each epoch's validation bits/dim with the wall time of its
  event, counted from `launch_time` (a `time.time()` before the process
  started, so start-up is inside: a few seconds late against the peers'
  clocks), and its step (`steps_per_epoch` per epoch, the last `steps_run`).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  folder = os.path.join(model_dir, 'logs', 'validation')
  found = {}
  for name in sorted(tf.io.gfile.listdir(folder)) if tf.io.gfile.exists(
      folder) else []:
    if 'tfevents' not in name:
      continue
    for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag == 'epoch_bpd':
          found[int(event.step)] = (event.wall_time,
                                    float(tf.make_ndarray(value.tensor)))
  points = []
  for epoch in sorted(found):
    wall, bpd = found[epoch]
    points.append(dict(step=min((epoch + 1) * steps_per_epoch, steps_run),
                       elapsed_s=wall - launch_time, val_bpd=bpd))
  if points:
    points[-1]['step'] = steps_run
  return points


# --- a peer's run ---------------------------------------------------------------


def _arrays(dataset, split, seed, settings):
  """Every image of an unshuffled split, dequantised with `seed`, as one
  float32 NHWC array (the training program's evaluation inputs)."""
  from tfp_glow import data  # pylint: disable=g-import-not-at-top
  ds, info = data.load(dataset, split, batch_size=256, shuffle=False,
                       seed=seed, **settings.load_kwargs())
  return np.concatenate([np.asarray(x) for x in ds]), info


class _TfbTrainer:
  """tfb.Glow: the benchmark's adapter, a compiled bits/dim training step."""

  def __init__(self, cfg, x_first, settings, schedule, n_bins, threads):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
    import tfp_glow  # pylint: disable=g-import-not-at-top
    from tfp_glow.benchmark import models  # pylint: disable=g-import-not-at-top
    del threads  # TensorFlow's are set by the program before it starts
    self.model = models.build('tfb', cfg, x_first, seed=settings.seed,
                              learning_rate=schedule)
    dist, variables = self.model.dist, self.model.variables
    optimizer = self.model.optimizer
    shape = cfg.image_shape

    def step(x):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tfp_glow.bits_per_dim(dist.log_prob(x), shape,
                                                    n_bins))
      grads = tape.gradient(loss, variables)
      optimizer.apply_gradients(zip(grads, variables))
      return loss

    # One trace per batch shape (full, and a split's partial last batch):
    # tfb.Glow's Reshape fails on a dynamic batch (int32/int64 shapes), so
    # no reduce_retracing.
    self._step = tf.function(step, jit_compile=settings.tfb_jit_compile)
    self._log_prob = tf.function(dist.log_prob)
    self.parameters = self.model.parameters
    self.version = f'tensorflow-probability {tfp.__version__}'
    self.threads = None

  def step(self, x):
    return float(self._step(x))

  def log_prob(self, x):
    return self._log_prob(x).numpy()

  def state(self):
    return [v.numpy() for v in self.model.variables]

  def restore(self, state):
    for v, value in zip(self.model.variables, state):
      v.assign(value)


class _TorchTrainer:
  """The PyTorch port: its adapter; the loss is the mean bits/dim by
  tfp_glow's formula (`torch_peer.bpd_affine`), the learning rate of each
  step from the same `WarmupSchedule` as the others."""

  def __init__(self, cfg, x_first, settings, schedule, n_bins, threads,
               glow_dir=None):
    from tfp_glow.benchmark import torch_peer  # pylint: disable=g-import-not-at-top
    self.torch = torch_peer.import_torch()
    self.peer = torch_peer
    self.model = torch_peer.TorchGlowModel(
        cfg, x_first, seed=settings.seed, learning_rate=settings.learning_rate,
        glow_dir=glow_dir, threads=threads, permutation=settings.permutation)
    self.schedule = schedule
    self.a, self.b = torch_peer.bpd_affine(cfg.image_shape, n_bins)
    self.steps = 0
    self.parameters = self.model.parameters
    self.version = f'torch {self.torch.__version__}'
    self.threads = self.model.threads

  def step(self, x):
    lr = float(self.schedule(self.steps))
    for group in self.model.optimizer.param_groups:
      group['lr'] = lr
    for p in self.model.variables:
      p.grad = None
    lp = self.peer.log_prob(self.model.glow, self.peer.to_torch(x))
    loss = self.a + self.b * lp.mean()
    loss.backward()
    self.model.optimizer.step()
    self.steps += 1
    return float(loss.detach())

  def log_prob(self, x):
    with self.torch.no_grad():
      return self.peer.log_prob(self.model.glow,
                                self.peer.to_torch(x)).double().numpy()

  def state(self):
    return self.model.state()

  def restore(self, state):
    self.model.restore(state)


def _mean_bpd(trainer, images, image_shape, n_bins, batch=256):
  """Mean bits/dim over `images` (per image by tfp_glow's formula)."""
  import tfp_glow  # pylint: disable=g-import-not-at-top
  values = []
  for i in range(0, len(images), batch):
    lp = trainer.log_prob(images[i:i + batch])
    values.append(np.asarray(tfp_glow.bits_per_dim(
        np.asarray(lp, np.float64), image_shape, n_bins)))
  return float(np.mean(np.concatenate(values)))


def train_peer(implementation, settings, log=print, glow_dir=None,
               threads=None):
  """Trains one peer ('tfb' or 'torch') for the budget; returns its result.

  The clock starts here (before data and model), as the training
  program's. Returns a dict: `points` (one per evaluation: step,
  elapsed_s, eval_s, val_bpd, train_bpd: the mean training loss since the
  previous point), `test_bpd` (best-validation weights), `best`, steps and
  whether the budget or a NaN/Inf loss stopped it.
  """
  start = time.monotonic()
  from tfp_glow import data  # pylint: disable=g-import-not-at-top
  from tfp_glow.benchmark import config as config_lib  # pylint: disable=g-import-not-at-top
  from tfp_glow.keras import model as model_lib  # pylint: disable=g-import-not-at-top
  s = settings
  if implementation not in ('tfb', 'torch'):
    raise ValueError(f"A peer is 'tfb' or 'torch', got {implementation!r}.")
  budget_s = 60.0 * s.budget_minutes
  train_ds, info = data.load(s.dataset, 'train', batch_size=s.batch_size,
                             shuffle=True, seed=s.seed, **s.load_kwargs())
  val_x, _ = _arrays(s.dataset, 'validation', s.seed + 1, s)
  test_split = ('validation' if s.dataset.startswith(data.FOLDER_PREFIX)
                else 'test')
  h, w, c = info.image_shape
  if h != w:
    raise ValueError(f'The peers take square images, got {h}x{w}.')
  cfg = config_lib.Config(image_size=h, channels=c, levels=s.levels,
                          steps_per_level=s.steps_per_level,
                          hidden_width=s.hidden_width,
                          batch_size=s.batch_size)
  schedule = model_lib.WarmupSchedule(s.learning_rate, s.warmup_steps)
  steps_per_epoch = s.eval_every_steps or math.ceil(
      info.num_examples / s.batch_size)
  # Repeated: one pass over the split is ceil(N / batch) batches (the last
  # one partial), reshuffled with fresh noise each pass, as the training
  # program's epochs.
  batches = iter(train_ds.repeat())
  first = next(batches)
  cls = _TfbTrainer if implementation == 'tfb' else _TorchTrainer
  kwargs = dict(glow_dir=glow_dir) if implementation == 'torch' else {}
  trainer = cls(cfg, first, s, schedule, info.n_bins, threads, **kwargs)
  log(f'{implementation}: {trainer.parameters:,} parameters, '
      f'{cfg.label}, batch {s.batch_size}, {steps_per_epoch} steps between '
      f'evaluations, budget {s.budget_minutes:g} min ({trainer.version})')

  points, best, best_state, best_point = [], math.inf, None, None
  steps, eval_s, stopped, nan, loss = 0, 0.0, False, False, None
  pending = first  # the batch that initialised ActNorm is trained on first
  while not (stopped or nan):
    losses = []
    for _ in range(steps_per_epoch):
      x, pending = (pending if pending is not None else next(batches)), None
      loss = trainer.step(x)
      steps += 1
      if not math.isfinite(loss):
        nan = True
        break
      losses.append(loss)
      if time.monotonic() - start >= budget_s:
        stopped = True
        break
    if nan:
      log(f'{implementation}: the loss became {loss} at step {steps}; '
          'stopped (the best weights so far are kept).')
      break
    weights_at = time.monotonic() - start
    t0 = time.monotonic()
    val = _mean_bpd(trainer, val_x, info.image_shape, info.n_bins)
    eval_s += time.monotonic() - t0
    points.append(dict(step=steps, elapsed_s=weights_at, eval_s=eval_s,
                       val_bpd=val, train_bpd=float(np.mean(losses))
                       if losses else None))
    log(f'{implementation}: {weights_at / 60:.2f} min, step {steps}, '
        f'train {points[-1]["train_bpd"]:.4f}, val {val:.4f} bits/dim')
    if math.isfinite(val) and val < best:
      best, best_state = val, trainer.state()
      best_point = dict(points[-1])

  result = dict(implementation=implementation, points=points,
                steps_run=steps, stopped_by_budget=stopped,
                terminated_on_nan=nan, parameters=trainer.parameters,
                library=trainer.version, threads=trainer.threads,
                training_s=time.monotonic() - start, test_split=test_split)
  if best_state is None:
    result.update(test_bpd=None, best=None)
    return result
  trainer.restore(best_state)
  test_x, _ = _arrays(s.dataset, test_split, s.eval_seed, s)
  result.update(test_bpd=_mean_bpd(trainer, test_x, info.image_shape,
                                   info.n_bins),
                best=best_point)
  log(f'{implementation}: test bits/dim ({test_split}, best validation '
      f'weights from step {best_point["step"]}): {result["test_bpd"]:.4f}')
  return result


# --- table and plot ---------------------------------------------------------------


def minute_marks(budget_minutes, every):
  """every, 2 every, ... up to the budget (the budget itself when shorter)."""
  if not every > 0:
    raise ValueError(f'every must be > 0 minutes, got {every}.')
  marks = [every * k for k in range(1, int(budget_minutes / every + 1e-9) + 1)]
  return marks or [budget_minutes]


def value_at(points, minutes):
  """The held-out bits/dim of the last evaluation whose weights existed by
  `minutes` (None before the first)."""
  value = None
  for p in points:
    if p['elapsed_s'] <= 60.0 * minutes + 1e-9 and p.get('val_bpd') is not None:
      value = p['val_bpd']
  return value


def _fmt(v, spec='.4f'):
  return '-' if v is None else format(v, spec)


def render_table(runs, settings, every_minutes):
  """Markdown: bits/dim at each minute mark, at the end, and on test."""
  marks = minute_marks(settings.budget_minutes, every_minutes)
  lines = [
      f'Held-out ({settings.dataset} validation) bits/dim against minutes '
      f'of training (the last evaluation whose weights existed by then), '
      f'budget {settings.budget_minutes:g} min each, one after the other; '
      f'L={settings.levels}, K={settings.steps_per_level}, width '
      f'{settings.hidden_width}, batch {settings.batch_size}; test bits/dim '
      f'of the best-validation weights.', '',
      '| implementation | ' + ' | '.join(f'{m:g} min' for m in marks)
      + ' | end | steps | test bits/dim |',
      '|---|' + '---:|' * (len(marks) + 3)]
  for impl in IMPLEMENTATIONS:
    run = runs.get(impl)
    if run is None:
      continue
    points = run.get('points') or []
    cells = [_fmt(value_at(points, m)) for m in marks]
    end = points[-1]['val_bpd'] if points else None
    lines.append(f"| {_LABELS[impl]} | " + ' | '.join(cells)
                 + f" | {_fmt(end)} | {run.get('steps_run', '-')} | "
                 f"{_fmt(run.get('test_bpd'))} |")
  return '\n'.join(lines)


def plot(runs, settings, path):
  """Held-out bits/dim against minutes, one line per implementation (PNG,
  matplotlib's Agg backend), written atomically."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  shown = []
  for impl in IMPLEMENTATIONS:
    run = runs.get(impl)
    if not run or not run.get('points'):
      continue
    pts = [p for p in run['points'] if p.get('val_bpd') is not None]
    x = [p['elapsed_s'] / 60.0 for p in pts]
    y = [p['val_bpd'] for p in pts]
    # The first evaluations of a fresh flow sit far above the rest: the
    # limits show each curve from a tenth of its points on.
    shown += [v for v in y[len(y) // 10:] if math.isfinite(v)]
    label = _LABELS[impl]
    if run.get('test_bpd') is not None:
      label += f" (test {run['test_bpd']:.3f})"
    ax.plot(x, y, marker='o', markersize=3, color=_COLORS[impl], label=label)
  if shown:
    lo, hi = min(shown), max(shown)
    pad = 0.05 * max(hi - lo, 1e-3)
    ax.set_ylim(lo - pad, hi + pad)
  ax.axvline(settings.budget_minutes, color='gray', linestyle=':',
             linewidth=1)
  ax.set_xlabel('minutes of training (wall clock, evaluations included; '
                'dotted: the budget)')
  ax.set_ylabel('validation bits/dim')
  ax.set_title(f'{settings.dataset}: L={settings.levels}, '
               f'K={settings.steps_per_level}, width {settings.hidden_width}, '
               f'batch {settings.batch_size}, {settings.budget_minutes:g} min')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  tmp = f'{path}.tmp{os.getpid()}.png'
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)
