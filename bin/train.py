"""Runs tfp_glow.programs.train (as the command tfp-glow-train does)."""
from tfp_glow.programs import train

if __name__ == '__main__':
  train.run()
