"""The mean-shift test (`inflow_jax.gates.mean_shift`): its statistic and p-value against a direct
computation (sklearn's PCA whitening, numpy over the same permutations), its level on a null with
fresh calibration draws, its power on a shared shift, and its errors."""

import jax
import numpy as np
import pytest
from scipy import stats
from sklearn.decomposition import PCA

from inflow_jax.gates.kernels import random_subsets
from inflow_jax.gates.mean_shift import (
  MEAN_SHIFT_STREAM,
  check_components,
  embed,
  fit_mean_shift,
  mean_shift_p_values,
)


def _images(rng, n, shift=0.0):
  """(n, 8, 8, 3) images in [0, 1]: smooth random fields (correlated pixels), moved by `shift`."""
  coarse = rng.normal(size=(n, 2, 2, 3))
  fields = coarse.repeat(4, axis=1).repeat(4, axis=2) + 0.5 * rng.normal(size=(n, 8, 8, 3))
  return np.clip(0.5 + 0.1 * fields + shift, 0.0, 1.0).astype(np.float32)


def test_statistic_and_p_value_equal_a_direct_computation():
  rng = np.random.default_rng(0)
  x_fit, x_cal, batch = _images(rng, 300), _images(rng, 120), _images(rng, 7, shift=0.02)
  state = fit_mean_shift(x_fit, x_cal, 6, n_permutations=50)
  pca = PCA(6, whiten=True, svd_solver="full").fit(x_fit.reshape(300, -1))
  statistic = lambda phi: np.sum(np.square(phi.mean(axis=-2)), axis=-1)  # sign-flip invariant
  np.testing.assert_allclose(
    statistic(embed(state, batch)), statistic(pca.transform(batch.reshape(7, -1))), rtol=1e-3
  )
  key = jax.random.PRNGKey(3)
  p = mean_shift_p_values(state, batch, np.array([0, 7]), key, first_batch=4)
  subsets = np.asarray(
    random_subsets(jax.random.fold_in(jax.random.fold_in(key, MEAN_SHIFT_STREAM), 4), 50, 127, 7)
  )
  pooled = np.concatenate([np.asarray(state.pool), embed(state, batch)])
  expected = (1 + np.sum(statistic(pooled[subsets]) >= statistic(pooled[120:]))) / 51
  assert p.shape == (1,) and p[0] == pytest.approx(expected, rel=1e-6)  # the same count (float32)


def test_level_on_a_null_and_power_on_a_shared_shift():
  """Fresh calibration pool and batch of 5 per trial: p-values uniform on the null (a permutation
  test), and a shift shared by the batch's images found."""
  rng = np.random.default_rng(1)
  state = fit_mean_shift(_images(rng, 400), _images(rng, 10), 8, n_permutations=199)
  null, shifted = [], []
  for trial in range(300):
    trial_state = state.replace(pool=embed(state, _images(rng, 200)))
    key = jax.random.PRNGKey(trial)
    null.append(mean_shift_p_values(trial_state, _images(rng, 5), np.array([0, 5]), key)[0])
    shifted.append(mean_shift_p_values(trial_state, _images(rng, 5, 0.1), np.array([0, 5]), key)[0])
  null, shifted = np.array(null), np.array(shifted)
  assert 0.02 <= np.mean(null <= 0.05) <= 0.09
  assert stats.kstest(null, "uniform").pvalue > 1e-3
  assert np.mean(shifted <= 0.05) > 0.9


def test_errors_name_the_problem():
  rng = np.random.default_rng(2)
  with pytest.raises(
    ValueError, match=r"needs more fitting images \(x_ref\) and pixels than that, got 20 images"
  ):
    fit_mean_shift(_images(rng, 20), _images(rng, 10), 20)
  flat = np.full((50, 8, 8, 3), 0.5, np.float32)
  flat[:, 0, 0, 0] = rng.random(50)  # one direction of variation
  with pytest.raises(ValueError, match="vary along fewer than 4 directions"):
    fit_mean_shift(flat, _images(rng, 10), 4)
  for bad in (0, -3, 2.5, "64", True):
    with pytest.raises(ValueError, match="mean_shift_components must be a positive int or None"):
      check_components(bad)
  assert check_components(None) is None and check_components(64) == 64
