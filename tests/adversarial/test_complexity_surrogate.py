"""The differentiable surrogate of the PNG lengths (`inflow_jax.adversarial.complexity_surrogate`):
against the true PNG lengths (PIL) of images it was not fitted on, and its gradient against finite
differences."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from inflow_jax.adversarial.complexity_surrogate import (
  filter_code_lengths,
  fit_surrogate,
  surrogate_complexity_bits,
  surrogate_residual_rms,
)
from inflow_jax.gates.features import complexity_bits


def _images(seed: int, n: int, size: int = 32) -> np.ndarray:
  """Smooth random colour fields with per-image noise levels, rounded to 8 bits."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(size=(n, 4, 4, 3))
  smooth = np.asarray(jax.image.resize(coarse, (n, size, size, 3), "linear"))
  noise = rng.uniform(0.0, 0.1, (n, 1, 1, 1)) * rng.uniform(-1.0, 1.0, smooth.shape)
  return (np.round(np.clip(smooth + noise, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def test_surrogate_tracks_the_png_lengths_of_unseen_images():
  coefficients = fit_surrogate(_images(0, 64), jax.random.key(0), 8 / 255)
  assert coefficients.shape == (2, 5) and np.all(np.isfinite(coefficients))
  x = _images(1, 64)
  truth = complexity_bits(x)
  rms = surrogate_residual_rms(coefficients, x, truth)
  assert np.all(rms < 0.3 * truth.std(axis=0)), (rms, truth.std(axis=0))  # R^2 > 0.91 per scale
  # the surrogate orders the images as PNG does
  predicted = np.asarray(surrogate_complexity_bits(jnp.asarray(coefficients), jnp.asarray(x)))
  assert np.corrcoef(predicted[:, 0], truth[:, 0])[0, 1] > 0.95


def test_filter_code_lengths_of_a_constant_image():
  # residuals: 0 inside, the value itself on the first row / column (zeros enter from outside)
  x = jnp.full((1, 4, 4, 1), 0.5)
  lengths = np.asarray(filter_code_lengths(x))[0]
  code = lambda r: np.log2(1.0 + np.sqrt(r**2 + 0.01) / 0.25)
  v = 127.5
  np.testing.assert_allclose(lengths[0], (4 * code(v) + 12 * code(0.0)) / 16, rtol=1e-5)  # sub
  np.testing.assert_allclose(lengths[1], lengths[0], rtol=1e-6)  # up
  # gradient predictor l + u - d: v - 0 at the corner, then v - v on the first row / column
  np.testing.assert_allclose(lengths[3], (code(v) + 15 * code(0.0)) / 16, rtol=1e-5)


def test_surrogate_gradient_matches_finite_differences():
  coefficients = fit_surrogate(_images(2, 16, size=8), jax.random.key(1), 8 / 255)
  with jax.enable_x64(True):
    x = jnp.asarray(_images(3, 2, size=8), jnp.float64)
    c64 = jnp.asarray(coefficients, jnp.float64)
    check_grads(
      lambda xs: surrogate_complexity_bits(c64, xs),
      (x,),
      order=1,
      modes=("rev",),
      eps=1e-4,
      atol=1e-4,
      rtol=1e-3,
    )


def test_fit_is_deterministic_given_the_key_and_uses_the_noisy_copies():
  x = _images(4, 12)
  fit = lambda seed, copies: fit_surrogate(x, jax.random.key(seed), 8 / 255, noise_copies=copies)
  np.testing.assert_array_equal(fit(0, 2), fit(0, 2))
  assert not np.allclose(fit(0, 2), fit(1, 2))  # other noise
  assert not np.allclose(fit(0, 2), fit(0, 0))  # the clean images alone
