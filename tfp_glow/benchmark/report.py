"""The results as a Markdown table, and the files a run writes.

`render` is a list of sections, each a function of the results dict that
returns its lines (or none when its measurement was not run), so a new
measurement adds a section without touching the others. The output of the
existing sections is what docs/BENCHMARKS.md quotes: keep it stable.
"""

import json
import os
import platform

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ['render', 'machine_info', 'write']


def _fmt(v, spec='.1f'):
  return '-' if v is None else format(v, spec)


def _header(results):
  if 'conv_mix' not in results:
    return []
  cfg = results['config']
  mix = results['conv_mix']
  return [
      f"Configuration: {cfg['image_size']}x{cfg['image_size']}x"
      f"{cfg['channels']}, L={cfg['levels']}, K={cfg['steps_per_level']}, "
      f"width {cfg['hidden_width']}, batch {cfg['batch_size']}; forward "
      f"{results['forward_gflop_per_image']:.3f} GFLOP/image; median of "
      f"{results['repeats']} after {results['warmup']} warm-up calls.",
      f"Attainable float32 convolution throughput (the model's own "
      f"convolutions as plain tf.nn.conv2d, timed in the same rounds): "
      f"{mix['attainable_f32_gflops']:.0f} GFLOP/s ("
      + ', '.join(f"{k[:-7].replace('_', ' ')} {v:.0f}"
                  for k, v in mix.items()
                  if k.endswith('_gflops') and not k.startswith('attainable'))
      + ' GFLOP/s).']


def _timing_table(results):
  if 'best' not in results:
    return []
  lines = ['| op | library | best mode | ms (median) | first call s '
           '| other mode ms | GFLOP/s | of attainable f32 |',
           '|---|---|---|---:|---:|---:|---:|---:|']
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
  return lines


def _model_table(results):
  if 'models' not in results:
    return []
  lines = ['| library | parameters | Conv2D ops log_prob | Conv2D ops '
           'sample | peak RSS train step (MB) | note |',
           '|---|---:|---:|---:|---:|---|']
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
  return lines


def _times(ratio):
  return '-' if ratio is None else f'{ratio:.2f}x'


def _memory_table(results):
  """Peak RSS and step time over K per backprop mode, with the ratios the
  memory-saving backprop is judged by (vs its own smallest K, vs 'store')."""
  table = results.get('memory_table')
  if not table:
    return []
  cfg = table['config']
  rows = table['rows']
  by = {(r['steps_per_level'], r['backprop']): r for r in rows}
  ks = sorted({r['steps_per_level'] for r in rows})
  device = any(r.get('device_peak_mb') for r in rows)
  lines = [
      f"Memory table: {cfg['image_size']}x{cfg['image_size']}x"
      f"{cfg['channels']}, L={cfg['levels']}, width {cfg['hidden_width']}, "
      f"batch {cfg['batch_size']}; peak RSS of a fresh process after build + "
      f"3 training steps ({rows[0].get('mode', '?')} mode), of which the "
      'model built (with its Adam slots, before any step); the same with the '
      "gradient alone (no optimizer update); step time: median of "
      'interleaved rounds in one process per K.'
      + (' GPU: TensorFlow\'s allocator (get_memory_info), in use once '
         'built and the peak during the steps.' if device else ''), '',
      '| K | backprop | peak RSS (MB) | vs its smallest K | vs store | '
      'built (MB) | gradient alone (MB) | vs its smallest K | '
      + ('GPU built (MB) | GPU peak (MB) | vs its smallest K | '
         'GPU gradient alone (MB) | ' if device else '')
      + 'step ms | vs store |',
      '|---:|---|---:|---:|---:|---:|---:|---:|'
      + ('---:|---:|---:|---:|' if device else '') + '---:|---:|']
  for k in ks:
    for bp in table['backprops']:
      r = by.get((k, bp))
      if r is None:
        continue
      if 'error' in r:
        lines.append(f"| {k} | {bp} | failed: {r['error']} |")
        continue
      base = by.get((ks[0], bp), {}).get('peak_rss_mb')
      store = by.get((k, 'store'), {})
      rss = r.get('peak_rss_mb')
      ratio = lambda a, b: None if a is None or not b else a / b  # pylint: disable=unnecessary-lambda-assignment
      grad = r.get('gradient_peak_rss_mb')
      grad_base = by.get((ks[0], bp), {}).get('gradient_peak_rss_mb')
      dev = r.get('device_peak_mb')
      dev_base = by.get((ks[0], bp), {}).get('device_peak_mb')
      lines.append(
          f"| {k} | {bp} | {_fmt(rss, '.0f')} | "
          f"{_times(ratio(rss, base))} | "
          f"{_fmt(ratio(rss, store.get('peak_rss_mb')), '.0%')} | "
          f"{_fmt(r.get('rss_built_mb'), '.0f')} | {_fmt(grad, '.0f')} | "
          f"{_times(ratio(grad, grad_base))} | "
          + (f"{_fmt(r.get('device_built_mb'), '.0f')} | "
             f"{_fmt(dev, '.0f')} | {_times(ratio(dev, dev_base))} | "
             f"{_fmt(r.get('gradient_device_peak_mb'), '.0f')} | "
             if device else '')
          + f"{_fmt(r.get('step_ms'), '.0f')} | "
          f"{_times(ratio(r.get('step_ms'), store.get('step_ms')))} |")
  return lines


