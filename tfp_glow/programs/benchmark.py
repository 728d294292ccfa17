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
that both see the same machine load. FLOPs are counted from the architecture
plan: 2 x multiply-adds of every convolution of one pass, elementwise work not
counted; a training step counts 3 x the forward FLOPs (forward, gradient with
respect to the inputs, gradient with respect to the weights); sampling counts
the same as `log_prob`. The attainable throughput is the convolution mix's
FLOPs over its time, the better of float32 graph and XLA; each operation's
achieved FLOP/s is reported as a fraction of it. Before the rounds, each
distinct convolution shape is also timed alone (JSON `conv_roofline`, e.g.
the 1x1 400->400 layer at 16x16).

`--train_program` (default on) adds the `train_program` row: ms per step of
`GlowModel.fit` with the training program's callbacks, EMA and tf.data
pipeline on synthetic images of the configuration, against the bare
training step in the same mode, interleaved per epoch (see
`tfp_glow.benchmark.program`).

Also reported: parameter counts; the number of Conv2D ops in each library's
`log_prob` and `sample` graphs (TFP's RealNVP evaluates every coupling network
twice per `log_prob`); the peak resident memory (RSS) of a process that builds
the model and runs the training step, measured in a fresh subprocess per
library (this module again, with `--rss_child`); and, with
`--mixed_precision`, tfp_glow's mixed-precision option (`tfp_glow_bf16`:
`glow_distribution(..., compute_dtype=tf.bfloat16)`, the coupling networks'
convolutions in bfloat16; ActNorm steps, log-dets, invertible 1x1
convolutions and priors in float32).

Usage:

  python bin/benchmark.py                    # CIFAR-shaped 32x32x3, L=3, K=8,
                                             # width 400, batch 16
  python bin/benchmark.py --preset=paper     # the paper's K=32, width 512
  python bin/benchmark.py --preset=digits    # 8x8x1 digits configuration
  python bin/benchmark.py --quick            # a tiny smoke run (seconds)
  python bin/benchmark.py --json_out=/tmp/bench.json --markdown_out=/tmp/b.md

Numerics of backprop by inversion (`--inversion_numerics=MODEL_DIR`): for a
model trained by bin/train.py, the relative error of every step's rebuilt
input and of the gradient of the mean bits/dim under 'invert' against
'store', in float64 and float32, on `--numerics_batch` test images
(dequantised, seed 0); see `tfp_glow.benchmark.inversion`.

  python bin/benchmark.py --inversion_numerics=runs/digits

Gradient accuracy of backprop by inversion (`--gradient_accuracy`): float32
gradients under 'store' and 'invert' against a float64 'store' twin with the
same weights, for every permutation x coupling (`--accuracy_permutations`,
`--accuracy_couplings`), on perturbed and briefly trained weights, eager,
graph and XLA (`--accuracy_modes`); a small Glow (8x8x3, L=2, K=4, width 16,
six images), see `tfp_glow.benchmark.inversion.accuracy_table`:

  python bin/benchmark.py --gradient_accuracy --markdown_out=/tmp/accuracy.md

