"""The untrained random conv encoder that embeds images for the attention's MMD test.

InFlow (after alibi-detect's "untrained autoencoder" preprocessing) never trains this network: a
random projection of the images is enough for a kernel two-sample test to see a distribution shift.

  z = Dense_32(flatten(relu(Conv_512(relu(Conv_128(relu(Conv_64(x))))))))

every Conv is 4x4, stride 2, VALID padding, so a 32x32x3 image goes 15x15x64 -> 6x6x128 -> 2x2x512
-> 2048 -> 32 (the 15th row and column of the first conv's output feed nothing and are not
computed). Each conv runs as one matrix product on space-to-depth patches (`StridedConv`), which
XLA's CPU backend executes faster than its strided convolution (measurements: docs/results.md).
`make_encoder(seed)` draws PyTorch-default-like weights (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
kernels and biases); `load_reference_encoder(path)` imports the original's `torch.manual_seed(0)`
weights.
"""

from typing import Mapping, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.utils.batching import map_in_chunks
from inflow_jax.utils.checks import check_images

Array = jax.Array


class StridedConv(nn.Module):
  """A VALID k x k convolution with stride s, k a multiple of s, as one matrix product (NHWC, HWIO
  kernel).

    y[i, j, o] = b[o] + sum_{u, v < k, c} x[s i + u, s j + v, c] kernel[u, v, c, o]

  With u = s p + du (p < t = k / s, du < s), the space-to-depth image
  X[I, J] = x[s I : s I + s, s J : s J + s, :] (s*s*C channels) turns this into a t x t stride-1
  convolution over X, whose im2col patches are the t*t shifted views X[p : p + H_out, q : q + W_out]
  side by side: one (B H_out W_out, k*k*C) x (k*k*C, O) matrix product. Same parameters as
  `nn.Conv(features, (k, k), strides=(s, s), padding="VALID")`.
  """

  features: int
  kernel_size: int = 4
  stride: int = 2

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, s = self.kernel_size, self.stride
    if k % s:
      raise ValueError(f"kernel_size {k} must be a multiple of stride {s}")
    t = k // s
    b, h, w, c = x.shape
    h_out, w_out = (h - k) // s + 1, (w - k) // s + 1
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, c, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    hb, wb = h_out + t - 1, w_out + t - 1  # space-to-depth blocks needed
    blocks = x[:, : s * hb, : s * wb].reshape(b, hb, s, wb, s, c).transpose(0, 1, 3, 2, 4, 5)
    blocks = blocks.reshape(b, hb, wb, s * s * c)  # channels (du, dv, c)
    patches = jnp.concatenate(
      [blocks[:, p : p + h_out, q : q + w_out] for p in range(t) for q in range(t)], axis=-1
    )  # (p, q, du, dv, c)
    # kernel[u = s p + du, v = s q + dv, c, o] -> rows ordered (p, q, du, dv, c), as the patches
    matrix = kernel.reshape(t, s, t, s, c, self.features).transpose(0, 2, 1, 3, 4, 5)
    y = patches.reshape(-1, k * k * c) @ matrix.reshape(k * k * c, self.features)
    return y.reshape(b, h_out, w_out, self.features) + bias


class RandomEncoder(nn.Module):
  """NHWC images (B, 32, 32, 3) in [0, 1] -> embeddings (B, embedding_dim).

  The architecture only: its parameters come from `make_encoder` (seeded PyTorch-like draw) or
  `load_reference_encoder` (the original's weights), not from linen's default initialisers.
  `__call__(x, start, stop)` applies layers start <= i < stop of [conv0, conv1, conv2, dense] to the
  input x of layer `start` (the embedder runs the early layers in smaller chunks than the late
  ones).
  """

  features: Tuple[int, ...] = (64, 128, 512)
  embedding_dim: int = 32
  kernel_size: int = 4
  stride: int = 2

  @nn.compact
  def __call__(self, x: Array, start: int = 0, stop: Optional[int] = None) -> Array:
    k, s = self.kernel_size, self.stride
    n_convs = len(self.features)
    stop = n_convs + 1 if stop is None else stop
    if start == 0:
      x = x[:, : _read_size(x.shape[1], n_convs, k, s), : _read_size(x.shape[2], n_convs, k, s)]
    for i in range(start, min(stop, n_convs)):
      x = nn.relu(StridedConv(self.features[i], k, s, name=f"conv{i}")(x))
    if stop > n_convs:
      x = x.reshape(
        x.shape[0], -1
      )  # (h, w, c) order; the importer permutes PyTorch's (c, h, w) order
      x = nn.Dense(self.embedding_dim, name="dense")(x)
    return x


def _read_size(size: int, n_convs: int, k: int, s: int) -> int:
  """The input rows (or columns) that n_convs VALID k x k / stride s convolutions read.

  Layer outputs o_l = (o_{l-1} - k) // s + 1 from o_0 = size; o_L outputs read s (o_L - 1) + k
  inputs, and so on back to the image (32 -> 30: the first conv's 15th row and column feed
  nothing).
  """
  out = size
  for _ in range(n_convs):
    out = (out - k) // s + 1
  for _ in range(n_convs):
    out = s * (out - 1) + k
  return out


