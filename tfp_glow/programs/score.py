r"""Scores a trained Glow as an out-of-distribution detector.

  python bin/score.py --model_dir=runs/digits \
      --ood=noise,constant,sklearn_patches,inverted

Scores the in-distribution test set (--in, default: the model's own dataset,
split --in_split) and each OOD set of --ood with every method of --method
(`tfp_glow.scoring`: 'bpd' the naive bits/dim, 'typicality', 'complexity',
'ratio' with --background_dir; higher = more anomalous), and prints AUROC,
AUPR and FPR at 95% TPR (OOD = positive) per method and OOD set.

OOD sets (--ood, comma-separated; default noise,constant,inverted): any
dataset spec bin/train.py accepts ('digits', a TFDS name such as mnist or
svhn_cropped, 'folder:PATH'; split --ood_split, folders: all their images),
read at the model's n_bits and image_size, or a built-in set made at the
model's shape and n_bins (an unknown name is refused, listing these):
  noise             every value uniform over the n_bins levels
  constant          one level per image (and channel), the same at every pixel
  inverted          the --in images with every bin k turned into n_bins-1-k
                    (16 - v for the digits)
  sklearn_patches   HxW patches of the two photos scikit-learn ships
                    (load_sample_images), grey for 1 channel, RGB for 3,
                    8 bits quantised to n_bins levels (needs scikit-learn)
Data whose image shape or n_bins differ from the model's is refused by name.
The built-in sets have as many images as the --in set (--count caps every set).

The typicality reference (mean and std of the bits/dim of held-out
in-distribution images) is fitted on --reference_split of the model's dataset
(default: validation, never the test set it is evaluated on) for each seed,
or read from --reference; the first seed's is written to
MODEL_DIR/scoring_reference.json (--save_reference), where bin/export.py and
`tfp_glow.export.save(..., reference=MODEL_DIR)` find it (the export's `score`
signature then gives typicality too).

Deterministic: dequantisation noise is a function of (seed, image index)
(`tfp_glow.data`); with several --seeds every metric is reported as the mean
and standard deviation over them. The built-in sets' images depend on
--data_seed only.

Writes into --output_dir (default MODEL_DIR/scoring):
  results.json   every metric per seed, their mean and std, per-set mean
                 bits/dim and PNG bits/dim, the reference
  scores.png     histograms of the scores, in vs each OOD set, one panel per
                 method (first seed)
"""

import json
import os
import sys

from absl import app
from absl import flags
import numpy as np

from tfp_glow.programs import launch

FLAGS = flags.FLAGS
flags.DEFINE_string('model_dir', None, 'Model directory written by bin/train.py.')
flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'],
                  'Which weights: best validation bits/dim (falls back to '
                  'latest) or the last epoch.')
flags.DEFINE_string('in', None,
                    'In-distribution dataset spec (default: the model\'s own).')
flags.DEFINE_string('in_split', 'test', 'Split of --in.')
flags.DEFINE_list('ood', ['noise', 'constant', 'inverted'],
                  'Out-of-distribution sets: dataset specs (digits, TFDS names, '
                  'folder:PATH) or built-in sets (noise, constant, inverted, '
                  'sklearn_patches).')
flags.DEFINE_list('out', None, 'Renamed --ood (in bin/sample.py and '
                  'bin/interpolate.py --out is the output PNG); refused with a '
                  'message saying so.')
flags.DEFINE_string('ood_split', 'test',
                    'Split of the OOD datasets (folders: all their images).')
flags.DEFINE_alias('out_split', 'ood_split')
flags.DEFINE_list('method', ['all'],
                  "Scores: 'all' or a list of bpd, typicality, complexity, ratio "
                  "('all' includes ratio only with --background_dir).")
flags.DEFINE_string('background_dir', None,
                    "Model directory of a background model, for 'ratio' (same "
                    'image shape and n_bins).')
flags.DEFINE_string('reference', None,
                    'A saved scoring reference (JSON file or directory) instead '
                    'of fitting one on --reference_split.')
flags.DEFINE_string('reference_split', 'validation',
                    'Split of the model\'s dataset the typicality reference is '
                    'fitted on.')
flags.DEFINE_bool('save_reference', True,
                  'Write the fitted reference (first seed) to '
                  'MODEL_DIR/scoring_reference.json.')
flags.DEFINE_list('seeds', ['0'],
                  'Dequantisation seeds; several give each metric\'s mean and '
                  'std over them.')
flags.DEFINE_integer('data_seed', 0, 'Seed of the built-in sets\' images.')
flags.DEFINE_integer('count', None, 'At most this many images per set.')
flags.DEFINE_integer('batch_size', 256, 'Images per model call.')
flags.DEFINE_string('data_dir', None,
                    'TFDS data directory (default: the one in config.json, else '
                    'TFDS\'s).')