Memory table (`--memory_table`, the memory-saving backprop of
`glow_distribution(..., backprop='invert')`): for each K of
`--memory_table_steps`, the peak RSS (and on a GPU the device's peak memory)
of build + three training steps in a fresh process per backprop mode, and the
time per step of every mode timed in interleaved rounds in one more process;
preset `memory` (32x32x3, L=3, width 128, batch 32) unless `--preset` is given:

  python bin/benchmark.py --memory_table --json_out=/tmp/memory.json

The PyTorch port (rosinality/glow-pytorch) as a third implementation
(`--peers=tfb,torch`): its `model.py` imported from `--torch_glow_dir` (or
$TORCH_GLOW_DIR; a checkout you fetched, never part of this repository) and
`torch` from `pip install -r requirements-peers.txt`; it runs eagerly (mode
`eager`) with as many torch threads as TensorFlow has (`--threads` sets both),
timed in the same interleaved rounds, and its bits/dim uses tfp_glow's
formula (see `tfp_glow.benchmark.torch_peer`). `--also_image_sizes=64` times
the same rows again at 64x64 with one more level, in the same rounds, and
adds a table of each implementation's ms and ratio to tfp_glow per size:

  python bin/benchmark.py --peers=tfb,torch --torch_glow_dir=PATH \
      --also_image_sizes=64 --json_out=/tmp/peers.json

Explicit flags override the preset's values. The measurements themselves
live in `tfp_glow.benchmark`.
"""

import dataclasses
import os
import sys
import time

from absl import app
from absl import flags
import tensorflow as tf

from tfp_glow import run_dir
from tfp_glow.benchmark import config
from tfp_glow.benchmark import inversion
from tfp_glow.benchmark import memory
from tfp_glow.benchmark import report
from tfp_glow.benchmark import suite
from tfp_glow.programs import launch

# The module a child process runs: this program, by module name, so that it
# finds tfp_glow the same way whether launched from bin/ or as a script.
_MODULE = 'tfp_glow.programs.benchmark'
_ARCHITECTURE_FLAGS = ('image_size', 'channels', 'levels', 'steps_per_level',
                       'hidden_width', 'batch_size')

FLAGS = flags.FLAGS
flags.DEFINE_enum('preset', 'cifar', list(config.PRESETS),
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
                  "(tfp.bijectors.Glow), 'torch' (the PyTorch port "
                  'rosinality/glow-pytorch; needs --torch_glow_dir and torch), '
                  'or empty.')
flags.DEFINE_string('torch_glow_dir', None, 'Folder with the model.py of '
                    'rosinality/glow-pytorch (a checkout), for --peers=torch. '
                    'Default: $TORCH_GLOW_DIR.')
flags.DEFINE_integer('threads', None, 'CPU threads of TensorFlow (intra-op) '
                     'and of torch alike. Default: TensorFlow\'s own (the CPUs '
                     'this process may use); torch gets the same number.')
flags.DEFINE_list('also_image_sizes', [], 'Time the same rows again at these '
                  'image sizes (the configuration\'s size times a power of '
                  'two, one more level per doubling: 64 with the cifar preset '
                  'is 64x64x3, L=4), in the same interleaved rounds; the '
                  'ratio table shows each size.')
flags.DEFINE_bool('mixed_precision', True, 'Also time tfp_glow with '
                  'compute_dtype=bfloat16 (tfp_glow_bf16).')
flags.DEFINE_bool('conv_roofline', True, 'Before the rounds, time plain '
                  "tf.nn.conv2d on each distinct convolution shape alone.")
flags.DEFINE_integer('conv_repeats', 15, 'Timed calls per convolution shape.')
flags.DEFINE_bool('rss', True, 'Measure the peak RSS of the training step in '
                  'a fresh subprocess per library.')
flags.DEFINE_list('rss_libraries', [], 'Libraries whose RSS is measured '
                  '(default: all; with --quick: tfp_glow).')
flags.DEFINE_bool('train_program', True, 'Time GlowModel.fit with the training '
                  "program's callbacks, EMA and pipeline against the bare "
                  'training step, in each of --modes.')
flags.DEFINE_integer('program_epochs', 4, 'Epochs of the train_program run (the '
                     'first, which compiles, is not counted).')
flags.DEFINE_integer('program_steps_per_epoch', 20, 'Steps per epoch of the '
                     'train_program run (also the bare steps between epochs).')
flags.DEFINE_float('learning_rate', 1e-4, 'Adam learning rate of the step.')
flags.DEFINE_integer('seed', 0, 'Seed of weights and data.')
flags.DEFINE_bool('quick', False, 'Tiny smoke run (for the test): '
                  '--preset=quick, --modes=graph, 2 repeats, 1 warm-up, 3 '
                  'train_program steps in 2 epochs, 3 '
                  'convolution repeats, unless given explicitly.')
flags.DEFINE_string('json_out', None, 'Write all results as JSON here.')
flags.DEFINE_string('markdown_out', None, 'Write the table as Markdown here.')
flags.DEFINE_bool('memory_table', False, 'Only the memory table: peak RSS '
                  'and step time of the training step for each K of '
                  '--memory_table_steps under each of --backprops (preset '
                  '"memory" unless --preset is given).')
flags.DEFINE_list('memory_table_steps', ['8', '16', '32'],
                  'K (steps per level) of the memory table.')
flags.DEFINE_list('backprops', ['store', 'invert'],
                  "Backprop modes of the memory table ('store', 'invert').")
flags.DEFINE_enum('memory_table_mode', 'graph', ['graph', 'xla'],
                  'Execution mode of the memory table\'s training step.')
flags.DEFINE_string('inversion_numerics', None, 'Only the numerics of '
                    "backprop='invert' for the model trained in this "
                    'directory (rebuilt inputs, gradients vs \'store\', '
                    'float64 and float32).')
flags.DEFINE_integer('numerics_batch', 64, 'Test images for '
                     '--inversion_numerics.')
flags.DEFINE_bool('gradient_accuracy', False, "Only the float32 gradients "
                  "of 'store' and 'invert' against a float64 twin "
                  '(perturbed and briefly trained weights).')
flags.DEFINE_list('accuracy_permutations',
                  ['reverse', 'shuffle', 'conv', 'conv_lu'],
                  'Permutations of --gradient_accuracy.')
flags.DEFINE_list('accuracy_couplings', ['affine', 'additive'],
                  'Couplings of --gradient_accuracy.')
flags.DEFINE_list('accuracy_weights', ['perturbed', 'trained'],
                  "Weights of --gradient_accuracy: 'init', 'perturbed' "
                  "(N(0, 0.05^2) on every variable), 'trained' (40 Adam steps "
                  'at learning rate 1e-2 on the six images).')
flags.DEFINE_list('accuracy_modes', ['eager', 'graph', 'xla'],
                  'Execution modes of --gradient_accuracy.')
# Internal: the RSS child process.
flags.DEFINE_string('rss_child', None, 'Internal: measure the training '
                    "step's peak RSS of this library and exit.")
flags.DEFINE_string('rss_mode', 'xla', 'Internal: mode of --rss_child.')
flags.DEFINE_string('rss_backprop', 'store',
                    'Internal: backprop mode of --rss_child.')
flags.DEFINE_enum('rss_op', 'train', ['train', 'gradient'],
                  'Internal: what --rss_child runs (the training step, or '
                  'its gradient alone).')
flags.DEFINE_string('times_child', None, 'Internal: time the training step '
                    'of this library under each of --backprops, interleaved, '
                    'and exit.')


def _config():
  """The architecture: the preset's values overridden by explicit flags."""
  preset = FLAGS.preset
  if not FLAGS['preset'].present:
    if FLAGS.quick:
      preset = 'quick'
    elif FLAGS.memory_table:
      preset = 'memory'
  return config.Config.from_preset(
      preset, **{key: FLAGS[key].value for key in _ARCHITECTURE_FLAGS})


def _quick_default(name, quick_value):
  """The flag's value; with --quick, `quick_value` unless given explicitly."""
  if FLAGS.quick and not FLAGS[name].present:
    return quick_value
  return FLAGS[name].value


def _options():
  """The run's options from the flags, checked."""
  modes = [m for m in _quick_default('modes', ['graph']) if m]
  ops = [o for o in FLAGS.ops if o]
  if not modes:
    raise app.UsageError(f'--modes: give at least one of {config.MODES}.')
  for m in modes:
    if m not in config.MODES:
      raise app.UsageError(
          f'--modes: unknown mode {m!r} (choose from {config.MODES}).')
  for o in ops:
    if o not in config.OPS:
      raise app.UsageError(
          f'--ops: unknown op {o!r} (choose from {config.OPS}).')
  libraries = ['tfp_glow']
  if FLAGS.mixed_precision:
    libraries.append('tfp_glow_bf16')
  for p in FLAGS.peers:
    if p not in config.PEERS + ('',):
      raise app.UsageError(f'--peers: unknown peer {p!r} (choose from '
                           f'{config.PEERS}).')
    if p and p not in libraries:
      libraries.append(p)
  if 'torch' in libraries:
    _check_torch_peer()
  return suite.Options(
      libraries=tuple(libraries), ops=tuple(ops), modes=tuple(modes),
      repeats=_quick_default('repeats', 2),
      warmup=_quick_default('warmup', 1),
      conv_roofline=FLAGS.conv_roofline,
      conv_repeats=_quick_default('conv_repeats', 3),
      bf16_mix=FLAGS.mixed_precision, seed=FLAGS.seed,
      learning_rate=FLAGS.learning_rate)


def _check_torch_peer():
  """Fails at once, naming the flag, when the PyTorch peer cannot run."""
  from tfp_glow.benchmark import torch_peer  # pylint: disable=g-import-not-at-top
  try:
    torch_peer.load_port(FLAGS.torch_glow_dir)
  except torch_peer.PeerUnavailable as e:
    raise app.UsageError(f'--peers=torch: {e}') from e


def _peer_options():
  """What the PyTorch adapter needs besides the configuration."""
  return dict(glow_dir=FLAGS.torch_glow_dir, threads=FLAGS.threads)


def _also_configs(cfg):
  """The configurations of --also_image_sizes."""
  out = []
  for size in FLAGS.also_image_sizes:
    if not size:
      continue
    try:
      out.append(cfg.at_image_size(int(size)))
    except ValueError as e:
      raise app.UsageError(f'--also_image_sizes: {e}') from e
  return tuple(out)


def _set_threads():
  """--threads for TensorFlow, before its runtime starts (torch takes the
  same count when its adapter is built: `torch_peer.set_threads`)."""
  if FLAGS.threads is not None:
    if FLAGS.threads < 1:
      raise app.UsageError(f'--threads must be >= 1, got {FLAGS.threads}.')
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(
        min(2, FLAGS.threads))


def _command():
  """How this run was started, relative to the checkout it runs from."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  return ' '.join([os.path.relpath(sys.argv[0], root)] + sys.argv[1:])


def _rss_child_command(cfg, library, mode, backprop='store', op='train'):
  """This program again, measuring one library's training step."""
  cmd = [sys.executable, '-m', _MODULE, f'--rss_child={library}',
         f'--rss_mode={mode}', f'--rss_backprop={backprop}', f'--rss_op={op}',
         f'--preset={cfg.preset}',
         f'--seed={FLAGS.seed}', f'--learning_rate={FLAGS.learning_rate}']
  if FLAGS.threads is not None:
    cmd.append(f'--threads={FLAGS.threads}')
  if library == 'torch' and FLAGS.torch_glow_dir:
    cmd.append(f'--torch_glow_dir={FLAGS.torch_glow_dir}')
  cmd += [f'--{key}={getattr(cfg, key)}' for key in _ARCHITECTURE_FLAGS]
  return cmd


def _times_child_command(cfg, library, mode, backprops):
  """This program again, timing the training step of each backprop mode."""
  cmd = [sys.executable, '-m', _MODULE, f'--times_child={library}',
         f'--rss_mode={mode}', f'--backprops={",".join(backprops)}',
         f'--preset={cfg.preset}', f'--seed={FLAGS.seed}',
         f'--learning_rate={FLAGS.learning_rate}',
         f'--repeats={FLAGS.repeats}', f'--warmup={FLAGS.warmup}']
  cmd += [f'--{key}={getattr(cfg, key)}' for key in _ARCHITECTURE_FLAGS]
  return cmd


def _memory_table(cfg):
  """The --memory_table run: its results dict."""
  try:
    ks = [int(k) for k in FLAGS.memory_table_steps if k]
  except ValueError as e:
    raise app.UsageError(f'--memory_table_steps: integers, got '
                         f'{FLAGS.memory_table_steps}.') from e
  if not ks or min(ks) < 1:
    raise app.UsageError(f'--memory_table_steps: positive integers, got {ks}.')
  backprops = [b for b in FLAGS.backprops if b]
  for b in backprops:
    if b not in ('store', 'invert'):
      raise app.UsageError(f"--backprops: unknown mode {b!r} (choose from "
                           "'store', 'invert').")
  mode = FLAGS.memory_table_mode
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')

  def with_k(k):
    return dataclasses.replace(cfg, steps_per_level=k)

  table = suite.memory_table(
      cfg, ks, backprops,
      lambda k, b, op: _rss_child_command(with_k(k), 'tfp_glow', mode, b, op),
      lambda k: _times_child_command(with_k(k), 'tfp_glow', mode, backprops),
      env=env)
  return dict(config=cfg.as_dict(), command=_command(),
              machine=report.machine_info(), memory_table=table)


def _inversion_numerics(model_dir):
  """The --inversion_numerics run: its results dict."""
  if FLAGS.numerics_batch < 1:
    raise app.UsageError(f'--numerics_batch must be >= 1, got '
                         f'{FLAGS.numerics_batch}.')
  try:
    model, config, path = run_dir.load_trained(model_dir)
  except (FileNotFoundError, ValueError) as e:  # no model there, or a damaged one
    raise app.UsageError(str(e)) from e
  ds, info = run_dir.load_split(config, 'test', batch_size=FLAGS.numerics_batch,
                                shuffle=False, dequantize=True, seed=0)
  batch = next(iter(ds))
  x, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)
  print(f'Numerics of backprop by inversion: {path}, {int(x.shape[0])} test '
        'images (float64 and float32 copies of the model)...', flush=True)
  return dict(model_dir=model_dir, weights=path, command=_command(),
              machine=report.machine_info(), images=int(x.shape[0]),
              numerics=inversion.measure_dtypes(model.glow, x, info.n_bins,
                                                labels=labels))


