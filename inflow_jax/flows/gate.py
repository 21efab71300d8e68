"""The attention gate shared by every flow layer.

The attention `a` is a scalar (one value for the whole batch) or a (B,) array (one value per image).
Layers multiply their log-scales and shifts by `a`, so that `a = 1` is the ordinary layer and
`a = 0` the identity; `broadcast_attention` gives `a` the shape that broadcasts against an NHWC
batch.
"""

import jax.numpy as jnp


def broadcast_attention(attention, x: jnp.ndarray) -> jnp.ndarray:
  """`a` as an array of x's dtype with shape () (scalar a) or (B, 1, 1, 1) (per-image a)."""
  a = jnp.asarray(attention, dtype=x.dtype)
  if a.ndim == 0:
    return a
  if a.shape != (x.shape[0],):
    raise ValueError(
      f"attention must be a scalar or have shape ({x.shape[0]},), got shape {a.shape}"
    )
  return a.reshape((-1,) + (1,) * (x.ndim - 1))


def per_sample(log_det: jnp.ndarray, batch_size: int) -> jnp.ndarray:
  """Broadcasts a log-det that does not depend on the image (shape () or (B,1,1,1)) to (B,)."""
  return jnp.broadcast_to(jnp.reshape(log_det, (-1,)), (batch_size,))
