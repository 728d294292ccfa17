"""Runs tfp_glow.programs.export (as the command tfp-glow-export does)."""
from tfp_glow.programs import export

if __name__ == '__main__':
  export.run()
