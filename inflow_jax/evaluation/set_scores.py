"""One set through the detector: the flow's per-image scores at a = 1 and the paper score with the
a of each batch's MMD test (passed batches a = 1, flagged ones rescored at a = 0)."""

import dataclasses
from typing import Dict

import numpy as np

from inflow_jax.gates import BatchTests


@dataclasses.dataclass(frozen=True)
class SetScores:
  """at_one: {'paper', 'nll'} per-image scores at a = 1; tested: the paper score with each batch's
  tested a; tests: the batches' MMD tests."""

  at_one: Dict[str, np.ndarray]
  tested: np.ndarray
  tests: BatchTests


def score_set(detector, x: np.ndarray, batch_size: int, key) -> SetScores:
  """A set's scores at a = 1 and through the test (= `score_batches` with the paper's gate). x
  preprocessed and checked by the caller."""
  at_one = detector.flow_scores(x, 1.0, batch_size=batch_size, preprocessed=True)
  tests = detector.mmd_tests(x, batch_size, key, preprocessed=True)
  tested = at_one["paper"].copy()
  for i in np.flatnonzero(tests.flagged):
    lo, hi = tests.starts[i], tests.starts[i + 1]
    at_zero = detector.flow_scores(x[lo:hi], 0.0, batch_size=hi - lo, preprocessed=True)
    tested[lo:hi] = at_zero["paper"]
  return SetScores(at_one=at_one, tested=tested, tests=tests)


def batch_row(set_scores: SetScores) -> Dict:
  """The per-set batch counts and p-values of a table row."""
  tests = set_scores.tests
  return {
    "n_images": int(tests.starts[-1]),
    "n_batches": int(tests.flagged.size),
    "batches_flagged": int(tests.flagged.sum()),
    "p_values": tests.p_values.tolist(),
  }
