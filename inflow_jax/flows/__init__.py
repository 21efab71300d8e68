"""Flow layers. Each has `__call__(x, attention) -> (y, log_det)` and
`inverse(y, attention) -> (x, log_det)` with NHWC x, y and per-image log_det (B,) (the inverse
returns log|det dx/dy| = -forward log_det). `DenseAttentionCoupling` (and `Permutation`) take
(B, D) feature vectors instead."""

from inflow_jax.flows.actnorm import ActNorm
from inflow_jax.flows.coupling import AttentionCoupling
from inflow_jax.flows.dense_coupling import DenseAttentionCoupling
from inflow_jax.flows.invconv import InvertibleConv1x1
from inflow_jax.flows.permutation import Permutation, seeded_permutation
from inflow_jax.flows.squeeze import merge, split, squeeze, unsqueeze

__all__ = [
  "ActNorm",
  "AttentionCoupling",
  "DenseAttentionCoupling",
  "InvertibleConv1x1",
  "Permutation",
  "seeded_permutation",
  "squeeze",
  "unsqueeze",
  "split",
  "merge",
]
