"""The gate in one place (`inflow_jax.detector.gate.gate_batches`): each test's p-value per batch
against the test run on its own, and the gate's choice per attention kind."""

import jax
import numpy as np
import pytest

from inflow_jax import data, gates
from inflow_jax.detector.gate import gate_batches


def test_each_test_and_the_combination_against_direct_calls(fitted_combined):
  detector, x_in = fitted_combined
  noise = data.load_images("uniform_noise", "test", max_images=6)[0]
  x = np.concatenate([x_in[:12], noise])  # batches of 6: two clean, one noise
  key = jax.random.PRNGKey(5)
  gate = gate_batches(detector, x, 6, key)
  state = detector.conformal_state_
  image_p = gates.image_p_values(state, detector.image_scores(x))
  np.testing.assert_array_equal(gate.image_p, image_p)
  for i in range(3):
    batch = x[6 * i : 6 * (i + 1)]
    p_mmd = gates.mmd_test(detector.mmd_state_, batch, jax.random.fold_in(key, i)).p_value
    assert gate.p_mmd[i] == pytest.approx(float(p_mmd), rel=1e-6)
    p_conformal = gates.batch_p_value(image_p[6 * i : 6 * (i + 1)], state.batch_test, 200, 0.05)
    assert gate.p_conformal[i] == pytest.approx(p_conformal)
    combined_p = gates.combine_p_values(
      [gate.p_conformal[i], gate.p_mmd[i], gate.p_mean_shift[i]], "bonferroni", (0.5, 0.25, 0.25)
    )
    assert gate.p_combined[i] == pytest.approx(combined_p)
  np.testing.assert_array_equal(gate.p_value, gate.p_combined)  # the "combined" kind's choice
  np.testing.assert_array_equal(gate.attention, (gate.p_combined >= 0.05).astype(float))
  assert gate.attention[2] == 0.0


def test_single_images_leave_the_mmd_test_out(fitted_combined):
  detector, x_in = fitted_combined
  gate = gate_batches(detector, x_in[:4], 1, jax.random.PRNGKey(0))
  assert np.all(np.isnan(gate.p_mmd)) and gate.p_combined.shape == (4,)
  assert np.all(np.isfinite(gate.p_combined))
