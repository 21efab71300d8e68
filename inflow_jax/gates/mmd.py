"""The attention: a kernel-MMD two-sample permutation test between a batch and reference images.

InFlow's attention (alibi-detect 0.13 `MMDDrift`, reproduced exactly): embed the n reference images
and the m test images with the untrained encoder (`inflow_jax.gates.encoder`), pool them,
z = [ref; x] (N = n + m), and with the Gaussian RBF kernel (averaged over bandwidths when several
are given)

  K_ij = mean_s exp(-|z_i - z_j|^2 / (2 sigma_s^2)),   K0 = K with its diagonal set to 0,

test with the unbiased statistic

  MMD^2 = sum(K0_xx) / (n (n-1)) + sum(K0_yy) / (m (m-1)) - 2 sum(K_xy) / (n m).

Its null distribution comes from `n_permutations` random re-splits of the pooled points into n
"reference" and m "test" points. The attention is 1 (trust the flow) when p_value >= level, else 0.

Efficiency (exactly the same arithmetic identity, not an approximation): with T = 1'K0 1 and row
sums r = K0 1 of the pooled matrix, a split whose test part is the index set S has

  S_yy = sum K0[S, S],  S_xy = sum_{i in S} r_i - S_yy,  S_xx = T - 2 sum_{i in S} r_i + S_yy,

so a permutation costs the m x m kernel among the chosen points (`kernel_factors`: one matrix
product and an exp per block; the points come from Floyd's sampler) plus a gather of r. The
reference part of r and T is computed once at fit (`inflow_jax.gates.mmd_fit`; O(n^2), in blocks); a
test adds K(ref, x) and K(x, x) (O(n m)). The fitted state holds no n x n matrix: O(n d) floats. All
sums use the kernel minus a constant c (its value at the median distance): MMD^2 is unchanged, since
c/(n(n-1)) n(n-1) + c - 2c = 0, while float32 sums of values centred near zero keep MMD^2 accurate
to ~1e-8 at n = 5000.

Beyond the paper, `inflow_jax.gates.streaming` gates images that arrive one at a time by testing the
last `window` of them.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.gates.kernels import gaussian_kernel, kernel_factors, random_subsets
from inflow_jax.gates.mmd_fit import MMDState
from inflow_jax.gates.mmd_fit import fit_mmd as fit_mmd  # re-exported
from inflow_jax.gates.mmd_fit import fit_mmd_embedded as fit_mmd_embedded  # re-exported
from inflow_jax.utils.checks import check_images, check_key

Array = jax.Array

_PERMUTATION_ENTRIES = 1 << 24  # kernel entries per vectorised chunk of permutations (64 MiB)


class MMDResult(NamedTuple):
  """The outcome of one test; scalars (or, from `gate_stream`, one entry per image)."""

  p_value: Array  # (1 + #{permuted >= observed}) / (1 + n_permutations)
  mmd2: Array  # the observed unbiased MMD^2
  threshold: Array  # the permuted MMD^2 at `level`: sorted descending, entry int(level * P)
  attention: Array  # 1.0 if p_value >= level else 0.0


def _mmd2_from_sums(total, subset_row_sum, subset_sum, n: int, m: int):
  """MMD^2 of a split from T, sum_{i in S} r_i and S_yy (the identity of the module docstring)."""
  s_xy = subset_row_sum - subset_sum
  s_xx = total - 2.0 * subset_row_sum + subset_sum
  c_xx, c_yy, c_xy = (
    1.0 / (n * (n - 1)),
    1.0 / (m * (m - 1)),
    2.0 / (n * m),
  )  # Python floats: no overflow
  return c_xx * s_xx + c_yy * subset_sum - c_xy * s_xy


def _subset_sums(left: Array, right: Array, row_sums: Array, subsets: Array, offset: Array):
  """For index sets (P, m): sum_{i in S} r_i and sum_{i != j in S} (K_ij - c), vectorised over P.

  left, right: `kernel_factors` of the pooled points. K is symmetric: with S = A u B (halves),

    sum_{i != j in S} = sum_{A x A} + sum_{B x B} + 2 sum_{A x B} - m (1 - c)   (K_ii = 1):

  3/4 of the m^2 entries, and whole blocks, whose sums XLA's CPU backend runs faster than masked
  ones.
  """
  m = subsets.shape[-1]
  half = m // 2
  lefts, rights = left[:, subsets], right[subsets]  # (S, P, m, d + 2), (P, m, d + 2)

  def block_sum(rows: slice, columns: slice):
    k = gaussian_kernel(lefts[..., rows, :], rights[..., columns, :]) - offset
    return jnp.sum(k, axis=(-2, -1))

  first, second = slice(0, half), slice(half, m)
  pair_sum = (
    block_sum(first, first)
    + block_sum(second, second)
    + 2.0 * block_sum(first, second)
    - m * (1.0 - offset)
  )
  return jnp.sum(row_sums[subsets], axis=-1), pair_sum


def _pooled_sums(state: MMDState, emb: Array):
  """Row sums r (N,) and total T of the pooled [reference; emb] kernel (offset, zeroed diagonal),
  the observed MMD^2 of the split reference | emb, and the `kernel_factors` (left, right) of the
  pooled points, which the permutations reuse."""
  n, m = state.reference.shape[0], emb.shape[0]
  y = emb.astype(jnp.float32) - state.center
  left, right = kernel_factors(jnp.concatenate([state.reference, y]), state.sigma)
  k_rx = gaussian_kernel(left[:, :n], right[n:]) - state.kernel_offset  # (n, m)
  k_xx = gaussian_kernel(left[:, n:], right[n:]) - state.kernel_offset
  k_xx = jnp.where(jnp.eye(m, dtype=bool), 0.0, k_xx)  # (m, m)
  row_sums = jnp.concatenate(
    [
      state.reference_row_sums + jnp.sum(k_rx, axis=1),
      jnp.sum(k_rx, axis=0) + jnp.sum(k_xx, axis=1),
    ]
  )  # (N,)
  sum_xx = jnp.sum(k_xx)
  total = state.reference_total + 2.0 * jnp.sum(k_rx) + sum_xx
  mmd2 = _mmd2_from_sums(total, jnp.sum(row_sums[n:]), sum_xx, n, m)
  return row_sums, total, mmd2, (left, right)


def mmd2_embedded(state: MMDState, emb: Array) -> Array:
  """The unbiased MMD^2 between embeddings emb (m, d) and the fitted reference, differentiable in
  emb.

  Equals `mmd_test_embedded(state, emb, key).mmd2`; used by the adaptive attacks on the gate.
  """
  return _pooled_sums(state, emb)[2]


@jax.jit
def _test_embedded(state: MMDState, emb: Array, key: Array) -> MMDResult:
  n, m = state.reference.shape[0], emb.shape[0]
  offset = state.kernel_offset
  row_sums, total, mmd2, (left, right) = _pooled_sums(state, emb)
  n_perm = state.n_permutations
  subsets = random_subsets(key, n_perm, n + m, m)
  chunk = max(1, _PERMUTATION_ENTRIES // (m * m))
  if n_perm <= chunk:
    subset_row_sum, subset_sum = _subset_sums(left, right, row_sums, subsets, offset)
  else:  # bounded memory: `chunk` permutations at a time
    subset_row_sum, subset_sum = jax.lax.map(
      lambda s: _subset_sums(left, right, row_sums, s[None], offset), subsets, batch_size=chunk
    )
    subset_row_sum, subset_sum = subset_row_sum[:, 0], subset_sum[:, 0]
  permuted = _mmd2_from_sums(total, subset_row_sum, subset_sum, n, m)

  p_value = (1.0 + jnp.sum(permuted >= mmd2)) / (1.0 + n_perm)
  threshold = jnp.sort(permuted)[::-1][int(state.level * n_perm)]
  attention = (p_value >= state.level).astype(jnp.float32)
  return MMDResult(p_value=p_value, mmd2=mmd2, threshold=threshold, attention=attention)


def _check_batch_size(state: MMDState, m: int, name: str):
  if m < 2:
    raise ValueError(f"{name} must hold at least 2 samples for the unbiased MMD^2, got {m}")
  if m > state.n_reference:
    raise ValueError(
      f"{name} holds {m} samples, more than the {state.n_reference} reference samples; "
      "fit with a larger reference set or test smaller batches"
    )


def _check_has_encoder(state: MMDState):
  if state.embed is None:
    raise ValueError(
      "this state was fitted from embeddings without an encoder (fit_mmd_embedded with "
      "embed=None): test embeddings with mmd_test_embedded, or pass embed"
    )


def mmd_test_embedded(state: MMDState, emb: Array, key: Array) -> MMDResult:
  """`mmd_test` on already embedded samples emb (m, d) (jitted)."""
  shape = tuple(getattr(emb, "shape", ()))
  d = state.reference.shape[1]
  if len(shape) != 2 or shape[1] != d:
    raise ValueError(f"emb must have shape (m, {d}) like the reference embeddings, got {shape}")
  _check_batch_size(state, shape[0], "emb")
  check_key(key)
  if not isinstance(emb, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(emb))):
    raise ValueError("emb contains NaN or infinite values")
  return _test_embedded(state, emb, key)


@jax.jit
def _embed_images(state: MMDState, x: Array) -> Array:
  return state.embed(x)


def mmd_test(state: MMDState, x: Array, key: Array) -> MMDResult:
  """Tests whether the images x come from the reference distribution.

  Two jitted calls, the embedding and then the test on the embeddings (`mmd_test_embedded`); as one
  program it is no faster on 2 CPU cores (measurements: docs/results.md).

  Args:
    state: from `fit_mmd`.
    x: (m, H, W, C) float images in [0, 1], 2 <= m <= n_reference, same H, W, C as the reference.
    key: PRNG key of the P random permutations.
  Returns:
    `MMDResult`: mmd2, the unbiased MMD^2 (diagonal excluded, as alibi-detect);
    p_value = (1 + #{permuted MMD^2 >= mmd2}) / (1 + P), a valid p-value (P(p <= u) <= u under the
    null; alibi-detect reports #{...} / P, without the +1); threshold, the permuted MMD^2 sorted
    descending at index int(level * P); attention = 1.0 if p_value >= level else 0.0.
  """
  _check_has_encoder(state)
  x = check_images(
    x,
    name="x",
    spatial=state.image_shape[:2],
    channels=state.image_shape[2],
    value_range=(0.0, 1.0),
  )
  _check_batch_size(state, x.shape[0], "x")
  check_key(key)
  return mmd_test_unchecked(state, x, key)


def mmd_test_unchecked(state: MMDState, x: Array, key: Array) -> MMDResult:
  """`mmd_test` without the input checks: for callers that validated x once for a whole set."""
  return _test_embedded(state, _embed_images(state, x), key)
