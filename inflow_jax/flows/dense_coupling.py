"""The attention-gated affine coupling for feature VECTORS.

For x of shape (B, D), D >= 2, split into x1 = x[:, :d1] (the first d1 = ceil(D/2) dimensions) and
x2 = x[:, d1:] (the other d2 = floor(D/2)), the attention a (scalar or (B,)) and the soft clamp
f(u) = clamp * 0.636 * atan(u) of the image coupling (`coupling.CLAMP_SLOPE`):

    [s1_raw, t1] = net_1([x1, a]),   s1 = f(s1_raw)          ([x1] with condition=False)
    y1 = x1,   y2 = exp(a * s1) * x2 + a * t1,    y = concat([y1, y2])
    log|det dy/dx| = a * sum(s1)                   (exact for every a; shape (B,))

Inverse, side by side (net_1 reads y1 = x1, so s1 and t1 are the same):

    x1 = y1,   x2 = (y2 - a * t1) * exp(-a * s1),    log|det dx/dy| = -a * sum(s1)

two_sided=True first also moves x1 with a second net that reads x2, exactly as the image coupling:

    [s2_raw, t2] = net_2([x2, a]),  y1 = exp(a * s2) * x1 + a * t2,  then y2 as above from y1;
    log|det| = a * (sum s1 + sum s2);  inverse: x2 from y1 as above, then x1 = (y1 - a t2) e^(-a s2)

The Jacobian is block-triangular with diagonal exp(a * s2) (or 1), exp(a * s1): hence the log-det.
At a = 0 the layer is the identity with log-det 0 (the nets still run; their output is multiplied
by 0). The larger half (ceil(D/2)) conditions the one-sided step: net_1 sees at least half of x.
Why: the image coupling's subnets are 3x3 convolutions of NHWC maps; a trained encoder's features
are flat vectors, which need dense (MLP) nets.
"""

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inflow_jax.flows.coupling import CLAMP_SLOPE
from inflow_jax.flows.gate import broadcast_attention
from inflow_jax.utils.checks import check_attention

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu}


def soft_clamp(raw: jnp.ndarray, clamp: float) -> jnp.ndarray:
  """The image coupling's clamp f(u) = clamp * 0.636 * atan(u): |f| < clamp, f'(0) = 0.636 clamp."""
  return clamp * CLAMP_SLOPE * jnp.arctan(raw)


class DenseSubnet(nn.Module):
  """MLP u (B, k) -> (B, out_features): `depth` hidden Dense(width) layers with `activation`, then
  a Dense output layer. Parameters `hidden_{i}/{kernel, bias}`, `output/{kernel, bias}` (flax's
  default init: lecun normal kernels, zero biases); `zero_output=True` zeroes the output kernel
  (Glow's zero-initialised last layer: the coupling starts as the identity and still learns)."""

  width: int
  depth: int
  out_features: int
  activation: str = "relu"
  zero_output: bool = True

  @nn.compact
  def __call__(self, u: jnp.ndarray) -> jnp.ndarray:
    act = ACTIVATIONS[self.activation]
    h = u
    for i in range(self.depth):
      h = act(nn.Dense(self.width, name=f"hidden_{i}")(h))
    kernel_init = nn.initializers.zeros if self.zero_output else nn.initializers.lecun_normal()
    return nn.Dense(self.out_features, kernel_init=kernel_init, name="output")(h)


def split_sizes(x: jnp.ndarray, name: str) -> Tuple[int, int]:
  """(d1, d2) = (ceil(D/2), floor(D/2)) of a (B, D) batch; raises ValueError naming `name`."""
  if x.ndim != 2:
    raise ValueError(f"{name} must have rank 2 (B, D) feature vectors, got shape {tuple(x.shape)}")
  dims = x.shape[-1]
  if dims < 2:
    raise ValueError(f"{name}: an affine coupling needs D >= 2 dimensions, got shape {x.shape}")
  return dims - dims // 2, dims // 2


class DenseAttentionCoupling(nn.Module):
  """Attention-gated affine coupling of (B, D) vectors; parameters `subnet_1/...` (and `subnet_2`
  with two_sided=True): `DenseSubnet`s named after the half they read, giving [s_raw, t].

  width, depth: the nets' hidden width and number of hidden layers; activation "relu" or "gelu";
  clamp: the soft clamp's scale; zero_init: zero output kernels (the layer starts as the identity);
  condition: the nets also read a (as the image coupling's condition channels); two_sided: also
  move x1 (every dimension changes in every coupling).
  """

  width: int = 64
  depth: int = 2
  clamp: float = 2.0
  activation: str = "relu"
  zero_init: bool = True
  condition: bool = True
  two_sided: bool = False

  def _half(self, reads, moves, a, name: str, reverse: bool):
    """`moves` -> exp(a s) moves + a t (or the inverse) with [s_raw, t] = net_{name}([reads, a]);
    returns (the new `moves`, sum(s) (B,))."""
    u = reads
    if self.condition:
      u = jnp.concatenate([reads, jnp.broadcast_to(a, (reads.shape[0], 1))], axis=-1)
    dims = moves.shape[-1]
    net = DenseSubnet(
      self.width, self.depth, 2 * dims, self.activation, self.zero_init, name=f"subnet_{name}"
    )
    out = net(u)
    s, t = soft_clamp(out[:, :dims], self.clamp), out[:, dims:]
    if reverse:
      return (moves - a * t) * jnp.exp(-a * s), jnp.sum(s, axis=-1)
    return jnp.exp(a * s) * moves + a * t, jnp.sum(s, axis=-1)

  @nn.compact
  def _apply(self, x: jnp.ndarray, attention, reverse: bool):
    d1, _ = split_sizes(x, "y" if reverse else "x")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
    check_attention(attention, x.shape[0])
    a = broadcast_attention(attention, x)  # () or (B, 1)
    first, second = x[:, :d1], x[:, d1:]
    sum_s2 = 0.0
    if self.two_sided and not reverse:
      first, sum_s2 = self._half(second, first, a, "2", reverse)
    second, sum_s1 = self._half(first, second, a, "1", reverse)
    if self.two_sided and reverse:
      first, sum_s2 = self._half(second, first, a, "2", reverse)
    log_det = jnp.reshape(a, (-1,)) * (sum_s1 + sum_s2)
    return jnp.concatenate([first, second], axis=-1), -log_det if reverse else log_det

  def __call__(self, x: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """x (B, D) float -> (y (B, D), log|det dy/dx| (B,)); attention: scalar or (B,) in [0, 1]."""
    return self._apply(x, attention, reverse=False)

  def inverse(self, y: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """y (B, D) -> (x, log|det dx/dy|) = (x, -forward log_det)."""
    return self._apply(y, attention, reverse=True)
