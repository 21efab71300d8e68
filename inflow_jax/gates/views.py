"""The per-image statistic of several views: the pixel flow's score and the trained encoder's
semantic scores (`inflow_jax.gates.semantic`), combined into one conformal p-value.

For a view with score s_v (higher = less typical) and n calibration images,

    p_v(x)   = (1 + #{calibration scores of view v >= s_v(x)}) / (1 + n)
    F(x; V)  = -sum_{v in V} log p_v(x)                              (Fisher's statistic)

and with `pooled` (the default since detector format 5) the semantic scores S form one view,

    p_S(x)   = (1 + #{calibration F_i(S) >= F(x; S)}) / (1 + n)
    T(x)     = -log p_pixel(x) - log p_S(x)

(without `pooled`: T(x) = F(x; {pixel} + S), each semantic score a view of its own; with one
semantic score both are the same statistic). Then

    p(x)     = (1 + #{T_i >= T(x)}) / (1 + n).

T_i (and F_i) for calibration image i use its ranks among the other calibration images (its own
score counted once, as a new image's is), so p(x) is a conformal p-value of T, valid whatever the
dependence between the views (not Fisher's chi-square law, which needs independence), up to the
1/(1 + n) by which a calibration image's rank can differ from the one it would have beside x.

Why Fisher: it beat one mixture density of the views' statistics and the minimum p-value. Why
pooled: the pixel evidence (noise, digits, compression) keeps half of the statistic whatever
the number of semantic scores; with each score a view, every score added dilutes it (on CIFAR-10
with three semantic scores: one digit among 10 in-distribution images flagged 0.95 pooled against
0.84; measurements: docs/results.md, "The semantic view: the rotation head, pooled").
"""

import math
from typing import Dict, Sequence, Tuple

import numpy as np

PIXEL = "pixel"
SEMANTIC_STATISTIC = "semantic_statistic"  # the pooled F_i(S) in `view_calibration`


def rank_counts(calibration_sorted: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """(N,) 1 + #{calibration scores >= s}: (1 + n) p(s) as an exact integer count."""
  n = calibration_sorted.shape[0]
  return 1 + n - np.searchsorted(calibration_sorted, np.asarray(scores, np.float64), side="left")


def calibration_rank_counts(scores: np.ndarray) -> np.ndarray:
  """(n,) 1 + #{j != i: s_j >= s_i} for each calibration score (in their order): its own counted
  once, as a new image's is."""
  return rank_counts(np.sort(scores), scores) - 1


def fisher_statistic(counts: Sequence[np.ndarray], n: int) -> np.ndarray:
  """F = -sum_v log p_v = k log(1 + n) - log(prod_v a_v) from the k views' rank counts a_v,
  higher = more OOD. From the exact integer product (float64 while (1 + n)^k < 2^53, Python
  integers beyond), so equal p-value tuples, and tuples of equal product, give bit-identical F
  (ties stay ties in the final rank)."""
  if float(n + 1) ** len(counts) < 2.0**53:
    log_product = np.log(np.prod([np.asarray(c, np.float64) for c in counts], axis=0))
  else:
    rows = zip(*(np.asarray(c, np.int64).tolist() for c in counts))
    log_product = np.array([math.log(math.prod(row)) for row in rows], np.float64)
  return len(counts) * np.log1p(n) - log_product


def calibrate_views(
  views: Dict[str, np.ndarray], pooled: bool
) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
  """(sorted T_i of the calibration images, `view_calibration`: each view's sorted calibration
  scores, and with `pooled` and several semantic scores the sorted F_i(S)) from the calibration
  images' scores per view {"pixel": (n,), name: (n,), ...}."""
  n = len(views[PIXEL])
  semantic = [calibration_rank_counts(s) for name, s in views.items() if name != PIXEL]
  view_calibration = {name: np.sort(s) for name, s in views.items()}
  if pooled and len(semantic) > 1:
    statistic = fisher_statistic(semantic, n)
    view_calibration[SEMANTIC_STATISTIC] = np.sort(statistic)
    semantic = [calibration_rank_counts(statistic)]
  counts = [calibration_rank_counts(views[PIXEL])] + semantic
  return np.sort(fisher_statistic(counts, n)), view_calibration


def views_statistic(
  view_calibration: Dict[str, np.ndarray],
  pixel: np.ndarray,
  semantic: Dict[str, np.ndarray],
  pooled: bool,
) -> np.ndarray:
  """(N,) T(x) of new images from their pixel scores and {name: (N,) semantic scores}, against
  `calibrate_views`'s view_calibration."""
  n = len(view_calibration[PIXEL])
  counts = [rank_counts(view_calibration[name], s) for name, s in semantic.items()]
  if pooled and len(counts) > 1:
    counts = [rank_counts(view_calibration[SEMANTIC_STATISTIC], fisher_statistic(counts, n))]
  return fisher_statistic([rank_counts(view_calibration[PIXEL], pixel)] + counts, n)
