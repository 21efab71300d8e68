"""Fitting the attention's MMD test: `MMDState` and `fit_mmd` (the test is `inflow_jax.gates.mmd`).

Fitting embeds the n reference images once and precomputes what every test reuses: the reference
embeddings (centred), the bandwidths, the kernel offset c and the row sums r and total T of the
reference kernel (the identity of `inflow_jax.gates.mmd`'s docstring), in blocks, O(n^2) time and
O(n d) memory.
"""

from typing import Callable, Optional, Sequence, Tuple, Union

import flax
import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.gates.kernels import centered_row_sums, median_sq_distance
from inflow_jax.utils.checks import check_images, check_test_size

Array = jax.Array

_BLOCK_ENTRIES = 1 << 22  # kernel entries per block at fit (16 MiB of float32)


@flax.struct.dataclass
class MMDState:
  """A fitted MMD test: reference embeddings and what every test reuses. A pytree.

  Attributes:
    embed: the encoder (an `Embedder` pytree, or any callable wrapped in `jax.tree_util.Partial`).
    reference: (n, d) reference embeddings minus `center`.
    center: (d,) mean reference embedding (distances are translation invariant; centring helps
      float32).
    sigma: (S,) kernel bandwidths; the kernel averages over them.
    kernel_offset: c, subtracted from every kernel entry in sums (see `inflow_jax.gates.mmd`).
    reference_row_sums: (n,) sum_{j != i} (K(ref_i, ref_j) - c).
    reference_total: sum of `reference_row_sums` (accumulated in float64).
    n_permutations, level: the permutation test's size and significance level (static).
    image_shape: (H, W, C) of the reference images (static), to reject other shapes.
  """

  embed: Callable[[Array], Array]
  reference: Array
  center: Array
  sigma: Array
  kernel_offset: Array
  reference_row_sums: Array
  reference_total: Array
  n_permutations: int = flax.struct.field(pytree_node=False, default=100)
  level: float = flax.struct.field(pytree_node=False, default=0.05)
  image_shape: Tuple[int, int, int] = flax.struct.field(pytree_node=False, default=(32, 32, 3))

  @property
  def n_reference(self) -> int:
    return self.reference.shape[0]

  @property
  def nbytes(self) -> int:
    """Bytes of all arrays in the state (reference statistics and encoder parameters)."""
    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(self)))


def _as_pytree_callable(embed: Callable[[Array], Array]) -> Callable[[Array], Array]:
  """`embed` itself if it is a pytree of arrays (an `Embedder`), else wrapped in `Partial`."""
  if not callable(embed):
    raise TypeError(f"embed must be callable, got {type(embed).__name__}")
  leaves = jax.tree_util.tree_leaves(embed)
  if leaves and all(hasattr(leaf, "shape") for leaf in leaves):
    return embed
  return jax.tree_util.Partial(embed)


def fit_mmd(
  x_ref: Array,
  embed: Callable[[Array], Array],
  n_permutations: int = 100,
  level: float = 0.05,
  sigma: Union[None, float, Sequence[float]] = None,
  *,
  median_max_points: int = 5000,
) -> MMDState:
  """Embeds the reference images once and precomputes what every test reuses.

  Args:
    x_ref: (n, H, W, C) float reference images in [0, 1].
    embed: images -> (n, d) embeddings, e.g. `inflow_jax.gates.encoder.make_encoder(seed)` or
      `load_reference_encoder(path)`; any other callable is wrapped in `jax.tree_util.Partial`.
    n_permutations: P, the number of random re-splits in each test: an integer with
      1 / (1 + P) < level, so that the test can reject (P >= ceil(1 / level)).
    level: the significance level in (0, 1); attention = 0 when p_value < level.
    sigma: kernel bandwidth(s). None: the median heuristic sigma = sqrt(median_ij |z_i - z_j|^2 / 2)
      over reference pairs (alibi's lower median, see `median_sq_distance`), on the first
      `median_max_points` reference embeddings (exact for n <= median_max_points).
    median_max_points: cap on the points of the median heuristic (its cost is quadratic).
  Returns:
    an `MMDState` pytree. Its memory is O(n d): see `MMDState.nbytes`.
  """
  x_ref = check_images(x_ref, name="x_ref", min_batch=2, value_range=(0.0, 1.0))
  embed = _as_pytree_callable(embed)
  try:
    emb = np.asarray(embed(x_ref), np.float32)
  except ValueError as error:  # the encoder's own check names its argument x
    raise ValueError(f"embed cannot take x_ref of shape {x_ref.shape}: {error}") from error
  if emb.ndim != 2 or emb.shape[0] != x_ref.shape[0]:
    raise ValueError(
      f"embed must map (n, H, W, C) images to (n, d), got {emb.shape} for n = {x_ref.shape[0]}"
    )
  return fit_mmd_embedded(
    emb,
    embed,
    n_permutations,
    level,
    sigma,
    median_max_points=median_max_points,
    image_shape=tuple(int(s) for s in x_ref.shape[1:]),
  )


def fit_mmd_embedded(
  emb_ref: Array,
  embed: Optional[Callable[[Array], Array]] = None,
  n_permutations: int = 100,
  level: float = 0.05,
  sigma: Union[None, float, Sequence[float]] = None,
  *,
  median_max_points: int = 5000,
  image_shape: Tuple[int, int, int] = (32, 32, 3),
) -> MMDState:
  """`fit_mmd` from reference embeddings emb_ref (n, d). With embed=None only `mmd_test_embedded`
  works on the state; image_shape is the (H, W, C) that `mmd_test` will accept."""
  emb = np.asarray(emb_ref, np.float32)
  if emb.ndim != 2 or emb.shape[0] < 2:
    raise ValueError(f"emb_ref must have shape (n, d) with n >= 2, got {emb.shape}")
  if not np.all(np.isfinite(emb)):
    raise ValueError("the reference embeddings contain NaN or infinite values")
  n_permutations, level = check_test_size(n_permutations, level)
  center = emb.mean(axis=0, dtype=np.float64)
  reference = (emb - center).astype(np.float32)
  median_d2 = median_sq_distance(reference[:median_max_points])
  if sigma is None:
    if median_d2 <= 0.0:
      raise ValueError(
        "the median heuristic gave sigma = 0: the reference embeddings are (mostly) "
        "identical; pass sigma explicitly"
      )
    sigma = np.sqrt(0.5 * median_d2)
  sigma = np.atleast_1d(np.asarray(sigma, np.float32))
  if sigma.ndim != 1 or sigma.size == 0 or not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
    raise ValueError(f"sigma must be a positive number or a list of them, got {sigma}")
  offset = np.mean(np.exp(-median_d2 / (2.0 * sigma.astype(np.float64) ** 2)))
  n = reference.shape[0]
  block = int(min(n, max(8, _BLOCK_ENTRIES // n)))
  row_sums = centered_row_sums(
    jnp.asarray(reference), jnp.asarray(sigma), jnp.float32(offset), block
  )
  total = np.sum(np.asarray(row_sums), dtype=np.float64)
  return MMDState(
    embed=None if embed is None else _as_pytree_callable(embed),
    reference=jnp.asarray(reference),
    center=jnp.asarray(center, jnp.float32),
    sigma=jnp.asarray(sigma),
    kernel_offset=jnp.float32(offset),
    reference_row_sums=row_sums,
    reference_total=jnp.float32(total),
    n_permutations=int(n_permutations),
    level=float(level),
    image_shape=tuple(int(s) for s in image_shape),
  )
