"""Input validation shared by every public entry point.

Each check raises `ValueError`/`TypeError` whose message names the argument and the problem.
Value checks (NaN, range) need concrete values: inside `jax.jit` the array is a tracer and only its
static properties (rank, shape, dtype) are checked, so jitted public functions validate their
inputs in a thin Python wrapper before the traced call.
"""

import math
from typing import Optional, Sequence, Tuple

import jax
import numpy as np


def is_concrete(x) -> bool:
  """True when `x` holds values (not a tracer inside jit/grad/vmap)."""
  return not isinstance(x, jax.core.Tracer)


def check_images(
  x,
  *,
  name: str = "x",
  channels: Optional[int] = None,
  spatial: Optional[Tuple[int, int]] = None,
  min_batch: int = 1,
  value_range: Optional[Sequence[float]] = None,
):
  """Checks a batch of NHWC float images and returns it: unchanged, or in native byte order when it
  is a big-endian numpy array (`np.dtype(">f4")`: JAX reads its bytes as native ones, NaN).

  Args:
    x: array of shape (B, H, W, C).
    name: the argument's name, used in error messages.
    channels: the required C, if any.
    spatial: the required (H, W), if any.
    min_batch: the smallest allowed B.
    value_range: (low, high) that every value must lie in (checked on concrete values only).
  """
  shape = getattr(x, "shape", None)
  dtype = getattr(x, "dtype", None)
  if shape is None or dtype is None:
    raise TypeError(f"{name} must be an array of shape (B, H, W, C), got {type(x).__name__}")
  if len(shape) != 4:
    raise ValueError(
      f"{name} must have rank 4 (B, H, W, C) in NHWC layout, got shape {tuple(shape)}"
    )
  if not np.issubdtype(np.dtype(dtype), np.floating):
    raise TypeError(
      f"{name} must be floating point (images as float32 in [0, 1]), got dtype {np.dtype(dtype)}; "
      "divide uint8 images by 255"
    )
  if channels is not None and shape[-1] != channels:
    raise ValueError(f"{name} must have {channels} channels (NHWC), got shape {tuple(shape)}")
  if spatial is not None and tuple(shape[1:3]) != tuple(spatial):
    raise ValueError(f"{name} must be {spatial[0]}x{spatial[1]} images, got shape {tuple(shape)}")
  if shape[0] < min_batch:
    raise ValueError(f"{name} must hold at least {min_batch} image(s), got a batch of {shape[0]}")
  if 0 in tuple(shape[1:]):
    raise ValueError(f"{name} must hold non-empty images (H, W, C >= 1), got shape {tuple(shape)}")
  if is_concrete(x):
    values = np.asarray(x)
    if not np.all(np.isfinite(values)):
      raise ValueError(f"{name} contains NaN or infinite values")
    if value_range is not None and values.size:
      low, high = value_range
      if values.min() < low or values.max() > high:
        raise ValueError(
          f"{name} must lie in [{low}, {high}], got values in "
          f"[{values.min():.4g}, {values.max():.4g}]"
        )
  if isinstance(x, np.ndarray) and not x.dtype.isnative:
    return x.astype(x.dtype.newbyteorder("="))
  return x


def check_attention(attention, batch_size: int, *, name: str = "attention"):
  """Checks an attention value: a real scalar or a (B,) array, in [0, 1] when concrete."""
  if is_concrete(attention):
    kind = np.asarray(attention).dtype.kind
    if kind not in "biuf":
      raise TypeError(f"{name} must be a real number or array of them, got {attention!r}")
  shape = tuple(np.shape(attention))
  if shape not in ((), (batch_size,)):
    raise ValueError(f"{name} must be a scalar or have shape ({batch_size},), got shape {shape}")
  if is_concrete(attention):
    values = np.asarray(attention, dtype=np.float64)
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
      raise ValueError(f"{name} must lie in [0, 1], got {values}")
  return attention


def check_integer(value, name: str, minimum: int) -> int:
  """`value` as an int: a Python or numpy integer (not a bool) >= minimum, else a clear error."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def check_test_size(n_permutations, level) -> Tuple[int, float]:
  """Checks P and the level, and that the smallest p-value 1 / (1 + P) can fall below the level."""
  n_permutations = check_integer(n_permutations, "n_permutations", 1)
  if not 0.0 < float(level) < 1.0:
    raise ValueError(f"level must lie in (0, 1), got {level}")
  if 1.0 / (1.0 + n_permutations) >= level:
    raise ValueError(
      f"n_permutations = {n_permutations} can never reject at level {level}: the smallest p-value "
      f"1/(1 + n_permutations) = {1.0 / (1.0 + n_permutations):.4g} is not below the level; use "
      f"n_permutations >= {math.ceil(1.0 / level)}"
    )
  return n_permutations, float(level)


def check_key(key, name: str = "key") -> None:
  """Raises unless `key` is a PRNG key: a typed key array or a raw uint32 array of shape (2,)."""
  if key is None:
    raise ValueError(
      f"{name} is None: the test needs a PRNG key (jax.random.PRNGKey(seed) or "
      "jax.random.key(seed)) for its permutations"
    )
  if isinstance(key, jax.core.Tracer):
    return
  dtype, shape = getattr(key, "dtype", None), tuple(getattr(key, "shape", (None,)))
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
    return
  if dtype != np.uint32 or shape != (2,):
    raise TypeError(
      f"{name} must be a PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), got {key!r}"
    )
