"""Consecutive batches of a set (`inflow_jax.utils.batching`): their starts, and fixed-size calls
that see full slices."""

import jax.numpy as jnp
import numpy as np
import pytest

from inflow_jax.utils import batching


def test_batch_starts():
  # a leftover of 1 joins batch 2; a partial batch of 2 is kept
  np.testing.assert_array_equal(batching.batch_starts(7, 3), [0, 3, 7])
  np.testing.assert_array_equal(batching.batch_starts(8, 3), [0, 3, 6, 8])
  np.testing.assert_array_equal(batching.batch_starts(6, 3), [0, 3, 6])
  with pytest.raises(ValueError, match="larger than the set"):
    batching.batch_starts(5, 6)
  with pytest.raises(ValueError, match="at least 2"):
    batching.batch_starts(1, 2)


def test_fixed_size_calls_see_full_slices_and_drop_the_padding():
  sizes = []
  fn = lambda x: (sizes.append(len(x)), {"double": 2 * x, "sum": x.sum(axis=1)})[1]
  x = np.arange(14.0).reshape(7, 2)
  out = batching.fixed_size(fn, x, 3)
  assert sizes == [3, 3, 3]
  np.testing.assert_array_equal(out["double"], 2 * x)
  np.testing.assert_array_equal(out["sum"], x.sum(axis=1))
  out, extra = batching.fixed_size(jnp.square, x, 4, host_work=lambda: "png")
  assert extra == "png" and sizes == [3, 3, 3]
  np.testing.assert_array_equal(out, np.square(x))
