"""The ablation's figures (matplotlib, Agg backend: no display needed)."""

import os
import warnings

import numpy as np

# Fixed colours per permutation, dashes for the identity ActNorm init.
COLORS = {'reverse': 'tab:red', 'shuffle': 'tab:orange', 'conv': 'tab:blue',
          'conv_lu': 'tab:purple'}
COUPLING_ORDER = ('additive', 'affine')


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path):
  """Saves atomically (a temporary file, then `os.replace`)."""
  tmp = f'{path}.tmp{os.getpid()}.png'
  fig.savefig(tmp, dpi=100)
  os.replace(tmp, path)


def _curves(runs, key, x_key):
  """Seed-aligned arrays `(x mean [n], y [seeds, n])` of one configuration.

  Runs are cut to the shortest (a diverged seed ends early); None -> NaN.
  """
  n = min(len(r['curve']) for r in runs)
  y = np.array([[np.nan if p[key] is None else p[key] for p in r['curve'][:n]]
                for r in runs], np.float64)
  x = np.array([[p[x_key] for p in r['curve'][:n]] for r in runs], np.float64)
  return x.mean(0), y


def _y_limits(all_y, steps_all):
  """Limits that show where configurations differ: the first 10% of the
  steps (a fresh flow, far above everything else) and the highest 10% of the
  rest are left off the top (those lines run off the panel)."""
  values = []
  for steps, y in zip(steps_all, all_y):
    if len(steps) == 0:
      continue
    keep = steps >= 0.1 * steps.max() if steps.max() > 0 else steps >= 0
    values.append(y[:, keep].ravel())
  values = np.concatenate(values) if values else np.array([])
  values = values[np.isfinite(values)]
  if not values.size:
    return None
  lo, hi = float(values.min()), float(np.percentile(values, 90))
  pad = 0.05 * max(hi - lo, 1e-3)
  return lo - pad, hi + pad


def _line_plot(runs, names, key, x_key, xlabel, ylabel, title, path):
  plt = _pyplot()
  by_config = {n: [r for r in runs if r['config'] == n] for n in names}
  couplings = [c for c in COUPLING_ORDER
               if any(r['coupling'] == c for r in runs)]
  couplings += sorted({r['coupling'] for r in runs} - set(couplings))
  fig, axes = plt.subplots(1, len(couplings), figsize=(5.5 * len(couplings),
                                                      4.2), squeeze=False,
                           sharey=True)
  all_y, all_steps = [], []
  for ax, coupling in zip(axes[0], couplings):
    for name in names:
      rs = [r for r in by_config[name] if r['coupling'] == coupling]
      if not rs:
        continue
      x, y = _curves(rs, key, x_key)
      steps, _ = _curves(rs, key, 'step')
      all_y.append(y)
      all_steps.append(steps)
      r0 = rs[0]
      color = COLORS.get(r0['permutation'], None)
      style = '--' if r0['actnorm_init'] != 'data' else '-'
      label = r0['permutation'] + (
          f" ({r0['actnorm_init']} ActNorm init)"
          if r0['actnorm_init'] != 'data' else '')
      with warnings.catch_warnings():
        # Columns without a value (no train bpd at step 0) are left out.
        warnings.simplefilter('ignore', RuntimeWarning)
        mean = np.nanmean(y, 0)
      ok = np.isfinite(mean)
      ax.plot(x[ok], mean[ok], style, color=color,
              label=f'{label}, {len(rs)} seed{"s" if len(rs) > 1 else ""}')
      if len(rs) > 1:
        with warnings.catch_warnings():
          warnings.simplefilter('ignore', RuntimeWarning)
          lo, hi = np.nanmin(y, 0), np.nanmax(y, 0)
        ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.2,
                        linewidth=0)
    ax.set_title(f'{coupling} coupling')
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  axes[0][0].set_ylabel(ylabel)
  limits = _y_limits(all_y, all_steps)
  if limits:
    axes[0][0].set_ylim(*limits)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)


def write_all(out_dir, runs, names, settings):
  """Writes the three curve plots and the sample grids into `out_dir`."""
  band = 'line: mean over seeds; band: best to worst seed'
  _line_plot(runs, names, 'val_bpd', 'step', 'training step',
             'validation bits/dim',
             f'Validation bits/dim ({band})',
             os.path.join(out_dir, 'val_bpd_vs_steps.png'))
  _line_plot(runs, names, 'val_bpd', 'train_seconds',
             'training seconds (without evaluation; mean over seeds)',
             'validation bits/dim',
             f'Validation bits/dim against training time ({band})',
             os.path.join(out_dir, 'val_bpd_vs_seconds.png'))
  _line_plot(runs, names, 'train_bpd', 'step', 'training step',
             'training bits/dim',
             'Training bits/dim (mean of the training batches since the '
             f'previous evaluation; {band})',
             os.path.join(out_dir, 'train_bpd_vs_steps.png'))
  write_samples(out_dir, runs, names, settings)


def write_samples(out_dir, runs, names, settings):
  """samples/<config>.png (the lowest seed's samples) and samples.png (all
  configurations side by side: the same latent noise for each)."""
  from tfp_glow import images  # pylint: disable=g-import-not-at-top
  grids = []
  for name in names:
    rs = sorted((r for r in runs if r['config'] == name and r['samples']),
                key=lambda r: r['seed'])
    if not rs:
      continue
    x = np.load(os.path.join(out_dir, rs[0]['samples']))
    nrow = int(np.ceil(np.sqrt(len(x))))
    images.save_grid_png(x, os.path.join(out_dir, 'samples', f'{name}.png'),
                         nrow=nrow)
    grids.append((name, rs[0]['seed'], _tile(x, nrow)))
  if not grids:
    return
  plt = _pyplot()
  cols = min(4, len(grids))
  rows = int(np.ceil(len(grids) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.3 * rows),
                           squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  for ax, (name, seed, grid) in zip(axes.ravel(), grids):
    ax.imshow(grid, cmap='gray' if grid.ndim == 2 else None, vmin=0,
              vmax=255, interpolation='nearest')
    ax.set_title(f'{name} (seed {seed})', fontsize=9)
  t = settings.get('temperature') if settings else None
  fig.suptitle(f'Samples at T={t} from the same latent noise', fontsize=10)
  fig.tight_layout()
  _save(fig, os.path.join(out_dir, 'samples.png'))
  plt.close(fig)


def _tile(x, nrow, pad=1):
  """uint8 `[N, H, W, C]` -> one grid image, C=1 squeezed."""
  n, h, w, c = x.shape
  ncol = nrow
  nrows = int(np.ceil(n / ncol))
  grid = np.zeros((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c),
                  np.uint8)
  for i in range(n):
    r, q = divmod(i, ncol)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + q * (w + pad):pad + q * (w + pad) + w] = x[i]
  return grid[..., 0] if c == 1 else grid
