"""A differentiable surrogate of the PNG lengths, for attacks on input complexity.

PNG codes each row after a predictive filter (Sub, Up, Average, Paeth); its length grows with the
size of the residuals. With v = 255 x and the neighbours left l, up u and up-left d of each value
(zero outside the image), the four residuals

    r_sub = v - l,   r_up = v - u,   r_avg = v - (l + u) / 2,   r_grad = v - (l + u - d)

give four smooth code lengths per image, the means over its values of

    c_k(x) = mean log2(1 + sqrt(r_k^2 + delta^2) / tau)        (tau = 1/4, delta = 1/10)

and the PNG bits/dim at a scale s (full, half resolution) is regressed on them by least squares:

    png_s(x) ~ beta_s0 + sum_k beta_sk c_k(pool^s(x))

(pool = the 2x2 mean, without the detector's rounding to 8 bits, so the map is differentiable).
`fit_surrogate` fits beta on given images and noisy copies of them (uniform noise of up to epsilon,
rounded to 8 bits): the region a PGD attack within epsilon explores. Its error is a fraction of
the PNG lengths' spread across images, and below that of any one filter alone.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.gates.features import complexity_bits, mean_pool

TAU = 0.25
DELTA = 0.1
NOISE_COPIES = 2


def _shift(v: jax.Array, rows: int, cols: int) -> jax.Array:
  """v moved down by `rows` and right by `cols` (NHWC), zeros entering."""
  padded = jnp.pad(v, ((0, 0), (rows, 0), (cols, 0), (0, 0)))
  return padded[:, : v.shape[1], : v.shape[2]]


def filter_code_lengths(x: jax.Array) -> jax.Array:
  """(B, 4) c_sub, c_up, c_avg, c_grad of the module docstring for x (B, H, W, C) in [0, 1]."""
  v = 255.0 * x
  left, up, up_left = _shift(v, 0, 1), _shift(v, 1, 0), _shift(v, 1, 1)
  residuals = (v - left, v - up, v - (left + up) / 2, v - (left + up - up_left))
  return jnp.stack(
    [jnp.mean(jnp.log2(1.0 + jnp.sqrt(r**2 + DELTA**2) / TAU), axis=(1, 2, 3)) for r in residuals],
    axis=1,
  )


def _design(x: jax.Array) -> jax.Array:
  """(B, 2, 5): [1, c_k] at full and half resolution."""
  ones = jnp.ones((x.shape[0], 1), x.dtype)
  return jnp.stack(
    [jnp.concatenate([ones, filter_code_lengths(xs)], axis=1) for xs in (x, mean_pool(x))], axis=1
  )


def surrogate_complexity_bits(coefficients: jax.Array, x: jax.Array) -> jax.Array:
  """(B, 2) the surrogate of `inflow_jax.gates.features.complexity_bits(x)` (traceable,
  differentiable); coefficients (2, 5) from `fit_surrogate`."""
  return jnp.einsum("bsk,sk->bs", _design(x), coefficients)


def fit_surrogate(
  x: np.ndarray, key: jax.Array, epsilon: float, noise_copies: int = NOISE_COPIES
) -> np.ndarray:
  """(2, 5) least-squares coefficients of the module docstring, fitted on x (N, H, W, C) in [0, 1]
  (unchecked) and `noise_copies` copies with uniform noise of amplitude U[0, epsilon] per image."""
  copies = [np.asarray(x, np.float32)]
  for c in range(noise_copies):
    amplitude_key, noise_key = jax.random.split(jax.random.fold_in(key, c))
    amplitude = epsilon * jax.random.uniform(amplitude_key, (len(x), 1, 1, 1))
    noise = amplitude * jax.random.uniform(noise_key, x.shape, minval=-1.0, maxval=1.0)
    copies.append(np.round(np.clip(np.asarray(x + noise), 0.0, 1.0) * 255.0) / 255.0)
  x_fit = np.concatenate(copies).astype(np.float32)
  design, target = np.asarray(_design(jnp.asarray(x_fit)), np.float64), complexity_bits(x_fit)
  return np.stack(
    [np.linalg.lstsq(design[:, s], target[:, s], rcond=None)[0] for s in range(target.shape[1])]
  ).astype(np.float32)


def surrogate_residual_rms(
  coefficients: np.ndarray, x: np.ndarray, png_bits: Optional[np.ndarray] = None
) -> np.ndarray:
  """(2,) root-mean-square error of the surrogate against the true PNG bits/dim of x."""
  png_bits = complexity_bits(x) if png_bits is None else png_bits
  predicted = np.asarray(surrogate_complexity_bits(jnp.asarray(coefficients), jnp.asarray(x)))
  return np.sqrt(np.mean((predicted - png_bits) ** 2, axis=0))
