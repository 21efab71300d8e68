"""Fixed channel permutation: y = x[..., perm], x = y[..., argsort(perm)], log|det| = 0.

The permutation is static (not a parameter). By default block k uses
`numpy.random.RandomState(seed + k).permutation(C)`, which with seed 0 reproduces the original
InFlow code's `PermuteRandom(seed=k)` (perm_0 = [2, 1, 0], perm_1 = [0, 2, 1] for C = 3).
The permutation is NOT gated by the attention: at a = 0 the flow is a pure channel permutation.
"""

from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def seeded_permutation(seed: int, channels: int) -> Tuple[int, ...]:
  """The original's `PermuteRandom(seed)`: numpy RandomState(seed).permutation(channels)."""
  return tuple(int(i) for i in np.random.RandomState(seed).permutation(channels))


def check_permutation(perm: Sequence[int], channels: int) -> Tuple[int, ...]:
  """Returns perm as a tuple of ints, or raises if it is not a permutation of range(channels)."""
  perm = tuple(int(i) for i in perm)
  if sorted(perm) != list(range(channels)):
    raise ValueError(f"permutation {perm} is not a permutation of {channels} channels")
  return perm


class Permutation(nn.Module):
  """Channel permutation layer: `perm` if given, else `seeded_permutation(seed, C)`."""

  seed: int = 0
  perm: Optional[Tuple[int, ...]] = None

  def permutation(self, channels: int) -> Tuple[int, ...]:
    if self.perm is None:
      return seeded_permutation(self.seed, channels)
    return check_permutation(self.perm, channels)

  def __call__(self, x: jnp.ndarray, attention=None) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """x (B, H, W, C) -> (x[..., perm], zeros (B,))."""
    perm = np.asarray(self.permutation(x.shape[-1]))
    return x[..., perm], jnp.zeros(x.shape[:1], x.dtype)

  def inverse(self, y: jnp.ndarray, attention=None) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """y (B, H, W, C) -> (y[..., argsort(perm)], zeros (B,))."""
    inverse_perm = np.argsort(np.asarray(self.permutation(y.shape[-1])))
    return y[..., inverse_perm], jnp.zeros(y.shape[:1], y.dtype)
