"""Consecutive batches of a set: the one place that slices a set into batches.

* `batch_starts(n, batch_size)`: the offsets of the batches that the attention test sees (a leftover
  single image joins the batch before it: the two-sample test needs >= 2 images).
* `batched(fn, arrays, size)`: `fn` over consecutive slices of at most `size` rows
  (to bound memory), the results concatenated along axis 0 (any pytree of arrays).
* `fixed_size(fn, x, size, host_work)`: the same over slices of exactly `size` rows (the last one
  zero-padded), so a row's result does not depend on where it sat in x (one compilation; no
  batch-size dependent rounding of vectorised kernels); host work may overlap the computation.
* `map_in_chunks(fn, x, chunk_size)`: the same inside a traced (jitted) function, one chunk after
  another under `lax.map` (peak memory one chunk's activations).
"""

from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

Arrays = Union[np.ndarray, Sequence[np.ndarray]]


def batch_starts(n: int, batch_size: int) -> np.ndarray:
  """Offsets [0, m, 2m, ..., n] of consecutive batches of `batch_size`; the last partial batch is
  kept, except that a leftover of exactly one image joins the batch before it (the two-sample test
  needs >= 2 images), which then holds batch_size + 1 images."""
  if n < 2:
    raise ValueError(f"the attention test needs at least 2 images, got {n}")
  if batch_size < 2:
    raise ValueError(
      f"batch_size must be >= 2 (the attention test needs 2 images), got {batch_size}"
    )
  if batch_size > n:
    raise ValueError(f"batch_size {batch_size} is larger than the set of {n} images")
  starts = list(range(0, n, batch_size))
  if n - starts[-1] == 1:
    starts.pop()
  return np.asarray(starts + [n])


def batched(fn: Callable[..., Any], arrays: Arrays, size: int, *, with_index: bool = False) -> Any:
  """np.concatenate of `fn` over consecutive slices of at most `size` rows.

  Args:
    fn: called as fn(*slices) (or fn(i, *slices) with_index, i = the batch number); returns an array
      or a pytree of arrays with the slice's rows first.
    arrays: one array, or a tuple/list of arrays with equal leading sizes, sliced alike.
    size: rows per call (>= 1).
  Returns:
    the pytree of host (numpy) arrays, concatenated along axis 0.
  """
  arrays = tuple(arrays) if isinstance(arrays, (tuple, list)) else (arrays,)
  n = len(arrays[0])
  parts = []
  for i, start in enumerate(range(0, n, size)):
    slices = tuple(a[start : start + size] for a in arrays)
    parts.append(jax.device_get(fn(i, *slices) if with_index else fn(*slices)))
  return jax.tree.map(lambda *p: np.concatenate([np.asarray(a) for a in p]), *parts)


def fixed_size(
  fn: Callable[[np.ndarray], Any],
  x: np.ndarray,
  size: int,
  host_work: Optional[Callable[[], Any]] = None,
) -> Any:
  """`batched(fn, x, size)` with every slice exactly `size` rows: x zero-padded to a multiple of
  `size`, the padding's rows dropped from the result. All slices are dispatched before any result is
  fetched (JAX runs them asynchronously), so `host_work()`, when given, runs on the host while they
  compute; then the result is (fn's results, host_work's result)."""
  n = x.shape[0]
  pad = (-n) % size
  padded = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
  parts = [fn(padded[start : start + size]) for start in range(0, len(padded), size)]
  extra = None if host_work is None else host_work()
  out = jax.tree.map(
    lambda *p: np.concatenate([np.asarray(a) for a in p])[:n], *jax.device_get(parts)
  )
  return out if host_work is None else (out, extra)


def map_in_chunks(fn: Callable[[jax.Array], jax.Array], x: jax.Array, chunk_size: int) -> jax.Array:
  """fn over ceil(n / chunk_size) equal chunks of x's leading axis (the last padded), one after
  another under `lax.map`: peak memory is one chunk's activations."""
  n = x.shape[0]
  num_chunks = -(-n // chunk_size)
  if num_chunks == 1:
    return fn(x)
  chunk = -(-n // num_chunks)
  x = jnp.pad(x, ((0, num_chunks * chunk - n),) + ((0, 0),) * (x.ndim - 1))
  out = jax.lax.map(fn, x.reshape(num_chunks, chunk, *x.shape[1:]))
  return out.reshape(num_chunks * chunk, *out.shape[2:])[:n]
