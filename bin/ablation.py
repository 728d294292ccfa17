"""Launcher of `tfp_glow.programs.ablation` (see it for the flags)."""
from tfp_glow.programs import ablation

if __name__ == '__main__':
  ablation.run()
