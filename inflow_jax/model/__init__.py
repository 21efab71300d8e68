"""The flow: `InFlow` (attention-gated couplings over `inflow_jax.flows` layers), its density and
scores (`density`), and its file formats (the original's PyTorch weights, the flow file);
`FeatureFlow` and its `feature_nll`: the same on (B, D) feature vectors."""

from inflow_jax.model.feature_flow import FeatureFlow
from inflow_jax.model.feature_flow import nll as feature_nll
from inflow_jax.model.inflow import InFlow

__all__ = ["FeatureFlow", "InFlow", "feature_nll"]
