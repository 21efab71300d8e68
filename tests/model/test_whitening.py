"""The whitening stem (`inflow_jax.model.whitening`): its kernel whitens the training patches (their
covariance after it is the identity, against a direct numpy computation) and stays frozen."""

import jax
import numpy as np

from inflow_jax.model.patch_conv import patches3x3
from inflow_jax.model.whitening import EPS, WhiteningStem, set_whitening, whitening_kernel


def _images(n=64):
  rng = np.random.default_rng(0)
  smooth = rng.random((n, 8, 8, 3)).cumsum(axis=1).cumsum(axis=2)  # correlated neighbours
  return (smooth / smooth.max()).astype(np.float32)


def test_the_kernel_whitens_the_patches():
  x = _images()
  kernel = whitening_kernel(x)
  assert kernel.shape == (3, 3, 3, 54)
  patches = np.asarray(patches3x3(2 * x - 1))[:, 1:-1, 1:-1].reshape(-1, 27).astype(np.float64)
  half = kernel.reshape(27, 54)[:, :27].astype(np.float64)
  covariance = np.cov(patches @ half, rowvar=False)
  eigenvalues = np.linalg.eigvalsh(np.cov(patches, rowvar=False))
  expected = np.diag(eigenvalues / (eigenvalues + EPS))  # the identity, shrunk by eps
  np.testing.assert_allclose(covariance, expected, atol=2e-3)
  np.testing.assert_array_equal(kernel.reshape(27, 54)[:, 27:], -kernel.reshape(27, 54)[:, :27])


def test_the_stem_uses_the_set_kernel_from_a_constant_collection():
  x = _images(4)
  stem = WhiteningStem()
  variables = set_whitening(stem.init(jax.random.PRNGKey(0), x), _images())
  assert set(variables) == {"params", "whitening"} and set(variables["params"]) == {"bias"}
  out = stem.apply(variables, x)
  kernel = variables["whitening"]["kernel"].reshape(27, 54)
  expected = jax.nn.gelu(patches3x3(2 * x - 1) @ kernel)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
