"""Launcher of `tfp_glow.programs.score` (see it for the flags)."""
from tfp_glow.programs import score

if __name__ == '__main__':
  score.run()
