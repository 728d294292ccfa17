"""Runs tfp_glow.programs.interpolate (as the command tfp-glow-interpolate does)."""
from tfp_glow.programs import interpolate

if __name__ == '__main__':
  interpolate.run()
