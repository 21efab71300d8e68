"""The coupling subnets conv3x3(width) - ReLU - conv3x3, computed as cache-sized matrix products.

Each subnet maps `[u, c]` (the half `u` with k channels, then `m` condition channels that all equal
the attention `a`) to `o` channels:

    net([u, c]) = conv2(relu(conv1([u, c]) + b1)) + b2,      3x3 kernels, zero padding 1.

Parameters (torch-compatible, one `Subnet` module per net) are HWIO kernels:
`kernel_0` (3, 3, k + m, width), `bias_0` (width,), `kernel_1` (3, 3, width, o), `bias_1` (o,).

The computation is the same equation, reorganised for XLA's CPU backend (whose convolution gradients
are slow, and which does not fuse matrix products with what follows them):

* the m condition channels are identical, so conv1 sees them as ONE channel equal to `a` with the
  kernel summed over those m input channels (zero padding makes this border-aware);
* conv1 is an im2col product `patches([u, a]) (N, 9(k+1)) @ K0 (9(k+1), width)`, N = B*H*W;
* conv2 (few outputs) is `taps = h (N, width) @ K1t^T`, K1t (9o, width) holding each tap's kernel;
  the output is the sum of the 9 spatially shifted tap slices,
  `out[i, j] = sum_{dy,dx} taps[i + dy - 1, j + dx - 1, (dy, dx)]` (zero outside the image);
* so per pixel, `taps = relu(patches @ K0 + b1) @ K1t^T` is a two-layer MLP: everything (patches,
  MLP, shift-add) runs over chunks of whole images totalling about `ROWS_PER_CHUNK` pixels
  (`lax.map`) so that the (rows, width) hidden activations stay in cache, with `jax.checkpoint` so
  that the backward pass recomputes them per chunk instead of storing them;
* K1t is (9o, width), not (width, 9o): the gradient `g^T @ h` then has the layout that XLA's CPU
  matrix product computes several times faster (measurements: docs/results.md);
* the s and t nets of one coupling share the patches and the chunk loop.
"""

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Weights = Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]


class Subnet(nn.Module):
  """Holds one subnet's parameters (the equation is in the module docstring); calling returns them.

  Initialisation as PyTorch's default Conv2d: every weight and bias of conv i is
  U(-1/sqrt(fan_in_i), 1/sqrt(fan_in_i)), fan_in = 9 * input channels. All four are slices of ONE
  flat uniform draw (scaled per slice): each jax.random call site adds its own threefry code, and
  XLA's CPU compile time of `model.init` grows with their number.
  With `zero_output=True` the second conv starts at zero (Glow's zero-initialised last layer), so
  that every coupling begins as the identity.
  """

  width: int
  out_channels: int
  zero_output: bool = False

  @nn.compact
  def __call__(self, in_channels: int) -> Weights:
    shapes = {
      "kernel_0": (3, 3, in_channels, self.width),
      "bias_0": (self.width,),
      "kernel_1": (3, 3, self.width, self.out_channels),
      "bias_1": (self.out_channels,),
    }
    bounds = {
      "kernel_0": 1 / np.sqrt(9 * in_channels),
      "bias_0": 1 / np.sqrt(9 * in_channels),
      "kernel_1": 1 / np.sqrt(9 * self.width),
      "bias_1": 1 / np.sqrt(9 * self.width),
    }
    sizes = [int(np.prod(shape)) for shape in shapes.values()]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    draw = None
    if self.is_initializing():
      draw = jax.random.uniform(
        self.make_rng("params"), (int(offsets[-1]),), minval=-1.0, maxval=1.0
      )
    params = []
    for (name, shape), start, stop in zip(shapes.items(), offsets[:-1], offsets[1:]):

      def init(_, start=start, stop=stop, name=name, shape=shape):
        if draw is None:  # flax may evaluate the initialiser's shape outside init
          return jnp.zeros(shape, jnp.float32)
        scale = 0.0 if self.zero_output and name.endswith("_1") else bounds[name]
        return (scale * draw[start:stop]).reshape(shape)

      params.append(self.param(name, init))
    return tuple(params)


