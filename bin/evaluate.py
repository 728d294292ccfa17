"""Runs tfp_glow.programs.evaluate (as the command tfp-glow-evaluate does)."""
from tfp_glow.programs import evaluate

if __name__ == '__main__':
  evaluate.run()
