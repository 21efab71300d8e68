"""Scoring a set batch by batch with the paper's gate: each consecutive batch is tested by the MMD
test and scored by the flow at the attention the test gives (a = 1 passed, a = 0 flagged).
"""

import dataclasses
from typing import Optional

import jax
import numpy as np

from inflow_jax.gates.mmd_batches import attention_tests
from inflow_jax.model.density import ScoreFn
from inflow_jax.utils.batching import batch_starts
from inflow_jax.utils.checks import check_attention, check_images


@dataclasses.dataclass(frozen=True)
class BatchScores:
  """What `score_batches` returns (numpy arrays).

  scores: (N,) per-image scores; attention: (N,) the a each image was scored with;
  p_values: (n_batches,) the attention test's p-value per tested batch (NaN when not tested);
  flagged: (n_batches,) True where the test flagged the batch (p < level); batch_index: (N,) the
  batch of each image; batch_starts: (n_batches + 1,) image offsets of the batches; image_p_values:
  (N,) per-image conformal p-values (the detector's conformal kinds; else None).
  """

  scores: np.ndarray
  attention: np.ndarray
  p_values: np.ndarray
  flagged: np.ndarray
  batch_index: np.ndarray
  batch_starts: np.ndarray
  image_p_values: Optional[np.ndarray] = None

  @property
  def n_batches(self) -> int:
    return int(self.p_values.size)


def score_batches(
  score_fn: ScoreFn,
  mmd_state,
  x,
  batch_size: int,
  key: Optional[jax.Array] = None,
  attention=None,
  *,
  first_batch: int = 0,
) -> BatchScores:
  """Runs the attention test on each batch of `x` and scores the batch with the resulting a.

  Batch i is `x[starts[i]:starts[i+1]]` (see `inflow_jax.utils.batching.batch_starts`: the last
  partial batch is scored; a leftover single image is tested with the batch before it). Its test
  uses the key `fold_in(key, i)`, and a_i = 1 if p_i >= level else 0
  (`inflow_jax.gates.mmd.mmd_test`).

  Args:
    score_fn: from `make_score_fn`.
    mmd_state: from `inflow_jax.gates.mmd.fit_mmd`, or None to skip the test (then `attention`
      is needed and p-values are NaN).
    x: (N, H, W, C) float32 images in [0, 1].
    batch_size: images per tested batch, 2 <= batch_size <= N.
    key: PRNG key of the permutation tests (needed when mmd_state is given).
    attention: None (use the test's a), or an override: a scalar, (n_batches,) one per batch,
      or (N,) one per image. The test still runs (and reports p-values/flags) when mmd_state is
      given.
    first_batch: when x is a slice of a larger set starting at that set's batch `first_batch`, the
      tests use the keys fold_in(key, first_batch + i), as they would on the whole set.
  """
  if mmd_state is None and attention is None:
    raise ValueError("score_batches needs mmd_state (to test each batch) or an explicit attention")
  shape = (
    {}
    if mmd_state is None
    else dict(spatial=mmd_state.image_shape[:2], channels=mmd_state.image_shape[2])
  )
  x = check_images(x, name="x", value_range=(0.0, 1.0), **shape)
  starts, p_values, flagged = _tests(mmd_state, x, batch_size, key, first_batch)
  n, n_batches = x.shape[0], starts.size - 1
  batch_index = np.repeat(np.arange(n_batches), np.diff(starts))
  per_image = np.where(flagged, 0.0, 1.0).astype(np.float32)[batch_index]
  if attention is not None:
    per_image = _override(attention, batch_index, n, n_batches)

  scores = np.empty(n, np.float32)
  for i in range(n_batches):
    sl = slice(starts[i], starts[i + 1])
    scores[sl] = np.asarray(score_fn(x[sl], per_image[sl]))
  return BatchScores(
    scores=scores,
    attention=per_image,
    p_values=p_values,
    flagged=flagged,
    batch_index=batch_index,
    batch_starts=starts,
  )


def _override(attention, batch_index: np.ndarray, n: int, n_batches: int) -> np.ndarray:
  """(n,) per-image attention from a scalar, (n_batches,) per batch or (n,) per image, checked."""
  override = np.asarray(attention, np.float32)
  if override.ndim == 0:
    per_image = np.full(n, override, np.float32)
  elif override.shape == (n_batches,):
    per_image = override[batch_index]
  elif override.shape == (n,):
    per_image = override.copy()
  else:
    raise ValueError(
      f"attention must be a scalar, ({n_batches},) per batch or ({n},) per image, "
      f"got shape {override.shape}"
    )
  check_attention(per_image, n)
  return per_image


def _tests(mmd_state, x, batch_size: int, key, first_batch: int):
  """(starts, p_values, flagged) of x's batches: the MMD tests, or untested (NaN, False)."""
  if mmd_state is None:
    starts = batch_starts(x.shape[0], batch_size)
    return starts, np.full(starts.size - 1, np.nan), np.zeros(starts.size - 1, bool)
  if key is None:
    raise ValueError("the attention test needs a PRNG key for its permutations")
  tests = attention_tests(mmd_state, x, batch_size, key, first_batch=first_batch)
  return tests.starts, tests.p_values, tests.flagged
