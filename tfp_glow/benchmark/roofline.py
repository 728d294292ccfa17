"""The machine's limit for this model: its own convolutions, run plainly.

A model's speed alone says little on a shared or unfamiliar CPU; set beside
what plain `tf.nn.conv2d` reaches on exactly the model's convolutions (each
shape of the architecture plan, each with its own kernel), it says how much
of the machine the library leaves unused. Two measurements:

  `measure_conv_roofline`: each distinct shape timed alone, before anything
      else is built (a quiet process), per dtype and mode;
  `conv_mix_function`: every convolution of one pass in one function, timed
      in the same interleaved rounds as the models, so that both see the same
      machine load; its float32 FLOP/s (the better of graph and XLA) is the
      "attainable" throughput each operation is compared with.
"""

import statistics
import time

import numpy as np
import tensorflow as tf

from tfp_glow.benchmark import flops
from tfp_glow.benchmark import timing

__all__ = ['measure_conv_roofline', 'conv_mix_function', 'mix_kinds',
           'summarize_mix']

# The shortest stretch of calls timed as one sample: the tiny shapes take
# microseconds, below the timer's resolution and the dispatch noise.
_MIN_SAMPLE_S = 2e-3


def measure_conv_roofline(cfg, modes, repeats):
  """Plain tf.nn.conv2d on each convolution shape of the model, alone.

  Returns (per-shape rows, summary): GFLOP/s per shape and kind (float32 in
  each mode, bfloat16 under oneDNN when graph mode is run), and the
  FLOP-weighted throughput of the model's convolution mix.
  """
  batch = cfg.batch_size
  kinds = [('f32_' + m, tf.float32, m) for m in modes]
  if 'graph' in modes:
    kinds.append(('bf16_graph', tf.bfloat16, 'graph'))
  rng = np.random.default_rng(0)
  rows = []
  for s in flops.conv_shapes(cfg):
    row = dict(s)
    for name, dtype, mode in kinds:
      x = tf.constant(rng.standard_normal(
          [batch, s['h'], s['w'], s['cin']]), dtype)
      kernel = tf.Variable(tf.constant(rng.standard_normal(
          [s['k'], s['k'], s['cin'], s['cout']]) * 0.05, dtype))
      fn = tf.function(lambda x, kernel=kernel: tf.nn.conv2d(
          x, kernel, 1, 'SAME'), jit_compile=(mode == 'xla'))
      for _ in range(3):
        timing.sync(fn(x))
      inner = max(1, int(_MIN_SAMPLE_S / max(timing.timed(fn, (x,)), 1e-6)))
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
          out = fn(x)
        timing.sync(out)
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
  if any(name == 'bf16_graph' for name, _, _ in kinds):
    summary['model_conv_ms_bf16'] = sum(
        r['bf16_graph_ms'] * r['count'] for r in rows)
  return rows, summary


def mix_kinds(modes, bfloat16):
  """(dtype name, mode) pairs of the mix: float32 in every mode, and
  bfloat16 under oneDNN (graph) when mixed precision is compared."""
  kinds = [('f32', m) for m in modes]
  if 'graph' in modes and bfloat16:
    kinds.append(('bf16', 'graph'))
  return kinds


def conv_mix_function(cfg, mode, dtype_name):
  """One function running every convolution of one log_prob pass, plainly.

  Each convolution of the model (shape x count) is one `tf.nn.conv2d` with its
  own kernel (distinct kernels: nothing for the optimiser to merge) on an
  input of the model's shape; the outputs are returned (not reduced: a
  reduction would add work, and XLA could narrow a sliced convolution).
  `dtype_name` is 'f32' or 'bf16'.
  """
  dtype = {'f32': tf.float32, 'bf16': tf.bfloat16}[dtype_name]
  rng = np.random.default_rng(1)
  batch = cfg.batch_size
  inputs, kernels = [], []
  for s in flops.conv_shapes(cfg):
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


def summarize_mix(cfg, mix_timings):
  """Medians and GFLOP/s of the mix's timings, in place; returns the JSON
  `conv_mix` record with `attainable_f32_gflops` (best float32 mode)."""
  batch_flops = flops.forward_flops_per_image(cfg) * cfg.batch_size
  mix = {}
  for dtype_name, per_mode in mix_timings.items():
    for mode, t in per_mode.items():
      t['median_ms'] = timing.median_ms(t['times_ms'])
      t['gflops'] = batch_flops / (t['median_ms'] / 1e3) / 1e9
      mix[f'{dtype_name}_{mode}_gflops'] = t['gflops']
  mix['attainable_f32_gflops'] = max(
      t['gflops'] for t in mix_timings['f32'].values())
  return mix
