"""XLA or not, chosen by measurement: `choose_jit_compile`.

Which compile mode is faster depends on the machine and the model: on the
project's CPU, TF's graph mode (oneDNN kernels) beats XLA for the CIFAR-shaped
model by ~1.5x, while a GPU usually favours XLA (docs/BENCHMARKS.md). So the
training program's default, `--jit_compile=auto`, and `GlowModel.compile`'s
default, `jit_compile='auto'`, measure instead of guessing: before training,
the real model's Keras training step (`model.train_function`, exactly what
`fit` calls) is compiled in both modes and timed on the first batches of the
training data, interleaved, and the faster is kept; the same for the
evaluation step (`model.test_function`, what validation and `evaluate` call),
chosen on its own since its ranking may differ from the training step's.

The measurement leaves no trace in the model: the weights (trainable or not)
and the optimizer's variables (step count, moments, EMA averages) are copied
before the timed steps and assigned back after them, and the metrics are
reset, so that `auto` selection followed by N steps of `fit` gives the same
weights as N steps in the chosen mode (tests/training_test.py checks it). The
compiled functions of the chosen modes are kept as `model.train_function` /
`model.test_function`, so `fit` does not compile them again.

Under a strategy with several replicas (except a TPU) nothing is measured:
XLA does not compile Keras's cross-replica step there (`GlowModel.fit` turns
it off), so both choices are graph mode.

On a machine with no GPU or TPU, `auto` is graph mode for both steps without
measuring (`cpu_choice`; `TFP_GLOW_JIT_AUTO=measure` measures there too). On
the project's CPU graph mode won the training step at every image size but the
8x8 digits (where the two are within the noise), and measuring costs more than
it can gain there (docs/BENCHMARKS.md, issue 19): once an XLA training step has
run in a process, later graph-mode steps ran 25-40% slower in 3 of 4 trials
(with lower CPU use, so not spinning threads), which is how `auto` trained at
295 ms/step against `--jit_compile=false`'s 222; and XLA's evaluation step is
compiled again for each validation batch shape.
"""

import os

import dataclasses
import statistics
import time

import tensorflow as tf

__all__ = ['AUTO', 'MODES', 'JitChoice', 'parse_jit_compile',
           'choose_jit_compile', 'forced', 'several_replicas', 'cpu_only',
           'cpu_choice', 'MEASURE_ENV']

# Set to 'measure' to time both modes on a machine without GPU or TPU too.
MEASURE_ENV = 'TFP_GLOW_JIT_AUTO'

AUTO = 'auto'
MODES = ('graph', 'xla')  # jit_compile False, True
_TRUE = ('true', 't', 'yes', 'y', '1', 'xla')
_FALSE = ('false', 'f', 'no', 'n', '0', 'graph')


def parse_jit_compile(value):
  """'auto', True or False from a bool or a string (any case).

  Accepted: True/False, 'auto', 'true'/'false' (also 1/0, yes/no, xla/graph),
  None (= 'auto'). Anything else raises a ValueError that names the value.
  """
  if value is None:
    return AUTO
  if isinstance(value, bool):
    return value
  if isinstance(value, int) and value in (0, 1):
    return bool(value)
  if isinstance(value, str):
    v = value.strip().lower()
    if v == AUTO:
      return AUTO
    if v in _TRUE:
      return True
    if v in _FALSE:
      return False
  raise ValueError(f"jit_compile must be 'auto', True or False, got {value!r}.")


