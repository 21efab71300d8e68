"""The attention test on each consecutive batch of a set: the one per-batch loop every caller
uses."""

import dataclasses
from typing import Optional

import jax
import numpy as np

from inflow_jax.gates.mmd import MMDState, mmd_test_embedded, mmd_test_unchecked
from inflow_jax.utils.batching import batch_starts


@dataclasses.dataclass(frozen=True)
class BatchTests:
  """starts: (n_batches + 1,) image offsets (`inflow_jax.utils.batching.batch_starts`); p_values,
  mmd2: (n_batches,); flagged: (n_batches,) True where the test rejected
  (p < level: attention 0)."""

  starts: np.ndarray
  p_values: np.ndarray
  mmd2: np.ndarray
  flagged: np.ndarray


def attention_tests(
  state: MMDState,
  x: np.ndarray,
  batch_size: int,
  key: jax.Array,
  *,
  first_batch: int = 0,
  embedded: Optional[np.ndarray] = None,
) -> BatchTests:
  """`mmd_test` on each batch x[starts[i]:starts[i+1]] with the key fold_in(key, first_batch + i)
  (first_batch: the number of the set's first batch when x is a slice of a larger set, as on one
  process of several). Unchecked: the caller has validated x (float NHWC in [0, 1], the reference's
  image shape) and the key. embedded: (N, D) state.embed(x) when the caller has it (the test then
  runs on its rows: `mmd_test_embedded`)."""
  starts = batch_starts(x.shape[0], batch_size)
  if embedded is None:
    test = lambda lo, hi, batch_key: mmd_test_unchecked(state, x[lo:hi], batch_key)
  else:
    test = lambda lo, hi, batch_key: mmd_test_embedded(state, embedded[lo:hi], batch_key)
  results = [
    test(lo, hi, jax.random.fold_in(key, first_batch + i))
    for i, (lo, hi) in enumerate(zip(starts[:-1], starts[1:]))
  ]
  p_values = np.array([float(r.p_value) for r in results])
  return BatchTests(
    starts=starts,
    p_values=p_values,
    mmd2=np.array([float(r.mmd2) for r in results]),
    flagged=np.array([float(r.attention) == 0.0 for r in results], bool),
  )
