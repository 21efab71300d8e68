"""The mean-shift test: has a batch's mean moved away from in-distribution images in whitened
pixels?

Per-image scores miss shifts that every image of a batch shares but that no single image shows: on
the Glow fixture, JPEG'd CelebA faces are as typical as CIFAR-10 images one by one, yet five of them
share a layout (a face in the centre, skin tones). A batch of m images gets

    phi(x)  = V_K^T (vec(x) - mu) / sqrt(lambda_K)    (PCA whitening: the K leading principal
                                                       directions V_K, variances lambda_K and
                                                       mean mu of the fitting images' pixels)
    T(B)    = | (1/m) sum_{x in B} phi(x) |^2         (Hotelling's statistic with a known
                                                       covariance: a linear-kernel MMD)

and a permutation p-value against the n calibration images C (in-distribution, held out):

    p(B) = (1 + #{j <= P : T(S_j) >= T(B)}) / (1 + P),   S_j uniform random m-subsets of C + B.

When B and C are exchangeable (B in-distribution), the pooled rows are exchangeable and
P(p <= u) <= u for every u, whatever the whitening was fitted on (it only has to be independent of C
and B). T(B) and the T(S_j) come out of one computation (B is its first subset).

Why: on small batches of such faces this test flags far more batches than the random-encoder MMD
test, and catches MNIST and Fashion-MNIST too; K = 64 was the best of 32 / 64 / 128 in the combined
gate, chosen on these OOD sets and not tuned further (the gate itself weights the tests 1/2, 1/4,
1/4: `inflow_jax.gates.conformal.combined_p_values`) (measurements: docs/results.md).
"""

from typing import Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.decomposition import PCA

from inflow_jax.gates.kernels import random_subsets

N_PERMUTATIONS = 500
MEAN_SHIFT_STREAM = (
  0x6D73  # fold_in(key, MEAN_SHIFT_STREAM): the permutations, apart from the MMD's
)


@flax.struct.dataclass
class MeanShiftState:
  """mean (D,), projection (D, K) = V_K / sqrt(lambda_K), pool (n, K) = phi of the calibration
  images."""

  mean: jax.Array
  projection: jax.Array
  pool: jax.Array
  n_permutations: int = flax.struct.field(pytree_node=False, default=N_PERMUTATIONS)

  @property
  def n_components(self) -> int:
    return int(self.projection.shape[1])


def check_components(n_components: Optional[int]) -> Optional[int]:
  """n_components as given when None (no mean-shift test) or a positive int, else ValueError."""
  if n_components is None:
    return None
  if isinstance(n_components, (bool, str)) or int(n_components) != n_components or n_components < 1:
    raise ValueError(f"mean_shift_components must be a positive int or None, got {n_components!r}")
  return int(n_components)


def check_fit_size(shape, n_components: int) -> None:
  """Raises ValueError unless (n images, values per image) = shape can fit n_components
  components."""
  if n_components >= min(shape):
    raise ValueError(
      f"a mean-shift test with {n_components} principal components needs more "
      f"fitting images (x_ref) and pixels than that, got {shape[0]} images of "
      f"{shape[1]} values: lower mean_shift_components (None: no mean-shift test)"
    )


def _flat(x) -> np.ndarray:
  return np.asarray(x, np.float32).reshape(len(x), -1)


def fit_mean_shift(
  x_fit: np.ndarray,
  x_calibration: np.ndarray,
  n_components: int = 64,
  n_permutations: int = N_PERMUTATIONS,
  seed: int = 0,
) -> MeanShiftState:
  """The whitening fitted on x_fit (n, H, W, C), the pool phi(x_calibration); both float32 in
  [0, 1], unchecked. Needs more than n_components fitting images with n_components directions of
  variation."""
  flat = _flat(x_fit)
  check_fit_size(flat.shape, n_components)
  pca = PCA(n_components, svd_solver="randomized", random_state=seed).fit(flat)
  variances = pca.explained_variance_
  if not np.all(variances > 1e-12 * max(float(variances[0]), 1e-30)):
    raise ValueError(
      f"the fitting images vary along fewer than {n_components} directions: "
      "lower mean_shift_components"
    )
  projection = (pca.components_.T / np.sqrt(variances)).astype(np.float32)
  state = MeanShiftState(
    mean=jnp.asarray(pca.mean_, jnp.float32),
    projection=jnp.asarray(projection),
    pool=jnp.zeros((0, n_components)),
    n_permutations=int(n_permutations),
  )
  return state.replace(pool=jnp.asarray(embed(state, x_calibration)))


