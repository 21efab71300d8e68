"""The semantic view: a per-image score from a trained in-distribution encoder, combined with the
pixel flow's into one conformal p-value.

For an image x with encoder features f(x) (`ClassifierEncoder`'s pooled penultimate layer, flip
averaged):

    s_sem(x) = -log p_F(u(x)) / D,  u(x) = standardise(f(x) / ||f(x)||)
               (nats per dimension; p_F: an InFlow on features, `training.feature_flow`, trained by
               maximum likelihood on the encoder's training images)
    p_v(x)   = (1 + #{calibration scores of view v >= s_v(x)}) / (1 + n)     v = pixel, semantic
    T(x)     = -log p_pix(x) - log p_sem(x)                                  (Fisher's statistic)
    p(x)     = (1 + #{T_i >= T(x)}) / (1 + n)

T_i for calibration image i uses its ranks among the calibration images (its own score counted
once, as a new image's is), so p(x) is a conformal p-value of the statistic T, valid whatever the
dependence between the two views (not Fisher's chi-square law, which needs independence), up to
the 1/(1 + n) by which a calibration image's rank can differ from the one it would have beside x.

Why normalised features: a density of the raw ones follows the feature norm, which OOD images
shrink; why Fisher: it beat one mixture density of both views' statistics (where the pixel
statistics outweigh the one semantic coordinate) and the minimum p-value (measurements:
docs/results.md, "The trained encoder and the two views").
"""

from typing import Any, NamedTuple

import numpy as np

from inflow_jax.model.classifier_encoder import ClassifierEncoder, encode
from inflow_jax.training.feature_flow import FittedFeatureFlow, feature_flow_nll, fit_feature_flow


class SemanticState(NamedTuple):
  """A trained encoder and the feature flow fitted on its (normalised) features."""

  encoder: ClassifierEncoder
  encoder_variables: Any
  feature_flow: FittedFeatureFlow


def normalised_features(encoder, encoder_variables, x: np.ndarray) -> np.ndarray:
  """(N, D) f(x) / ||f(x)|| of preprocessed images x."""
  features = encode(encoder, encoder_variables, x).features.astype(np.float64)
  return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def fit_semantic(
  encoder: ClassifierEncoder,
  encoder_variables,
  x: np.ndarray,
  *,
  num_epochs: int = 10,
  seed: int = 0,
) -> SemanticState:
  """Fits the feature flow on the encoder's normalised features of x (N, H, W, 3) in [0, 1]."""
  features = normalised_features(encoder, encoder_variables, x)
  flow = fit_feature_flow(features, num_epochs=num_epochs, seed=seed)
  return SemanticState(encoder, encoder_variables, flow)


def semantic_scores(state: SemanticState, x: np.ndarray) -> np.ndarray:
  """(N,) s_sem of preprocessed x (unchecked), higher = less typical."""
  features = normalised_features(state.encoder, state.encoder_variables, x)
  return feature_flow_nll(state.feature_flow, features).astype(np.float64)


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
