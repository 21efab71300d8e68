"""The semantic view: per-image statistics of a trained in-distribution encoder, beside the pixel
flow's, for the conformal gates.

For an image x with encoder features f(x) (`ClassifierEncoder`'s pooled penultimate layer, flip
averaged) and class logits l(x):

    feature_nll(x) = -log p_F((f(x) - mean) / std) / D        (nats per dimension; p_F: an InFlow on
                                                               features, `training.feature_flow`)
    energy(x)      = -logsumexp_c l_c(x)                       (Liu et al. 2020)

The conformal density (`inflow_jax.gates.conformal`) is then fitted on the joint vector
[pixel statistics, semantic statistics]: one density, two-sided in every coordinate, so an image
that is typical for the pixel flow but not for the encoder (a face, a near-OOD object), or the other
way round (noise, digits), is atypical jointly. Why a trained encoder: the pixel flow sees local
pixel statistics, not what an image shows (Kirichenko et al. 2020); a flow on the features of a
network trained on the in-distribution data detects semantic outliers.
"""

from typing import Any, NamedTuple, Tuple

import numpy as np
from scipy.special import logsumexp

from inflow_jax.model.classifier_encoder import ClassifierEncoder, encode
from inflow_jax.training.feature_flow import FittedFeatureFlow, feature_flow_nll, fit_feature_flow

STATISTICS = ("feature_nll", "energy")


class SemanticState(NamedTuple):
  """A trained encoder, the feature flow fitted on its features, and which statistics to use."""

  encoder: ClassifierEncoder
  encoder_variables: Any
  feature_flow: FittedFeatureFlow
  statistics: Tuple[str, ...] = ("feature_nll",)


def check_statistics(statistics) -> Tuple[str, ...]:
  statistics = tuple(statistics)
  unknown = [s for s in statistics if s not in STATISTICS]
  if not statistics or unknown:
    raise ValueError(
      f"semantic statistics must be a non-empty subset of {STATISTICS}, got {statistics}"
    )
  return statistics


def fit_semantic(
  encoder: ClassifierEncoder,
  encoder_variables,
  x: np.ndarray,
  *,
  statistics=("feature_nll",),
  num_epochs: int = 20,
  seed: int = 0,
) -> SemanticState:
  """Fits the feature flow on the encoder's features of x (N, H, W, 3) in [0, 1] (preprocessed)."""
  statistics = check_statistics(statistics)
  if "energy" in statistics and not encoder.num_classes:
    raise ValueError("the 'energy' statistic needs an encoder with a class head (num_classes > 0)")
  features = encode(encoder, encoder_variables, x).features
  flow = fit_feature_flow(features, num_epochs=num_epochs, seed=seed)
  return SemanticState(encoder, encoder_variables, flow, statistics)


def semantic_statistics(state: SemanticState, x: np.ndarray) -> np.ndarray:
  """(N, len(state.statistics)) the module docstring's statistics of preprocessed x (unchecked)."""
  out = encode(state.encoder, state.encoder_variables, x)
  columns = {
    "feature_nll": lambda: feature_flow_nll(state.feature_flow, out.features),
    "energy": lambda: -logsumexp(out.class_logits.astype(np.float64), axis=-1),
  }
  return np.stack([columns[name]() for name in state.statistics], axis=1).astype(np.float64)
