"""The kernel helpers of the MMD test (`inflow_jax.gates.kernels`): Floyd's random subsets are
uniform, the median heuristic is alibi-detect's."""

import math

import jax
import numpy as np
import pytest
import scipy.stats

from inflow_jax.gates import kernels
from inflow_jax.gates.kernels import median_sq_distance


@pytest.mark.parametrize("n_total, m", [(6, 3), (7, 5), (5, 1)])
def test_random_subsets_are_uniform(n_total, m):
  """Floyd's sampler: all C(N, m) subsets equally likely (chi-square)."""
  key = jax.random.PRNGKey(0)
  small = np.sort(np.asarray(kernels.random_subsets(key, 40_000, n_total, m)), axis=1)
  _, counts = np.unique(small, axis=0, return_counts=True)
  assert counts.size == math.comb(n_total, m) and scipy.stats.chisquare(counts).pvalue > 1e-3


def test_random_subsets_at_the_benchmark_size():
  """Every index chosen with probability m / N (chi-square), no subset repeats an index."""
  n_total, m, n_permutations = 5250, 250, 400
  big = np.asarray(kernels.random_subsets(jax.random.PRNGKey(1), n_permutations, n_total, m))
  assert big.shape == (n_permutations, m) and big.min() >= 0 and big.max() < n_total
  assert all(np.unique(row).size == m for row in big)
  assert scipy.stats.chisquare(np.bincount(big.ravel(), minlength=n_total)).pvalue > 1e-3


def test_median_heuristic_uses_alibi_lower_median():
  emb = np.random.default_rng(1).standard_normal((41, 5))
  d2 = ((emb[:, None] - emb[None]) ** 2).sum(-1)
  full_sorted = np.sort(d2.ravel())  # alibi: all n^2 entries, the diagonal zeros first
  n = emb.shape[0]
  assert median_sq_distance(emb) == pytest.approx(full_sorted[n + (n * n - n) // 2 - 1], rel=1e-6)
