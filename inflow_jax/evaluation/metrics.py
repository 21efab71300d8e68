"""Out-of-distribution detection metrics.

Convention (used everywhere in inflow_jax): **OOD is the positive class and a higher score means
more OOD**. A detector flags x when `score(x) >= t` for a threshold t.

- `auroc`: area under the ROC curve = P(s_out > s_in) + 0.5 P(s_out = s_in) over all (in, out) pairs
  (`sklearn.metrics.roc_auc_score`).
- `aupr_out`: area under the precision-recall curve with OOD positive, as average precision
  `AP = sum_n (R_n - R_{n-1}) P_n` over the thresholds (`sklearn.metrics.average_precision_score`).
- `aupr_in`: the same with in-distribution positive and the score negated.
- `fpr_at_95_tpr`: with t* the largest threshold whose true-positive rate `mean(s_out >= t*)` is at
  least 0.95, the false-positive rate `mean(s_in >= t*)`: the fraction of in-distribution samples
  that are flagged when 95% of the OOD samples are caught. Ties are flagged together (never split).
"""

from typing import Dict

import numpy as np
from sklearn import metrics as sk_metrics


def _scores_and_labels(scores_in, scores_out):
  """Concatenated scores and labels (1 = OOD), after checking both sets."""
  arrays = []
  for name, scores in (("scores_in", scores_in), ("scores_out", scores_out)):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
      raise ValueError(f"{name} must be a 1-D array of per-sample scores, got shape {scores.shape}")
    if scores.size == 0:
      raise ValueError(f"{name} is empty: a metric needs at least one score per class")
    if not np.all(np.isfinite(scores)):
      raise ValueError(f"{name} contains NaN or infinite scores")
    arrays.append(scores)
  scores = np.concatenate(arrays)
  labels = np.concatenate([np.zeros(arrays[0].size), np.ones(arrays[1].size)])
  return scores, labels


def auroc(scores_in, scores_out) -> float:
  """Area under the ROC curve, OOD positive: P(s_out > s_in) + 0.5 P(s_out = s_in)."""
  scores, labels = _scores_and_labels(scores_in, scores_out)
  return float(sk_metrics.roc_auc_score(labels, scores))


def aupr_out(scores_in, scores_out) -> float:
  """Average precision with OOD as the positive class (higher score = more OOD)."""
  scores, labels = _scores_and_labels(scores_in, scores_out)
  return float(sk_metrics.average_precision_score(labels, scores))


def aupr_in(scores_in, scores_out) -> float:
  """Average precision with in-distribution as the positive class, ranking by the negated score."""
  scores, labels = _scores_and_labels(scores_in, scores_out)
  return float(sk_metrics.average_precision_score(1 - labels, -scores))


def fpr_at_95_tpr(scores_in, scores_out, tpr_level: float = 0.95) -> float:
  """Fraction of in-distribution samples with `s_in >= t*`, t* the largest t with TPR(t) >=
  tpr_level."""
  if not 0 < tpr_level <= 1:
    raise ValueError(f"tpr_level must lie in (0, 1], got {tpr_level}")
  scores, labels = _scores_and_labels(scores_in, scores_out)
  fpr, tpr, _ = sk_metrics.roc_curve(labels, scores, drop_intermediate=False)
  # roc_curve walks the distinct scores from the highest down; tpr is non-decreasing.
  return float(fpr[np.searchsorted(tpr, tpr_level - 1e-12, side="left")])


def ood_metrics(scores_in, scores_out) -> Dict[str, float]:
  """All four metrics: {'auroc', 'aupr_in', 'aupr_out', 'fpr95'} (JSON-serialisable floats)."""
  return {
    "auroc": auroc(scores_in, scores_out),
    "aupr_in": aupr_in(scores_in, scores_out),
    "aupr_out": aupr_out(scores_in, scores_out),
    "fpr95": fpr_at_95_tpr(scores_in, scores_out),
  }
