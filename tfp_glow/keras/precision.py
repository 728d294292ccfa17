"""The coupling networks' precision, chosen from the hardware: `resolve_compute_dtype`.

bfloat16 convolutions are only worth it where the hardware runs them natively: on a
CPU with AVX512_BF16 or AMX (oneDNN then runs the coupling networks' convolutions
about 1.5x faster than float32, docs/BENCHMARKS.md), or on a GPU of compute capability
8.0 or later (Ampere, Hopper: bfloat16 tensor cores). Elsewhere bfloat16 is emulated
and slower, so float32 stays. Either way only the coupling networks change precision:
log-dets, 1x1 convolutions, priors and all weights stay float32
(`tfp_glow.nn.GlowNetwork`), and docs/BENCHMARKS.md measures that the held-out
bits/dim of the two agree within the dequantisation noise.
"""

import os

import tensorflow as tf

__all__ = ['COMPUTE_DTYPES', 'resolve_compute_dtype', 'fast_bfloat16']

COMPUTE_DTYPES = ('auto', 'float32', 'bfloat16')
_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')


def _cpu_flags(cpuinfo='/proc/cpuinfo'):
  try:
    with open(cpuinfo) as f:
      for line in f:
        if line.startswith('flags'):
          return set(line.split(':', 1)[1].split())
  except OSError:
    pass
  return set()


def fast_bfloat16(cpuinfo='/proc/cpuinfo'):
  """`(True, why)` where the device training runs on has native bfloat16, else
  `(False, why)`.

  A visible GPU decides (compute capability >= 8.0); without one, the CPU's flags in
  `cpuinfo` (Linux) do. Other systems: no flags are read, so float32.
  """
  gpus = tf.config.list_physical_devices('GPU')
  if gpus:
    details = tf.config.experimental.get_device_details(gpus[0])
    cc = details.get('compute_capability')
    name = details.get('device_name', 'GPU')
    if cc and tuple(cc) >= (8, 0):
      return True, f'{name} (compute capability {cc[0]}.{cc[1]}) has bfloat16 tensor cores'
    return False, f'{name} (compute capability {cc}) has no fast bfloat16'
  found = sorted(_cpu_flags(cpuinfo) & set(_CPU_FLAGS))
  if found:
    return True, f'the CPU has {", ".join(found)}'
  return False, f'the CPU has none of {", ".join(_CPU_FLAGS)}'


def resolve_compute_dtype(value, cpuinfo='/proc/cpuinfo'):
  """'auto', 'float32' or 'bfloat16' -> `(dtype name, reason)`.

  'auto' picks bfloat16 where `fast_bfloat16` says the hardware has it; the
  environment variable `TFP_GLOW_COMPUTE_DTYPE` (float32 or bfloat16) overrides
  'auto' for a whole machine.
  """
  if value not in COMPUTE_DTYPES:
    raise ValueError(f'compute_dtype must be one of {list(COMPUTE_DTYPES)}, got '
                     f'{value!r}.')
  if value != 'auto':
    return value, 'asked for'
  forced = os.environ.get('TFP_GLOW_COMPUTE_DTYPE')
  if forced:
    if forced not in COMPUTE_DTYPES[1:]:
      raise ValueError('TFP_GLOW_COMPUTE_DTYPE must be float32 or bfloat16, got '
                       f'{forced!r}.')
    return forced, 'TFP_GLOW_COMPUTE_DTYPE'
  fast, why = fast_bfloat16(cpuinfo)
  return ('bfloat16' if fast else 'float32'), why
