"""Aggregation: results.json / results.csv, summary.md, the plots' inputs."""

import csv
import io
import json
import os

import numpy as np

from tfp_glow.ablation import files

__all__ = ['collect', 'steps_to_within', 'aggregate', 'paired_differences',
           'run_metrics', 'report',
           'summary_markdown', 'NEAR_BEST_BPD', 'CSV_COLUMNS']

# Within 0.02 bits/dim of a run's own best validation bits/dim.
NEAR_BEST_BPD = 0.02


def collect(out_dir):
  """Every finished run in `out_dir` (dicts as `run_one` returns)."""
  runs = []
  root = os.path.join(out_dir, 'runs')
  if not os.path.isdir(root):
    return runs
  for name in sorted(os.listdir(root)):
    folder = os.path.join(root, name)
    if not os.path.isdir(folder):
      continue
    for file in sorted(os.listdir(folder)):
      if file.startswith('seed') and file.endswith('.json'):
        with open(os.path.join(folder, file)) as f:
          runs.append(json.load(f))
  return runs


def steps_to_within(curve, tolerance=NEAR_BEST_BPD, key='val_bpd'):
  """First step whose `key` is within `tolerance` of the curve's own best."""
  points = [(p['step'], p[key]) for p in curve if p.get(key) is not None]
  if not points:
    return None
  best = min(v for _, v in points)
  return next(s for s, v in points if v <= best + tolerance)


def _mean_std(values):
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  a = np.asarray(values, np.float64)
  return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def aggregate(runs, order=None):
  """Per configuration, over its seeds: the summary's numbers.

  Returns a list of dicts (in `order`, then any other configuration by name):
  `config`, `seeds`, `parameter_count`, and `(mean, std)` pairs (std over
  seeds, ddof=1; 0 for one seed) of `final_test_bpd`, `final_val_bpd`,
  `best_val_bpd`, `best_val_step`, `test_at_best_val` (the test bits/dim at the
  evaluation with the lowest validation bits/dim: early stopping),
  `steps_to_near_best` (`steps_to_within`), `ms_per_step`; `diverged`: how
  many seeds diverged.
  """
  by_config = {}
  for r in runs:
    by_config.setdefault(r['config'], []).append(r)
  names = [n for n in (order or []) if n in by_config]
  names += sorted(n for n in by_config if n not in names)
  rows = []
  for name in names:
    rs = sorted(by_config[name], key=lambda r: r['seed'])
    ok = [r for r in rs if not r['diverged']]
    best_points = []
    for r in ok:
      pts = [p for p in r['curve'] if p['val_bpd'] is not None]
      best_points.append(min(pts, key=lambda p: p['val_bpd']) if pts else None)
    rows.append({
        'config': name,
        'permutation': rs[0]['permutation'],
        'coupling': rs[0]['coupling'],
        'actnorm_init': rs[0]['actnorm_init'],
        'seeds': [r['seed'] for r in rs],
        'diverged': len(rs) - len(ok),
        'parameter_count': rs[0]['parameter_count'],
        'final_test_bpd': _mean_std([r['curve'][-1]['test_bpd'] for r in ok]),
        'final_val_bpd': _mean_std([r['curve'][-1]['val_bpd'] for r in ok]),
        'best_val_bpd': _mean_std([p and p['val_bpd'] for p in best_points]),
        'best_val_step': _mean_std([p and p['step'] for p in best_points]),
        'test_at_best_val': _mean_std(
            [p and p['test_bpd'] for p in best_points]),
        'steps_to_near_best': _mean_std(
            [steps_to_within(r['curve']) for r in ok]),
        'ms_per_step': _mean_std(
            [1e3 / r['steps_per_second'] for r in rs if r['steps_per_second']]),
    })
  return rows


OPTIONS = ('permutation', 'coupling', 'actnorm_init')
# Each option's values in the order a comparison goes (from the baseline).
_OPTION_ORDER = {
    'permutation': ('reverse', 'shuffle', 'conv', 'conv_lu'),
    'coupling': ('additive', 'affine'),
    'actnorm_init': ('data', 'identity'),
}


