"""Where a compiled step spends its time, by TensorFlow op type: `op_profile`.

TensorFlow's profiler (`tf.profiler.experimental`) records every kernel the executor
runs; this reads its trace (the XSpace protobuf TensorFlow itself ships) and sums the
kernels' durations by op type, per step. That is the breakdown used to find what
stands between a training step and the convolutions' FLOP rate: the convolutions'
share, and the elementwise ops, transposes, casts and copies around them. Shares are
meaningful on a loaded machine too (every op slows alike); absolute times are not.
Kernel time on several threads can add up to more than the step's wall time.
"""

import collections
import glob
import os
import tempfile

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

__all__ = ['op_profile', 'CONV_TYPES', 'format_profile']

# Convolution kernels, as oneDNN names them ('_MklNative...') and plain TF does.
CONV_TYPES = ('Conv2D', 'FusedConv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter',
              'Conv2DBackpropFilterWithBias',
              'DepthwiseConv2dNative')


def _op_type(display_name):
  t = display_name
  for prefix in ('_MklNative', '_Mkl'):
    if t.startswith(prefix):
      t = t[len(prefix):]
  return t


def _kernel_times(xspace_path):
  """op type -> (total seconds, count) over the host plane's executor threads."""
  space = xplane_pb2.XSpace()
  with open(xspace_path, 'rb') as f:
    space.ParseFromString(f.read())
  totals = collections.defaultdict(lambda: [0.0, 0])
  for plane in space.planes:
    if not plane.name.startswith('/host:CPU') and not plane.name.startswith(
        '/device:'):
      continue
    for line in plane.lines:
      for ev in line.events:
        md = plane.event_metadata[ev.metadata_id]
        # Kernel events are named 'op_name:OpType' (display name: the type);
        # executor bookkeeping ('ExecutorState::Process', ...) has no colon pair.
        if ':' not in md.name or '::' in md.name or not md.display_name:
          continue
        entry = totals[_op_type(md.display_name)]
        entry[0] += ev.duration_ps * 1e-12
        entry[1] += 1
  return totals


def op_profile(fn, *args, steps=5):
  """Runs `fn(*args)` (a compiled step, already traced) `steps` times under the
  profiler; returns `[(op type, ms per step, kernels per step)]`, slowest first.
  """
  for _ in range(2):  # compiled and warm before recording
    _ = tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, 'numpy') else t,
                              fn(*args))
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    try:
      for _ in range(steps):
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, 'numpy') else t,
                              fn(*args))
    finally:
      tf.profiler.experimental.stop()
    paths = glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True)
    if not paths:
      raise RuntimeError('The profiler wrote no trace (is another profiling '
                         'session running?).')
    totals = _kernel_times(paths[0])
  rows = [(t, 1e3 * s / steps, n / steps) for t, (s, n) in totals.items()]
  return sorted(rows, key=lambda r: -r[1])


def format_profile(rows, top=25):
  """A Markdown table: op type, ms per step, share, kernels per step; the
  convolutions' share first."""
  total = sum(r[1] for r in rows) or 1.0
  conv = sum(r[1] for r in rows if r[0] in CONV_TYPES)
  lines = [f'Kernel time per step {total:.1f} ms, convolutions {conv:.1f} ms '
           f'({100 * conv / total:.0f}%).', '',
           '| op type | ms / step | share | kernels / step |', '|---|---:|---:|---:|']
  for t, ms, n in rows[:top]:
    lines.append(f'| {t} | {ms:.2f} | {100 * ms / total:.1f}% | {n:.0f} |')
  if len(rows) > top:
    rest = sum(r[1] for r in rows[top:])
    lines.append(f'| ({len(rows) - top} other types) | {rest:.2f} | '
                 f'{100 * rest / total:.1f}% | |')
  return '\n'.join(lines)
