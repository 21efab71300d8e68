"""The whitening stem (`inflow_jax.model.whitening`): its kernel whitens the training patches (their
covariance after it is the identity, against a direct numpy computation) and stays frozen."""

import jax
import numpy as np
import pytest

from inflow_jax.model.patch_conv import patches3x3
from inflow_jax.model.whitening import EPS, WhiteningStem, set_whitening, whitening_kernel


def _images(n=64):
  rng = np.random.default_rng(0)
  smooth = rng.random((n, 8, 8, 3)).cumsum(axis=1).cumsum(axis=2)  # correlated neighbours
  return (smooth / smooth.max()).astype(np.float32)


@pytest.mark.parametrize("n_components", [27, 12])
def test_the_kernel_whitens_the_strongest_directions_of_the_patches(n_components):
  """After the kernel's first half the patches' covariance is the identity (shrunk by eps), and
  the variance it keeps is that of the n strongest principal directions (direct numpy)."""
  x = _images()
  kernel = whitening_kernel(x, n_components)
  assert kernel.shape == (3, 3, 3, 2 * n_components)
  patches = np.asarray(patches3x3(2 * x - 1))[:, 1:-1, 1:-1].reshape(-1, 27).astype(np.float64)
  flat = kernel.reshape(27, 2 * n_components).astype(np.float64)
  half = flat[:, :n_components]
  eigenvalues = np.linalg.eigvalsh(np.cov(patches, rowvar=False))[-n_components:]  # ascending
  covariance = np.cov(patches @ half, rowvar=False)
  np.testing.assert_allclose(
    np.sort(np.diag(covariance)), np.sort(eigenvalues / (eigenvalues + EPS)), atol=2e-3
  )
  np.testing.assert_allclose(covariance - np.diag(np.diag(covariance)), 0.0, atol=2e-3)
  np.testing.assert_allclose(
    np.linalg.norm(half * np.sqrt(eigenvalues + EPS)[None], axis=0), 1.0, rtol=1e-6
  )
  np.testing.assert_array_equal(flat[:, n_components:], -half)


def test_the_stem_uses_the_set_kernel_from_a_constant_collection():
  x = _images(4)
  stem = WhiteningStem()
  variables = set_whitening(jax.jit(stem.init)(jax.random.PRNGKey(0), x), _images())
  assert set(variables) == {"params", "whitening"} and set(variables["params"]) == {"bias"}
  out = stem.apply(variables, x)
  kernel = variables["whitening"]["kernel"].reshape(27, 24)
  expected = jax.nn.gelu(patches3x3(2 * x - 1) @ kernel)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