def main(argv):
  del argv
  _set_threads()
  cfg = _config()
  if FLAGS.rss_child:
    peer = _peer_options() if FLAGS.rss_child == 'torch' else {}
    memory.print_child_result(memory.train_step_rss(
        FLAGS.rss_child, FLAGS.rss_mode, cfg, seed=FLAGS.seed,
        learning_rate=FLAGS.learning_rate, backprop=FLAGS.rss_backprop,
        op=FLAGS.rss_op, **peer))
    return 0
  if FLAGS.times_child:
    memory.print_child_result(memory.train_step_times(
        FLAGS.times_child, FLAGS.rss_mode, cfg,
        [b for b in FLAGS.backprops if b], seed=FLAGS.seed,
        learning_rate=FLAGS.learning_rate, warmup=FLAGS.warmup,
        repeats=FLAGS.repeats))
    return 0
  t_start = time.perf_counter()
  if FLAGS.inversion_numerics:
    results = _inversion_numerics(FLAGS.inversion_numerics)
    return _finish(results, t_start, lambda r: inversion.render(
        r['numerics'], r['model_dir']))
  if FLAGS.gradient_accuracy:
    tf.get_logger().setLevel('ERROR')
    rows = inversion.accuracy_table(
        [p for p in FLAGS.accuracy_permutations if p],
        [c for c in FLAGS.accuracy_couplings if c],
        [w for w in FLAGS.accuracy_weights if w],
        [m for m in FLAGS.accuracy_modes if m], log=print)
    return _finish(dict(command=_command(), machine=report.machine_info(),
                        architecture=inversion.ACCURACY_ARCHITECTURE,
                        gradient_accuracy=rows), t_start,
                   lambda r: inversion.render_accuracy(r['gradient_accuracy']))
  if FLAGS.memory_table:
    return _finish(_memory_table(cfg), t_start)
  options = _options()
  also = _also_configs(cfg)
  # One tf.function per (library, op, mode) is by design: no retracing noise.
  tf.get_logger().setLevel('ERROR')
  results = suite.run(cfg, options, command=_command(), also=also,
                      peer_options=_peer_options())
  results['threads'] = _threads(options)
  if FLAGS.train_program:
    results['train_program'] = suite.measure_train_program(
        cfg, options.modes, epochs=_quick_default('program_epochs', 2),
        steps_per_epoch=_quick_default('program_steps_per_epoch', 3),
        seed=FLAGS.seed)
  if FLAGS.rss:
    rss_libraries = [l for l in FLAGS.rss_libraries if l] or list(
        options.libraries)
    if FLAGS.quick and not FLAGS['rss_libraries'].present:
      rss_libraries = ['tfp_glow']
    results['rss'] = suite.measure_rss(
        results, rss_libraries,
        lambda lib, mode: _rss_child_command(cfg, lib, mode),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  results['this_process_peak_rss_mb'] = memory.peak_rss_mb()
  return _finish(results, t_start)


def _threads(options):
  """The CPU threads each library ran with (torch: only when timed)."""
  out = dict(tensorflow_intra_op=(
      tf.config.threading.get_intra_op_parallelism_threads() or 'default'))
  if 'torch' in options.libraries:
    import torch  # pylint: disable=g-import-not-at-top
    out['torch'] = torch.get_num_threads()
  return out


def _finish(results, t_start, render=report.render):
  """Records the wall time, prints the table and writes --json_out and
  --markdown_out: the end of every kind of run. Returns the exit code."""
  results['wall_s'] = time.perf_counter() - t_start
  table = render(results)
  print()
  print(table)
  print(f"\nTotal wall time {results['wall_s']:.0f} s.")
  report.write(results, table, FLAGS.json_out, FLAGS.markdown_out)
  return 0


def run():
  """The entry point of bin/benchmark.py and of tfp-glow-benchmark."""
  launch.run(main, __name__)


if __name__ == '__main__':
  run()
