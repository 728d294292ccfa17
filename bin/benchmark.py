r"""Benchmark: tfp_glow against TFP's `tfb.Glow`, and the machine's own limit.

Builds the same Glow architecture in `tfp_glow` and in TFP's `tfb.Glow`
(`GlowDefaultNetwork` at the same hidden width, `GlowDefaultExitNetwork` priors)
and times, in one process, interleaved, the median of `--repeats` calls after
`--warmup` calls, with the first call (trace + compile + run) reported
separately:

  log_prob   `dist.log_prob(x)` of a batch of images;
  train      one training step: gradient of the mean negative log-likelihood
             and a Keras Adam update, inside the compiled function;
  sample     `dist.sample(batch)` (noise drawn inside the function).

Each library runs in every mode of `--modes` (`graph`: `tf.function`, TF's
default oneDNN kernels; `xla`: `tf.function(jit_compile=True)`); the table
keeps each library's best mode per operation and says which won.

The limit of the machine, measured in the same run: the model's own
convolutions (coupling networks, invertible 1x1 convolutions, split priors:
every convolution of one pass, each with its own kernel) as plain
`tf.nn.conv2d` in one function, float32 under oneDNN (graph) and XLA, and
bfloat16 under oneDNN, timed in the same interleaved rounds as the models, so
that both see the same machine load. FLOPs are counted from the architecture:
2 x multiply-adds of every convolution of one pass, elementwise work not
counted; a training step counts 3 x the forward FLOPs (forward, gradient with
respect to the inputs, gradient with respect to the weights); sampling counts
the same as `log_prob`. The attainable throughput is the convolution mix's
FLOPs over its time, the better of float32 graph and XLA; each operation's
achieved FLOP/s is reported as a fraction of it. Before the rounds, each
distinct convolution shape is also timed alone (JSON `conv_roofline`, e.g.
the 1x1 400->400 layer at 16x16).

Also reported: parameter counts; the number of Conv2D ops in each library's
`log_prob` and `sample` graphs (TFP's RealNVP evaluates every coupling network
twice per `log_prob`); the peak resident memory (RSS) of a process that builds
the model and runs the training step, measured in a fresh subprocess per
library; and, with `--mixed_precision`, tfp_glow's mixed-precision option
(`tfp_glow_bf16`: `glow_distribution(..., compute_dtype=tf.bfloat16)`, the
coupling networks' convolutions in bfloat16; ActNorm steps, log-dets,
invertible 1x1 convolutions and priors in float32).

Usage:

  python bin/benchmark.py                    # CIFAR-shaped 32x32x3, L=3, K=8,
                                             # width 400, batch 16
  python bin/benchmark.py --preset=paper     # the paper's K=32, width 512
  python bin/benchmark.py --preset=digits    # 8x8x1 digits configuration
  python bin/benchmark.py --quick            # a tiny smoke run (seconds)
  python bin/benchmark.py --json_out=/tmp/bench.json --markdown_out=/tmp/b.md

Explicit flags override the preset's values. The PyTorch port is not run
here (see docs/BENCHMARKS.md for its reference figures).
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

# Run from a checkout (`python bin/benchmark.py`): the repository's package first.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(1, _REPO_ROOT)

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

PRESETS = {
    # The default: CIFAR-shaped, K=8, width 400, batch 16.
    'cifar': dict(image_size=32, channels=3, levels=3, steps_per_level=8,
                  hidden_width=400, batch_size=16),
    # Kingma & Dhariwal's CIFAR-10 model: K=32, width 512.
    'paper': dict(image_size=32, channels=3, levels=3, steps_per_level=32,
                  hidden_width=512, batch_size=16),
    # The embedded 8x8 digits (17 grey levels), as bin/train.py trains them.
    'digits': dict(image_size=8, channels=1, levels=2, steps_per_level=8,
                   hidden_width=128, batch_size=64),
    # A smoke run: seconds, for the test.
    'quick': dict(image_size=8, channels=1, levels=2, steps_per_level=2,
                  hidden_width=16, batch_size=4),
}

FLAGS = flags.FLAGS
flags.DEFINE_enum('preset', 'cifar', list(PRESETS),
                  'Architecture preset; explicit flags below override it.')
flags.DEFINE_integer('image_size', None, 'Image height = width (preset).')
flags.DEFINE_integer('channels', None, 'Image channels (preset).')
flags.DEFINE_integer('levels', None, 'L, levels of the multi-scale flow.')
flags.DEFINE_integer('steps_per_level', None, 'K, steps of flow per level.')
flags.DEFINE_integer('hidden_width', None,
                     'Hidden width of the coupling networks.')
flags.DEFINE_integer('batch_size', None, 'Batch size of every operation.')
flags.DEFINE_integer('repeats', 7, 'Timed calls per (library, mode, op); the '
                     'median is reported.')
flags.DEFINE_integer('warmup', 2, 'Untimed calls after the first (compile) '
                     'call.')
flags.DEFINE_list('modes', ['graph', 'xla'],
                  'Execution modes: graph (tf.function) and/or xla '
                  '(tf.function(jit_compile=True)).')
flags.DEFINE_list('ops', ['log_prob', 'train', 'sample'], 'Operations timed.')
flags.DEFINE_list('peers', ['tfb'], "Peers timed against tfp_glow: 'tfb' "
                  "(tfp.bijectors.Glow), or empty.")
flags.DEFINE_bool('mixed_precision', True, 'Also time tfp_glow with '
                  'compute_dtype=bfloat16 (tfp_glow_bf16).')
flags.DEFINE_bool('conv_roofline', True, 'Before the rounds, time plain '
                  "tf.nn.conv2d on each distinct convolution shape alone.")
flags.DEFINE_integer('conv_repeats', 15, 'Timed calls per convolution shape.')
flags.DEFINE_bool('rss', True, 'Measure the peak RSS of the training step in '
                  'a fresh subprocess per library.')
flags.DEFINE_list('rss_libraries', [], 'Libraries whose RSS is measured '
                  '(default: all; with --quick: tfp_glow).')
flags.DEFINE_float('learning_rate', 1e-4, 'Adam learning rate of the step.')
flags.DEFINE_integer('seed', 0, 'Seed of weights and data.')
flags.DEFINE_bool('quick', False, 'Tiny smoke run (for the test): '
                  '--preset=quick, --modes=graph, 2 repeats, 1 warm-up, 3 '
                  'convolution repeats, unless given explicitly.')
flags.DEFINE_string('json_out', None, 'Write all results as JSON here.')
flags.DEFINE_string('markdown_out', None, 'Write the table as Markdown here.')
# Internal: the RSS child process.
flags.DEFINE_string('rss_child', None, 'Internal: measure the training '
                    "step's peak RSS of this library and exit.")
flags.DEFINE_string('rss_mode', 'xla', 'Internal: mode of --rss_child.')

OPS = ('log_prob', 'train', 'sample')
MODES = ('graph', 'xla')
LIBRARIES = ('tfp_glow', 'tfp_glow_bf16', 'tfb')


def _config():
  """The architecture: the preset's values overridden by explicit flags."""
  preset = 'quick' if FLAGS.quick and not FLAGS['preset'].present else (
      FLAGS.preset)
  cfg = dict(PRESETS[preset])
  for key in cfg:
    if FLAGS[key].value is not None:
      cfg[key] = FLAGS[key].value
  cfg['preset'] = preset
  return cfg