@dataclasses.dataclass
class JitChoice:
  """What `choose_jit_compile` decided, and the figures it decided on.

  Attributes:
    train: the training step's `jit_compile` (True: XLA).
    evaluate: the evaluation step's `jit_compile`.
    how: 'measured', 'forced' (an explicit True/False), 'replicas' (several
      replicas: XLA off without measuring) or 'cpu' (no GPU or TPU: graph
      mode without measuring).
    train_ms / evaluate_ms: mode ('graph', 'xla') -> median ms per step of the
      timed steps (measured only).
    compile_s: '<function> <mode>' -> seconds of the first, untimed call
      (trace + compile + one step).
    errors: '<function> <mode>' -> why that mode could not be used (e.g. an op
      XLA cannot compile); the other mode is then chosen.
    steps: timed steps per mode and function.
  """
  train: bool
  evaluate: bool
  how: str
  train_ms: dict = dataclasses.field(default_factory=dict)
  evaluate_ms: dict = dataclasses.field(default_factory=dict)
  compile_s: dict = dataclasses.field(default_factory=dict)
  errors: dict = dataclasses.field(default_factory=dict)
  steps: int = 0

  def as_dict(self):
    """JSON-able, for config.json / results.json."""
    d = dataclasses.asdict(self)
    d['train_mode'] = MODES[int(self.train)]
    d['evaluate_mode'] = MODES[int(self.evaluate)]
    return d

  def describe(self):
    """One line for people, with both figures when measured."""

    def part(name, chosen, ms):
      figures = ', '.join(f'{m} {ms[m]:.1f} ms' for m in MODES if m in ms)
      errs = '; '.join(f'{k.split()[1]} failed: {v}' for k, v in
                       self.errors.items() if k.startswith(name))
      return (f'{name} step {figures or "-"}'
              f'{" (" + errs + ")" if errs else ""} -> {MODES[int(chosen)]}')

    if self.how == 'forced':
      return (f'jit_compile={self.train} (forced): training and evaluation '
              f'in {MODES[int(self.train)]} mode.')
    if self.how == 'cpu':
      return ('jit_compile=auto on a CPU: graph mode for training and '
              'evaluation, not measured (faster on CPUs, and an XLA training '
              'step slows later graph-mode steps in the same process: '
              f'docs/BENCHMARKS.md; {MEASURE_ENV}=measure times both).')
    if self.how == 'replicas':
      return ('jit_compile=auto: several replicas, XLA off (Keras cannot '
              'XLA-compile the cross-replica step): graph mode.')
    return (f'jit_compile=auto, median of {self.steps} steps per mode on the '
            f'first training batches: {part("training", self.train, self.train_ms)}'
            f'; {part("evaluation", self.evaluate, self.evaluate_ms)}.')


def _sync(out):
  for t in tf.nest.flatten(out):
    if hasattr(t, 'numpy'):
      t.numpy()


def several_replicas(strategy):
  """True where Keras cannot XLA-compile the step: several replicas, no TPU."""
  return (strategy.num_replicas_in_sync > 1
          and not isinstance(strategy, tf.distribute.TPUStrategy))


def cpu_only():
  """True when `auto` should not measure: no GPU or TPU is visible and
  TFP_GLOW_JIT_AUTO is not 'measure'."""
  if os.environ.get(MEASURE_ENV, '').strip().lower() == 'measure':
    return False
  return not (tf.config.list_logical_devices('GPU') or
              tf.config.list_logical_devices('TPU'))


def cpu_choice(model, log=None):
  """`auto` on a CPU: graph mode for both steps, nothing compiled in XLA
  (see the module docstring). Returns the `JitChoice`."""
  choice = JitChoice(train=False, evaluate=False, how='cpu')
  _install(model, choice, None, None)
  if log:
    log(choice.describe())
  return choice


def _timing_dataset(batches):
  """The batches again, as a repeating `tf.data.Dataset` whose element spec
  has a dynamic batch, like a training pipeline's (so that `fit` reuses the
  traced step rather than tracing it again)."""
  first = batches[0]
  if isinstance(first, (tuple, list)):
    parts = tuple(tf.concat([b[i] for b in batches], 0)
                  for i in range(len(first)))
  else:
    parts = tf.concat(list(batches), 0)
  size = int(tf.nest.flatten(first)[0].shape[0])
  return tf.data.Dataset.from_tensor_slices(parts).batch(size).repeat()


def _snapshot(model):
  variables = list(model.weights)
  if model.optimizer is not None:
    variables += list(model.optimizer.variables)
  seen, unique = set(), []
  for v in variables:
    if id(v) not in seen:
      seen.add(id(v))
      unique.append(v)
  return [(v, v.numpy()) for v in unique]


def _restore(snapshot):
  for v, value in snapshot:
    v.assign(value)


