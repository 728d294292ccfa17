"""The PyTorch port of Glow (rosinality/glow-pytorch) as an optional peer.

People comparing Glow implementations look at this port beside TFP's
`tfb.Glow`; the benchmark (`bin/benchmark.py --peers=tfb,torch`) and the
time-to-quality curve (`bin/curve.py`) time and train it beside tfp_glow.
Nothing of the port is copied into this repository: its `model.py` is
imported from a directory the user gives (`--torch_glow_dir=PATH`, or the
environment variable `TORCH_GLOW_DIR`), e.g. a checkout of
https://github.com/rosinality/glow-pytorch. `torch` is not a dependency of
the package: `pip install -r requirements-peers.txt` installs the version
this was tested with. Without either, `PeerUnavailable` says which is
missing and how to supply it.

What is built (`build_glow`), and how it maps to a tfp_glow configuration:

* `Glow(in_channel=C, n_flow=K, n_block=L, affine=..., conv_lu=...)`:
  the same multi-scale layout (squeeze, K steps of ActNorm, 1x1 convolution
  and coupling per level, half the channels exit at each split with a
  learned conditional prior, a learned prior at the top, like tfp_glow's
  `learn_top=True`).
* Hidden width: the port's `Flow` builds `AffineCoupling(in_channel,
  affine=affine)`, so the coupling networks' `filter_size=512` default
  cannot be set through the `Glow` constructor. `coupling_width` swaps, in
  our private copy of the module and only while the model is built, the
  class `Flow` calls for a subclass whose default is the width asked for;
  the networks it builds are the port's own (the subclass only passes the
  argument), and the original class is put back afterwards.
* `permutation='conv'` gives the port's plain `InvConv2d`, `'conv_lu'` its
  `InvConv2dLU`; the port builds its LAST level with the LU form whatever
  `conv_lu` says (its `Glow.__init__` omits the argument there), so with
  'conv' the top level's K convolutions are LU ones: the same function
  class, parameterised differently (`TorchGlowModel.note` says so).
  'shuffle' and 'reverse' do not exist in the port.
* The port's coupling networks have no ActNorm inside (tfp_glow's and
  tfb.Glow's have one after each hidden convolution): that is the port's
  architecture, timed as it is.

Log-likelihood and bits/dim. The port's `Glow.forward(x)` returns
`(log_p, logdet, z)`: `log_p` the priors' log-density of the latents (every
split and the top, summed per image) and `logdet` the log |det| of every
step's Jacobian (the ActNorm and 1x1-convolution terms as scalars, the
affine couplings' per image). `log p(x) = log_p + logdet` is then the
continuous log-density of the dequantised image `x` in [-0.5, 0.5]: the
same quantity as `dist.log_prob(x)` of tfp_glow and tfb.Glow. The port's
`train.py` turns it into bits/dim itself (`calc_loss`: `-log(n_bins) *
n_pixel + logdet + log_p`, divided by `-log(2) * n_pixel`); here
`log_prob` returns `log_p + logdet` and bits/dim comes from
`tfp_glow.bits_per_dim`, the one formula every number in this project
uses (tests/benchmark_test.py checks the two agree, and checks `log_prob`
against an independent float64 change-of-variables computation).

Layout: tfp_glow's images are NHWC, the port's NCHW: `to_torch` converts
once, outside anything timed. Threads: `set_threads` gives torch the same
number of CPU threads as TensorFlow's intra-op pool (by default, the CPUs
this process may run on), so neither side has more cores. Time it on a quiet
machine: torch's OpenMP threads spin while they wait for each other, and
when other processes hold the cores that collapses (seen on this 2-core
machine at load average 8: the quick preset's training step took 3.2 s with
2 threads, 31 ms with 1, 254 ms with OMP_WAIT_POLICY=PASSIVE), far more than
TensorFlow's thread pool suffers.
"""

import contextlib
import importlib.util
import inspect
import os
import warnings

import numpy as np
import tensorflow as tf

import tfp_glow
from tfp_glow.benchmark import models

