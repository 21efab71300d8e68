"""Kernel pieces of the MMD test: Gaussian RBF kernels as matrix products, alibi-detect's median
heuristic, and Floyd's uniformly random subsets for the permutations.

All are unchecked helpers of `inflow_jax.gates.mmd` (which validates its inputs once).
"""

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_HIGHEST = jax.lax.Precision.HIGHEST


def kernel_factors(points: Array, sigma: Array) -> Tuple[Array, Array]:
  """Scaled augmented rows whose products are the kernel's exponents; points (..., q, d),
  sigma (S,).

    -|p_i - p_j|^2 / (2 sigma_s^2) = [2 g_s p_i, -g_s |p_i|^2, -g_s] . [p_j, 1, |p_j|^2],
    g_s = 1 / (2 sigma_s^2),

  so a block of kernel entries is one matrix product and an exp, with no pass that adds the norms or
  scales the distances (XLA's CPU backend runs the permutations' kernels faster this way;
  measurements: docs/results.md).
  Returns left (S, ..., q, d + 2) and right (..., q, d + 2).
  """
  norms = jnp.sum(points * points, axis=-1, keepdims=True)
  ones = jnp.ones_like(norms)
  g = (1.0 / (2.0 * sigma * sigma)).reshape((-1,) + (1,) * points.ndim)
  left = jnp.concatenate([2.0 * g * points, -g * norms, -g * ones], axis=-1)
  return left, jnp.concatenate([points, ones, norms], axis=-1)


def gaussian_kernel(left: Array, right: Array) -> Array:
  """K_ij = mean_s exp(-|p_i - p_j|^2 / (2 sigma_s^2)) from `kernel_factors` (alibi-detect's
  GaussianRBF).

  left (S, ..., p, d + 2) from the first points, right (..., q, d + 2) from the second:
  K (..., p, q). Rounding can leave an exponent of order +1e-6 where the distance is 0: the entry is
  then 1 + 1e-6.
  """
  kernels = [
    jnp.exp(jnp.einsum("...id,...jd->...ij", rows, right, precision=_HIGHEST)) for rows in left
  ]
  return kernels[0] if len(kernels) == 1 else sum(kernels) / len(kernels)


def median_sq_distance(emb: np.ndarray) -> float:
  """alibi-detect's median of pairwise squared distances, diagonal excluded.

  alibi sorts all n^2 distances (the n zero diagonal entries first, each pair twice) and takes index
  n + (n^2 - n) // 2 - 1, which is the lower median of the n (n - 1) / 2 distinct pairs.
  """
  emb = np.asarray(emb, np.float64)
  n = emb.shape[0]
  norms = np.sum(emb * emb, axis=1)
  pairs = []
  for start in range(0, n - 1, 1024):
    rows = emb[start : start + 1024]
    d2 = norms[start : start + 1024, None] + norms[None, :] - 2.0 * rows @ emb.T
    upper = np.arange(n)[None, :] > np.arange(start, start + rows.shape[0])[:, None]  # pairs j > i
    pairs.append(d2[upper].astype(np.float32))
  pairs = np.concatenate(pairs)
  kth = (pairs.size - 1) // 2
  return float(max(np.partition(pairs, kth)[kth], 0.0))


def random_subsets(key: Array, n_permutations: int, n_total: int, m: int) -> Array:
  """(P, m) indices: the m "test" points of P uniform random permutations of n_total = N points.

  Floyd's algorithm (Bentley & Floyd, CACM 1987) draws a uniformly random m-subset of {0, ..., N-1}:
  for j = N-m, ..., N-1, draw t uniform in {0, ..., j} and add t, or j when t was already chosen. By
  induction every k-subset of {0, ..., N-m+k-1} is equally likely after k steps. The order within a
  subset is not uniform, which the statistics never use. Vectorised over the P permutations, with a
  (P, N) table of chosen points, a step is a gather and a scatter of P entries: faster than the
  top_k of P x N uniforms, and than comparing with the chosen list (measurements: docs/results.md).
  """
  first = n_total - m
  draws = jax.random.randint(
    key, (m, n_permutations), 0, jnp.arange(first + 1, n_total + 1)[:, None]
  )
  rows = jnp.arange(n_permutations)

  def add_one(k, carry):
    chosen, taken = carry
    pick = jnp.where(taken[rows, draws[k]], first + k, draws[k])
    return chosen.at[k].set(pick), taken.at[rows, pick].set(True)

  chosen, _ = jax.lax.fori_loop(
    0,
    m,
    add_one,
    (jnp.zeros((m, n_permutations), draws.dtype), jnp.zeros((n_permutations, n_total), bool)),
  )
  return chosen.T


@functools.partial(jax.jit, static_argnames=("block",))
def centered_row_sums(reference: Array, sigma: Array, offset: Array, block: int) -> Array:
  """r_i = sum_{j != i} (K(ref_i, ref_j) - c), computed `block` rows at a time."""
  n = reference.shape[0]
  left, right = kernel_factors(reference, sigma)
  n_blocks = -(-n // block)
  rows = jnp.pad(left, ((0, 0), (0, n_blocks * block - n), (0, 0)))
  rows = rows.reshape(left.shape[0], n_blocks, block, left.shape[-1]).swapaxes(0, 1)
  starts = jnp.arange(n_blocks) * block

  def one_block(args):
    start, row_block = args
    k = gaussian_kernel(row_block, right) - offset
    own = (start + jnp.arange(block))[:, None] == jnp.arange(n)[None, :]
    return jnp.sum(jnp.where(own, 0.0, k), axis=1)

  return jax.lax.map(one_block, (starts, rows)).reshape(-1)[:n]
