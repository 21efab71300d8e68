"""The conformal gate's density (`inflow_jax.gates.density`): bagged Gaussian mixtures of the
per-image features against sklearn and scipy, and the automatic number of components."""

import numpy as np
import pytest
from scipy import stats
from sklearn.mixture import GaussianMixture

from inflow_jax.gates.density import (
  check_components,
  choose_components,
  density_scores,
  fit_density,
  min_density_images,
)


def test_density_scores_equal_sklearn():
  rng = np.random.default_rng(2)
  features = np.c_[
    rng.normal(3.0, 2.0, 600), rng.normal(size=600) * 0.1 + 1.0, rng.gamma(2.0, size=600)
  ]
  density = fit_density(features, n_components=3, seed=0, n_bags=1)
  mixture = GaussianMixture(3, covariance_type="full", reg_covar=1e-3, random_state=0)
  standardised = (features - features.mean(0)) / features.std(0)
  mixture.fit(standardised)
  np.testing.assert_allclose(
    density_scores(density, features), -mixture.score_samples(standardised), rtol=1e-5, atol=1e-5
  )


def test_bagged_density_is_the_average_of_its_mixtures():
  rng = np.random.default_rng(4)
  features = np.c_[rng.normal(3.0, 2.0, 500), rng.gamma(2.0, size=500)]
  density = fit_density(features, n_components=3, seed=1, n_bags=4)
  assert density["means"].shape == (12, 2)
  u = (features[:50] - density["mean"]) / density["scale"]
  mixtures = []
  for b in range(4):  # each bag's 3 components as scipy normals, weights renormalised to 1
    part = slice(3 * b, 3 * b + 3)
    weights = np.exp(density["log_weights"][part].astype(np.float64))
    covariances = [
      np.linalg.inv(c @ c.T) for c in density["precisions_cholesky"][part].astype(np.float64)
    ]
    mixtures.append(
      sum(
        w * stats.multivariate_normal(m, c).pdf(u)
        for w, m, c in zip(weights / weights.sum(), density["means"][part], covariances)
      )
    )
    assert weights.sum() == pytest.approx(0.25, rel=1e-5)
  np.testing.assert_allclose(
    density_scores(density, features[:50]), -np.log(np.mean(mixtures, axis=0)), rtol=1e-4, atol=1e-4
  )


@pytest.mark.parametrize("true_components", [1, 4])
def test_auto_components_find_the_generating_mixture(true_components):
  rng = np.random.default_rng(true_components)
  centres = 8.0 * np.array([[0, 0], [1, 0], [0, 1], [1, 1]])[:true_components]
  u = centres[rng.integers(0, true_components, 2000)] + rng.normal(size=(2000, 2))
  assert choose_components((u - u.mean(0)) / u.std(0)) == true_components
  assert min_density_images("auto") == 13 and min_density_images(4) == 41
  with pytest.raises(ValueError, match="positive int or 'auto', got 2.5"):
    check_components(2.5)