__all__ = ['ENV_VAR', 'FLAG', 'PORT_URL', 'PeerUnavailable', 'port_dir',
           'import_torch', 'load_port', 'coupling_width', 'build_glow',
           'log_prob', 'bpd_affine', 'latent_shapes', 'to_torch',
           'set_threads', 'default_threads', 'bits_per_dim', 'TorchGlowModel',
           'KERAS_ADAM_EPSILON']

ENV_VAR = 'TORCH_GLOW_DIR'
FLAG = '--torch_glow_dir'
PORT_URL = 'https://github.com/rosinality/glow-pytorch'
# Keras's Adam epsilon (tfp_glow's and tfb.Glow's optimizer), used for the
# port's torch Adam too so that the optimizers differ in nothing but library.
KERAS_ADAM_EPSILON = 1e-7


class PeerUnavailable(RuntimeError):
  """The PyTorch peer cannot run here: torch or the port's model.py is
  missing (the message says which, and how to supply it)."""


def port_dir(path=None):
  """The directory holding the port's model.py: `path`, else $TORCH_GLOW_DIR.

  Raises:
    PeerUnavailable: neither is given, or there is no model.py there.
  """
  given = path if path else os.environ.get(ENV_VAR)
  if not given:
    raise PeerUnavailable(
        f'The PyTorch peer needs the model.py of rosinality/glow-pytorch: '
        f'pass {FLAG}=PATH (a checkout of {PORT_URL}) or set the environment '
        f'variable {ENV_VAR}=PATH.')
  directory = os.path.abspath(os.path.expanduser(given))
  source = f'{FLAG}={given}' if path else f'{ENV_VAR}={given}'
  if not os.path.isfile(os.path.join(directory, 'model.py')):
    raise PeerUnavailable(
        f'{source}: there is no model.py in {directory}; give the folder of a '
        f'checkout of {PORT_URL} (the one with model.py and train.py).')
  return directory


def import_torch():
  """`torch`, or `PeerUnavailable` saying how to install it."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise PeerUnavailable(
        'The PyTorch peer needs torch, which is not installed: pip install -r '
        'requirements-peers.txt (the CPU build this was tested with).') from e
  return torch


_PORTS = {}


def load_port(path=None):
  """The port's model.py as a private module, one per file.

  Loaded by file under a name of its own (never `model`, and the import
  path untouched), so it cannot shadow or be shadowed by another module; the
  patch of `coupling_width` touches this copy only.
  """
  directory = port_dir(path)  # the folder first: no torch needed to check it
  import_torch()
  source = os.path.join(directory, 'model.py')
  if source in _PORTS:
    return _PORTS[source]
  name = f'_tfp_glow_peer_glow_pytorch_{len(_PORTS)}'
  spec = importlib.util.spec_from_file_location(name, source)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  missing = [a for a in ('Glow', 'Block', 'Flow', 'AffineCoupling')
             if not hasattr(module, a)]
  if missing:
    raise PeerUnavailable(
        f'{source} has no {", ".join(missing)}: not the model.py of '
        f'{PORT_URL}.')
  if 'filter_size' not in inspect.signature(
      module.AffineCoupling.__init__).parameters:
    raise PeerUnavailable(
        f'{source}: AffineCoupling takes no filter_size; this adapter knows '
        f'the port as of {PORT_URL} commit 97081ff.')
  _PORTS[source] = module
  return module


@contextlib.contextmanager
def coupling_width(module, width):
  """While inside, the port's `Flow` builds coupling networks of `width`.

  `Flow.__init__` looks `AffineCoupling` up in its module when called, so
  replacing the module's global with a subclass whose `filter_size`
  defaults to `width` reaches every coupling of a `Glow` built inside the
  context. Restored on exit, even after an error.
  """
  if isinstance(width, bool) or not isinstance(width, int) or width < 1:
    raise ValueError(f'width must be an int >= 1, got {width!r}.')
  original = module.AffineCoupling

  class AffineCoupling(original):  # pylint: disable=missing-class-docstring

    def __init__(self, in_channel, filter_size=width, affine=True):
      super().__init__(in_channel, filter_size=filter_size, affine=affine)

  module.AffineCoupling = AffineCoupling
  try:
    yield
  finally:
    module.AffineCoupling = original


def build_glow(module, image_shape, levels, steps_per_level, hidden_width,
               coupling='affine', permutation='conv', seed=0):
  """The port's `Glow` for a tfp_glow architecture (see the module doc).

  The weights come from `torch.manual_seed(seed)` and, for the LU
  convolutions (drawn with numpy by the port), `np.random.seed(seed)`; the
  global numpy state is restored afterwards.
  """
  torch = import_torch()
  h, w, c = (int(s) for s in image_shape)
  if h % 2**levels or w % 2**levels:
    raise ValueError(f'{h}x{w} images do not halve {levels} times '
                     f'(levels={levels}).')
  if coupling not in ('affine', 'additive'):
    raise ValueError(f"coupling must be 'affine' or 'additive', got "
                     f'{coupling!r}.')
  if permutation not in ('conv', 'conv_lu'):
    raise ValueError(f'The PyTorch port has only the invertible 1x1 '
                     f"convolution ('conv', or 'conv_lu'), not "
                     f'permutation={permutation!r}.')
  torch.manual_seed(seed)
  state = np.random.get_state()
  np.random.seed(seed)
  try:
    with warnings.catch_warnings():
      # torch.qr and torch.from_numpy of a read-only array warn on every build.
      warnings.simplefilter('ignore', UserWarning)
      with coupling_width(module, hidden_width):
        glow = module.Glow(c, steps_per_level, levels,
                           affine=coupling == 'affine',
                           conv_lu=permutation == 'conv_lu')
  finally:
    np.random.set_state(state)
  return glow


def log_prob(glow, x):
  """log p(x) per image (nats): the port's prior term plus its log-det."""
  log_p, logdet, _ = glow(x)
  return log_p + logdet  # logdet is 0-d without affine couplings


