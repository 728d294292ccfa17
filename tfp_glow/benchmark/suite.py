"""The comparison run: every (library, operation, mode) in interleaved rounds.

`run` builds each library's model, compiles each operation in each mode (the
first call, trace + compile + run, is reported apart), adds the model's own
convolutions as a plain mix (the machine's limit, see `roofline`), then times
all of them in the same rounds and keeps each library's best mode per
operation. `measure_rss` then measures each library's training step in a
fresh process. Both fill one results dict, whose keys docs/BENCHMARKS.md and
earlier JSON files use; a further measurement (a memory table over model
sizes, the training program's steps/s against the bare step) is a further
function here that adds its own key, rendered by its own `report` section.
"""

import dataclasses
import functools
import time
from typing import Tuple

import tensorflow as tf

from tfp_glow.benchmark import flops
from tfp_glow.benchmark import memory
from tfp_glow.benchmark import models
from tfp_glow.benchmark import program
from tfp_glow.benchmark import report
from tfp_glow.benchmark import roofline
from tfp_glow.benchmark import timing

__all__ = ['Options', 'run', 'measure_rss', 'memory_table',
           'measure_train_program']

_log = functools.partial(print, flush=True)


@dataclasses.dataclass(frozen=True)
class Options:
  """How a run measures (the `Config` says what)."""
  libraries: Tuple[str, ...] = ('tfp_glow', 'tfp_glow_bf16', 'tfb')
  ops: Tuple[str, ...] = ('log_prob', 'train', 'sample')
  modes: Tuple[str, ...] = ('graph', 'xla')
  repeats: int = 7
  warmup: int = 2
  conv_roofline: bool = True    # each convolution shape alone, first
  conv_repeats: int = 15
  bf16_mix: bool = True         # a bfloat16 convolution mix beside float32
  seed: int = 0
  learning_rate: float = 1e-4


def run(cfg, options, command='', log=_log, also=(), peer_options=None):
  """Times the libraries against each other and the machine's limit.

  `also`: further configurations (e.g. `cfg.at_image_size(64)`) whose
  models are timed in the SAME interleaved rounds, so that how each
  library's cost grows from `cfg` to them is measured under one machine
  load; their results go to `results['scales']`, one entry each with the
  keys `config`, `models`, `timings`, `conv_mix`, `best` (the convolution
  roofline, each shape alone, is measured for `cfg` only).
  `peer_options` go to the PyTorch adapter (`glow_dir`, `threads`).

  Returns the results dict (without `rss`, `this_process_peak_rss_mb` and
  `wall_s`, which the caller adds). The models and compiled functions are
  freed on return, so a later child-process measurement starts from a
  process that holds none of them.
  """
  o = options
  results = dict(
      config=cfg.as_dict(), repeats=o.repeats, warmup=o.warmup,
      modes=list(o.modes), ops=list(o.ops), libraries=list(o.libraries),
      command=command, machine=report.machine_info(),
      forward_gflop_per_image=flops.forward_flops_per_image(cfg) / 1e9)
  log(f'Config {cfg.as_dict()}; modes {list(o.modes)}; libraries '
      f'{list(o.libraries)}' + (f"; also {', '.join(c.label for c in also)}"
                                if also else ''))

  # The machine's limit first (a quiet process, nothing else built yet).
  if o.conv_roofline:
    rows, summary = roofline.measure_conv_roofline(cfg, o.modes,
                                                   o.conv_repeats)
    results['conv_roofline'] = rows
    results['conv_roofline_summary'] = summary
    log('conv roofline:', {k: round(v, 1) for k, v in summary.items()})

  # One entry per configuration; every function of every configuration is
  # timed in the same rounds.
  entries = [results] + [
      dict(config=c.as_dict(),
           forward_gflop_per_image=flops.forward_flops_per_image(c) / 1e9)
      for c in also]
  fns, records = {}, {}
  for index, (c, entry) in enumerate(zip((cfg,) + tuple(also), entries)):
    _compile(index, c, o, entry, fns, records, peer_options or {}, log)

  for key, times_ms in timing.interleaved_rounds(
      fns, o.warmup, o.repeats).items():
    records[key]['times_ms'] = times_ms

  for c, entry in zip((cfg,) + tuple(also), entries):
    entry['conv_mix'] = roofline.summarize_mix(c, entry['timings']['conv_mix'])
    entry['best'] = _best(c, o, entry['timings'],
                          entry['conv_mix']['attainable_f32_gflops'])
  if also:
    results['scales'] = entries[1:]
  return results