def choose_jit_compile(model, batches, steps=5, evaluate=True,
                       timer=time.perf_counter, log=None):
  """Times the model's training (and evaluation) step in both modes; keeps the
  faster. See the module docstring.

  Args:
    model: a compiled Keras model (a `GlowModel`), with its optimizer, whose
      weights are ready to train (`GlowModel`: ActNorm initialised), built and
      compiled under the strategy it will train under.
    batches: a few batches as `fit` will see them (tensors, or
      `(images, labels)` tuples), e.g. the first batches of the training data;
      they are cycled through.
    steps: timed steps per mode (after one untimed call, which traces,
      compiles and runs once), interleaved between the modes.
    evaluate: also choose the evaluation step's mode (else it follows the
      training step's).
    timer: the clock (seconds), e.g. for tests.
    log: a function of one string (e.g. `print`), or None.

  Returns:
    A `JitChoice`. The model is left with `jit_compile = choice.train` and
    the two compiled functions of the chosen modes; its weights, optimizer
    state and metrics are as before the call.
  """
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f'steps must be an int >= 1, got {steps!r}.')
  if model.optimizer is None:
    raise ValueError('choose_jit_compile: compile the model (with its '
                     'optimizer) first.')
  strategy = model.distribute_strategy
  if several_replicas(strategy):
    choice = JitChoice(train=False, evaluate=False, how='replicas')
    _install(model, choice, None, None)
    if log:
      log(choice.describe())
    return choice
  batches = list(batches)
  if not batches:
    raise ValueError('choose_jit_compile: no batches to time on.')

  optimizer = model.optimizer
  if not optimizer.built:
    # Its variables must exist to be snapshotted (fit would build it at the
    # first step, with the same initial values).
    with strategy.scope():
      optimizer.build(model.trainable_variables)
  snapshot = _snapshot(model)
  ds = strategy.experimental_distribute_dataset(_timing_dataset(batches))
  iterator = iter(ds)
  choice = JitChoice(train=False, evaluate=False, how='measured', steps=steps)
  kinds = [('training', 'train')] + ([('evaluation', 'test')] if evaluate
                                     else [])
  functions = {}
  try:
    for name, kind in kinds:
      for mode in MODES:
        model.jit_compile = mode == 'xla'
        getattr(model, f'make_{kind}_function')(force=True)
        fn = getattr(model, f'{kind}_function')
        start = timer()
        try:
          _sync(fn(iterator))
        except Exception as e:  # pylint: disable=broad-except
          # e.g. an op without an XLA kernel: that mode is out.
          choice.errors[f'{name} {mode}'] = (
              f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
              if str(e) else type(e).__name__)
          continue
        choice.compile_s[f'{name} {mode}'] = timer() - start
        functions[(kind, mode)] = fn
    # Interleaved rounds, the order alternating, so that a change of the
    # machine's load slows both modes alike.
    times = {key: [] for key in functions}
    keys = list(functions)
    for r in range(steps):
      for key in (keys if r % 2 == 0 else keys[::-1]):
        start = timer()
        _sync(functions[key](iterator))
        times[key].append((timer() - start) * 1e3)
  finally:
    _restore(snapshot)
    model.reset_metrics()
  for name, kind in kinds:
    ms = {mode: statistics.median(times[(kind, mode)]) for mode in MODES
          if (kind, mode) in times}
    if not ms:
      raise RuntimeError(f'choose_jit_compile: the {name} step failed in '
                         f'both modes: {choice.errors}')
    if kind == 'train':
      choice.train_ms, choice.train = ms, min(ms, key=ms.get) == 'xla'
    else:
      choice.evaluate_ms, choice.evaluate = ms, min(ms, key=ms.get) == 'xla'
  if not evaluate:
    choice.evaluate = choice.train
  chosen = {'train': functions.get(('train', MODES[int(choice.train)]))}
  if evaluate:
    chosen['test'] = functions.get(('test', MODES[int(choice.evaluate)]))
  _install(model, choice, chosen.get('train'), chosen.get('test'))
  if log:
    log(choice.describe())
  return choice


def forced(jit_compile):
  """The `JitChoice` of an explicit True/False."""
  return JitChoice(train=bool(jit_compile), evaluate=bool(jit_compile),
                   how='forced')


def _install(model, choice, train_function, test_function):
  """Leaves `model` in the chosen modes, keeping compiled functions."""
  model.jit_compile = choice.train
  model.train_function = train_function
  model.test_function = test_function
  model.predict_function = None