def _rss_mb():
  """Peak resident memory of this process, MB.

  VmHWM (Linux) rather than getrusage's ru_maxrss: a child process inherits
  its parent's ru_maxrss across fork + exec, which would hide its own peak.
  """
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- FLOPs from the architecture ------------------------------------------------


def conv_shapes(cfg):
  """The convolutions of one log_prob pass: a list of dicts (per image).

  Each: h, w, cin, cout, k (kernel size), count (how many per pass), what.
  """
  h = w = cfg['image_size']
  c = cfg['channels']
  width = cfg['hidden_width']
  k_steps = cfg['steps_per_level']
  shapes = []
  for level in range(cfg['levels']):
    h, w, c = h // 2, w // 2, c * 4
    half = c // 2
    for what, k, cin, cout in [('coupling conv1 3x3', 3, half, width),
                               ('coupling conv2 1x1', 1, width, width),
                               ('coupling zero conv 3x3', 3, width, c),
                               ('invertible 1x1', 1, c, c)]:
      shapes.append(dict(level=level, what=what, h=h, w=w, k=k, cin=cin,
                         cout=cout, count=k_steps))
    if level < cfg['levels'] - 1:
      exit_c = c // 2
      keep = c - exit_c
      shapes.append(dict(level=level, what='split prior 3x3', h=h, w=w, k=3,
                         cin=keep, cout=2 * exit_c, count=1))
      c = keep
  for s in shapes:
    s['flops'] = 2 * s['h'] * s['w'] * s['k'] * s['k'] * s['cin'] * s['cout']
  return shapes


