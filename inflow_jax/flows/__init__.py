"""Flow layers. Each has `__call__(x, attention) -> (y, log_det)` and
`inverse(y, attention) -> (x, log_det)` with NHWC x, y and per-image log_det (B,) (the inverse
returns log|det dx/dy| = -forward log_det)."""

from inflow_jax.flows.actnorm import ActNorm
from inflow_jax.flows.coupling import AttentionCoupling
from inflow_jax.flows.invconv import InvertibleConv1x1
from inflow_jax.flows.permutation import Permutation, seeded_permutation
from inflow_jax.flows.squeeze import merge, split, squeeze, unsqueeze

__all__ = [
  "ActNorm",
  "AttentionCoupling",
  "InvertibleConv1x1",
  "Permutation",
  "seeded_permutation",
  "squeeze",
  "unsqueeze",
  "split",
  "merge",
]