flags.DEFINE_string('output_dir', None,
                    'Where results.json and scores.png go (default '
                    'MODEL_DIR/scoring).')
flags.mark_flag_as_required('model_dir')

_METRICS = ('auroc', 'aupr', 'fpr95')


def _methods(scoring):
  names = [m.strip() for m in FLAGS.method if m.strip()]
  if names == ['all']:
    names = [m for m in scoring.METHODS
             if m != 'ratio' or FLAGS.background_dir]
  unknown = [m for m in names if m not in scoring.METHODS]
  if unknown or not names:
    raise app.UsageError(f'--method: unknown {unknown or names}; choose all or '
                         f'from {list(scoring.METHODS)}.')
  if 'ratio' in names and not FLAGS.background_dir:
    raise app.UsageError("--method=ratio needs --background_dir (the background "
                         'model\'s directory).')
  return names


def _seeds():
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise app.UsageError(f'--seeds must be integers, got {FLAGS.seeds}.') from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise app.UsageError(f'--seeds must be distinct integers, got {FLAGS.seeds}.')
  return seeds


def _floats(ds, count):
  """All images of a pipeline, as one float32 array (at most `count`)."""
  xs, n = [], 0
  for batch in ds:
    if isinstance(batch, (tuple, list)):
      batch = batch[0]
    xs.append(batch.numpy())
    n += len(xs[-1])
    if count is not None and n >= count:
      break
  if not xs:
    return np.zeros([0], np.float32)
  x = np.concatenate(xs)
  return x if count is None else x[:count]


class _Data:
  """Loads dataset specs at the model's settings and checks they match it."""

  def __init__(self, config, data_dir):
    self.model = config['model']
    self.config = config
    self.data_dir = data_dir
    self.shape = tuple(self.model['image_shape'])
    self.n_bins = int(self.model['n_bins'])

  def load(self, spec, split, seed, count):
    from tfp_glow import run_dir  # pylint: disable=g-import-not-at-top
    from tfp_glow import data  # pylint: disable=g-import-not-at-top
    common = dict(batch_size=FLAGS.batch_size, shuffle=False, dequantize=True,
                  seed=seed)
    if spec == self.model['dataset']:
      ds, info = run_dir.load_split(self.config, split, data_dir=self.data_dir,
                                **common)
    else:
      if spec.startswith(data.FOLDER_PREFIX):
        split = 'all'
      own_bits = spec != 'digits'
      ds, info = data.load(
          spec, split, data_dir=self.data_dir,
          n_bits=self.model['n_bits'] if own_bits else None,
          image_size=self.model['image_size'] if own_bits else None, **common)
    if tuple(info.image_shape) != self.shape or int(info.n_bins) != self.n_bins:
      raise ValueError(
          f'{spec!r} ({info.source or split}) has images {list(info.image_shape)} '
          f'with {info.n_bins} levels; the model takes {list(self.shape)} with '
          f'{self.n_bins}: refusing to score data of another shape or n_bins.')
    x = _floats(ds, count)
    if not len(x):
      raise ValueError(f'{spec!r} split {split!r} holds no images.')
    return x, f'{spec} {split}'


def _summary(values):
  v = np.asarray(values, np.float64)
  return {'mean': float(v.mean()), 'std': float(v.std(ddof=1)) if v.size > 1
          else 0.0, 'values': [float(a) for a in v]}


def _fmt(summary):
  if len(summary['values']) == 1:
    return f'{summary["mean"]:.3f}'
  return f'{summary["mean"]:.3f} ± {summary["std"]:.3f}'


