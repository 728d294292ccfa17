"""A level's K steps of flow keep their parameters in `[K, ...]` variables.

Why: the K steps of a Glow level are copies of one another, and what grows
with K in a training process is not only the activations: every variable
costs graph nodes (its reads, its share of the gradient, ~40 nodes of a Keras
Adam update), and the traced and optimised graph of a training step is held
in memory. Measured (32x32x3, L=3, width 128, graph mode, backprop='invert'):
one variable per step's parameter gave ~550 graph nodes and ~18 MB of peak
RSS per step of flow. With one variable per *slot* per level (e.g. every
step's ActNorm bias of level 1 in one `[K, C]` variable), the optimizer
updates a few dozen variables whatever K is, and the graph stops growing.

How: a level's steps are built as before (each component creating its own
variables, so initial values and seeds are unchanged); then `stack_level`
replaces, slot by slot, the K steps' variables by one variable holding their
values stacked, and puts in step k a `VariableSlice`: the k-th slice of that
variable, standing where step k's own variable stood. A slice reads
(`tf.gather`) and writes (`scatter_update`) its part, converts to a tensor and
takes part in arithmetic, so the components' code is unchanged, and it is a
`tf.Module` holding the level variable, so a component's `variables`,
checkpoints and SavedModels still find its parameters (the whole level
variable: the component shares it with the level's other steps).

Reading slice by slice in a pass would cost K reads per slot (and a sparse
gradient per read): the Glow instead reads each level variable once per pass
and substitutes its K slices into the K steps (`unstacked`); the inverted
backprop's loop (`tfp_glow.bijectors.invert`) reads it once too and takes the
k-th slice inside its loop.
"""

import contextlib

import tensorflow as tf

__all__ = ['VariableSlice', 'stack_level', 'layout', 'level_sources',
           'read_sources', 'unstacked', 'substituted', 'is_stacked',
           'step_shape']

# Marks a level variable (an attribute on the variable object: tf.Variable is
# neither hashable nor always weak-referenceable under tf.distribute).
_MARK = '_tfp_glow_steps'


class VariableSlice(tf.Module):
  """Step `index`'s parameter: slice `index` of a level variable `[K, ...]`.

  Behaves as the step's own variable did: `value()` / `read_value()` /
  `numpy()`, `assign` / `assign_add` / `assign_sub` (of this slice only),
  `dtype`, `shape` (the slice's), `trainable`, tensor conversion and
  arithmetic. `variables` is the level variable.
  """

  def __init__(self, stacked, index):
    super().__init__(name='variable_slice')
    self.stacked = stacked
    self._index = int(index)

  @property
  def index(self):
    return self._index

  @property
  def name(self):
    return f'{self.stacked.name}[{self._index}]'

  @property
  def dtype(self):
    return self.stacked.dtype

  @property
  def shape(self):
    return self.stacked.shape[1:]

  @property
  def trainable(self):
    return self.stacked.trainable

  def value(self):
    """A fresh read of this slice."""
    return tf.gather(self.stacked, self._index)

  read_value = value

  def numpy(self):
    return self.value().numpy()

  def assign(self, value, read_value=False):
    value = tf.convert_to_tensor(value, self.dtype)
    self.stacked.scatter_update(tf.IndexedSlices(
        value[tf.newaxis], tf.constant([self._index], tf.int64)))
    return self.value() if read_value else None

  def assign_add(self, delta, read_value=False):
    return self.assign(self.value() + tf.convert_to_tensor(delta, self.dtype),
                       read_value)

  def assign_sub(self, delta, read_value=False):
    return self.assign(self.value() - tf.convert_to_tensor(delta, self.dtype),
                       read_value)

  def __repr__(self):
    return (f'<VariableSlice {self.name} shape={self.shape} '
            f'dtype={self.dtype.name}>')


def _slice_to_tensor(value, dtype=None, name=None, as_ref=False):
  del name, as_ref
  return tf.convert_to_tensor(value.value(), dtype=dtype)


tf.register_tensor_conversion_function(VariableSlice, _slice_to_tensor)


def _delegate(op):
  def method(self, *args):
    return getattr(self.value(), op)(*args)
  method.__name__ = op
  return method


for _op in tf.Tensor.OVERLOADABLE_OPERATORS:
  if _op not in ('__eq__', '__ne__'):  # identity, as a tf.Module's
    setattr(VariableSlice, _op, _delegate(_op))


def is_stacked(variable):
  """Whether `variable` is a level variable made by `stack_level`."""
  return getattr(variable, _MARK, None) is not None


def step_shape(variable):
  """The shape one step's parameter has: a level variable's without its
  leading K, any other variable's own."""
  shape = variable.shape
  return shape[1:] if is_stacked(variable) else shape


# --- a step's parameters, slot by slot ----------------------------------------------


def _parameter_paths(component):
  """`[(attribute path, parameter)]` of every tf.Variable or VariableSlice
  held by `component` or by a tf.Module below it, in a fixed (sorted)
  order."""
  out, seen = [], {id(component)}

  def walk(obj, prefix):
    for name, value in sorted(vars(obj).items()):
      if isinstance(value, (tf.Variable, VariableSlice)):
        out.append((prefix + (name,), value))
      elif isinstance(value, tf.Module) and id(value) not in seen:
        seen.add(id(value))
        walk(value, prefix + (name,))

  walk(component, ())
  return out


