"""Conformal p-values of single images and the batch tests built from them.

Split conformal (Vovk et al. 2005; Bates et al. 2023, "Testing for outliers with conformal
p-values"): with the scores s_1..s_n of n calibration images, in-distribution and unseen by
everything the score was fitted on, an image with score s gets

    p(s) = (1 + #{i : s_i >= s}) / (1 + n)   in [1/(1+n), 1].

When the image and the calibration images are exchangeable (all in-distribution), P(p <= u) <= u for
every u: the per-image test "p < level" has false-alarm rate <= level, whatever the score.

Batch tests of m images with p-values p_1..p_m (the batch is OOD when the p-value < level):

    cauchy:  T = mean_j tan((1/2 - p_j) pi),  p = 1/2 - arctan(T) / pi
             (Liu & Xie 2020, the default)
    fisher:  T = -2 sum_j log p_j,           p = P(chi^2_{2m} >= T)     (power when all are shifted)
    simes:   p = min_j m p_(j) / j           (p_(j) sorted ascending)   (power with a few outliers)

Conformal p-values sharing one calibration set are positively dependent (PRDS, Bates et al.): Simes
stays valid under PRDS, the Cauchy combination is asymptotically valid under any dependence (its
heavy tail lets the smallest p-values dominate), Fisher assumes independence. Why Cauchy (where
'auto' uses it): it keeps Fisher's power on pure OOD batches and nearly Simes' power on one OOD
image in a batch (measurements: docs/results.md).

    auto:    cauchy while n level / m >= TAIL_SCORES (n calibration images), else fisher
             (the default)

Why 'auto': at level alpha a batch of m in-distribution images is flagged by the Cauchy (or Simes)
test mostly when its smallest p-value is below ~alpha / m, i.e. when an image beats all but the top
n alpha / m calibration scores. With few such scores the false-alarm rate *given the calibration
set* scatters widely around alpha (and the discreteness of p makes it conservative), while Fisher's
rate rests on the bulk of the calibration scores; Cauchy keeps the power on sparse outliers where
the calibration set resolves its tail, hence the switch at TAIL_SCORES = 10 scores (Cauchy for
m <= 12 when n = 2500 and alpha = 0.05). The simulation that chose it: docs/results.md.

Combining the k p-values of the tests of one batch (the conformal batch test, the MMD test and the
mean-shift test) into one gate, with weights w_j >= 0 summing to 1 (default: equal):

    bonferroni:  p = min(1, min_j p_j / w_j)                    (valid under any dependence)
    cauchy:      p = 1/2 - arctan(sum_j w_j tan((1/2 - p_j) pi)) / pi
                 (Liu & Xie 2020; asymptotically valid under any dependence)
"""

from typing import Optional, Sequence

import numpy as np
from scipy import stats

BATCH_TESTS = ("auto", "cauchy", "fisher", "simes")
TAIL_SCORES = 10
COMBINATIONS = ("bonferroni", "cauchy")


def conformal_p_values(calibration_sorted: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """(N,) p(s) of the module docstring; calibration_sorted: (n,) the calibration scores,
  ascending."""
  n = calibration_sorted.shape[0]
  at_least = n - np.searchsorted(calibration_sorted, np.asarray(scores, np.float64), side="left")
  return (1.0 + at_least) / (1.0 + n)


def cauchy_combination(p_values, weights: Optional[Sequence[float]] = None) -> float:
  """1/2 - arctan(sum_j w_j tan((1/2 - p_j) pi)) / pi, w_j = weights (default 1/k; p-values clipped
  to [1e-300, 1])."""
  p = np.clip(np.asarray(p_values, np.float64), 1e-300, 1.0)
  w = np.full(p.shape, 1.0 / p.size) if weights is None else np.asarray(weights, np.float64)
  return float(np.clip(0.5 - np.arctan(np.sum(w * np.tan((0.5 - p) * np.pi))) / np.pi, 0.0, 1.0))


def resolved_batch_test(test: str, m: int, n_calibration: Optional[int], level: float) -> str:
  """The test 'auto' stands for with a batch of m and n_calibration scores (module docstring); any
  other test as given."""
  if test != "auto":
    return test
  if n_calibration is None:
    raise ValueError("the 'auto' batch test needs the calibration set's size (n_calibration)")
  return "cauchy" if n_calibration * level / m >= TAIL_SCORES else "fisher"


def batch_p_value(
  p_values: np.ndarray, test: str, n_calibration: Optional[int] = None, level: float = 0.05
) -> float:
  """The p-value of the batch test `test` (BATCH_TESTS) of one batch's per-image p-values ('auto'
  needs the calibration size and the level it is used at)."""
  p = np.asarray(p_values, np.float64)
  m = p.shape[0]
  test = resolved_batch_test(test, m, n_calibration, level)
  if test == "cauchy":
    return cauchy_combination(p)
  if test == "fisher":
    return float(stats.chi2.sf(-2.0 * np.sum(np.log(p)), 2 * m))
  return float(min(1.0, np.min(m * np.sort(p) / np.arange(1, m + 1))))


def combine_p_values(
  p_values: Sequence[float], method: str, weights: Optional[Sequence[float]] = None
) -> float:
  """One p-value from the p-values of k tests of the same batch ('bonferroni' or 'cauchy'), weighted
  by `weights` (summing to 1; default equal)."""
  if method == "bonferroni":
    w = np.full(len(p_values), 1.0 / len(p_values)) if weights is None else np.asarray(weights)
    return float(min(1.0, np.min(np.asarray(p_values, np.float64) / w)))
  return cauchy_combination(p_values, weights)
