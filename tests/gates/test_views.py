"""The views' statistic (`inflow_jax.gates.views`): Fisher's statistic exact beyond float64's
integers."""

import math

import numpy as np

from inflow_jax.gates import views


def test_fishers_statistic_is_exact_beyond_float64s_integers():
  """(1 + n)^k >= 2^53: the product of the counts in Python integers, equal products equal T."""
  n, rng = 10**4, np.random.default_rng(0)
  counts = [rng.integers(1, n + 2, 50) for _ in range(5)]
  counts[0][1], counts[1][1] = counts[1][0], counts[0][0]  # row 1 a permutation of row 0's
  for c in counts[2:]:
    c[1] = c[0]
  got = views.fisher_statistic(counts, n)
  expected = [
    5 * math.log(1 + n) - math.log(math.prod(int(c[i]) for c in counts)) for i in range(50)
  ]
  np.testing.assert_allclose(got, expected, rtol=1e-13)
  assert got[0] == got[1]
