"""Squeeze / unsqueeze and the multi-scale split: volume-preserving reshapes (log|det| = 0).

squeeze:   (B, H, W, C) -> (B, H/2, W/2, 4C),
           y[b, i, j, (2p + q) * C + c] = x[b, 2i + p, 2j + q, c]   (p, q in {0, 1})
unsqueeze: its inverse.
split:     (B, H, W, C) -> (factored = x[..., :C//2], kept = x[..., C//2:]);
           merge concatenates back.
"""

from typing import Tuple

import jax.numpy as jnp


def squeeze(x: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Space-to-depth 2x2 -> (y, zeros (B,))."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"squeeze needs even height and width, got shape {x.shape}")
  y = (
    x.reshape(b, h // 2, 2, w // 2, 2, c)
    .transpose(0, 1, 3, 2, 4, 5)
    .reshape(b, h // 2, w // 2, 4 * c)
  )
  return y, jnp.zeros((b,), x.dtype)


def unsqueeze(y: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Depth-to-space 2x2, the inverse of `squeeze` -> (x, zeros (B,))."""
  b, h, w, c4 = y.shape
  if c4 % 4:
    raise ValueError(f"unsqueeze needs a channel count divisible by 4, got shape {y.shape}")
  c = c4 // 4
  x = y.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, c)
  return x, jnp.zeros((b,), y.dtype)


def split(x: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """(factored, kept) = (x[..., :C//2], x[..., C//2:]): the factored half leaves the flow."""
  half = x.shape[-1] // 2
  return x[..., :half], x[..., half:]


def merge(factored: jnp.ndarray, kept: jnp.ndarray) -> jnp.ndarray:
  """The inverse of `split`: concat([factored, kept]) along channels."""
  return jnp.concatenate([factored, kept], axis=-1)
