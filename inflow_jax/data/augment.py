"""Training augmentation as pure functions of a PRNG key, on device (inside the jitted step):

  translate:  x'[b] = reflect_pad(x[b], pad)[dy_b : dy_b + H, dx_b : dx_b + W],
              dy_b, dx_b ~ U{0, ..., 2 pad}           (the "random crop with padding" of CIFAR-10)
  flip:       x'[b] = x[b, :, ::-1] with probability 1/2
  rotate:     x'[b] = x[b] turned by k_b * 90 degrees counter-clockwise (square images)

The key of step s is fold_in(PRNGKey(seed), s), so a resumed run augments exactly as an
uninterrupted one.
"""

import jax
import jax.numpy as jnp


def random_flip(key: jax.Array, x: jnp.ndarray) -> jnp.ndarray:
  """Each image of x (B, H, W, C) mirrored left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
  return jnp.where(flip, x[:, :, ::-1], x)


def random_translate(key: jax.Array, x: jnp.ndarray, pad: int) -> jnp.ndarray:
  """Each image of x (B, H, W, C) shifted by up to `pad` pixels per axis, reflected at the
  edges."""
  batch, height, width, channels = x.shape
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
  offsets = jax.random.randint(key, (batch, 2), 0, 2 * pad + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

  return jax.vmap(crop)(padded, offsets)


def augment(key: jax.Array, x: jnp.ndarray, pad: int = 2) -> jnp.ndarray:
  """random_flip(random_translate(x)) with independent keys (pad 0: flips only)."""
  translate_key, flip_key = jax.random.split(key)
  if pad:
    x = random_translate(translate_key, x, pad)
  return random_flip(flip_key, x)


def rotate90(x: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
  """x (B, S, S, C) with image b turned by k[b] * 90 degrees (k (B,) integers in {0, 1, 2, 3})."""
  turns = [jnp.rot90(x, r, axes=(1, 2)) for r in range(4)]
  return jnp.select([(k == r)[:, None, None, None] for r in range(4)], turns)