def _train_program_table(results):
  tp = results.get('train_program')
  if not tp:
    return []
  lines = [f"Training program (`GlowModel.fit` with bin/train.py's callbacks, "
           f"EMA and tf.data pipeline on {tp['images']} synthetic images, "
           f"{tp['steps_per_epoch']} steps per epoch, each epoch validated) "
           f"against the bare training step, interleaved per epoch; median "
           f"over {tp['epochs'] - 1} epochs after the first:",
           '',
           '| mode | bare step ms | fit ms/step over the steps | per-epoch '
           'work s | train_program ms/step | steps/s | ratio (steps only) |',
           '|---|---:|---:|---:|---:|---:|---:|']
  for mode in ('graph', 'xla'):
    row = tp.get(mode)
    if row:
      lines.append(
          f"| {mode} | {row['bare_ms']:.1f} | {row['steps_ms']:.1f} | "
          f"{row['epoch_work_s']:.2f} | {row['program_ms']:.1f} | "
          f"{row['program_steps_per_s']:.2f} | {row['ratio']:.3f} "
          f"({row['steps_ratio']:.3f}) |")
  return lines


def _label(cfg):
  return (f"{cfg['image_size']}x{cfg['image_size']}x{cfg['channels']} "
          f"L={cfg['levels']}")


def _ratio_table(results):
  """Each implementation's best-mode ms beside tfp_glow's, per configuration
  (the run's own and those of `--also_image_sizes`), and how its cost grows
  from the first configuration to the last."""
  if 'best' not in results or 'tfp_glow' not in results['best']:
    return []
  entries = [results] + list(results.get('scales', []))
  libs = [l for l in results['libraries'] if l != 'tfp_glow']
  if not libs and len(entries) == 1:
    return []
  labels = [_label(e['config']) for e in entries]
  head = '| library | op | ' + ' | '.join(
      f'{l} ms | vs tfp_glow' for l in labels) + ' |'
  rule = '|---|---|' + '---:|---:|' * len(entries)
  if len(entries) > 1:
    head += f' {labels[-1]} / {labels[0]} |'
    rule += '---:|'
  lines = ['Each implementation against tfp_glow (best mode, median ms; '
           'ratio = its ms / tfp_glow\'s: above 1 is slower than tfp_glow)' +
           (', every configuration in the same interleaved rounds:'
            if len(entries) > 1 else ':'), '', head, rule]
  for lib in ['tfp_glow'] + libs:
    for op in results['ops']:
      cells, ms = [], []
      for e in entries:
        mine = e['best'].get(lib, {}).get(op)
        ours = e['best'].get('tfp_glow', {}).get(op)
        value = mine['median_ms'] if mine else None
        ms.append(value)
        ratio = (value / ours['median_ms'] if value is not None and ours
                 else None)
        cells.append(f"{_fmt(value)} | {_times(ratio)}")
      if all(v is None for v in ms):
        continue
      row = f"| {lib} | {op} | " + ' | '.join(cells) + ' |'
      if len(entries) > 1:
        growth = (ms[-1] / ms[0] if ms[0] and ms[-1] is not None else None)
        row += f' {_times(growth)} |'
      lines.append(row)
  return lines


# In output order; each returns a list of lines, empty to leave it out.
SECTIONS = (_header, _timing_table, _model_table, _ratio_table,
            _memory_table, _train_program_table)


def render(results):
  """The Markdown table(s) of a results dict: sections, a blank line apart."""
  blocks = [section(results) for section in SECTIONS]
  return '\n\n'.join('\n'.join(lines) for lines in blocks if lines)


def _cpu_name():
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def machine_info():
  """What the figures depend on besides the code: CPU, cores, versions."""
  return dict(platform=platform.platform(), cpu=_cpu_name(),
              cores=os.cpu_count(), tensorflow=tf.__version__,
              tfp=tfp.__version__, python=platform.python_version())


def write(results, table, json_out=None, markdown_out=None):
  """Writes the results as JSON and the table as Markdown, where asked; a
  missing folder is created (a run of minutes must not end on a path)."""
  for path in (json_out, markdown_out):
    if path and os.path.dirname(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
  if json_out:
    with open(json_out, 'w') as f:
      json.dump(results, f, indent=1, default=str)
  if markdown_out:
    with open(markdown_out, 'w') as f:
      f.write(table + '\n')
