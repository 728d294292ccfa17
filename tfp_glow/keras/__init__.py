"""Keras training for Glow: the model, its checkpoint callbacks, tf.distribute.

* `model`: `GlowModel` (a `keras.Model` whose loss is bits/dim),
  `WarmupSchedule` (warmup, then a decay to zero at the end of the budget),
  `SampleGrid`.
* `precision`: `resolve_compute_dtype` (`--compute_dtype=auto`).
* `callbacks`: `Checkpoint` and `Backup`, atomic and chief-only (the one set
  `bin/train.py` and the distributed tests use); `TimeLimit` and `TimeBudget`
  (a wall-clock budget that stops the run and shapes the learning rate).
* `distribute`: `make_strategy`, `is_chief` and the helpers a step needs under
  a strategy.

(A subpackage named `keras` inside `tfp_glow`: `import keras` anywhere still
means Keras itself, as imports are absolute.)
"""

from tfp_glow.keras import callbacks
from tfp_glow.keras import distribute
from tfp_glow.keras import model
from tfp_glow.keras import precision
from tfp_glow.keras.callbacks import Backup
from tfp_glow.keras.callbacks import Checkpoint
from tfp_glow.keras.callbacks import TimeBudget
from tfp_glow.keras.distribute import is_chief
from tfp_glow.keras.distribute import make_strategy
from tfp_glow.keras.model import GlowModel
from tfp_glow.keras.model import SampleGrid
from tfp_glow.keras.model import WarmupSchedule
from tfp_glow.keras.model import warmup_steps_for

__all__ = [
    'Backup', 'Checkpoint', 'GlowModel', 'SampleGrid', 'TimeBudget',
    'WarmupSchedule', 'callbacks', 'distribute', 'is_chief', 'make_strategy',
    'model', 'precision',
    'warmup_steps_for',
]