def layout(steps, what='steps'):
  """The parameter layout shared by all `steps`, and each step's parameters.

  Returns `(slots, params)`: `slots` is a list of `(component index,
  attribute path)`, `params[k][j]` the parameter (tf.Variable or
  VariableSlice) of step k in slot j. Raises ValueError, naming `what`,
  unless every step has the same component classes and the same parameter
  paths, shapes, dtypes and trainability.
  """
  layouts, params = [], []
  for step in steps:
    entries, values = [], []
    for c, component in enumerate(step):
      for path, var in _parameter_paths(component):
        entries.append((type(component), c, path, tuple(var.shape.as_list()),
                        var.dtype, var.trainable))
        values.append(var)
    layouts.append(entries)
    params.append(values)
  for k, entries in enumerate(layouts[1:], 1):
    if entries != layouts[0]:
      raise ValueError(
          f'{what} needs steps that are copies of one another (same classes '
          f'and variable layout); step {k} differs from step 0.')
  return [(c, path) for _, c, path, *_ in layouts[0]], params


def _holder(step, slot):
  c, path = slot
  holder = step[c]
  for name in path[:-1]:
    holder = getattr(holder, name)
  return holder, path[-1]


def stack_level(steps, rename=None):
  """Moves the parameters of `steps` (copies of one another, each a
  sequence of components) into one `[K, ...]` variable per slot.

  Each new variable starts with the K steps' values stacked, keeps their
  dtype and trainability, and is named after step 0's variable
  (`rename(name)`, default `name + '_stacked'`); step k then holds a
  `VariableSlice(variable, k)` in that slot. Returns the new variables, in
  slot order. Create them where the steps' variables were created (the same
  `tf.distribute` scope).
  """
  steps = [tuple(step) for step in steps]
  slots, params = layout(steps, 'stack_level')
  out = []
  for j, slot in enumerate(slots):
    column = [params[k][j] for k in range(len(steps))]
    if not all(isinstance(v, tf.Variable) for v in column):
      raise ValueError(f'stack_level: slot {slot} is already stacked.')
    first = column[0]
    name = first.name.split(':')[0]
    name = rename(name) if rename else name + '_stacked'
    variable = tf.Variable(tf.stack([tf.convert_to_tensor(v) for v in column]),
                           trainable=first.trainable, name=name)
    setattr(variable, _MARK, len(steps))
    for k, step in enumerate(steps):
      holder, attr = _holder(step, slot)
      # A tracked assignment: the slice replaces the variable as the
      # holder's checkpoint dependency too.
      setattr(holder, attr, VariableSlice(variable, k))
    out.append(variable)
  return out


def level_sources(steps, what='steps'):
  """`(slots, sources)`: per slot, the level variable when step k holds its
  k-th slice (a stacked level), else the list of the K steps' parameters."""
  slots, params = layout(steps, what)
  sources = []
  for j in range(len(slots)):
    column = [params[k][j] for k in range(len(steps))]
    stacked = column[0].stacked if isinstance(column[0], VariableSlice) else None
    if stacked is not None and stacked.shape[0] == len(column) and all(
        isinstance(p, VariableSlice) and p.stacked is stacked and p.index == k
        for k, p in enumerate(column)):
      sources.append(stacked)
    else:
      sources.append(column)
  return slots, sources


def read_sources(sources):
  """One `[K, ...]` tensor per slot: a level variable read once, or the K
  parameters read and stacked."""
  return [tf.convert_to_tensor(s) if isinstance(s, tf.Variable) else
          tf.stack([tf.convert_to_tensor(p) for p in s]) for s in sources]


@contextlib.contextmanager
def substituted(step, slots, values):
  """Within the context, `step`'s components read `values` (tensors) where
  they would read the parameters in `slots`. Plain attribute swaps, undone
  on exit; meant for the moment a pass is traced or run (no other code runs
  on these objects meanwhile: a tf.distribute strategy runs one replica's
  function at a time)."""
  swapped = []
  try:
    for slot, value in zip(slots, values):
      holder, attr = _holder(step, slot)
      swapped.append((holder, attr, vars(holder)[attr]))
      object.__setattr__(holder, attr, value)
    yield
  finally:
    for holder, attr, old in reversed(swapped):
      object.__setattr__(holder, attr, old)


@contextlib.contextmanager
def unstacked(steps):
  """Within the context, each level variable of `steps` has been read once
  and step k reads its k-th slice (a dense gradient: one Unpack per slot);
  parameters that are not stacked are left alone."""
  steps = [tuple(step) for step in steps]
  slots, sources = level_sources(steps, 'unstacked')
  which = [j for j, s in enumerate(sources) if isinstance(s, tf.Variable)]
  if not which:
    yield
    return
  slices = [tf.unstack(tf.convert_to_tensor(sources[j]), num=len(steps))
            for j in which]
  with contextlib.ExitStack() as stack:
    for k, step in enumerate(steps):
      stack.enter_context(substituted(step, [slots[j] for j in which],
                                      [s[k] for s in slices]))
    yield