def forward_flops_per_image(cfg):
  return sum(s['flops'] * s['count'] for s in conv_shapes(cfg))


OP_FLOP_FACTOR = {'log_prob': 1, 'train': 3, 'sample': 1}


# --- the models ------------------------------------------------------------------


class Model:
  """One library's model: the distribution and its three operations."""

  def __init__(self, library, cfg, x_init):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import keras  # pylint: disable=g-import-not-at-top
    self.library = library
    self.cfg = cfg
    self.batch = cfg['batch_size']
    shape = (cfg['image_size'], cfg['image_size'], cfg['channels'])
    self.note = ''
    if library in ('tfp_glow', 'tfp_glow_bf16'):
      import tfp_glow  # pylint: disable=g-import-not-at-top
      self.dist = tfp_glow.glow_distribution(
          shape, levels=cfg['levels'], steps_per_level=cfg['steps_per_level'],
          hidden_width=cfg['hidden_width'], seed=FLAGS.seed,
          compute_dtype=tf.bfloat16 if library == 'tfp_glow_bf16' else None)
      tfp_glow.initialize(self.dist, x_init)
      self.variables = list(self.dist.trainable_variables)
      self._sample = lambda n, seed: tfp_glow.sample(self.dist, n, seed=seed)
      self.tracked_variables = len(self.variables)
    elif library == 'tfb':
      import functools  # pylint: disable=g-import-not-at-top
      import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
      tfb, tfd = tfp.bijectors, tfp.distributions
      tf.random.set_seed(FLAGS.seed)
      glow = tfb.Glow(
          output_shape=shape, num_glow_blocks=cfg['levels'],
          num_steps_per_block=cfg['steps_per_level'],
          coupling_bijector_fn=functools.partial(
              tfb.GlowDefaultNetwork, num_hidden=cfg['hidden_width']),
          exit_bijector_fn=tfb.GlowDefaultExitNetwork, seed=FLAGS.seed)
      size = int(glow.inverse_event_shape(shape).num_elements())
      self.dist = tfd.TransformedDistribution(
          tfd.Sample(tfd.Normal(0., 1.), [size]), glow)
      # The first (eager) log_prob builds the Keras layers and runs TFP's
      # ActNorm data-dependent init (a tf.cond on its own variable).
      with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(self.dist.log_prob(x_init[:self.batch]))
      del loss
      self.tracked_variables = len(self.dist.trainable_variables)
      # Collect the variables from the tape: robust whether or not the Keras
      # layers' variables are visible to tf.Module tracking.
      self.variables = [v for v in tape.watched_variables() if v.trainable]
      if self.tracked_variables != len(self.variables):
        self.note = (f'trainable_variables reports {self.tracked_variables} '
                     f'of the {len(self.variables)} variables the tape sees')
      self._sample = lambda n, seed: self.dist.sample(n, seed=seed)
    else:
      raise ValueError(f'Unknown library {library!r}.')
    self.parameters = int(sum(int(v.shape.num_elements())
                              for v in self.variables))
    self.optimizer = keras.optimizers.Adam(FLAGS.learning_rate)
    self.optimizer.build(self.variables)

  def log_prob(self, x):
    return self.dist.log_prob(x)

  def train(self, x):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(self.dist.log_prob(x))
    grads = tape.gradient(loss, self.variables)
    self.optimizer.apply_gradients(zip(grads, self.variables))
    return loss

  def sample(self, seed):
    return self._sample(self.batch, seed)

  def function(self, op, mode):
    """A compiled function of the operation and its arguments."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    fn = tf.function(getattr(self, op), jit_compile=(mode == 'xla'),
                     reduce_retracing=True)
    return fn


# --- timing ------------------------------------------------------------------------


def _sync(out):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for t in tf.nest.flatten(out):
    t.numpy()


def _timed(fn, args):
  start = time.perf_counter()
  _sync(fn(*args))
  return time.perf_counter() - start


def count_ops(concrete, types):
  """Ops of the given types in a concrete function's graph and its library."""
  counts = dict.fromkeys(types, 0)
  for op in concrete.graph.get_operations():
    if op.type in counts:
      counts[op.type] += 1
  graph_def = concrete.graph.as_graph_def()
  for fdef in graph_def.library.function:
    for node in fdef.node_def:
      if node.op in counts:
        counts[node.op] += 1
  return counts


