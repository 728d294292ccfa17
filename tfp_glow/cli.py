"""TEMPORARY alias of `tfp_glow.run_dir` (branch wt-keras), removed at merge.

`tfp_glow/export.py` (`load_model_dir`) and `tests/export_test.py` still import
`tfp_glow.cli`; they belong to another change. Once they import `run_dir`
(`cli.load_trained` -> `run_dir.load_trained`, `cli.write_config` ->
`run_dir.write_config`, `cli.checkpoint_path` -> `run_dir.checkpoint_path`,
`cli.save_weights_atomic` -> `tfp_glow.keras.callbacks.save_weights`), delete
this file.
"""

from tfp_glow.keras.callbacks import save_weights as save_weights_atomic  # pylint: disable=unused-import
from tfp_glow.run_dir import *  # pylint: disable=wildcard-import,unused-wildcard-import
from tfp_glow.run_dir import checkpoint_path  # pylint: disable=unused-import
from tfp_glow.run_dir import load_trained  # pylint: disable=unused-import
from tfp_glow.run_dir import write_config  # pylint: disable=unused-import
