"""The flow's training losses (attention a = 1, z = f(x), per image of D = H*W*C values):

  paper:   L = mean_b( 0.5 * ||z_b||^2 - log|det J_f(x_b)| ) / 3            (the original)
  per_dim: L = mean_b( 0.5 * ||z_b||^2 - log|det J_f(x_b)| ) / D
  bpd:     L = mean_b( -log N(z_b; 0, I) - log|det J_f(x~_b)| + D log 255 ) / (D log 2),
           x~ = x + (u - 1/2)/255, u ~ U[0, 1)^D fresh at every step
           (key fold_in(PRNGKey(seed), step))

`bpd` is the bits per dimension of the 8-bit image under uniform dequantization (the `nll` score's
convention, `inflow_jax.model.density`), an upper bound on -log2 P(k) / D. `heldout_bpd` is the
same statistic on held-out images with a fixed seed: the figure flow papers report.
"""

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.model.density import bits_per_dim, dequantize, flow_scores
from inflow_jax.utils.batching import batched

LOSSES = ("paper", "per_dim", "bpd")


def flow_loss(
  model,
  variables,
  x: jax.Array,
  *,
  loss: str = "paper",
  attention=1.0,
  key: Optional[jax.Array] = None,
) -> jax.Array:
  """The training loss of the module docstring for a batch x (B, H, W, C); key: bpd's noise."""
  if loss == "bpd":
    z, log_det = model.apply(variables, dequantize(x, key), attention)
    return jnp.mean(bits_per_dim(z, log_det))
  z, log_det = model.apply(variables, x, attention)
  per_image = 0.5 * jnp.sum(jnp.square(z), axis=(1, 2, 3)) - log_det
  divisor = 3.0 if loss == "paper" else float(np.prod(x.shape[1:]))
  return jnp.mean(per_image) / divisor


@dataclasses.dataclass(frozen=True)
class FlowLoss:
  """`flow_loss` as the `loss_fn(variables, x[, step])` of `training.step.make_step` (hashable by
  value). The bpd loss uses the step: its noise is drawn with fold_in(PRNGKey(seed), step)."""

  model: Any
  loss: str = "paper"
  seed: int = 0

  @property
  def uses_step(self) -> bool:
    return self.loss == "bpd"

  def __call__(self, variables, x: jax.Array, step=None) -> jax.Array:
    key = None if step is None else jax.random.fold_in(jax.random.PRNGKey(self.seed), step)
    return flow_loss(self.model, variables, x, loss=self.loss, key=key)


def check_8bit(x: np.ndarray, name: str) -> None:
  """Raises unless every value of x is k/255 (an 8-bit image): the bpd loss's dequantization needs
  it."""
  k = np.asarray(x, np.float64) * 255.0
  if np.max(np.abs(k - np.round(k)), initial=0.0) > 1e-3:
    raise ValueError(
      f"train.loss='bpd' needs 8-bit images (every value k/255), but {name} holds "
      "other values; use loss='per_dim' for continuous data"
    )


def heldout_bpd(model, variables, x: np.ndarray, *, seed: int, batch_size: int) -> float:
  """Mean NLL bits/dim of held-out images x at a = 1, batch i dequantized with
  fold_in(PRNGKey(seed), i)."""
  key = jax.random.PRNGKey(seed)
  nll = batched(
    lambda i, xb: flow_scores(model, variables, xb, 1.0, ("nll",), key=jax.random.fold_in(key, i))[
      "nll"
    ],
    x,
    batch_size,
    with_index=True,
  )
  return float(np.mean(nll))
