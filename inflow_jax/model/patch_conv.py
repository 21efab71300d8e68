"""A 3x3 'SAME' convolution written as one matrix product over image patches (im2col).

  y[b, i, j, :] = sum_{di, dj in {-1, 0, 1}} x[b, i + di, j + dj, :] @ K[di + 1, dj + 1]
               = P(x)[b, i, j, :] @ reshape(K, (9 C, F)),

with P(x) the nine shifted copies of the zero-padded x concatenated along channels, in the
(di, dj) order of K's leading axes (so K has `nn.Conv`'s (3, 3, C, F) layout and initialisation).
Why: on this project's CPUs XLA runs one large matrix product faster than its convolution (a
residual CNN's training step: 227 against 174 images/s, widths 48/192/192, batch 256).
"""

import flax.linen as nn
import jax.numpy as jnp


def patches3x3(x: jnp.ndarray) -> jnp.ndarray:
  """P(x): (B, H, W, C) -> (B, H, W, 9 C), the zero-padded 3x3 neighbourhood of every pixel."""
  height, width = x.shape[1], x.shape[2]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate(
    [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)], axis=-1
  )


class PatchConv3x3(nn.Module):
  """y = P(x) @ reshape(kernel, (9 C, features)) (+ bias): `nn.Conv(features, (3, 3))` computed as
  one matrix product. x: (B, H, W, C) -> (B, H, W, features)."""

  features: int
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels = x.shape[-1]
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (3, 3, channels, self.features), jnp.float32
    )
    y = patches3x3(x) @ kernel.reshape(9 * channels, self.features)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y