def im2col3x3(x: jnp.ndarray) -> jnp.ndarray:
  """(B, H, W, C) -> (B, H, W, 9*C): the zero-padded 3x3 neighbourhood, taps (dy, dx) major, C
  minor."""
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  taps = [padded[:, dy : dy + h, dx : dx + w, :] for dy in range(3) for dx in range(3)]
  return jnp.concatenate(taps, axis=-1)


def shift_add3x3(y: jnp.ndarray) -> jnp.ndarray:
  """(B, H, W, 9, O) per-tap products -> (B, H, W, O):
  out[i,j] = sum_t y[i+dy-1, j+dx-1, t], 0 outside."""
  _, h, w, _, _ = y.shape
  padded = jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0)))
  out = padded[:, 0:h, 0:w, 0, :]
  for tap in range(1, 9):
    dy, dx = divmod(tap, 3)
    out = out + padded[:, dy : dy + h, dx : dx + w, tap, :]
  return out


ROWS_PER_CHUNK = 1024


def _mlp_weights(k: int, weights: Weights, dtype):
  """(K0 (9(k+1), width), b0, K1t (9o, width)) of one net; the condition channels folded into
  one."""
  kernel_0, bias_0, kernel_1, _ = (w.astype(dtype) for w in weights)
  kernel_0 = jnp.concatenate(
    [kernel_0[:, :, :k, :], kernel_0[:, :, k:, :].sum(axis=2, keepdims=True)], axis=2
  )
  width, out = kernel_1.shape[2], kernel_1.shape[3]
  return (
    kernel_0.reshape(9 * (k + 1), width),
    bias_0,
    kernel_1.transpose(0, 1, 3, 2).reshape(9 * out, width),
  )


def fused_subnets(
  u: jnp.ndarray, a: jnp.ndarray, s_weights: Weights, t_weights: Weights
) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """(s_net([u, c]), t_net([u, c])) for c = m constant channels equal to `a`.

  Runs over chunks of max(1, ROWS_PER_CHUNK // (H W)) whole images (`lax.map`, the batch zero-padded
  to a multiple): each chunk builds its own patches, hidden activations and tap products, so that no
  (B H W, ...) intermediate is ever materialised (faster than chunking the pixel rows of full-batch
  patches; measurements: docs/results.md).

  Args:
    u: (B, H, W, k) the half the nets read.
    a: attention, shape () or (B, 1, 1, 1).
    s_weights, t_weights: the two nets' (kernel_0, bias_0, kernel_1, bias_1).
  Returns:
    two (B, H, W, o) arrays: the raw (unclamped) s and t.
  """
  b, h, w, k = u.shape
  out = s_weights[2].shape[-1]
  nets = [_mlp_weights(k, weights, u.dtype) for weights in (s_weights, t_weights)]
  biases = [weights[3].astype(u.dtype) for weights in (s_weights, t_weights)]

  @jax.checkpoint
  def chunk_nets(chunk):
    u_chunk, a_chunk = chunk  # (c, H, W, k), (c,)
    condition = jnp.broadcast_to(a_chunk[:, None, None, None], (*u_chunk.shape[:3], 1))
    patches = im2col3x3(jnp.concatenate([u_chunk, condition], axis=-1)).reshape(-1, 9 * (k + 1))
    return tuple(
      shift_add3x3(
        jnp.einsum("rc,oc->ro", jax.nn.relu(patches @ k0 + b0), k1t).reshape(
          *u_chunk.shape[:3], 9, out
        )
      )
      + bias
      for (k0, b0, k1t), bias in zip(nets, biases)
    )

  images = max(1, ROWS_PER_CHUNK // (h * w))
  n_chunks = -(-b // images)
  pad = n_chunks * images - b
  a_per_image = jnp.broadcast_to(jnp.reshape(a, (-1,)).astype(u.dtype), (b,))
  u_chunks = jnp.pad(u, ((0, pad), (0, 0), (0, 0), (0, 0))).reshape(n_chunks, images, h, w, k)
  a_chunks = jnp.pad(a_per_image, (0, pad)).reshape(n_chunks, images)
  s_raw, t = jax.lax.map(chunk_nets, (u_chunks, a_chunks))
  return s_raw.reshape(-1, h, w, out)[:b], t.reshape(-1, h, w, out)[:b]