def run_metrics(run):
  """One run's `test_at_best_val` and `final_test_bpd` (None if diverged)."""
  if run['diverged']:
    return {'test_at_best_val': None, 'final_test_bpd': None}
  pts = [p for p in run['curve'] if p['val_bpd'] is not None]
  best = min(pts, key=lambda p: p['val_bpd']) if pts else None
  return {'test_at_best_val': best and best['test_bpd'],
          'final_test_bpd': run['curve'][-1]['test_bpd']}


def paired_differences(runs, order=None):
  """Every pair of configurations that differ in exactly one option, compared
  seed by seed (same data order, noise and weights' seed): the per-seed
  differences `b - a` of `test_at_best_val` and `final_test_bpd`.

  Pairing by seed removes what the seeds share (e.g. an easy data order) from
  the comparison; a difference whose sign every seed agrees on is reported as
  such. Returns dicts with `a`, `b`, `option`, `seeds`, and per metric
  `(mean, [per-seed differences])`.
  """
  by_config = {}
  for r in runs:
    by_config.setdefault(r['config'], {})[r['seed']] = r
  names = [n for n in (order or []) if n in by_config]
  names += sorted(n for n in by_config if n not in names)
  first = {n: next(iter(by_config[n].values())) for n in names}
  out = []
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      changed = [o for o in OPTIONS if first[a][o] != first[b][o]]
      if len(changed) != 1:
        continue
      option = changed[0]
      rank = _OPTION_ORDER[option]
      va, vb = first[a][option], first[b][option]
      if (rank.index(va) if va in rank else 99) > (
          rank.index(vb) if vb in rank else 99):
        a_, b_ = b, a
      else:
        a_, b_ = a, b
      seeds = sorted(set(by_config[a_]) & set(by_config[b_]))
      entry = {'a': a_, 'b': b_, 'option': option, 'seeds': seeds}
      for key in ('test_at_best_val', 'final_test_bpd'):
        diffs = []
        for seed in seeds:
          ma = run_metrics(by_config[a_][seed])[key]
          mb = run_metrics(by_config[b_][seed])[key]
          if ma is not None and mb is not None:
            diffs.append(mb - ma)
        entry[key] = (float(np.mean(diffs)) if diffs else None, diffs)
      out.append(entry)
  return out


CSV_COLUMNS = ('config', 'permutation', 'coupling', 'actnorm_init', 'seed',
               'step', 'train_bpd', 'val_bpd', 'test_bpd', 'train_seconds',
               'wall_seconds', 'steps_per_second', 'parameter_count',
               'diverged')


def _csv_text(runs):
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator='\n')
  writer.writerow(CSV_COLUMNS)
  for r in runs:
    for p in r['curve']:
      row = dict(r, **p)
      writer.writerow(['' if row[c] is None else row[c] for c in CSV_COLUMNS])
  return buf.getvalue()


def report(out_dir, order=None):
  """(Re)writes results.json/.csv, the plots, sample grids and summary.md
  from every finished run in `out_dir`. Returns the results.json dict."""
  runs = collect(out_dir)
  names = [n for n in (order or []) if any(r['config'] == n for r in runs)]
  names += sorted({r['config'] for r in runs} - set(names))
  runs.sort(key=lambda r: (names.index(r['config']), r['seed']))
  rows = aggregate(runs, names)
  settings_path = os.path.join(out_dir, 'settings.json')
  settings = None
  if os.path.exists(settings_path):
    with open(settings_path) as f:
      settings = json.load(f)
  pairs = paired_differences(runs, names)
  results = {'settings': settings, 'configs': names, 'summary': rows,
             'paired_differences': pairs, 'runs': runs}
  files.write_json(os.path.join(out_dir, 'results.json'), results)
  files.atomic_write(os.path.join(out_dir, 'results.csv'), _csv_text(runs))
  if runs:
    from tfp_glow.ablation import plots  # pylint: disable=g-import-not-at-top
    plots.write_all(out_dir, runs, names, settings)
  files.atomic_write(os.path.join(out_dir, 'summary.md'),
                summary_markdown(rows, runs, settings, pairs))
  return results