@flax.struct.dataclass
class Embedder:
  """A callable pytree: `embedder(x)` embeds NHWC images (N, H, W, C) in [0, 1] to
  (N, embedding_dim).

  The parameters are pytree leaves (so a state holding an Embedder can be passed through `jax.jit`);
  the architecture and the chunk sizes are static. Embedding runs under `jax.jit` in chunks of
  `chunk_size` images (`jax.lax.map`), so 50,000 images need the activations of one chunk only.
  Within a chunk the first `early_layers` convolutions (large images, small matrix products) run on
  `early_chunk_size` images at a time, whose patches stay in cache, and the later layers on the
  whole chunk, whose larger matrix products run faster (measurements: docs/results.md).
  """

  params: Mapping
  features: Tuple[int, ...] = flax.struct.field(pytree_node=False, default=(64, 128, 512))
  embedding_dim: int = flax.struct.field(pytree_node=False, default=32)
  chunk_size: int = flax.struct.field(pytree_node=False, default=256)
  early_chunk_size: int = flax.struct.field(pytree_node=False, default=16)
  early_layers: int = flax.struct.field(pytree_node=False, default=2)

  @property
  def module(self) -> RandomEncoder:
    return RandomEncoder(features=self.features, embedding_dim=self.embedding_dim)

  def __call__(self, x: Array) -> Array:
    x = check_images(x, name="x", channels=3, spatial=(32, 32), value_range=(0.0, 1.0))
    return _embed(self, x)

  def embed_traced(self, x: Array) -> Array:
    """The same map without the value checks, for use inside an enclosing `jax.jit`."""
    return _embed(self, x)


@jax.jit
def _embed(embedder: Embedder, x: Array) -> Array:
  variables, module, split = {"params": embedder.params}, embedder.module, embedder.early_layers
  early = lambda images: module.apply(variables, images, stop=split)
  late = lambda hidden: module.apply(variables, hidden, start=split)
  return map_in_chunks(
    lambda chunk: late(map_in_chunks(early, chunk, embedder.early_chunk_size)),
    jnp.asarray(x, jnp.float32),
    embedder.chunk_size,
  )


def make_encoder(
  seed: int = 0,
  *,
  features: Tuple[int, ...] = (64, 128, 512),
  embedding_dim: int = 32,
  chunk_size: int = 256,
) -> Embedder:
  """A random encoder drawn from the explicit `seed`, as PyTorch initialises Conv2d/Linear by
  default: every kernel and bias entry ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = kh * kw * C_in
  (conv) or the input width (dense). Drawn with numpy's `default_rng(seed)`: no XLA compilation, and
  the same weights on every backend.
  """
  module = RandomEncoder(features=tuple(features), embedding_dim=embedding_dim)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
  rng = np.random.default_rng(seed)
  params = {}
  for layer in sorted(shapes):  # conv0, conv1, conv2, dense: a fixed order of draws
    kernel_shape = shapes[layer]["kernel"].shape
    bound = 1.0 / np.sqrt(np.prod(kernel_shape[:-1]))
    params[layer] = {
      name: jnp.asarray(rng.uniform(-bound, bound, shapes[layer][name].shape), jnp.float32)
      for name in ("kernel", "bias")
    }
  return Embedder(
    params=params, features=tuple(features), embedding_dim=embedding_dim, chunk_size=chunk_size
  )


def params_from_torch(state: Mapping[str, np.ndarray]) -> Tuple[dict, Tuple[int, ...], int]:
  """Converts the PyTorch `nn.Sequential` state dict (keys 0, 2, 4 conv; 7 linear) to linen params.

  Conv weights OIHW -> HWIO. The Linear weight (out, C*H*W) is over PyTorch's (c, h, w) flatten,
  while the linen encoder flattens NHWC as (h, w, c):
  W[o, c*H*W + h*W + w] -> kernel[h*W*C + w*C + c, o].
  """
  expected = [f"{i}.{p}" for i in (0, 2, 4, 7) for p in ("weight", "bias")]
  missing = [k for k in expected if k not in state]
  if missing:
    raise KeyError(
      f"encoder state dict is missing {missing}; expected keys {expected}, got {sorted(state)}"
    )
  params, features, in_channels = {}, [], 3
  for i, name in enumerate(("0", "2", "4")):
    weight = np.asarray(state[f"{name}.weight"], np.float32)
    if weight.ndim != 4 or weight.shape[1] != in_channels or weight.shape[2:] != (4, 4):
      raise ValueError(
        f"encoder weight {name}.weight must be (out, {in_channels}, 4, 4) OIHW, got {weight.shape}"
      )
    params[f"conv{i}"] = {
      "kernel": jnp.asarray(weight.transpose(2, 3, 1, 0)),
      "bias": jnp.asarray(np.asarray(state[f"{name}.bias"], np.float32)),
    }
    features.append(weight.shape[0])
    in_channels = weight.shape[0]
  linear = np.asarray(state["7.weight"], np.float32)
  spatial = 2  # 32 -> 15 -> 6 -> 2
  if linear.shape[1] != in_channels * spatial * spatial:
    raise ValueError(
      f"encoder weight 7.weight must be (out, {in_channels * spatial * spatial}), "
      f"got {linear.shape}"
    )
  out = linear.shape[0]
  kernel = linear.reshape(out, in_channels, spatial, spatial).transpose(2, 3, 1, 0).reshape(-1, out)
  params["dense"] = {
    "kernel": jnp.asarray(kernel),
    "bias": jnp.asarray(np.asarray(state["7.bias"], np.float32)),
  }
  return params, tuple(features), out


def load_reference_encoder(path, *, chunk_size: int = 256) -> Embedder:
  """The original's encoder from an .npz of its PyTorch state dict
  (`uae_encoder_torch_seed0.npz`)."""
  with np.load(path) as data:
    state = {k: data[k] for k in data.files}
  params, features, embedding_dim = params_from_torch(state)
  return Embedder(
    params=params, features=features, embedding_dim=embedding_dim, chunk_size=chunk_size
  )
