"""OOD metrics (`inflow_jax.evaluation.metrics`) against hand-computed values and brute-force
definitions."""

import numpy as np
import pytest

from inflow_jax.evaluation import metrics


def test_hand_computed_with_ties():
  # in = [1, 2, 2, 5], out = [2, 3, 4] (OOD positive, higher = more OOD).
  # AUROC: out=2 beats {1} and ties {2, 2} -> 1 + 0.5*2; out=3 beats 3; out=4 beats 3 -> 8/12.
  # FPR95: thresholds 5, 4, 3 reach TPR 0, 1/3, 2/3; t=2 reaches TPR 1 and flags 3 of 4 in-dist.
  # AUPR-out: (t=4: R 1/3, P 1/2), (t=3: R 2/3, P 2/3), (t=2: R 1, P 3/6) -> (1/2 + 2/3 + 1/2) / 3.
  # AUPR-in (rank -s): (-1: R 1/4, P 1), (-2: R 3/4, P 3/4), (-5: R 1, P 4/7).
  s_in, s_out = [1, 2, 2, 5], [2, 3, 4]
  assert metrics.auroc(s_in, s_out) == pytest.approx(8 / 12)
  assert metrics.fpr_at_95_tpr(s_in, s_out) == pytest.approx(0.75)
  assert metrics.aupr_out(s_in, s_out) == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
  assert metrics.aupr_in(s_in, s_out) == pytest.approx(0.25 * 1 + 0.5 * 0.75 + 0.25 * 4 / 7)


def test_perfect_and_reversed_separation():
  s_in, s_out = np.arange(10.0), np.arange(10.0) + 100
  m = metrics.ood_metrics(s_in, s_out)
  assert m == pytest.approx({"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0})
  m = metrics.ood_metrics(s_out, s_in)  # OOD scored lower: the detector is exactly wrong
  assert m["auroc"] == 0.0 and m["fpr95"] == 1.0


def test_against_brute_force_definitions():
  rng = np.random.default_rng(0)
  s_in = rng.integers(0, 30, 200).astype(float)  # integer scores: many ties
  s_out = rng.integers(10, 40, 150).astype(float)
  diff = s_out[:, None] - s_in[None, :]
  expected_auroc = np.mean(diff > 0) + 0.5 * np.mean(diff == 0)
  assert metrics.auroc(s_in, s_out) == pytest.approx(expected_auroc)
  # FPR95 by scanning thresholds from the top.
  for t in np.sort(np.unique(np.concatenate([s_in, s_out])))[::-1]:
    if np.mean(s_out >= t) >= 0.95:
      expected_fpr = np.mean(s_in >= t)
      break
  assert metrics.fpr_at_95_tpr(s_in, s_out) == pytest.approx(expected_fpr)


@pytest.mark.parametrize(
  "bad_in, bad_out, match",
  [
    ([], [1.0], "empty"),
    ([1.0, np.nan], [1.0], "NaN"),
    ([[1.0]], [1.0], "1-D"),
  ],
)
def test_bad_input(bad_in, bad_out, match):
  with pytest.raises(ValueError, match=match):
    metrics.ood_metrics(bad_in, bad_out)
