"""Runs tfp_glow.programs.interpolate (as the command tfp-glow-interpolate does)."""
import os

# Before tfp_glow (and with it TensorFlow) loads: marks this process as a tfp_glow
# program, so TensorFlow's own log lines are hidden (tfp_glow/_program_start.py).
os.environ.setdefault('TFP_GLOW_PROGRAM', 'interpolate')
from tfp_glow.programs import interpolate  # pylint: disable=wrong-import-position

if __name__ == '__main__':
  interpolate.run()
