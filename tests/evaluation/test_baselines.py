"""The baselines (`inflow_jax.evaluation.baselines`): the typicality test calibrated and powerful,
the input-complexity score from PNG lengths."""

import numpy as np
import pytest

from inflow_jax.evaluation import baselines


def test_typicality_calibrated_and_powerful():
  rng = np.random.default_rng(1)
  heldout = rng.normal(3.5, 0.3, 5000)
  state = baselines.fit_typicality(heldout, [10, 50], level=0.05, n_bootstrap=2000, seed=0)
  assert state.entropy == pytest.approx(heldout.mean())
  # eps_M shrinks like sigma / sqrt(M): 1.96 * 0.3 / sqrt(M) for the 95% two-sided quantile.
  for m in (10, 50):
    assert state.thresholds[m] == pytest.approx(1.96 * 0.3 / np.sqrt(m), rel=0.1)
  same = [baselines.typicality_test(state, rng.normal(3.5, 0.3, 50)) for _ in range(400)]
  assert 0.02 < np.mean(same) < 0.09
  # Lower NLL than typical (the SVHN case) is atypical too: two-sided.
  assert baselines.typicality_test(state, rng.normal(3.2, 0.3, 50))
  assert baselines.typicality_test(state, rng.normal(3.8, 0.3, 50))
  with pytest.raises(ValueError, match="batch size 7"):
    baselines.typicality_test(state, np.ones(7))


def test_png_complexity_orders_images():
  rng = np.random.default_rng(2)
  flat = np.full((1, 32, 32, 3), 0.5, np.float32)
  noise = rng.integers(0, 256, (1, 32, 32, 3)).astype(np.float32) / 255
  bits = baselines.png_bits_per_dim(np.concatenate([flat, noise]))
  # a constant image compresses; 8-bit noise cannot (< 8 + header)
  assert bits[0] < 0.5 < 7.5 < bits[1]
  score = baselines.input_complexity_score(np.array([4.0, 4.0]), np.concatenate([flat, noise]))
  np.testing.assert_allclose(score, 4.0 - bits)
  with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
    baselines.png_bits_per_dim(noise * 2)
