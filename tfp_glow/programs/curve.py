r"""Time-to-quality: held-out bits/dim against minutes, tfp_glow and its peers.

Trains, one after the other (never two at once), for the same wall-clock
budget each, on the same data, at the same architecture and batch:

  tfp_glow  its training program, as a user runs it: `python -m
            tfp_glow.programs.train --dataset=... --time_limit=BUDGET` with
            the architecture below, and its defaults otherwise (flags after
            `--` are passed on to it);
  tfb       TFP's `tfb.Glow` (its default networks at the same width), a
            compiled training step;
  torch     the PyTorch port (rosinality/glow-pytorch), its model.py from
            --torch_glow_dir (torch: `pip install -r requirements-peers.txt`).

The peers use Adam at --learning_rate with the same linear warm-up
(--warmup_steps), flat after it, minimise the mean bits/dim and keep the
best-validation weights; every implementation is evaluated on the same
held-out images with the same dequantisation noise after every epoch (or
every --eval_every_steps steps), inside its budget, and finally on the test
split with its best-validation weights. Each runs in a process of its own;
see `tfp_glow.benchmark.curve` for the clocks and the data.

Usage (the issue's configuration is the default: photos, L=3, K=8, width
128, batch 32, 30 minutes each):

  python bin/curve.py --out_dir=runs/curve --torch_glow_dir=PATH
  python bin/curve.py --out_dir=runs/curve --implementations=tfp_glow,tfb
  python bin/curve.py --out_dir=runs/curve_nojit -- --nojit_compile
  python bin/curve.py --out_dir=runs/curve --report_only

Writes into --out_dir: <implementation>/ (tfp_glow's run directory, or a
peer's log) with curve_result.json once that run finished; curve.json (every
run's points and results), curve.md (the table: bits/dim at every
--table_every_minutes minutes, at the end, steps, test bits/dim) and
curve.png (the plot).

Resumable: rerunning the same command keeps every finished run (its
curve_result.json) and restarts an unfinished one from scratch (a budget
cannot be resumed); a finished run made with other settings is refused.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags

from tfp_glow import run_dir
from tfp_glow.benchmark import curve
from tfp_glow.programs import launch

_MODULE = 'tfp_glow.programs.curve'
_TRAIN_MODULE = 'tfp_glow.programs.train'
_D = curve.Settings()
FLAGS = flags.FLAGS

flags.DEFINE_string('out_dir', os.path.join(run_dir.RUNS_DIR, 'curve'),
                    'Where the runs, curve.json, curve.md and curve.png go.')
flags.DEFINE_list('implementations', list(curve.IMPLEMENTATIONS),
                  'Which to train, in this order: tfp_glow, tfb, torch.')
flags.DEFINE_float('budget_minutes', _D.budget_minutes,
                   'Wall-clock minutes of training for each implementation '
                   '(evaluations included).')
flags.DEFINE_string('dataset', _D.dataset, "Any dataset bin/train.py takes "
                    "(default 'photos', the development set of real photos).")
flags.DEFINE_integer('image_size', None, 'Resize the images to this size '
                     '(default: native; e.g. 16 for a quick curve).')
flags.DEFINE_integer('n_bits', None, 'Keep this many bits of 8-bit images.')
flags.DEFINE_integer('levels', _D.levels, 'L, levels of the multi-scale flow.')
flags.DEFINE_integer('steps_per_level', _D.steps_per_level,
                     'K, steps of flow per level.')
flags.DEFINE_integer('hidden_width', _D.hidden_width,
                     'Hidden width of the coupling networks.')
flags.DEFINE_integer('batch_size', _D.batch_size, 'Images per training step.')
flags.DEFINE_enum('permutation', _D.permutation, ['conv', 'conv_lu'],
                  "tfp_glow's and the PyTorch port's 1x1 convolution, plain "
                  '(conv) or LU (tfb.Glow always uses its LU form).')
flags.DEFINE_float('learning_rate', run_dir.DEFAULTS['learning_rate'],
                   'Peak Adam learning rate of all three.')
flags.DEFINE_integer('warmup_steps', run_dir.DEFAULTS['warmup_steps'],
                     'Linear warm-up from 0, in steps, of all three.')
flags.DEFINE_integer('eval_every_steps', None, 'Evaluate every this many '
                     'steps (tfp_glow: --steps_per_epoch). Default: every '
                     'epoch (one pass over the training split).')
flags.DEFINE_integer('seed', _D.seed, 'Seed of the weights, the data order '
                     'and noise (validation noise: seed + 1, as bin/train.py).')
flags.DEFINE_integer('eval_seed', _D.eval_seed, 'Seed of the test split\'s '
                     'dequantisation noise (bin/train.py\'s --eval_seed).')
flags.DEFINE_bool('tfb_jit_compile', _D.tfb_jit_compile,
                  'Compile tfb.Glow\'s training step with XLA.')
flags.DEFINE_string('torch_glow_dir', None, 'Folder with the model.py of '
                    'rosinality/glow-pytorch, for torch. Default: '
                    '$TORCH_GLOW_DIR.')
flags.DEFINE_integer('threads', None, 'CPU threads of the peers\' processes '
                     '(TensorFlow intra-op and torch). Default: all the CPUs '
                     'this process may use, as bin/train.py.')
flags.DEFINE_float('table_every_minutes', 5.0, 'The table\'s columns: '
                   'bits/dim at every this many minutes.')
flags.DEFINE_bool('report_only', False, 'Train nothing: the table and plot '
                  'of the finished runs in --out_dir.')
# Internal: one peer's run, in a process of its own.
flags.DEFINE_enum('child', None, ['tfb', 'torch'], 'Internal: train this peer '
                  'and write its result into --child_dir.')
flags.DEFINE_string('child_dir', None, 'Internal: the peer run\'s folder.')

# Set by the curve for all three; not to be given after `--`.
_OWN_TRAIN_FLAGS = {
    'dataset': 'dataset', 'image_size': 'image_size', 'n_bits': 'n_bits',
    'levels': 'levels', 'steps_per_level': 'steps_per_level',
    'hidden_width': 'hidden_width', 'batch_size': 'batch_size',
    'permutation': 'permutation', 'learning_rate': 'learning_rate',
    'warmup_steps': 'warmup_steps', 'seed': 'seed', 'eval_seed': 'eval_seed',
    'steps_per_epoch': 'eval_every_steps', 'time_limit': 'budget_minutes',
    'model_dir': 'out_dir'}


def _flag_name(arg):
  return arg.lstrip('-').split('=', 1)[0]


def _settings(train_args):
  for arg in train_args:
    if not arg.startswith('-'):
      raise app.UsageError(f'After --, only flags of bin/train.py, got '
                           f'{arg!r}.')
    name = _flag_name(arg)
    if name in ('validation', 'novalidation'):
      raise app.UsageError(f'{arg} (after --): the curve is the validation '
                           'bits/dim after every epoch; it needs --validation.')
    if name in _OWN_TRAIN_FLAGS:
      raise app.UsageError(
          f'{arg} (after --): the curve sets --{name} for every '
          f'implementation; use the curve\'s --{_OWN_TRAIN_FLAGS[name]}.')
  if not FLAGS.budget_minutes > 0 or not math.isfinite(FLAGS.budget_minutes):
    raise app.UsageError(f'--budget_minutes must be > 0, got '
                         f'{FLAGS.budget_minutes}.')
  for name in ('levels', 'steps_per_level', 'hidden_width', 'batch_size'):
    if FLAGS[name].value < 1:
      raise app.UsageError(f'--{name} must be >= 1, got {FLAGS[name].value}.')
  if FLAGS.eval_every_steps is not None and FLAGS.eval_every_steps < 1:
    raise app.UsageError(f'--eval_every_steps must be >= 1, got '
                         f'{FLAGS.eval_every_steps}.')
  if FLAGS.threads is not None and FLAGS.threads < 1:
    raise app.UsageError(f'--threads must be >= 1, got {FLAGS.threads}.')
  return curve.Settings(
      dataset=FLAGS.dataset, image_size=FLAGS.image_size, n_bits=FLAGS.n_bits,
      levels=FLAGS.levels, steps_per_level=FLAGS.steps_per_level,
      hidden_width=FLAGS.hidden_width, batch_size=FLAGS.batch_size,
      budget_minutes=FLAGS.budget_minutes, learning_rate=FLAGS.learning_rate,
      warmup_steps=FLAGS.warmup_steps, eval_every_steps=FLAGS.eval_every_steps,
      seed=FLAGS.seed, eval_seed=FLAGS.eval_seed,
      permutation=FLAGS.permutation, train_args=tuple(train_args),
      tfb_jit_compile=FLAGS.tfb_jit_compile)


def _shared_flags(s):
  """The flags of bin/train.py that the settings fix."""
  out = [f'--dataset={s.dataset}', f'--levels={s.levels}',
         f'--steps_per_level={s.steps_per_level}',
         f'--hidden_width={s.hidden_width}', f'--batch_size={s.batch_size}',
         f'--permutation={s.permutation}',
         f'--learning_rate={s.learning_rate!r}',
         f'--warmup_steps={s.warmup_steps}', f'--seed={s.seed}',
         f'--eval_seed={s.eval_seed}']
  for name in ('image_size', 'n_bits'):
    if getattr(s, name) is not None:
      out.append(f'--{name}={getattr(s, name)}')
  return out


def _train_command(s, model_dir):
  cmd = [sys.executable, '-m', _TRAIN_MODULE] + _shared_flags(s) + [
      f'--time_limit={s.budget_minutes!r}', f'--model_dir={model_dir}']
  if s.eval_every_steps:
    cmd.append(f'--steps_per_epoch={s.eval_every_steps}')
  return cmd + list(s.train_args)


def _child_command(s, implementation, folder):
  cmd = [sys.executable, '-m', _MODULE, f'--child={implementation}',
         f'--child_dir={folder}', f'--budget_minutes={s.budget_minutes!r}',
         f'--tfb_jit_compile={s.tfb_jit_compile}']
  cmd += _shared_flags(s)
  if s.eval_every_steps:
    cmd.append(f'--eval_every_steps={s.eval_every_steps}')
  if FLAGS.threads is not None:
    cmd.append(f'--threads={FLAGS.threads}')
  if implementation == 'torch' and FLAGS.torch_glow_dir:
    cmd.append(f'--torch_glow_dir={FLAGS.torch_glow_dir}')
  return cmd


def _stream(cmd, implementation, log_path):
  """Runs `cmd`, its output printed with a prefix and kept in `log_path`.
  Returns the exit status."""
  with open(log_path, 'a') as log_file:
    log_file.write('$ ' + ' '.join(cmd) + '\n')
    # Unbuffered, so that each epoch's line shows when it happens.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))
    for line in proc.stdout:
      log_file.write(line)
      print(f'[{implementation}] {line}', end='', flush=True)
    return proc.wait()


def _run_tfp_glow(s, folder):
  """The training program for the budget; its result from the run dir."""
  cmd = _train_command(s, folder)
  os.makedirs(folder, exist_ok=True)
  launched = time.time()
  status = _stream(cmd, 'tfp_glow', os.path.join(folder, 'curve_log.txt'))
  results_path = os.path.join(folder, 'results.json')
  if not os.path.exists(results_path):
    print(f'tfp_glow: the training program exited with status {status} and '
          f'wrote no results.json; see {folder}/curve_log.txt.',
          file=sys.stderr)
    return None
  with open(results_path) as f:
    results = json.load(f)
  points, source = curve.history_points(folder), 'history.json'
  if points is None:
    steps_per_epoch = s.eval_every_steps or _steps_per_epoch(s)
    points = curve.tensorboard_points(folder, launched, steps_per_epoch,
                                      results['steps_run'])
    source = ('TensorBoard logs (no history.json: times from the launch, '
              'start-up included)')
  best = None
  info = results.get('checkpoint_info') or {}
  for p in points:
    if p.get('val_bpd') is not None and p['val_bpd'] == info.get('val_bpd'):
      best = p
  return dict(implementation='tfp_glow', points=points, points_source=source,
              steps_run=results.get('steps_run'),
              stopped_by_budget=results.get('stopped_by_time_limit'),
              terminated_on_nan=results.get('terminated_on_nan'),
              test_bpd=results.get('test_bpd'),
              test_split=results.get('split'), best=best,
              training_s=results.get('elapsed_at_stop_s'),
              wall_time_s=results.get('wall_time_s'),
              jit_compile=results.get('jit_compile'), exit_status=status,
              command=' '.join(['python'] + cmd[1:]))


def _steps_per_epoch(s):
  from tfp_glow import data  # pylint: disable=g-import-not-at-top
  _, info = data.load(s.dataset, 'train', batch_size=s.batch_size,
                      shuffle=False, **s.load_kwargs())
  return math.ceil(info.num_examples / s.batch_size)


def _run_peer(s, implementation, folder):
  cmd = _child_command(s, implementation, folder)
  os.makedirs(folder, exist_ok=True)
  status = _stream(cmd, implementation, os.path.join(folder, 'curve_log.txt'))
  path = os.path.join(folder, 'peer_result.json')
  if status != 0 or not os.path.exists(path):
    print(f'{implementation}: failed (exit status {status}); see '
          f'{folder}/curve_log.txt.', file=sys.stderr)
    return None
  with open(path) as f:
    result = json.load(f)
  result['command'] = ' '.join(['python'] + cmd[1:])
  return result


def _check_torch():
  from tfp_glow.benchmark import torch_peer  # pylint: disable=g-import-not-at-top
  try:
    torch_peer.port_dir(FLAGS.torch_glow_dir)
    torch_peer.import_torch()
  except torch_peer.PeerUnavailable as e:
    raise app.UsageError(f'--implementations includes torch: {e}') from e


def _child(s):
  """One peer's run in this (fresh) process: writes peer_result.json."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if FLAGS.threads is not None:
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, FLAGS.threads))
  tf.get_logger().setLevel('ERROR')
  result = curve.train_peer(FLAGS.child, s,
                            log=lambda *a: print(*a, flush=True),
                            glow_dir=FLAGS.torch_glow_dir,
                            threads=FLAGS.threads)
  from tfp_glow.keras import callbacks  # pylint: disable=g-import-not-at-top
  callbacks.write_json(os.path.join(FLAGS.child_dir, 'peer_result.json'),
                       result)
  return 0


