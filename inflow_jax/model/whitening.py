"""A frozen whitening stem: the first 3x3 convolution set to whiten the training images' patches.

With P(x) the 3x3 patches of x' = 2x - 1 (`patches3x3`, 9 C values each) and their covariance over
training images Sigma = V diag(lambda) V^T (patches inside the image only, no padding), V_n the n
eigenvectors of the largest eigenvalues lambda_n,

  K = [V_n diag(lambda_n + eps)^(-1/2),  -V_n diag(lambda_n + eps)^(-1/2)]      (9 C, 2 n)
  stem(x) = GELU(P(x') K + b)                                                   (B, H, W, 2 n)

K is fixed (a "whitening" variable collection: not trained, not decayed); the bias b is trained.
Why: decorrelated, unit-variance inputs to the first layer let SGD take large steps from the start
(the fast CIFAR-10 recipes, airbench, train in fewer epochs with it; not yet measured here). The
sign-flipped copy keeps both halves of each direction through the GELU. n < 9 C drops the
weakest directions (the finest pixel-to-pixel detail, where JPEG's artefacts live) and makes the
next convolution cheaper (n = 12: airbench's 24 channels).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.model.patch_conv import patches3x3

EPS = 5e-4


def whitening_kernel(x: np.ndarray, n_components: int, max_images: int = 5000) -> np.ndarray:
  """K (3, 3, C, 2 n) of the module docstring from images x (N, H, W, C) float in [0, 1]."""
  images = 2.0 * np.asarray(x[:max_images], np.float32) - 1.0
  patches = np.asarray(patches3x3(jnp.asarray(images)))[:, 1:-1, 1:-1]
  patches = patches.reshape(-1, patches.shape[-1]).astype(np.float64)
  eigenvalues, eigenvectors = np.linalg.eigh(np.cov(patches, rowvar=False))
  keep = slice(len(eigenvalues) - n_components, None)  # eigh: ascending eigenvalues
  half = eigenvectors[:, keep] / np.sqrt(eigenvalues[keep] + EPS)
  kernel = np.concatenate([half, -half], axis=1)
  return kernel.reshape(3, 3, x.shape[-1], 2 * n_components).astype(np.float32)


class WhiteningStem(nn.Module):
  """GELU(P(2x - 1) K + b), 2 n_components channels; K in the "whitening" collection (zeros
  until `set_whitening`)."""

  n_components: int = 12

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels = x.shape[-1]
    width = 2 * self.n_components
    kernel = self.variable(
      "whitening", "kernel", lambda: jnp.zeros((3, 3, channels, width), jnp.float32)
    )
    bias = self.param("bias", nn.initializers.zeros, (width,), jnp.float32)
    h = patches3x3(2.0 * x - 1.0) @ kernel.value.reshape(9 * channels, width)
    return nn.gelu(h + bias)


def set_whitening(variables, x: np.ndarray):
  """The variables with every whitening kernel set from images x (`whitening_kernel`, as many
  components as the kernel has)."""
  variables = dict(variables)
  variables["whitening"] = jax.tree.map(
    lambda k: jnp.asarray(whitening_kernel(x, k.shape[-1] // 2)), dict(variables["whitening"])
  )
  return variables