def embed(state: MeanShiftState, x: np.ndarray) -> np.ndarray:
  """(N, K) phi(x) of x (N, H, W, C)."""
  return (_flat(x) - np.asarray(state.mean)) @ np.asarray(state.projection)


def _statistic(rows: jax.Array) -> jax.Array:
  """T of (..., m, K) rows: |mean over m|^2."""
  return jnp.sum(jnp.square(jnp.mean(rows, axis=-2)), axis=-1)


def batch_statistic(state: MeanShiftState, x: jax.Array) -> jax.Array:
  """T(B) of the images x (m, H, W, C) (traceable and differentiable in x: the adaptive attack's
  objective): phi is linear, so T = |(mean_i vec(x_i) - mu) projection|^2."""
  centred = jnp.mean(jnp.reshape(x, (x.shape[0], -1)), axis=0) - state.mean
  return jnp.sum(jnp.square(centred @ state.projection))


def _p_value(state: MeanShiftState, phi: jax.Array, key: jax.Array) -> jax.Array:
  """p(B) of one batch's phi (m, K) (traceable)."""
  pooled = jnp.concatenate([state.pool, phi])
  n, m = state.pool.shape[0], phi.shape[0]
  subsets = jnp.concatenate(
    [n + jnp.arange(m)[None], random_subsets(key, state.n_permutations, n + m, m)]
  )
  statistics = _statistic(pooled[subsets])  # T(B), then the P permuted ones
  return (1.0 + jnp.sum(statistics[1:] >= statistics[0])) / (1.0 + state.n_permutations)


@jax.jit
def _equal_batches_p_values(
  state: MeanShiftState, phi: jax.Array, batch_numbers: jax.Array, stream: jax.Array
) -> jax.Array:
  """(b,) p(B) of b batches of equal size, phi (b, m, K), one after another (`lax.map`: the memory
  of one batch's permutations), batch j permuted with fold_in(stream, batch_numbers[j])."""
  keys = jax.vmap(lambda i: jax.random.fold_in(stream, i))(batch_numbers)
  return jax.lax.map(lambda args: _p_value(state, *args), (phi, keys))


def mean_shift_p_values(
  state: MeanShiftState, x: np.ndarray, starts: np.ndarray, key: jax.Array, first_batch: int = 0
) -> np.ndarray:
  """(n_batches,) p(B) of each batch x[starts[i]:starts[i+1]] (preprocessed, unchecked); batch i is
  permuted with the key fold_in(fold_in(key, MEAN_SHIFT_STREAM), first_batch + i)."""
  phi = embed(state, x)
  stream = jax.random.fold_in(key, MEAN_SHIFT_STREAM)
  starts = np.asarray(starts)
  sizes = np.diff(starts)
  p = np.empty(len(sizes))
  for size in np.unique(sizes):  # one call per batch size (at most two: the last batch may differ)
    batches = np.flatnonzero(sizes == size)
    padded = np.resize(batches, 1 << int(np.ceil(np.log2(len(batches)))))  # a power of two: few
    rows = starts[padded][:, None] + np.arange(size)[None, :]  # compilations
    p_padded = _equal_batches_p_values(
      state, jnp.asarray(phi[rows]), jnp.asarray(first_batch + padded), stream
    )
    p[batches] = np.asarray(p_padded)[: len(batches)]
  return p
