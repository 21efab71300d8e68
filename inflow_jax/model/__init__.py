"""The flow: `InFlow` (attention-gated couplings over `inflow_jax.flows` layers), its density and
scores (`density`), and its file formats (the original's PyTorch weights, the flow file)."""

from inflow_jax.model.inflow import InFlow

__all__ = ["InFlow"]