def measure_conv_roofline(cfg, modes, repeats):
  """Plain tf.nn.conv2d on each distinct convolution shape of the model.

  Returns (per-shape rows, summary): GFLOP/s per shape and kind, and the
  FLOP-weighted attainable throughput of the model's convolution mix.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  batch = cfg['batch_size']
  kinds = [('f32_' + m, tf.float32, m) for m in modes]
  if 'graph' in modes:
    kinds.append(('bf16_graph', tf.bfloat16, 'graph'))
  rng = np.random.default_rng(0)
  rows = []
  for s in conv_shapes(cfg):
    row = dict(s)
    for name, dtype, mode in kinds:
      x = tf.constant(rng.standard_normal(
          [batch, s['h'], s['w'], s['cin']]), dtype)
      kernel = tf.Variable(tf.constant(rng.standard_normal(
          [s['k'], s['k'], s['cin'], s['cout']]) * 0.05, dtype))
      fn = tf.function(lambda x, kernel=kernel: tf.nn.conv2d(
          x, kernel, 1, 'SAME'), jit_compile=(mode == 'xla'))
      for _ in range(3):
        _sync(fn(x))
      # Several calls per sample: the tiny shapes take microseconds.
      inner = max(1, int(2e-3 / max(_timed(fn, (x,)), 1e-6)))
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
          out = fn(x)
        _sync(out)
        times.append((time.perf_counter() - start) / inner)
      t = statistics.median(times)
      row[name + '_ms'] = t * 1e3
      row[name + '_gflops'] = s['flops'] * batch / t / 1e9
    rows.append(row)
  summary = {}
  total = sum(r['flops'] * r['count'] for r in rows) * batch
  for name, _, _ in kinds:
    seconds = sum(r[name + '_ms'] * r['count'] for r in rows) / 1e3
    summary[name + '_gflops'] = total / seconds / 1e9
  f32 = ['f32_' + m for m in modes]
  best_seconds = sum(min(r[k + '_ms'] for k in f32) * r['count']
                     for r in rows) / 1e3
  summary['attainable_f32_gflops'] = total / best_seconds / 1e9
  summary['model_conv_ms_f32'] = best_seconds * 1e3
  if 'bf16_graph' in dict((k[0], 1) for k in kinds):
    summary['model_conv_ms_bf16'] = sum(
        r['bf16_graph_ms'] * r['count'] for r in rows)
  return rows, summary


def conv_mix_function(cfg, mode, dtype_name):
  """One function running every convolution of one log_prob pass, plainly.

  Each convolution of the model (shape x count) is one `tf.nn.conv2d` with its
  own kernel (distinct kernels: nothing for the optimiser to merge) on an
  input of the model's shape; the outputs are returned (not reduced: a
  reduction would add work, and XLA could narrow a sliced convolution).
  Timed in the same interleaved rounds as the models, so that its throughput
  and theirs see the same machine load.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dtype = tf.as_dtype(dtype_name)
  rng = np.random.default_rng(1)
  batch = cfg['batch_size']
  inputs, kernels = [], []
  for s in conv_shapes(cfg):
    x = tf.constant(rng.standard_normal([batch, s['h'], s['w'], s['cin']]),
                    dtype)
    for _ in range(s['count']):
      inputs.append(x)
      kernels.append(tf.Variable(tf.constant(rng.standard_normal(
          [s['k'], s['k'], s['cin'], s['cout']]) * 0.05, dtype)))

  def mix():
    return [tf.nn.conv2d(x, k, 1, 'SAME') for x, k in zip(inputs, kernels)]

  fn = tf.function(mix, jit_compile=(mode == 'xla'))
  fn.kernels = kernels  # keep the variables alive
  return fn


