"""The coupling subnets conv3x3(width) - ReLU - conv3x3, computed as large matrix products.

Each subnet maps `[u, c]` (the half `u` with k channels, then `m` condition channels that all equal
the attention `a`) to `o` channels:

    net([u, c]) = conv2(relu(conv1([u, c]) + b1)) + b2,      3x3 kernels, zero padding 1.

Parameters (torch-compatible, one `Subnet` module per net) are HWIO kernels:
`kernel_0` (3, 3, k + m, width), `bias_0` (width,), `kernel_1` (3, 3, width, o), `bias_1` (o,).

The computation is the same equation, reorganised so that XLA's CPU backend (whose convolution
gradients are slow) only sees matrix products with a long batch*pixels dimension:

* conv1 is linear in its input, and the condition channels are the constant `a`, so
  `conv1([u, c]) = conv1_u(u) + a * M`, where `M[i, j] = sum over the in-image taps of the condition
  kernel` is a per-position (border-aware) map computed from the kernel alone. `conv1_u` is an im2col
  matrix product `patches(u) (N, 9k) @ K (9k, width)`, N = B*H*W.
* conv2 has few outputs: `Y = h (N, width) @ K2 (width, 9*o)` gives every tap's contribution at the
  pixel where it is read; the output is then the sum of the 9 spatially shifted slices of `Y`
  (`out[i, j] = sum_{dy,dx} Y[i + dy - 1, j + dx - 1, (dy, dx)]`, zero outside the image).
* the s and t nets of one coupling read the same input, so they share the im2col patches and their
  conv2 products are one matrix product with a block-diagonal kernel.
"""
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Weights = Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]


def torch_conv_init(fan_in: int):
  """PyTorch's default Conv2d init for weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  Drawn as a flat vector and reshaped: with jax's partitionable threefry, drawing a 4-d shape
  directly compiles about 10x slower on CPU.
  """
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, (int(np.prod(shape)),), dtype, -bound, bound).reshape(shape)

  return init


class Subnet(nn.Module):
  """Holds one subnet's parameters (the equation is in the module docstring); calling returns them."""
  width: int
  out_channels: int

  @nn.compact
  def __call__(self, in_channels: int) -> Weights:
    fan_0, fan_1 = 9 * in_channels, 9 * self.width
    return (
        self.param("kernel_0", torch_conv_init(fan_0), (3, 3, in_channels, self.width)),
        self.param("bias_0", torch_conv_init(fan_0), (self.width,)),
        self.param("kernel_1", torch_conv_init(fan_1), (3, 3, self.width, self.out_channels)),
        self.param("bias_1", torch_conv_init(fan_1), (self.out_channels,)),
    )


def im2col3x3(x: jnp.ndarray) -> jnp.ndarray:
  """(B, H, W, C) -> (B, H, W, 9*C): the zero-padded 3x3 neighbourhood, taps (dy, dx) major, C minor."""
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  taps = [padded[:, dy:dy + h, dx:dx + w, :] for dy in range(3) for dx in range(3)]
  return jnp.concatenate(taps, axis=-1)


def shift_add3x3(y: jnp.ndarray) -> jnp.ndarray:
  """(B, H, W, 9, O) per-tap products -> (B, H, W, O): out[i,j] = sum_t y[i+dy-1, j+dx-1, t], 0 outside."""
  _, h, w, _, _ = y.shape
  padded = jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0)))
  out = padded[:, 0:h, 0:w, 0, :]
  for tap in range(1, 9):
    dy, dx = divmod(tap, 3)
    out = out + padded[:, dy:dy + h, dx:dx + w, tap, :]
  return out


def valid_taps3x3(height: int, width: int) -> np.ndarray:
  """(H, W, 9) float: 1 where tap (dy, dx) of pixel (i, j) reads inside the image, else 0."""
  mask = np.zeros((height, width, 9), np.float32)
  for tap in range(9):
    dy, dx = divmod(tap, 3)
    rows = slice(max(0, 1 - dy), min(height, height + 1 - dy))
    cols = slice(max(0, 1 - dx), min(width, width + 1 - dx))
    mask[rows, cols, tap] = 1.0
  return mask


def fused_subnets(u: jnp.ndarray, a: jnp.ndarray, s_weights: Weights,
                  t_weights: Weights) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """(s_net([u, c]), t_net([u, c])) for c = m constant channels equal to `a`.

  Args:
    u: (B, H, W, k) the half the nets read.
    a: attention, shape () or (B, 1, 1, 1).
    s_weights, t_weights: the two nets' (kernel_0, bias_0, kernel_1, bias_1).
  Returns:
    two (B, H, W, o) arrays: the raw (unclamped) s and t.
  """
  b, h, w, k = u.shape
  ks0, bs0, ks1, bs1 = s_weights
  kt0, bt0, kt1, bt1 = t_weights
  width, out = ks1.shape[2], ks1.shape[3]
  kernel_0 = jnp.concatenate([ks0, kt0], axis=-1).astype(u.dtype)         # (3, 3, k + m, 2w)
  bias_0 = jnp.concatenate([bs0, bt0]).astype(u.dtype)
  # conv1 of the constant condition channels: a * M, M (H, W, 2w) from the kernel alone.
  cond_taps = kernel_0[:, :, k:, :].sum(axis=2).reshape(9, 2 * width)
  cond_map = jnp.asarray(valid_taps3x3(h, w), u.dtype).reshape(h * w, 9) @ cond_taps
  pre = im2col3x3(u).reshape(b * h * w, 9 * k) @ kernel_0[:, :, :k, :].reshape(9 * k, 2 * width)
  pre = pre.reshape(b, h, w, 2 * width) + a * cond_map.reshape(h, w, 2 * width) + bias_0
  hidden = jax.nn.relu(pre).reshape(b * h * w, 2 * width)
  # conv2 of s and t as one product with a block-diagonal (2w, 9 * 2o) kernel.
  zeros = jnp.zeros((width, 9, out), u.dtype)
  ks1_taps = ks1.astype(u.dtype).reshape(9, width, out).transpose(1, 0, 2)  # (w, 9, o)
  kt1_taps = kt1.astype(u.dtype).reshape(9, width, out).transpose(1, 0, 2)
  kernel_1 = jnp.concatenate([
      jnp.concatenate([ks1_taps, zeros], axis=-1),
      jnp.concatenate([zeros, kt1_taps], axis=-1)], axis=0).reshape(2 * width, 9 * 2 * out)
  taps = (hidden @ kernel_1).reshape(b, h, w, 9, 2 * out)
  result = shift_add3x3(taps) + jnp.concatenate([bs1, bt1]).astype(u.dtype)
  return result[..., :out], result[..., out:]