def _plot(path, methods, scores_in, scores_out, in_name):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  cols = min(len(methods), 2)
  rows = -(-len(methods) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows),
                           squeeze=False)
  for ax in axes.flat[len(methods):]:
    ax.set_visible(False)
  for ax, method in zip(axes.flat, methods):
    sets = [(in_name, scores_in[method])] + [
        (name, s[method]) for name, s in scores_out.items()]
    finite = np.concatenate([v[np.isfinite(v)] for _, v in sets])
    edges = np.histogram_bin_edges(finite, bins=50)
    for i, (name, v) in enumerate(sets):
      v = np.clip(v, edges[0], edges[-1])
      if i == 0:
        ax.hist(v, edges, density=True, color='0.75', label=f'{name} (in)')
      else:
        ax.hist(v, edges, density=True, histtype='step', linewidth=1.5,
                label=name)
    ax.set_title(method)
    ax.set_xlabel('score (higher = more anomalous)')
    ax.set_ylabel('density')
  axes.flat[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _check_flags(scoring):
  """The OOD set names, methods and seeds the flags ask for (UsageError if bad)."""
  if FLAGS.out is not None:
    raise app.UsageError(
        f'--out is now --ood (the out-of-distribution sets): pass '
        f'--ood={",".join(FLAGS.out)}. (--out is the output PNG of bin/sample.py '
        'and bin/interpolate.py; here the outputs go to --output_dir.)')
  if FLAGS.batch_size < 1:
    raise app.UsageError(f'--batch_size must be >= 1, got {FLAGS.batch_size}.')
  if FLAGS.count is not None and FLAGS.count < 2:
    raise app.UsageError(f'--count must be >= 2, got {FLAGS.count}.')
  ood_names = [s.strip() for s in FLAGS.ood if s.strip()]
  if not ood_names or len(set(ood_names)) != len(ood_names):
    raise app.UsageError(f'--ood must name distinct OOD sets, got {FLAGS.ood}.')
  return ood_names, _methods(scoring), _seeds()


def _load_models(run_dir, methods):
  """The model (and the background model for 'ratio'), refusing a conditional one."""
  model, config, path = run_dir.load_trained(FLAGS.model_dir, FLAGS.checkpoint)
  if config['model'].get('num_classes'):
    raise ValueError('This model is class-conditional; scoring needs an '
                     'unconditional model (the marginal p(x)).')
  background = None
  if 'ratio' in methods:
    background, _, _ = run_dir.load_trained(FLAGS.background_dir, FLAGS.checkpoint)
  return model, config, path, background


def _load_ood(loader, scoring, name, seed, like):
  """One OOD set's dequantised images and where they came from: a built-in set
  made at the model's shape and n_bins (`like`: the in-distribution bins, for
  'inverted'), or a dataset spec, whose unknown names list the built-in sets."""
  if name in scoring.SYNTHETIC_SETS:
    k = scoring.synthetic_bins(name, len(like), loader.shape, loader.n_bins,
                               seed=FLAGS.data_seed, like=like)
    return (scoring.dequantize_examples(k, loader.n_bins, seed=seed),
            f'built-in ({name})')
  from tfp_glow import data  # pylint: disable=g-import-not-at-top
  try:
    return loader.load(name, FLAGS.ood_split, seed, FLAGS.count)
  except data.UnknownDatasetError as e:
    raise ValueError(f'--ood: {name!r} is neither a built-in set '
                     f'({", ".join(scoring.SYNTHETIC_SETS)}) nor a dataset. {e}') from e


def _score_seed(seed, *, model, background, config, path, loader, methods,
                ood_names, given_reference):
  """Every set's scores with dequantisation seed `seed`: the data is all loaded
  first (a bad --ood name fails before any scoring), then the reference fitted
  (unless given) and each set scored."""
  from tfp_glow import scoring  # pylint: disable=g-import-not-at-top
  from tfp_glow.data import quantize  # pylint: disable=g-import-not-at-top
  in_spec = getattr(FLAGS, 'in') or config['model']['dataset']
  x_in, in_name = loader.load(in_spec, FLAGS.in_split, seed, FLAGS.count)
  bins_in = quantize.to_bins(x_in, loader.n_bins).numpy().astype(np.uint8)
  ood, sources = {}, {}
  for name in ood_names:
    ood[name], sources[name] = _load_ood(loader, scoring, name, seed, bins_in)
  reference = given_reference
  if 'typicality' in methods and reference is None:
    x_ref, ref_name = loader.load(config['model']['dataset'],
                                  FLAGS.reference_split, seed, None)
    reference = scoring.fit_reference(
        model, x_ref, batch_size=FLAGS.batch_size,
        description={'data': ref_name, 'seed': seed, 'weights': path})
  kwargs = dict(reference=reference, background=background,
                batch_size=FLAGS.batch_size)
  return dict(
      seed=seed, reference=reference, in_name=in_name, sources=sources,
      scores_in=scoring.score_all(model, x_in, methods, **kwargs),
      scores_out={name: scoring.score_all(model, x, methods, **kwargs)
                  for name, x in ood.items()})


def _summarize(per_seed, ood_names, methods, in_name, sources):
  """Metrics per OOD set and method (mean and std over seeds), and each set's
  count, source and mean bits/dim (model, PNG, background)."""
  from tfp_glow import scoring  # pylint: disable=g-import-not-at-top
  metrics, sets = {}, {}
  for name in ood_names:
    metrics[name] = {}
    for method in methods:
      runs = [scoring.evaluate_ood(r['scores_in'][method],
                                   r['scores_out'][name][method])
              for r in per_seed]
      metrics[name][method] = {m: _summary([r[m] for r in runs])
                               for m in _METRICS}
  for name, pick in [(in_name, lambda r: r['scores_in'])] + [
      (n, lambda r, n=n: r['scores_out'][n]) for n in ood_names]:
    first = pick(per_seed[0])
    sets[name] = {'count': int(len(next(iter(first.values())))),
                  'source': sources.get(name, in_name)}
    for key in ('bpd', 'png_bpd', 'background_bpd'):
      if key in first:
        sets[name][f'mean_{key}'] = _summary(
            [float(np.mean(pick(r)[key])) for r in per_seed])
  return metrics, sets


def _print_tables(path, in_name, seeds, methods, ood_names, reference, metrics,
                  sets):
  """The metrics table, then each set's mean bits/dim."""
  print(f'Model {FLAGS.model_dir} (weights {path}); in: {in_name} '
        f'({sets[in_name]["count"]} images); seeds {",".join(map(str, seeds))}')
  if reference is not None:
    print(f'Typicality reference: '
          f'{reference.get("data", {}).get("data", FLAGS.reference)}'
          f', {reference["count"]} images, bits/dim {reference["mean"]:.3f} ± '
          f'{reference["std"]:.3f}')
  print()
  width = max(len(n) for n in ood_names + ['OOD set'])
  cell = 15 if len(seeds) > 1 else 7
  print(f'{"OOD set":<{width}}  {"method":<10}  ' +
        '  '.join(f'{m.upper():>{cell}}' for m in _METRICS))
  for name in ood_names:
    for method in methods:
      row = metrics[name][method]
      print(f'{name:<{width}}  {method:<10}  ' +
            '  '.join(f'{_fmt(row[m]):>{cell}}' for m in _METRICS))
  print()
  print(f'{"set":<{max(width, len(in_name))}}  {"images":>6}  {"bits/dim":>{cell}}'
        + (f'  {"PNG bits/dim":>{cell}}' if 'complexity' in methods else ''))
  for name, info in sets.items():
    line = (f'{name:<{max(width, len(in_name))}}  {info["count"]:>6}  '
            f'{_fmt(info["mean_bpd"]) if "mean_bpd" in info else "-":>{cell}}')
    if 'mean_png_bpd' in info:
      line += f'  {_fmt(info["mean_png_bpd"]):>{cell}}'
    print(line)


def _write_outputs(run_dir, path, in_name, seeds, methods, per_seed, metrics, sets):
  """results.json and scores.png in --output_dir; the fitted reference (first
  seed) next to the model, for the export's `score` signature."""
  from tfp_glow import scoring  # pylint: disable=g-import-not-at-top
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, 'scoring')
  os.makedirs(output_dir, exist_ok=True)
  reference = per_seed[0]['reference']
  results = {
      'model_dir': FLAGS.model_dir, 'weights': path, 'in': in_name,
      'methods': methods, 'seeds': seeds, 'data_seed': FLAGS.data_seed,
      'background_dir': FLAGS.background_dir, 'reference': reference,
      'sets': sets, 'metrics': metrics,
  }
  run_dir.write_json(os.path.join(output_dir, 'results.json'), results)
  if reference is not None and FLAGS.save_reference and not FLAGS.reference:
    scoring.save_reference(reference, FLAGS.model_dir)
  _plot(os.path.join(output_dir, 'scores.png'), list(methods),
        per_seed[0]['scores_in'], per_seed[0]['scores_out'], in_name)
  return output_dir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from tfp_glow import run_dir  # pylint: disable=g-import-not-at-top
  from tfp_glow import scoring  # pylint: disable=g-import-not-at-top
  ood_names, methods, seeds = _check_flags(scoring)

  try:
    model, config, path, background = _load_models(run_dir, methods)
    data_dir = FLAGS.data_dir or config.get('training', {}).get('data_dir')
    loader = _Data(config, data_dir)
    given_reference = (scoring.load_reference(FLAGS.reference)
                       if FLAGS.reference else None)
    per_seed = [_score_seed(seed, model=model, background=background,
                            config=config, path=path, loader=loader,
                            methods=methods, ood_names=ood_names,
                            given_reference=given_reference)
                for seed in seeds]
  except (FileNotFoundError, ValueError, TypeError, ImportError) as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2

  in_name, sources = per_seed[-1]['in_name'], per_seed[-1]['sources']
  metrics, sets = _summarize(per_seed, ood_names, methods, in_name, sources)
  _print_tables(path, in_name, seeds, methods, ood_names, per_seed[0]['reference'],
                metrics, sets)
  output_dir = _write_outputs(run_dir, path, in_name, seeds, methods, per_seed,
                              metrics, sets)
  print(f'\nWrote {output_dir}/results.json and scores.png')
  return 0


def run():
  """The entry point of bin/score.py and of the console script tfp-glow-score."""
  launch.run(main, __name__)


if __name__ == '__main__':
  run()