# --- RSS child -------------------------------------------------------------------


def rss_child(library, mode, cfg):
  """Builds one library's model, runs its training step, prints peak RSS."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  before = _rss_mb()
  x = _images(cfg, np)
  model = Model(library, cfg, x)
  built = _rss_mb()
  fn = model.function('train', mode)
  for _ in range(3):
    _sync(fn(tf.constant(x[:cfg['batch_size']])))
  print('RSS_JSON ' + json.dumps(dict(
      library=library, mode=mode, rss_start_mb=before, rss_built_mb=built,
      peak_rss_mb=_rss_mb())))


def _run_rss_child(library, mode, cfg):
  cmd = [sys.executable, os.path.abspath(__file__), f'--rss_child={library}',
         f'--rss_mode={mode}', f'--seed={FLAGS.seed}']
  for key in ('image_size', 'channels', 'levels', 'steps_per_level',
              'hidden_width', 'batch_size'):
    cmd.append(f'--{key}={cfg[key]}')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        check=False)
  for line in proc.stdout.splitlines():
    if line.startswith('RSS_JSON '):
      return json.loads(line[len('RSS_JSON '):])
  sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
  return dict(library=library, mode=mode, error=f'exit {proc.returncode}')


def _images(cfg, np):
  rng = np.random.default_rng(FLAGS.seed)
  # Enough images for the data-dependent init of tfp_glow (OpenAI uses 256).
  n = max(cfg['batch_size'], min(256, 4 * cfg['batch_size']))
  s = cfg['image_size']
  return rng.uniform(-0.5, 0.5, [n, s, s, cfg['channels']]).astype(np.float32)


# --- the table -----------------------------------------------------------------------


def _fmt(v, spec='.1f'):
  return '-' if v is None else format(v, spec)


def render(results):
  """The Markdown table(s) of a results dict."""
  cfg = results['config']
  lines = []
  lines.append(
      f"Configuration: {cfg['image_size']}x{cfg['image_size']}x"
      f"{cfg['channels']}, L={cfg['levels']}, K={cfg['steps_per_level']}, "
      f"width {cfg['hidden_width']}, batch {cfg['batch_size']}; forward "
      f"{results['forward_gflop_per_image']:.3f} GFLOP/image; median of "
      f"{results['repeats']} after {results['warmup']} warm-up calls.")
  mix = results['conv_mix']
  lines.append(
      f"Attainable float32 convolution throughput (the model's own "
      f"convolutions as plain tf.nn.conv2d, timed in the same rounds): "
      f"{mix['attainable_f32_gflops']:.0f} GFLOP/s ("
      + ', '.join(f"{k[:-7].replace('_', ' ')} {v:.0f}"
                  for k, v in mix.items()
                  if k.endswith('_gflops') and not k.startswith('attainable'))
      + ' GFLOP/s).')
  lines.append('')
  lines.append('| op | library | best mode | ms (median) | first call s '
               '| other mode ms | GFLOP/s | of attainable f32 |')
  lines.append('|---|---|---|---:|---:|---:|---:|---:|')
  for op in results['ops']:
    for lib in results['libraries']:
      best = results['best'].get(lib, {}).get(op)
      if best is None:
        continue
      per_mode = results['timings'][lib][op]
      others = [f"{m} {per_mode[m]['median_ms']:.1f}" for m in per_mode
                if m != best['mode'] and per_mode[m].get('median_ms')]
      lines.append(
          f"| {op} | {lib} | {best['mode']} | {best['median_ms']:.1f} | "
          f"{per_mode[best['mode']]['first_call_s']:.1f} | "
          f"{', '.join(others) or '-'} | {_fmt(best.get('gflops'), '.0f')} | "
          f"{_fmt(best.get('fraction'), '.0%')} |")
  lines.append('')
  lines.append('| library | parameters | Conv2D ops log_prob | Conv2D ops '
               'sample | peak RSS train step (MB) | note |')
  lines.append('|---|---:|---:|---:|---:|---|')
  for lib in results['libraries']:
    info = results['models'][lib]
    rss = results.get('rss', {}).get(lib, {})
    lines.append(
        f"| {lib} | {info['parameters']:,} | "
        f"{_fmt(info.get('conv2d_log_prob'), 'd')} | "
        f"{_fmt(info.get('conv2d_sample'), 'd')} | "
        f"{_fmt(rss.get('peak_rss_mb'), '.0f')} "
        f"{'(' + rss['mode'] + ')' if rss.get('mode') else ''} | "
        f"{info.get('note', '')} |")
  return '\n'.join(lines)


# --- main ------------------------------------------------------------------------------


def main(argv):
  del argv
  cfg = _config()
  if FLAGS.rss_child:
    rss_child(FLAGS.rss_child, FLAGS.rss_mode, cfg)
    return 0
  repeats, warmup, conv_repeats = FLAGS.repeats, FLAGS.warmup, (
      FLAGS.conv_repeats)
  if FLAGS.quick:
    repeats = repeats if FLAGS['repeats'].present else 2
    warmup = warmup if FLAGS['warmup'].present else 1
    conv_repeats = conv_repeats if FLAGS['conv_repeats'].present else 3
  modes = [m for m in FLAGS.modes if m]
  if FLAGS.quick and not FLAGS['modes'].present:
    modes = ['graph']
  ops = [o for o in FLAGS.ops if o]
  for m in modes:
    if m not in MODES:
      raise app.UsageError(f'--modes: unknown mode {m!r} (choose from {MODES}).')
  for o in ops:
    if o not in OPS:
      raise app.UsageError(f'--ops: unknown op {o!r} (choose from {OPS}).')
  libraries = ['tfp_glow']
  if FLAGS.mixed_precision:
    libraries.append('tfp_glow_bf16')
  for p in FLAGS.peers:
    if p not in ('tfb', ''):
      raise app.UsageError(f"--peers: unknown peer {p!r} (only 'tfb').")
    if p:
      libraries.append(p)

  t_start = time.perf_counter()
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
  # One tf.function per (library, op, mode) is by design: no retracing noise.
  tf.get_logger().setLevel('ERROR')

  results = dict(
      config=cfg, repeats=repeats, warmup=warmup, modes=modes, ops=ops,
      libraries=libraries, command=' '.join([os.path.relpath(
          sys.argv[0], _ROOT)] + sys.argv[1:]),
      machine=dict(platform=platform.platform(), cpu=_cpu_name(),
                   cores=os.cpu_count(), tensorflow=tf.__version__,
                   tfp=tfp.__version__, python=platform.python_version()),
      forward_gflop_per_image=forward_flops_per_image(cfg) / 1e9)
  print(f"Config {cfg}; modes {modes}; libraries {libraries}", flush=True)

  # The machine's limit first (a quiet process, nothing else built yet).
  if FLAGS.conv_roofline:
    rows, summary = measure_conv_roofline(cfg, modes, conv_repeats)
    results['conv_roofline'] = rows
    results['conv_roofline_summary'] = summary
    print('conv roofline:', {k: round(v, 1) for k, v in summary.items()},
          flush=True)

  x_all = _images(cfg, np)
  x = tf.constant(x_all[:cfg['batch_size']])
  seed = tf.constant([FLAGS.seed, 1], tf.int32)
  models, fns, timings = {}, {}, {}
  results['models'] = {}
  for lib in libraries:
    t0 = time.perf_counter()
    model = Model(lib, cfg, x_all)
    models[lib] = model
    info = dict(parameters=model.parameters,
                variables=len(model.variables),
                tracked_variables=model.tracked_variables,
                build_s=time.perf_counter() - t0, note=model.note)
    results['models'][lib] = info
    timings[lib] = {}
    for op in ops:
      timings[lib][op] = {}
      for mode in modes:
        fn = model.function(op, mode)
        args = (seed,) if op == 'sample' else (x,)
        try:
          first = _timed(fn, args)
        except Exception as e:  # pylint: disable=broad-except
          msg = f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
          print(f'{lib} {op} {mode}: FAILED {msg}', flush=True)
          timings[lib][op][mode] = dict(error=msg)
          continue
        fns[(lib, op, mode)] = (fn, args)
        timings[lib][op][mode] = dict(first_call_s=first, times_ms=[])
        print(f'{lib} {op} {mode}: first call {first:.1f} s', flush=True)
    # Conv2D ops in the graphs (graph mode traces; the same for XLA).
    if 'log_prob' in ops or 'sample' in ops:
      cf = tf.function(model.log_prob).get_concrete_function(x)
      info['conv2d_log_prob'] = count_ops(cf, ['Conv2D'])['Conv2D']
      cf = tf.function(model.sample).get_concrete_function(seed)
      info['conv2d_sample'] = count_ops(cf, ['Conv2D'])['Conv2D']

  # The machine's limit in the same rounds: the model's convolutions, plain.
  mix_kinds = [('f32', m) for m in modes]
  if 'graph' in modes and FLAGS.mixed_precision:
    mix_kinds.append(('bf16', 'graph'))
  timings['conv_mix'] = {}
  for dtype_name, mode in mix_kinds:
    fn = conv_mix_function(cfg, mode, {'f32': 'float32',
                                       'bf16': 'bfloat16'}[dtype_name])
    first = _timed(fn, ())
    fns[('conv_mix', dtype_name, mode)] = (fn, ())
    timings['conv_mix'].setdefault(dtype_name, {})[mode] = dict(
        first_call_s=first, times_ms=[])

  # Warm-up and timing, interleaved: every round visits every (library, op,
  # mode), in an order rotated each round. The warm-up rounds come after every
  # function exists: the first graph-mode call of a function after other
  # functions were traced is slow again (measured: 0.3 s for a tiny log_prob
  # that then takes 2 ms), so warming each up right after its first call is
  # not enough.
  keys = list(fns)
  for r in range(warmup + repeats):
    shift = r % len(keys) if keys else 0
    for key in keys[shift:] + keys[:shift]:
      fn, args = fns[key]
      lib, op, mode = key
      seconds = _timed(fn, args)
      if r >= warmup:
        timings[lib][op][mode]['times_ms'].append(seconds * 1e3)
  flops_image = forward_flops_per_image(cfg)
  batch_flops = flops_image * cfg['batch_size']
  mix = {}
  for dtype_name, per_mode in timings['conv_mix'].items():
    for mode, t in per_mode.items():
      t['median_ms'] = statistics.median(t['times_ms'])
      t['gflops'] = batch_flops / (t['median_ms'] / 1e3) / 1e9
      mix[f'{dtype_name}_{mode}_gflops'] = t['gflops']
  attainable = max(t['gflops'] for t in timings['conv_mix']['f32'].values())
  mix['attainable_f32_gflops'] = attainable
  results['conv_mix'] = mix
  best = {}
  for lib in libraries:
    best[lib] = {}
    for op in ops:
      cands = []
      for mode, t in timings[lib][op].items():
        if t.get('times_ms'):
          t['median_ms'] = statistics.median(t['times_ms'])
          cands.append((t['median_ms'], mode))
      if not cands:
        continue
      ms, mode = min(cands)
      gflops = flops_image * OP_FLOP_FACTOR[op] * cfg['batch_size'] / (
          ms / 1e3) / 1e9
      best[lib][op] = dict(mode=mode, median_ms=ms, gflops=gflops,
                           fraction=gflops / attainable)
  results['timings'] = timings
  results['best'] = best

  if FLAGS.rss:
    results['rss'] = {}
    del fns, models  # the children measure; free this process's memory
    rss_libraries = [l for l in FLAGS.rss_libraries if l] or libraries
    if FLAGS.quick and not FLAGS['rss_libraries'].present:
      rss_libraries = ['tfp_glow']
    for lib in libraries:
      if lib not in rss_libraries:
        continue
      mode = best[lib].get('train', {}).get('mode', modes[0])
      results['rss'][lib] = _run_rss_child(lib, mode, cfg)
      print(f"{lib} peak RSS: {results['rss'][lib]}", flush=True)
  results['this_process_peak_rss_mb'] = _rss_mb()
  results['wall_s'] = time.perf_counter() - t_start

  table = render(results)
  print()
  print(table)
  print(f"\nTotal wall time {results['wall_s']:.0f} s.")
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'w') as f:
      json.dump(results, f, indent=1, default=str)
  if FLAGS.markdown_out:
    with open(FLAGS.markdown_out, 'w') as f:
      f.write(table + '\n')
  return 0


def _cpu_name():
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


if __name__ == '__main__':
  app.run(main)
