"""Atomic writes: a killed process never leaves a half-written file."""

import json
import os


def atomic_write(path, data, mode='w'):
  """Writes through a temporary file and `os.replace`: all or nothing."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, mode) as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path, obj):
  atomic_write(path, json.dumps(obj, indent=1, sort_keys=True) + '\n')
