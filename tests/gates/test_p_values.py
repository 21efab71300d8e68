"""Conformal p-values and the batch tests that combine them (`inflow_jax.gates.p_values`): the
formulas against their definitions, and their level on nulls."""

import numpy as np
import pytest
from scipy import stats

from inflow_jax.gates import batch_p_value, combine_p_values, conformal_p_values


def test_conformal_p_values_formula_and_uniformity():
  rng = np.random.default_rng(0)
  calibration = np.sort(rng.normal(size=2000))
  scores = np.r_[rng.normal(size=5000), calibration[[0, 10, -1]]]
  p = conformal_p_values(calibration, scores)
  brute = (1 + (calibration[None, :] >= scores[:, None]).sum(1)) / 2001
  np.testing.assert_array_equal(p, brute)
  assert p.min() >= 1 / 2001 and p.max() <= 1.0
  # marginally (fresh calibration and test draws) p is uniform on {1, ..., n+1}/(n+1): KS on a null
  null = np.array(
    [conformal_p_values(np.sort(rng.normal(size=999)), rng.normal(size=1))[0] for _ in range(3000)]
  )
  assert stats.kstest(null, "uniform").pvalue > 0.01
  for u in (0.01, 0.05, 0.2):
    assert np.mean(null <= u) <= u + 3 * np.sqrt(u / 3000)


def test_batch_tests_match_their_definitions():
  rng = np.random.default_rng(1)
  p = rng.uniform(size=7)
  assert batch_p_value(p, "fisher") == pytest.approx(stats.combine_pvalues(p, method="fisher")[1])
  assert batch_p_value(p, "simes") == pytest.approx(
    min(1.0, np.min(7 * np.sort(p) / np.arange(1, 8)))
  )
  assert combine_p_values([0.01, 0.3], "bonferroni") == pytest.approx(0.02)
  assert combine_p_values([0.01, 0.3, 0.5], "bonferroni") == pytest.approx(0.03)
  assert combine_p_values([0.01, 0.3, 0.5], "bonferroni", (0.5, 0.25, 0.25)) == pytest.approx(0.02)
  assert combine_p_values([0.2, 0.01], "bonferroni", (0.5, 0.5)) == pytest.approx(0.02)
  weighted = (
    0.5 - np.arctan(np.sum(np.array([0.5, 0.25, 0.25]) * np.tan((0.5 - p[:3]) * np.pi))) / np.pi
  )
  assert combine_p_values(p[:3], "cauchy", (0.5, 0.25, 0.25)) == pytest.approx(weighted)
  assert combine_p_values([0.3, 0.3], "cauchy") == pytest.approx(0.3)
  assert batch_p_value(p, "cauchy") == pytest.approx(
    0.5 - np.arctan(np.mean(np.tan((0.5 - p) * np.pi))) / np.pi
  )
  # 'auto': Cauchy while n level / m >= 10 calibration scores resolve its tail, else Fisher
  assert batch_p_value(p, "auto", n_calibration=1400, level=0.05) == batch_p_value(p, "cauchy")
  assert batch_p_value(p, "auto", n_calibration=1399, level=0.05) == batch_p_value(p, "fisher")
  with pytest.raises(ValueError, match="n_calibration"):
    batch_p_value(p, "auto")
  # power: one very small p-value among 10 is found by Simes
  assert batch_p_value(np.r_[1e-4, rng.uniform(size=9)], "simes") < 0.05


def test_batch_tests_and_combinations_hold_the_level():
  rng = np.random.default_rng(1)
  rng.uniform(size=7)  # the draws of the definitions' check, as before the split
  null = rng.uniform(size=(4000, 5))
  for test in ("cauchy", "fisher", "simes"):
    rate = np.mean([batch_p_value(row, test) < 0.05 for row in null])
    assert 0.04 < rate < 0.06, (test, rate)
  for method in ("bonferroni", "cauchy"):
    for k, weights in ((2, None), (3, None), (3, (0.5, 0.25, 0.25))):
      rate = np.mean([combine_p_values(row, method, weights) < 0.05 for row in null[:, :k]])
      assert 0.03 < rate < 0.06, (method, k, weights, rate)


def test_auto_batch_test_holds_the_level_given_the_calibration_set():
  """Batches of 50 with 2500 calibration scores: 'auto' (Fisher here) keeps the false-alarm rate of
  each calibration draw near the level; the Cauchy test rests on the top ~2.5 calibration
  scores."""
  rng = np.random.default_rng(3)
  rates = {"auto": [], "cauchy": []}
  for _ in range(120):
    p = conformal_p_values(np.sort(rng.normal(size=2500)), rng.normal(size=2500))
    batches = np.concatenate([rng.permutation(2500) for _ in range(6)]).reshape(300, 50)
    for test in rates:
      rates[test].append(np.mean([batch_p_value(p[i], test, 2500, 0.05) < 0.05 for i in batches]))
  auto, cauchy = np.asarray(rates["auto"]), np.asarray(rates["cauchy"])
  assert 0.04 < auto.mean() < 0.06, auto.mean()
  assert auto.std() < 0.9 * cauchy.std(), (auto.std(), cauchy.std())
  assert np.mean((auto < 0.02) | (auto > 0.08)) < np.mean((cauchy < 0.02) | (cauchy > 0.08))