def _pm(pair, digits=3, scale=1.0):
  mean, std = pair
  if mean is None:
    return '-'
  return f'{mean * scale:.{digits}f} ± {std * scale:.{digits}f}'


def _ranking(rows, key):
  ranked = sorted((r for r in rows if r[key][0] is not None),
                  key=lambda r: r[key][0])
  lines = []
  for i, r in enumerate(ranked):
    gap = ''
    if i:
      prev = ranked[i - 1]
      diff = r[key][0] - prev[key][0]
      spread = max(r[key][1], prev[key][1])
      gap = f' (+{diff:.3f}' + (
          ', within the seed spread' if diff <= spread else '') + ')'
    lines.append(f'{i + 1}. {r["config"]}: {_pm(r[key])}{gap}')
  return lines


def _diffs(pair):
  mean, diffs = pair
  if mean is None:
    return '-'
  signs = {np.sign(d) for d in diffs}
  agree = ' (every seed)' if len(diffs) > 1 and len(signs) == 1 else ''
  return (f'{mean:+.3f}{agree}: '
          + ', '.join(f'{d:+.3f}' for d in diffs))


def summary_markdown(rows, runs, settings, pairs=()):
  """summary.md: settings, the table, the rankings, the paired differences."""
  lines = ['# Ablation summary', '']
  if settings:
    s = settings
    lines += [
        f"Dataset `{s['dataset']}`; L={s['levels']}, K={s['steps_per_level']}, "
        f"width {s['hidden_width']}, learn_top={s['learn_top']}; batch "
        f"{s['batch_size']}, Adam {s['learning_rate']:g} with "
        f"{s['warmup_steps']} warm-up steps, {s['steps']} steps, evaluated "
        f"every {s['eval_every']} steps; no EMA, no augmentation. "
        f'{len(runs)} runs. Bits/dim: mean ± standard deviation over seeds.',
        '']
  lines += [
      '| configuration | parameters | seeds | final test bpd | best val bpd '
      '| at step | test bpd at best val | steps to within '
      f'{NEAR_BEST_BPD} of own best val | ms/step |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    seeds = f"{len(r['seeds'])}" + (
        f" ({r['diverged']} diverged)" if r['diverged'] else '')
    lines.append(
        f"| {r['config']} | {r['parameter_count']:,} | {seeds} | "
        f"{_pm(r['final_test_bpd'])} | {_pm(r['best_val_bpd'])} | "
        f"{_pm(r['best_val_step'], 0)} | {_pm(r['test_at_best_val'])} | "
        f"{_pm(r['steps_to_near_best'], 0)} | {_pm(r['ms_per_step'], 1)} |")
  lines += ['', '## Ranking by test bits/dim at the best validation point '
            '(early stopping)', '']
  lines += _ranking(rows, 'test_at_best_val')
  lines += ['', '## Ranking by final test bits/dim', '']
  lines += _ranking(rows, 'final_test_bpd')
  if pairs:
    lines += [
        '', '## One option changed, seed by seed', '',
        'B minus A for the same seed (same data order, noise and weights\' '
        'seed); negative: B is better. Mean, then each seed.', '',
        '| A | B | changed | test bpd at best val, B - A | final test bpd, '
        'B - A |', '|---|---|---|---|---|']
    for p in pairs:
      lines.append(f"| {p['a']} | {p['b']} | {p['option']} | "
                   f"{_diffs(p['test_at_best_val'])} | "
                   f"{_diffs(p['final_test_bpd'])} |")
  lines += [
      '', 'A gap marked "within the seed spread" is no larger than the larger '
      'standard deviation of the two configurations: not a difference these '
      'seeds can show. ms/step: training steps after the first block (no '
      'compilation), mean over seeds.',
      '', 'Plots: `val_bpd_vs_steps.png`, `val_bpd_vs_seconds.png`, '
      '`train_bpd_vs_steps.png`; samples: `samples.png` (every configuration, '
      'the same latent noise), `samples/<config>.png`.', '']
  return '\n'.join(lines)
