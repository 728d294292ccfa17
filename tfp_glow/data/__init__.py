"""Input pipelines for Glow: TFDS datasets, folders of images, the embedded digits.

Every pipeline yields float32 images in [-0.5, 0.5], shaped `[batch, H, W, C]`, made from
integer images with `n_bins` levels per dimension:

    x = (x_int + u) / n_bins - 0.5,   x_int in {0, ..., n_bins - 1}

with `u ~ U(0, 1)` (uniform dequantisation, so that a continuous density on `x` bounds
the discrete likelihood: bits/dim = (-log p(x) + D log n_bins) / (D ln 2),
D = H * W * C) and `u = 1/2` (the bin centre) when `dequantize=False`. 8-bit data can
be reduced to `n_bits` bits first: `x_int = floor(x8 / 2^(8 - n_bits))`,
`n_bins = 2^n_bits` (the paper uses 5 bits for CelebA-HQ). The embedded digits have 17
levels (0..16) natively, so `n_bins = 17`: the formulas never assume a power of two.

Sources (`load(name, split)`):

* `'digits'`: scikit-learn's copy of the UCI "Optical Recognition of Handwritten Digits"
  test part (E. Alpaydin and C. Kaynak, 1998, CC BY 4.0; as shipped in scikit-learn,
  BSD-3-Clause): 1797 grey images of 8x8 pixels with 17 levels and labels 0-9, stored in
  `tfp_glow/data/digits.npz` (see `tfp_glow/data/README.md`), so training works offline.
  Fixed splits: `perm = np.random.default_rng(0).permutation(1797)`, `test = perm[:360]`
  (360 = ceil(0.2 * 1797), as scikit-learn's `train_test_split(test_size=0.2)`),
  `train_full = perm[360:]` (1437 images); `validation` is the first
  `round(validation_fraction * 1437)` entries of `train_full` permuted by
  `np.random.default_rng(1)` (144 at the default 0.1), `train` the rest (1293).
* TFDS image datasets (`DATASETS`, or any other TFDS name with an `image` feature), read
  from `data_dir`. Nothing is downloaded unless `download=True`.
* `'folder:PATH'`: PNG/JPEG files under PATH, see `load_folder`.

Noise: a shuffled pipeline (`shuffle=True`, training) draws fresh `u` (and flips and
translations) every epoch, per batch, from a stream that `seed` makes reproducible. An
unshuffled one (`shuffle=False`, evaluation) draws example `i`'s `u` with
`tf.random.stateless_uniform` from the seed `[seed, i]` (`seed=None` counts as 0), `i`
its position in the split: the same inputs on every pass, in every process and at any
batch size, so the same weights always give the same bits/dim, and `seed=k` is draw
number k for averaging several.

Splits: `'train'`, `'validation'`, `'test'`, `'train_full'` (train plus validation: for a
final run once the hyper-parameters are chosen). Where a TFDS dataset has no validation
split of its own, the last `validation_fraction` of its train split is held out
(`'train[:90%]'` / `'train[90%:]'`); where it has no test split (imagenet_resized), its
validation split is the test split, as in the papers.

Layout: `quantize` (the per-pixel formulas above), `pipeline` (names, checks,
`DatasetInfo` and the batching tail every source ends in), the sources `digits`, `tfds`
and `folder`, and `loader` (`load`, which picks the source); each imports only the
ones before it. Writing images lives in `tfp_glow.images`.

#### Example

```python
from tfp_glow import data
ds, info = data.load('digits', 'train', batch_size=64, seed=1)
for x in ds.take(1):
  print(x.shape, info.n_bins)   # (64, 8, 8, 1) 17
```
"""

from tfp_glow.data.digits import DIGITS_NUM_EXAMPLES
from tfp_glow.data.digits import DIGITS_TEST_SIZE
from tfp_glow.data.digits import digits_indices
from tfp_glow.data.folder import IMAGE_EXTENSIONS
from tfp_glow.data.folder import load_folder
from tfp_glow.data.loader import load
from tfp_glow.data.pipeline import DATASETS
from tfp_glow.data.pipeline import DEFAULT_VALIDATION_FRACTION
from tfp_glow.data.pipeline import DIGITS_N_BINS
from tfp_glow.data.pipeline import FOLDER_PREFIX
from tfp_glow.data.pipeline import SPLITS
from tfp_glow.data.pipeline import DatasetInfo
from tfp_glow.data.pipeline import UnknownDatasetError
from tfp_glow.data.pipeline import n_bins_for
from tfp_glow.data.quantize import dequantize_images
from tfp_glow.data.quantize import postprocess
from tfp_glow.data.quantize import to_bins
from tfp_glow.data.quantize import random_translate
from tfp_glow.data.quantize import reduce_bits
from tfp_glow.data.tfds import MAX_MEMORY_CACHE_BYTES

__all__ = [
    'DATASETS',
    'SPLITS',
    'FOLDER_PREFIX',
    'IMAGE_EXTENSIONS',
    'DEFAULT_VALIDATION_FRACTION',
    'DIGITS_N_BINS',
    'DIGITS_NUM_EXAMPLES',
    'DIGITS_TEST_SIZE',
    'MAX_MEMORY_CACHE_BYTES',
    'DatasetInfo',
    'UnknownDatasetError',
    'n_bins_for',
    'reduce_bits',
    'dequantize_images',
    'digits_indices',
    'load',
    'load_folder',
    'postprocess',
    'to_bins',
    'random_translate',
]