def bpd_affine(image_shape, n_bins):
  """(a, b) with `bits_per_dim(lp) = a + b * lp`, read off tfp_glow's
  formula itself (it is affine in log p), so that a torch loss in bits/dim
  restates nothing."""
  two = tfp_glow.bits_per_dim(tf.constant([0.0, 1.0], tf.float64),
                              image_shape, n_bins).numpy()
  return float(two[0]), float(two[1] - two[0])


def latent_shapes(image_shape, levels):
  """The NCHW shapes of the port's latents, first exit first, top last
  (as its train.py's `calc_z_shapes`)."""
  h, w, c = (int(s) for s in image_shape)
  shapes = []
  for _ in range(levels - 1):
    h, w, c = h // 2, w // 2, c * 2
    shapes.append((c, h, w))
  shapes.append((c * 4, h // 2, w // 2))
  return shapes


def to_torch(x):
  """NHWC images (numpy or TF) -> a contiguous float32 NCHW torch tensor."""
  torch = import_torch()
  a = x.numpy() if hasattr(x, 'numpy') and not isinstance(x, np.ndarray) else x
  a = np.ascontiguousarray(np.transpose(np.asarray(a, np.float32),
                                        (0, 3, 1, 2)))
  return torch.from_numpy(a)


def default_threads():
  """TensorFlow's intra-op threads: as set, else the CPUs this process may
  run on (TensorFlow's own default)."""
  n = tf.config.threading.get_intra_op_parallelism_threads()
  if n:
    return int(n)
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def set_threads(threads=None):
  """torch's CPU threads = `threads` (default: `default_threads()`). Returns
  the count torch reports."""
  torch = import_torch()
  torch.set_num_threads(int(threads or default_threads()))
  return torch.get_num_threads()


class TorchGlowModel(models.Model):
  """The port's `Glow` behind the benchmark's adapter interface.

  The three timed operations, as the TF adapters': `log_prob(x)` (no
  gradient recorded), `train(x)` (gradient of the mean negative
  log-likelihood in nats, then an Adam step) and `sample(seed)` (a batch
  drawn at temperature 1, noise drawn inside). They run eagerly (the
  port's own way; mode 'eager'), take the arguments of `args` (NCHW torch
  tensors, prepared once) and return tensors that hold no graph, so
  `timing.sync` fetches them like TF's.

  Extra keyword arguments: `glow_dir` (else $TORCH_GLOW_DIR), `threads`
  (else TensorFlow's), `permutation` ('conv' or 'conv_lu'), `coupling`.
  """

  library = 'torch'
  graph_ops = False
  MODES = ('eager',)

  def __init__(self, cfg, x_init, seed=0, learning_rate=1e-4,
               backprop='store', glow_dir=None, threads=None,
               permutation='conv', coupling='affine'):
    # Not Model.__init__: no TF variables and no Keras optimizer here.
    if backprop != 'store':
      raise ValueError("The PyTorch port has only ordinary backprop "
                       f"('store'), got backprop={backprop!r}.")
    if cfg.split_fraction != 0.5:
      raise ValueError('The PyTorch port splits half the channels at each '
                       f'level; got split_fraction={cfg.split_fraction}.')
    self.torch = import_torch()
    module = load_port(glow_dir)
    self.cfg = cfg
    self.batch = cfg.batch_size
    self.seed = seed
    self.backprop = backprop
    self.threads = set_threads(threads)
    self.glow = build_glow(module, cfg.image_shape, cfg.levels,
                           cfg.steps_per_level, cfg.hidden_width,
                           coupling=coupling, permutation=permutation,
                           seed=seed)
    # ActNorm's data-dependent init: the port's first forward pass, on the
    # first batch, without gradients (as its train.py does).
    with self.torch.no_grad():
      self.glow(to_torch(np.asarray(x_init)[:self.batch]))
    self.variables = list(self.glow.parameters())
    self.parameters = int(sum(p.numel() for p in self.variables))
    self.tracked_variables = len(self.variables)
    self.optimizer = self.torch.optim.Adam(self.variables, lr=learning_rate,
                                           eps=KERAS_ADAM_EPSILON)
    self._shapes = latent_shapes(cfg.image_shape, cfg.levels)
    self.note = (f'eager PyTorch {self.torch.__version__}, '
                 f'{self.threads} threads; no ActNorm inside the coupling '
                 'networks' + ('; top level LU 1x1 convs (the port)'
                               if permutation == 'conv' else ''))

  def run_modes(self, modes):
    del modes  # the port runs eagerly, whatever TF's modes are
    return list(self.MODES)

  def args(self, op, x, seed):
    if op == 'sample':
      # The TF adapters' seed pair [s, t] as one torch seed.
      s = [int(v) for v in np.asarray(seed).reshape(-1)]
      return (sum(v * 1000003**i for i, v in enumerate(s)) % 2**63,)
    return (to_torch(x),)

  def log_prob(self, x):
    with self.torch.no_grad():
      return log_prob(self.glow, x)

  def gradient(self, x):
    """Loss (mean NLL, nats) and the gradients, left in each `.grad`."""
    for p in self.variables:
      p.grad = None
    loss = -log_prob(self.glow, x).mean()
    loss.backward()
    return loss.detach(), [p.grad for p in self.variables]

  def train(self, x):
    loss, _ = self.gradient(x)
    self.optimizer.step()
    return loss

  def _sample(self, n, seed):
    g = self.torch.Generator().manual_seed(int(seed))
    z = [self.torch.randn((n,) + s, generator=g) for s in self._shapes]
    with self.torch.no_grad():
      return self.glow.reverse(z)

  def function(self, op, mode):
    if mode not in self.MODES:
      raise ValueError(f'The PyTorch port runs eagerly (mode {self.MODES}), '
                       f'got mode={mode!r}.')
    return getattr(self, op)

  def state(self):
    """A copy of the weights (to keep the best ones)."""
    return {k: v.detach().clone() for k, v in self.glow.state_dict().items()}

  def restore(self, state):
    self.glow.load_state_dict(state)


def bits_per_dim(glow, x, image_shape, n_bins):
  """Bits/dim of the port's model on NCHW images, by tfp_glow's formula."""
  torch = import_torch()
  with torch.no_grad():
    lp = log_prob(glow, x).double().numpy()
  return tfp_glow.bits_per_dim(lp, image_shape, n_bins).numpy()

