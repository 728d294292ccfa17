"""The programs (train, sample, evaluate, interpolate, export, benchmark).

Each module holds its absl flags, a `main(argv)` and `run()`, the entry point
of `bin/<name>.py` and of the console script `tfp-glow-<name>`. Flags are
defined when a program module is imported, so import one program per process
(as a launcher does); nothing here imports them, and no library module imports
this package.
"""
