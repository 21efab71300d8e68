"""Attention-gated ActNorm (Glow's per-channel affine layer with data-dependent initialisation).

    y = x * exp(a * log_scale) + a * bias,            log|det dy/dx| = a * H * W * sum(log_scale)
    x = (y - a * bias) * exp(-a * log_scale)

Data-dependent initialisation happens inside `model.init(key, x, attention)`: the parameters are
created from the batch that reaches the layer, so that at a = 1 the output has zero mean and unit
variance per channel: log_scale = -log(std + 1e-6), bias = -mean * exp(log_scale) (mean and std over
B, H, W). Initialise with a representative batch (the init statistics do not depend on `a`).
"""

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inflow_jax.flows.gate import broadcast_attention, per_sample


class ActNorm(nn.Module):
  """Per-channel gated affine map; parameters `log_scale` (C,) and `bias` (C,)."""

  epsilon: float = 1e-6

  @nn.compact
  def _params(self, x: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
    def init_log_scale(_):
      std = jnp.std(jax.lax.stop_gradient(x), axis=(0, 1, 2))
      return -jnp.log(std + self.epsilon)

    def init_bias(_):
      data = jax.lax.stop_gradient(x)
      mean, std = jnp.mean(data, axis=(0, 1, 2)), jnp.std(data, axis=(0, 1, 2))
      return -mean / (std + self.epsilon)

    return self.param("log_scale", init_log_scale), self.param("bias", init_bias)

  def _log_det(self, x, a, log_scale):
    return per_sample(a * x.shape[1] * x.shape[2] * jnp.sum(log_scale), x.shape[0])

  def __call__(self, x: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """x (B, H, W, C) -> (y, log|det dy/dx| of shape (B,))."""
    log_scale, bias = self._params(x)
    a = broadcast_attention(attention, x)
    return x * jnp.exp(a * log_scale) + a * bias, self._log_det(x, a, log_scale)

  def inverse(self, y: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """y (B, H, W, C) -> (x, log|det dx/dy| = -forward log_det)."""
    log_scale, bias = self._params(y)
    a = broadcast_attention(attention, y)
    return (y - a * bias) * jnp.exp(-a * log_scale), -self._log_det(y, a, log_scale)
