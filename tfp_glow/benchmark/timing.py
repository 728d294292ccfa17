"""Wall-clock timing of compiled functions, fair under a shared machine.

Dispatch is asynchronous, so every measurement ends by fetching its outputs
(`sync`). Functions compared with each other are timed in interleaved rounds
rather than one after another: a machine whose load changes during the run
then slows every contender alike, and the ratios stay meaningful.
"""

import statistics
import time

import tensorflow as tf

__all__ = ['sync', 'timed', 'interleaved_rounds', 'median_ms']


def sync(out):
  """Blocks until every tensor of `out` (any nest) is computed."""
  for t in tf.nest.flatten(out):
    t.numpy()


def timed(fn, args=()):
  """Seconds of one call of `fn(*args)`, outputs fetched."""
  start = time.perf_counter()
  sync(fn(*args))
  return time.perf_counter() - start


def interleaved_rounds(fns, warmup, repeats):
  """Times every function once per round, in an order rotated each round.

  `fns` maps a key to `(fn, args)`. Returns key -> list of `repeats` times in
  ms. The warm-up rounds run after every function exists: the first
  graph-mode call of a function after other functions were traced is slow
  again (measured: 0.3 s for a tiny log_prob that then takes 2 ms), so
  warming each up right after its first call is not enough.
  """
  keys = list(fns)
  times = {key: [] for key in keys}
  for r in range(warmup + repeats):
    shift = r % len(keys) if keys else 0
    for key in keys[shift:] + keys[:shift]:
      fn, args = fns[key]
      seconds = timed(fn, args)
      if r >= warmup:
        times[key].append(seconds * 1e3)
  return times


def median_ms(times_ms):
  return statistics.median(times_ms)
