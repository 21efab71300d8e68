"""The attention-gated two-sided affine coupling of InFlow (GLOW-style, as in the original code).

For x split along channels into x1 (the first C//2) and x2 (the rest), the condition c (m channels,
all equal to the attention a), and the soft clamp f(u) = clamp * 0.636 * atan(u):

    s2 = f(s2net([x2, c])),  y1 = exp(a * s2) * x1 + a * t2net([x2, c])
    s1 = f(s1net([y1, c])),  y2 = exp(a * s1) * x2 + a * t1net([y1, c])
    y = concat([y1, y2])

The Jacobian is block-triangular with diagonal exp(a * s2), exp(a * s1), so the exact
log|det dy/dx| = a * (sum s1 + sum s2) per image; with `paper_compat=True` the layer returns the
original code's sum s1 + sum s2 instead (equal to the exact value only at a = 1).

Inverse (exact for every a):

    s1 = f(s1net([y1, c])),  x2 = (y2 - a * t1net([y1, c])) * exp(-a * s1)
    s2 = f(s2net([x2, c])),  x1 = (y1 - a * t2net([x2, c])) * exp(-a * s2)
"""

from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from inflow_jax.flows.gate import broadcast_attention
from inflow_jax.flows.subnet import Subnet, fused_subnets

CLAMP_SLOPE = 0.636  # the original's atan clamp: f(u) = clamp * 0.636 * atan(u)


class AttentionCoupling(nn.Module):
  """Attention-gated affine coupling; parameters `subnet_{s1,t1,s2,t2}` (see `subnet.Subnet`)."""

  width: int = 256
  clamp: float = 2.0
  condition_channels: int = 3
  paper_compat: bool = False
  zero_init: bool = False  # the subnets' last conv starts at 0: the coupling starts as the identity

  def _split(self, x: jnp.ndarray) -> Tuple[int, int]:
    channels = x.shape[-1]
    if channels < 2:
      raise ValueError(f"an affine coupling needs at least 2 channels, got input shape {x.shape}")
    return channels // 2, channels - channels // 2

  def _nets(self, half: jnp.ndarray, a: jnp.ndarray, name: str, out: int):
    """(clamped s, t) of the nets s{name}/t{name} that read `half` and give `out` channels."""
    in_channels = half.shape[-1] + self.condition_channels
    s_weights = Subnet(self.width, out, self.zero_init, name=f"subnet_s{name}")(in_channels)
    t_weights = Subnet(self.width, out, self.zero_init, name=f"subnet_t{name}")(in_channels)
    s_raw, t = fused_subnets(half, a, s_weights, t_weights)
    return self.clamp * CLAMP_SLOPE * jnp.arctan(s_raw), t

  def _log_det(self, a, s1, s2):
    total = jnp.sum(s1, axis=(1, 2, 3)) + jnp.sum(s2, axis=(1, 2, 3))
    return total if self.paper_compat else jnp.reshape(a, (-1,)) * total

  @nn.compact
  def _apply(self, x: jnp.ndarray, attention, reverse: bool):
    len1, len2 = self._split(x)
    a = broadcast_attention(attention, x)
    if not reverse:
      x1, x2 = x[..., :len1], x[..., len1:]
      s2, t2 = self._nets(x2, a, "2", len1)
      y1 = jnp.exp(a * s2) * x1 + a * t2
      s1, t1 = self._nets(y1, a, "1", len2)
      y2 = jnp.exp(a * s1) * x2 + a * t1
      return jnp.concatenate([y1, y2], axis=-1), self._log_det(a, s1, s2)
    y1, y2 = x[..., :len1], x[..., len1:]
    s1, t1 = self._nets(y1, a, "1", len2)
    x2 = (y2 - a * t1) * jnp.exp(-a * s1)
    s2, t2 = self._nets(x2, a, "2", len1)
    x1 = (y1 - a * t2) * jnp.exp(-a * s2)
    return jnp.concatenate([x1, x2], axis=-1), -self._log_det(a, s1, s2)

  def __call__(self, x: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """x (B, H, W, C) -> (y, log|det dy/dx|) with log_det of shape (B,)."""
    return self._apply(x, attention, reverse=False)

  def inverse(self, y: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """y (B, H, W, C) -> (x, log|det dx/dy|) = (x, -forward log_det)."""
    return self._apply(y, attention, reverse=True)
