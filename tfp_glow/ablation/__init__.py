"""The paper's ablation as a library: permutation x coupling x ActNorm init.

Kingma & Dhariwal (2018), Section 5.1 and Figure 3, compare three ways of
mixing the channels between couplings (reversing them as in RealNVP, a fixed
random shuffle, the learned invertible 1x1 convolution), each with additive
and with affine coupling, everything else equal. The notes this project
started from add the ActNorm question (data-dependent initialisation against
starting every ActNorm at scale 1, bias 0). This module runs such a grid on
one dataset, several seeds per configuration, and writes what is needed to
judge it:

  runs/<config>/seed<k>.json     one finished run (written last, atomically:
                                 its presence means the run is done)
  runs/<config>/seed<k>_samples.npy  its samples (uint8), before the JSON
  settings.json                  what every run shares; a rerun must agree
  results.json, results.csv      every run's curve: step, train/validation/
                                 test bits/dim, training seconds; wall time,
                                 steps/s, parameter count
  val_bpd_vs_steps.png           the paper's Figure 3: one panel per coupling,
  val_bpd_vs_seconds.png         one line per configuration (mean over seeds)
  train_bpd_vs_steps.png         with a band from the best to the worst seed
  samples.png, samples/<config>.png  samples at temperature T from the same
                                 latent noise for every configuration
  summary.md                     the table, the rankings, and every two
                                 configurations one option apart compared
                                 seed by seed (`paired_differences`)

Everything but the configuration is fixed within a seed index `k`: the
training data order and dequantisation noise (the shuffled pipeline seeded
with `k`), the weights' seed `k`, the number of steps, the optimizer (Adam
with a linear warm-up, no Polyak averaging, no augmentation: the comparison
is of the flows themselves). Validation and test bits/dim use the unshuffled
pipelines' deterministic noise (`eval_seed`), the same for every
configuration, so two configurations are compared on the same inputs.

The training loop is written out here (one compiled step: the mean bits/dim
of `dist.log_prob`, the one likelihood, and an Adam update) rather than
`GlowModel.fit`, so that each block of `eval_every` steps is timed alone,
without evaluation or callbacks.

Resumable: finished runs are skipped, so a killed grid loses at most the runs
in progress. With `parallel > 1` the runs go to that many worker processes,
each with its share of the CPU threads.

Layout: `grid` (configurations, settings, one run, the runner), `results`
(aggregation, results.json/.csv, summary.md), `plots` (matplotlib, Agg),
`files` (atomic writes). The program is `tfp_glow.programs.ablation`.

#### Example

```python
from tfp_glow import ablation
settings = ablation.Settings(steps=1000, eval_every=50)
ablation.run_grid(settings, ablation.DEFAULT_GRID, seeds=[0, 1],
                  out_dir='/tmp/ablation')
```
"""

from tfp_glow.ablation.grid import Config
from tfp_glow.ablation.grid import DEFAULT_GRID
from tfp_glow.ablation.grid import Settings
from tfp_glow.ablation.grid import check_settings
from tfp_glow.ablation.grid import parse_config
from tfp_glow.ablation.grid import run_grid
from tfp_glow.ablation.grid import run_one
from tfp_glow.ablation.grid import run_path
from tfp_glow.ablation.results import NEAR_BEST_BPD
from tfp_glow.ablation.results import aggregate
from tfp_glow.ablation.results import collect
from tfp_glow.ablation.results import paired_differences
from tfp_glow.ablation.results import report
from tfp_glow.ablation.results import steps_to_within

__all__ = [
    'Config', 'DEFAULT_GRID', 'NEAR_BEST_BPD', 'Settings', 'aggregate',
    'check_settings', 'collect', 'paired_differences', 'parse_config',
    'report', 'run_grid', 'run_one', 'run_path', 'steps_to_within',
]
