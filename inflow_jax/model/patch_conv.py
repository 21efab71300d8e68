"""A 3x3 'SAME' convolution written as one matrix product over image patches (im2col).

  y[b, i, j, :] = sum_{di, dj in {-1, 0, 1}} x[b, i + di, j + dj, :] @ K[di + 1, dj + 1]
               = P(x)[b, i, j, :] @ reshape(K, (9 C, F)),

with P(x) the nine shifted copies of the zero-padded x concatenated along channels, in the
(di, dj) order of K's leading axes (so K has `nn.Conv`'s (3, 3, C, F) layout and initialisation).
Why: on this project's CPUs XLA runs one large matrix product faster than its convolution
(measurements: docs/results.md, "The trained encoder and the two views").
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


def dirac_init(key, shape, dtype=jnp.float32):
  """LeCun-normal (3, 3, C, F), with the first min(C, F) filters the identity (centre tap 1 on its
  own channel, 0 elsewhere): a block starts close to passing its input through (airbench's dirac
  initialisation)."""
  kernel = nn.initializers.lecun_normal()(key, shape, dtype)
  n = min(shape[2], shape[3])
  identity = jnp.zeros((3, 3, n, n), dtype).at[1, 1].set(jnp.eye(n, dtype=dtype))
  return kernel.at[:, :, :n, :n].set(identity)


class PatchConv3x3(nn.Module):
  """y = P(x) @ reshape(kernel, (9 C, features)) (+ bias): `nn.Conv(features, (3, 3))` computed as
  one matrix product. x: (B, H, W, C) -> (B, H, W, features). dirac: `dirac_init` for the kernel."""

  features: int
  use_bias: bool = False
  dirac: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels = x.shape[-1]
    init = dirac_init if self.dirac else nn.initializers.lecun_normal()
    kernel = self.param("kernel", init, (3, 3, channels, self.features), jnp.float32)
    y = patches3x3(x) @ kernel.reshape(9 * channels, self.features)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y
