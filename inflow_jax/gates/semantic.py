"""The semantic view: a per-image score from a trained in-distribution encoder, combined with the
pixel flow's into one conformal p-value.

For an image x with encoder features f(x) (`ClassifierEncoder`'s pooled penultimate layer, flip
averaged) and class logits l(x) = f(x) W + b, the semantic score s_sem is one of

    "vim":          alpha ||(f(x) - u) R|| - logsumexp_c l_c(x)     (ViM, Wang et al. 2022,
                    `gates.posthoc`: the features' residual off the training features' principal
                    subspace, matched to the logits' scale, minus the logits' energy; W, b, u, R,
                    alpha from the encoder's training images)
    "feature_flow": -log p_F(u(x)) / D,  u(x) = standardise(f(x) / ||f(x)||)
                    (nats per dimension; p_F: an InFlow on features, `training.feature_flow`,
                    trained by maximum likelihood on the encoder's training images)

("auto": "vim" for an encoder with class logits, else "feature_flow"), and

    p_v(x)   = (1 + #{calibration scores of view v >= s_v(x)}) / (1 + n)     v = pixel, semantic
    T(x)     = -log p_pix(x) - log p_sem(x)                                  (Fisher's statistic)
    p(x)     = (1 + #{T_i >= T(x)}) / (1 + n)

T_i for calibration image i uses its ranks among the calibration images (its own score counted
once, as a new image's is), so p(x) is a conformal p-value of the statistic T, valid whatever the
dependence between the two views (not Fisher's chi-square law, which needs independence), up to
the 1/(1 + n) by which a calibration image's rank can differ from the one it would have beside x.

Why ViM by default: on the trained CIFAR-10 encoder it gave Fisher's combination more power on
every OOD set than the feature flow, which the encoder's memorised training features make see
unseen in-distribution images as atypical; why normalised features for the flow: a density of the
raw ones follows the feature norm, which OOD images shrink; why Fisher: it beat one mixture density
of both views' statistics and the minimum p-value (measurements: docs/results.md, "The trained
encoder and the two views", "The semantic view on encoder run 2").
"""

from typing import Any, NamedTuple, Optional

import numpy as np

from inflow_jax.gates import posthoc
from inflow_jax.model.classifier_encoder import ClassifierEncoder, encode
from inflow_jax.training.feature_flow import FittedFeatureFlow, feature_flow_nll, fit_feature_flow

SEMANTIC_SCORES = ("auto", "vim", "feature_flow")


class SemanticState(NamedTuple):
  """A trained encoder and its fitted semantic score: `score` "vim" (with `vim`) or
  "feature_flow" (with `feature_flow`, fitted on its normalised features)."""

  encoder: ClassifierEncoder
  encoder_variables: Any
  score: str
  feature_flow: Optional[FittedFeatureFlow] = None
  vim: Optional[posthoc.ViMState] = None


def resolved_score(score: str, num_classes: int) -> str:
  """The semantic score `score` ("auto" | "vim" | "feature_flow") gives for an encoder with
  num_classes class logits; ValueError for "vim" without classes."""
  if score not in SEMANTIC_SCORES:
    raise ValueError(f"semantic_score must be one of {SEMANTIC_SCORES}, got {score!r}")
  if score == "auto":
    return "vim" if num_classes else "feature_flow"
  if score == "vim" and not num_classes:
    raise ValueError(
      "semantic_score='vim' needs an encoder with class logits (this one has none: trained "
      "without labels); use 'feature_flow' or 'auto'"
    )
  return score


def normalised_features(encoder, encoder_variables, x: np.ndarray) -> np.ndarray:
  """(N, D) f(x) / ||f(x)|| of preprocessed images x."""
  return _normalised(encode(encoder, encoder_variables, x).features)


def _normalised(features) -> np.ndarray:
  features = np.asarray(features, np.float64)
  return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def fit_semantic(
  encoder: ClassifierEncoder,
  encoder_variables,
  x: np.ndarray,
  *,
  score: str = "auto",
  num_epochs: int = 10,
  seed: int = 0,
) -> SemanticState:
  """Fits the semantic score (module docstring) on the encoder's outputs of x (N, H, W, 3) in
  [0, 1], preprocessed; N > D for "vim"."""
  outputs = encode(encoder, encoder_variables, x)
  score = resolved_score(score, outputs.class_logits.shape[1])
  if score == "vim":
    features = np.asarray(outputs.features, np.float64)
    head = posthoc.linear_head(features, outputs.class_logits)
    return SemanticState(encoder, encoder_variables, score, vim=posthoc.fit_vim(features, *head))
  flow = fit_feature_flow(_normalised(outputs.features), num_epochs=num_epochs, seed=seed)
  return SemanticState(encoder, encoder_variables, score, feature_flow=flow)


def semantic_scores(state: SemanticState, x: np.ndarray) -> np.ndarray:
  """(N,) s_sem of preprocessed x (unchecked), higher = less typical."""
  features = encode(state.encoder, state.encoder_variables, x).features
  if state.score == "vim":
    return posthoc.vim_scores(state.vim, features)
  return feature_flow_nll(state.feature_flow, _normalised(features)).astype(np.float64)


def rank_counts(calibration_sorted: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """(N,) 1 + #{calibration scores >= s}: (1 + n) p(s) as an exact integer count."""
  n = calibration_sorted.shape[0]
  return 1 + n - np.searchsorted(calibration_sorted, np.asarray(scores, np.float64), side="left")


def calibration_rank_counts(scores: np.ndarray) -> np.ndarray:
  """(n,) 1 + #{j != i: s_j >= s_i} for each calibration score (in their order): its own counted
  once, as a new image's is."""
  return rank_counts(np.sort(scores), scores) - 1


def fisher_statistic(pixel_counts: np.ndarray, semantic_counts: np.ndarray, n: int) -> np.ndarray:
  """T = -log p_pix - log p_sem = 2 log(1 + n) - log(a b) from the rank counts a, b (module
  docstring), higher = more OOD. From the integer product, so equal p-value pairs, and pairs of
  equal product, give bit-identical T (ties stay ties in the final rank)."""
  product = np.asarray(pixel_counts, np.float64) * np.asarray(semantic_counts, np.float64)
  return 2.0 * np.log1p(n) - np.log(product)
