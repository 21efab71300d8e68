"""Attention-gated invertible 1x1 convolution, LU-parametrised (Glow, without the pivot matrix).

Per pixel y = W(a) x with

    W(a) = L(a) U(a),   L(a) = I + a * tril(lower, -1),
                        U(a) = a * triu(upper, 1) + diag(exp(a * log_scale)),

so W(1) = L U is the learned matrix, W(0) = I, and W(a) is invertible for every a with
log|det dy/dx| = a * H * W * sum(log_scale). Inverse: x = U(a)^-1 L(a)^-1 y (triangular solves).

Initialisation: a random orthogonal Q = P L U (LU with pivoting); the layer starts at the
orthogonal matrix P^T Q S = L (U S), where S = diag(sign(diag U)) makes the diagonal positive.
"""

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.scipy.linalg

from inflow_jax.flows.gate import broadcast_attention, per_sample


def _orthogonal_lu(key, channels: int, dtype):
  # Haar-random orthogonal matrix: QR of a Gaussian matrix with the signs of diag(R) fixed.
  gaussian = jax.random.normal(key, (channels * channels,), dtype).reshape(channels, channels)
  q, r = jnp.linalg.qr(gaussian)
  q = q * jnp.sign(jnp.diag(r))[None, :]
  _, lower, upper = jax.scipy.linalg.lu(q)
  diag = jnp.diag(upper)
  upper = upper * jnp.sign(diag)[None, :]
  return jnp.tril(lower, -1), jnp.triu(upper, 1), jnp.log(jnp.abs(diag))


class InvertibleConv1x1(nn.Module):
  """Parameters `lower` (C, C), `upper` (C, C) (only their strict triangles are used),
  `log_scale` (C,)."""

  @nn.compact
  def _params(self, x: jnp.ndarray):
    channels = x.shape[-1]
    init = lambda key: _orthogonal_lu(key, channels, jnp.float32)
    key = self.make_rng("params") if self.is_initializing() else None
    lower, upper, log_scale = init(key) if key is not None else (None, None, None)
    return (
      self.param("lower", lambda _: lower),
      self.param("upper", lambda _: upper),
      self.param("log_scale", lambda _: log_scale),
    )

  def _factors(self, x, attention):
    lower, upper, log_scale = (p.astype(x.dtype) for p in self._params(x))
    a = jnp.reshape(jnp.asarray(attention, x.dtype), (-1, 1, 1))  # (1 or B, 1, 1)
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    l_a = eye + a * jnp.tril(lower, -1)
    u_a = a * jnp.triu(upper, 1) + eye * jnp.exp(a * log_scale)
    log_det = per_sample(
      broadcast_attention(attention, x) * x.shape[1] * x.shape[2] * jnp.sum(log_scale), x.shape[0]
    )
    return l_a, u_a, log_det

  def __call__(self, x: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """x (B, H, W, C) -> (y = W(a) x per pixel, log|det dy/dx| of shape (B,))."""
    l_a, u_a, log_det = self._factors(x, attention)
    w = l_a @ u_a  # (1 or B, C, C)
    y = jnp.einsum("bcd,bhwd->bhwc", jnp.broadcast_to(w, (x.shape[0],) + w.shape[1:]), x)
    return y, log_det

  def inverse(self, y: jnp.ndarray, attention) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """y (B, H, W, C) -> (x = U(a)^-1 L(a)^-1 y, log|det dx/dy| = -forward log_det)."""
    l_a, u_a, log_det = self._factors(y, attention)
    batch, channels = y.shape[0], y.shape[-1]
    l_a = jnp.broadcast_to(l_a, (batch, channels, channels))
    u_a = jnp.broadcast_to(u_a, (batch, channels, channels))
    cols = y.reshape(batch, -1, channels).transpose(0, 2, 1)  # (B, C, H*W)
    v = jax.scipy.linalg.solve_triangular(l_a, cols, lower=True, unit_diagonal=True)
    x = jax.scipy.linalg.solve_triangular(u_a, v, lower=False)
    return x.transpose(0, 2, 1).reshape(y.shape), -log_det
