"""Stream scoring (`inflow_jax.detector.stream`) with a combined gate: every image is tested from
the first one on, by its window's gate and by its own conformal p-value."""

import jax
import numpy as np
import pytest

from inflow_jax import data
from inflow_jax.detector.gate import gate_batches
from inflow_jax.detector.stream import window_bounds


def test_an_outlier_that_comes_first_is_flagged(fitted_combined):
  detector, x_in = fitted_combined
  noise = data.load_images("uniform_noise", "test", max_images=1)[0]
  x = np.concatenate([noise, x_in[:11]])
  key = jax.random.PRNGKey(3)
  columns = detector.score_stream(x, 5, key)
  assert columns["is_ood"][0] == 1 and columns["attention"][0] == 0.0
  image_p = detector.image_p_values(x)
  np.testing.assert_array_equal(columns["image_p_value"], image_p)
  for t in range(len(x)):  # each image: its window's gate and its own p-value, against the gate
    lo, hi = window_bounds(t, 5, len(x))
    gate = gate_batches(detector, x[lo:hi], hi - lo, key, first_batch=t, image_p=image_p[lo:hi])
    assert columns["batch_p_value"][t] == pytest.approx(gate.p_value[0])
    expected = float(gate.p_value[0] >= detector.level and image_p[t] >= detector.level)
    assert columns["attention"][t] == expected, t
  assert list(columns["tested_by"][:3]) == ["its own p-value (window of 2 beside)"] * 3
  # the verdict is the image's own; the window's is reported beside it
  np.testing.assert_array_equal(columns["is_ood"], (image_p < detector.level).astype(int))
  np.testing.assert_array_equal(
    columns["batch_is_ood"], (columns["batch_p_value"] < detector.level).astype(int)
  )
  assert [window_bounds(t, 5, 12) for t in range(6)] == [
    (0, 2),
    (0, 2),
    (1, 3),
    (0, 4),
    (0, 5),
    (1, 6),
  ]
