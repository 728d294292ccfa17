"""Runs tfp_glow.programs.sample (as the command tfp-glow-sample does)."""
from tfp_glow.programs import sample

if __name__ == '__main__':
  sample.run()