def _compile(index, cfg, o, entry, fns, records, peer_options, log):
  """Builds every library's model of `cfg`, makes the first call of each
  (library, op, mode) and of the convolution mix, and registers each
  function (key `(index, ...)`) and its timing record for the rounds."""
  x_all = models.images(cfg, o.seed)
  x = tf.constant(x_all[:cfg.batch_size])
  seed = tf.constant([o.seed, 1], tf.int32)
  timings = entry['timings'] = {}
  entry['models'] = {}
  where = f' ({cfg.label})' if index else ''
  for lib in o.libraries:
    t0 = time.perf_counter()
    model = models.build(lib, cfg, x_all, seed=o.seed,
                         learning_rate=o.learning_rate, **peer_options)
    info = dict(parameters=model.parameters,
                variables=len(model.variables),
                tracked_variables=model.tracked_variables,
                build_s=time.perf_counter() - t0, note=model.note)
    entry['models'][lib] = info
    timings[lib] = {}
    for op in o.ops:
      timings[lib][op] = {}
      args = model.args(op, x, seed)
      for mode in model.run_modes(o.modes):
        fn = model.function(op, mode)
        try:
          first = timing.timed(fn, args)
        except Exception as e:  # pylint: disable=broad-except
          msg = f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
          log(f'{lib}{where} {op} {mode}: FAILED {msg}')
          timings[lib][op][mode] = dict(error=msg)
          continue
        fns[(index, lib, op, mode)] = (fn, args)
        records[(index, lib, op, mode)] = timings[lib][op][mode] = dict(
            first_call_s=first, times_ms=[])
        log(f'{lib}{where} {op} {mode}: first call {first:.1f} s')
    if model.graph_ops and ('log_prob' in o.ops or 'sample' in o.ops):
      info.update(models.conv2d_counts(model, x, seed))

  # The machine's limit in the same rounds: the model's convolutions, plain.
  timings['conv_mix'] = {}
  for dtype_name, mode in roofline.mix_kinds(o.modes, o.bf16_mix):
    fn = roofline.conv_mix_function(cfg, mode, dtype_name)
    first = timing.timed(fn)
    key = (index, 'conv_mix', dtype_name, mode)
    fns[key] = (fn, ())
    records[key] = timings['conv_mix'].setdefault(dtype_name, {})[mode] = (
        dict(first_call_s=first, times_ms=[]))


def _best(cfg, options, timings, attainable):
  """Each library's fastest mode per operation, its GFLOP/s and the
  fraction of the attainable float32 throughput; fills in the medians."""
  best = {}
  for lib in options.libraries:
    best[lib] = {}
    for op in options.ops:
      cands = []
      for mode, t in timings[lib][op].items():
        if t.get('times_ms'):
          t['median_ms'] = timing.median_ms(t['times_ms'])
          cands.append((t['median_ms'], mode))
      if not cands:
        continue
      ms, mode = min(cands)
      gflops = flops.gflops_per_second(cfg, op, ms)
      best[lib][op] = dict(mode=mode, median_ms=ms, gflops=gflops,
                           fraction=gflops / attainable)
  return best


def measure_train_program(cfg, modes, epochs=4, steps_per_epoch=20, seed=0,
                          log=_log):
  """The training program (`GlowModel.fit` with its callbacks, EMA and
  pipeline) against the bare training step, per mode: see `program.measure`.
  Returns the `train_program` entry of the results."""
  return program.measure(cfg, modes, epochs=epochs,
                         steps_per_epoch=steps_per_epoch, seed=seed, log=log)


def measure_rss(results, libraries, child_command, env=None, log=_log):
  """Peak RSS of each library's training step, one fresh process each.

  Each library is measured in its best training mode of `results` (the first
  mode run when `train` was not timed). `child_command(library, mode)` is the
  command line of a process that calls `memory.train_step_rss` and
  `memory.print_child_result`. Returns library -> result.
  """
  rss = {}
  for lib in results['libraries']:
    if lib not in libraries:
      continue
    mode = results['best'][lib].get('train', {}).get(
        'mode', results['modes'][0])
    rss[lib] = memory.run_child(child_command(lib, mode), env=env,
                                describe=dict(library=lib, mode=mode))
    log(f'{lib} peak RSS: {rss[lib]}')
  return rss


def memory_table(cfg, steps_per_level, backprops, rss_command, times_command,
                 env=None, log=_log):
  """Peak RSS and time per training step over K, for each backprop mode.

  For each K of `steps_per_level`: one fresh process per backprop mode
  measures the peak RSS of build + three training steps
  (`rss_command(k, backprop, 'train')`, a child calling
  `memory.train_step_rss`), another the same with the gradient alone
  (`rss_command(k, backprop, 'gradient')`: the flow without the optimizer's
  per-variable update), and one more process times every mode's step in
  interleaved rounds
  (`times_command(k)`, a child calling `memory.train_step_times`). Returns
  the `memory_table` results entry: the configuration and one row per
  (K, backprop).
  """
  rows = []
  for k in steps_per_level:
    for backprop in backprops:
      r = memory.run_child(rss_command(k, backprop, 'train'), env=env,
                           describe=dict(steps_per_level=k, backprop=backprop))
      log(f'K={k} {backprop}: {r}')
      g = memory.run_child(rss_command(k, backprop, 'gradient'), env=env,
                           describe=dict(steps_per_level=k, backprop=backprop))
      log(f'K={k} {backprop} gradient alone: {g}')
      rows.append(dict(r, steps_per_level=k, backprop=backprop,
                       gradient_peak_rss_mb=g.get('peak_rss_mb'),
                       gradient_device_peak_mb=g.get('device_peak_mb'),
                       gradient_error=g.get('error')))
    times = memory.run_child(times_command(k), env=env,
                             describe=dict(steps_per_level=k))
    log(f'K={k} times: {times}')
    for row in rows[-len(backprops):]:
      t = times.get(row['backprop'], {}) if 'error' not in times else {}
      row['step_ms'] = t.get('median_ms')
      row['times_ms'] = t.get('times_ms')
      if 'error' in times:
        row['times_error'] = times['error']
  return dict(config=cfg.as_dict(), backprops=list(backprops), rows=rows)