def _report(s, runs):
  """curve.json, curve.md and curve.png of the finished runs."""
  from tfp_glow.benchmark import report  # pylint: disable=g-import-not-at-top
  from tfp_glow.keras import callbacks  # pylint: disable=g-import-not-at-top
  out = FLAGS.out_dir
  table = curve.render_table(runs, s, FLAGS.table_every_minutes)
  commands = [f"- {impl}: `{run['command']}`" for impl, run in runs.items()
              if run.get('command')]
  callbacks.write_json(os.path.join(out, 'curve.json'), dict(
      settings=s.identity('tfp_glow') | dict(
          tfb_jit_compile=s.tfb_jit_compile),
      command=' '.join(sys.argv), machine=report.machine_info(), runs=runs))
  with open(os.path.join(out, 'curve.md'), 'w') as f:
    f.write(table + '\n\nCommands (each run in a process of its own):\n\n'
            + '\n'.join(commands) + '\n')
  if runs:
    curve.plot(runs, s, os.path.join(out, 'curve.png'))
  print()
  print(table)
  print(f'\nWrote {out}/curve.json, curve.md' + (', curve.png' if runs
                                                  else ''))


def main(argv):
  s = _settings(argv[1:])
  if FLAGS.child:
    if not FLAGS.child_dir:
      raise app.UsageError('--child needs --child_dir.')
    return _child(s)
  impls = [i for i in FLAGS.implementations if i]
  for impl in impls:
    if impl not in curve.IMPLEMENTATIONS:
      raise app.UsageError(f'--implementations: unknown {impl!r} (choose '
                           f'from {curve.IMPLEMENTATIONS}).')
  if not impls:
    raise app.UsageError('--implementations: give at least one.')
  if 'torch' in impls and not FLAGS.report_only:
    _check_torch()
  out = FLAGS.out_dir
  os.makedirs(out, exist_ok=True)
  runs, failed = {}, []
  for n, impl in enumerate(impls, 1):
    try:
      done = curve.load_finished(out, impl, s)
    except ValueError as e:
      raise app.UsageError(str(e)) from e
    if done is not None:
      print(f'{impl}: finished run kept ({curve.result_path(out, impl)}).',
            flush=True)
      runs[impl] = done
      continue
    if FLAGS.report_only:
      continue
    folder = os.path.join(out, impl)
    if os.path.exists(folder):
      print(f'{impl}: {folder} holds an unfinished run; starting it again.',
            flush=True)
      shutil.rmtree(folder)
    print(f'== {impl} ({n}/{len(impls)}): {s.budget_minutes:g} minutes of '
          'training ...', flush=True)
    if impl == 'tfp_glow':
      result = _run_tfp_glow(s, folder)
    else:
      result = _run_peer(s, impl, folder)
    if result is None:
      failed.append(impl)
      continue
    result['settings'] = s.identity(impl)
    curve.write_result(out, impl, result)
    runs[impl] = result
  _report(s, runs)
  if failed:
    print(f"Failed: {', '.join(failed)} (rerun the same command to retry "
          'them; finished runs are kept).', file=sys.stderr)
    return 1
  return 0


def run():
  """The entry point of bin/curve.py and of tfp-glow-curve."""
  launch.run(main, __name__)


if __name__ == '__main__':
  run()
