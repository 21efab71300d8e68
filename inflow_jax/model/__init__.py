"""The flow: `InFlow` (attention-gated couplings over `inflow_jax.flows` layers), its density and
scores (`density`), and its file formats (the original's PyTorch weights, the flow file);
`FeatureFlow` and its `feature_nll`: the same on (B, D) feature vectors; `ClassifierEncoder`: the
trained in-distribution encoder (`TrainedEncoder`: it and its variables)."""

from inflow_jax.model.classifier_encoder import ClassifierEncoder, TrainedEncoder
from inflow_jax.model.feature_flow import FeatureFlow
from inflow_jax.model.feature_flow import nll as feature_nll
from inflow_jax.model.inflow import InFlow

__all__ = ["ClassifierEncoder", "FeatureFlow", "InFlow", "TrainedEncoder", "feature_nll"]
