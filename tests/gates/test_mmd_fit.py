"""Fitting the MMD test (`inflow_jax.gates.mmd_fit`): the state's size, and the fit's errors."""

import jax
import numpy as np
import pytest

from inflow_jax.gates import fit_mmd, fit_mmd_embedded


def _flatten(x):
  """An identity 'encoder' for tests: (n, 1, 1, d) images -> (n, d)."""
  return x.reshape(x.shape[0], -1)


def _vectors(rng, n, d=6):
  return np.clip(0.5 + 0.1 * rng.standard_normal((n, 1, 1, d)), 0, 1).astype(np.float32)


def test_state_holds_no_quadratic_matrix():
  n, d = 600, 6
  state = fit_mmd(_vectors(np.random.default_rng(2), n, d), _flatten)
  assert max(np.size(leaf) for leaf in jax.tree_util.tree_leaves(state)) == n * d
  assert state.nbytes < 4 * (n * d + 3 * n)


def test_bad_fits_raise_clear_errors():
  rng = np.random.default_rng(5)
  with pytest.raises(ValueError, match="at least 2"):
    fit_mmd(_vectors(rng, 1), _flatten)
  with pytest.raises(ValueError, match="sigma"):
    fit_mmd(_vectors(rng, 10), _flatten, sigma=-1.0)
  with pytest.raises(ValueError, match="level"):
    fit_mmd(_vectors(rng, 10), _flatten, level=1.5)


def test_bad_test_sizes_raise_clear_errors():
  x_ref = _vectors(np.random.default_rng(6), 20)
  for bad in (2.7, 20.0, True):
    with pytest.raises(TypeError, match="n_permutations must be an integer"):
      fit_mmd(x_ref, _flatten, n_permutations=bad)
    with pytest.raises(TypeError, match="n_permutations must be an integer"):
      fit_mmd_embedded(_flatten(x_ref), _flatten, n_permutations=bad)
  with pytest.raises(ValueError, match=r"smallest p-value.*n_permutations >= 20"):
    fit_mmd(x_ref, _flatten, n_permutations=10)
  with pytest.raises(ValueError, match=r"smallest p-value.*n_permutations >= 100"):
    fit_mmd_embedded(_flatten(x_ref), None, n_permutations=99, level=0.01)
  state = fit_mmd(x_ref, _flatten, n_permutations=np.int64(20))
  assert state.n_permutations == 20 and type(state.n_permutations) is int
