"""Runs tfp_glow.programs.curve (as the command tfp-glow-curve does)."""
import os

# Before tfp_glow (and with it TensorFlow) loads: marks this process as a tfp_glow
# program, so TensorFlow's own log lines are hidden (tfp_glow/_program_start.py).
os.environ.setdefault('TFP_GLOW_PROGRAM', 'curve')
from tfp_glow.programs import curve  # pylint: disable=wrong-import-position

if __name__ == '__main__':
  curve.run()
