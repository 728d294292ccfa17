"""Launcher of `tfp_glow.programs.benchmark` (see it for the flags)."""
from tfp_glow.programs import benchmark

if __name__ == '__main__':
  benchmark.run()
