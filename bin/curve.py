"""Runs tfp_glow.programs.curve (as the command tfp-glow-curve does)."""
import os

# Before TensorFlow loads: on a Linux machine with no GPU driver, CPU devices only, so
# TensorFlow never logs "failed call to cuInit" (why: tfp_glow/programs/launch.py).
if os.path.isdir('/proc') and not any(
    os.path.exists(p) for p in ('/proc/driver/nvidia', '/dev/kfd')):
  os.environ.setdefault('TF_ENABLED_DEVICE_TYPES', 'CPU')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
from tfp_glow.programs import curve  # pylint: disable=wrong-import-position

if __name__ == '__main__':
  curve.run()
