"""Peak resident memory of a training step, each measured in a fresh process.

A process's peak only grows, so a model measured after others were built
would report their memory too: every measurement runs in a child process that
builds one model, runs its step and reports. The program decides how the
child is launched (this library never names the program layer); the child
prints one marker line with its JSON result, which `run_child` parses. A
further measurement (another model size, another backprop mode, time per
step) is another child body beside `train_step_rss`, reported the same way.
"""

import json
import resource
import subprocess
import sys

import tensorflow as tf

from tfp_glow.benchmark import models
from tfp_glow.benchmark import timing

__all__ = ['MARKER', 'peak_rss_mb', 'device_memory_mb', 'device_peak_mb', 'train_step_rss',
           'train_step_times', 'print_child_result', 'run_child']

MARKER = 'RSS_JSON '


def peak_rss_mb():
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


def device_memory_mb(reset_peak=False):
  """`(current, peak)` memory of the first GPU in MB, from TensorFlow's
  allocator (`tf.config.experimental.get_memory_info`), or None without a
  GPU. `reset_peak`: afterwards the peak starts again from the current
  figure (`reset_memory_stats`), so that a later peak is that of what runs
  in between."""
  if not tf.config.list_logical_devices('GPU'):
    return None
  info = tf.config.experimental.get_memory_info('GPU:0')
  if reset_peak:
    tf.config.experimental.reset_memory_stats('GPU:0')
  return info['current'] / 2**20, info['peak'] / 2**20


def device_peak_mb():
  """Peak memory of the first GPU, MB, or None without a GPU."""
  memory = device_memory_mb()
  return None if memory is None else memory[1]


def train_step_rss(library, mode, cfg, seed=0, learning_rate=1e-4, steps=3,
                   backprop='store', op='train', **peer_options):
  """Builds one library's model in this process and runs its training step.

  Meant to run alone in a fresh process. Returns the peak RSS before
  anything was built, after the model was built, after the step was traced
  (and the traced graph's node count, its function library included), and
  after `steps` steps.
  With a GPU, also its memory as TensorFlow's allocator counts it: in use
  once the model is built (`device_built_mb`: weights, Adam slots) and the
  peak during the steps (`device_peak_mb`: those plus the step's
  activations, gradients and workspace), which is the figure that limits a
  GPU the way peak RSS limits a CPU process. `backprop` is tfp_glow's
  option ('store' or 'invert'); `op` is 'train' (gradient + Adam update) or
  'gradient' (the gradient alone: what the flow itself costs, without the
  optimizer's per-variable update). `peer_options` go to the PyTorch
  adapter (`models.build`).
  """
  before = peak_rss_mb()
  x = models.images(cfg, seed)
  model = models.build(library, cfg, x, seed=seed,
                       learning_rate=learning_rate, backprop=backprop,
                       **peer_options)
  built = peak_rss_mb()
  if op not in ('train', 'gradient'):
    raise ValueError(f"op must be 'train' or 'gradient', got {op!r}.")
  fn = model.function(op, mode)
  args = model.args(op, tf.constant(x[:cfg.batch_size]), None)
  # Traced first (the calls below reuse this trace): the graph's size and
  # what holding it costs, apart from running it (TensorFlow functions only).
  nodes = (models.graph_nodes(fn.get_concrete_function(*args))
           if hasattr(fn, 'get_concrete_function') else None)
  traced = peak_rss_mb()
  device_built = device_memory_mb(reset_peak=True)
  for _ in range(steps):
    timing.sync(fn(*args))
  device = device_memory_mb()
  return dict(library=library, mode=mode, backprop=backprop, op=op,
              steps_per_level=cfg.steps_per_level, rss_start_mb=before,
              rss_built_mb=built, rss_traced_mb=traced, graph_nodes=nodes,
              variables=len(model.variables), peak_rss_mb=peak_rss_mb(),
              device_built_mb=None if device_built is None else device_built[0],
              device_peak_mb=None if device is None else device[1])


def train_step_times(library, mode, cfg, backprops, seed=0,
                     learning_rate=1e-4, warmup=2, repeats=5):
  """Time per training step of each backprop mode, in interleaved rounds.

  One model per mode in this (fresh) process, the same weights and batch,
  timed in the same rounds so that a shared machine's load slows every mode
  alike. Returns `{backprop: {'median_ms', 'times_ms', 'first_call_s'}}`.
  """
  x = models.images(cfg, seed)
  batch = tf.constant(x[:cfg.batch_size])
  fns, out = {}, {}
  for backprop in backprops:
    model = models.build(library, cfg, x, seed=seed,
                         learning_rate=learning_rate, backprop=backprop)
    fn = model.function('train', mode)
    out[backprop] = dict(first_call_s=timing.timed(fn, (batch,)))
    fns[backprop] = (fn, (batch,))
  for backprop, times in timing.interleaved_rounds(
      fns, warmup, repeats).items():
    out[backprop].update(times_ms=times, median_ms=timing.median_ms(times))
  return out


def print_child_result(result):
  """The child's report: one marker line on stdout."""
  print(MARKER + json.dumps(result), flush=True)


def run_child(command, env=None, describe=None):
  """Runs `command` (a child that calls `print_child_result`) to completion.

  Returns its result dict; on failure, writes the tail of its output to
  stderr and returns `describe` (a dict saying what was measured) with an
  `error` entry, so one failed child does not lose the other results.
  """
  proc = subprocess.run(command, capture_output=True, text=True, env=env,
                        check=False)
  for line in proc.stdout.splitlines():
    if line.startswith(MARKER):
      return json.loads(line[len(MARKER):])
  sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
  return dict(describe or {}, error=f'exit {proc.returncode}')
