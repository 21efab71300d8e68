"""Scoring images that arrive one at a time: each image is gated by the MMD test of the window of
the last `window` images (`inflow_jax.gates.gate_stream`), then scored by the flow at that a."""

from typing import Dict, Optional

import jax
import numpy as np

from inflow_jax.gates import gate_stream
from inflow_jax.model.density import make_sharded_score_fn


def score_stream(
  detector, x: np.ndarray, window: int, key: jax.Array, mesh: Optional[jax.sharding.Mesh]
) -> Dict[str, np.ndarray]:
  """Per image of preprocessed x (unchecked): score, the window's p-value, attention and the
  detector's verdict; the flow split over `mesh`'s devices (None: the detector's score function)."""
  if detector.mmd_state_ is None:
    raise ValueError(
      f"stream scoring gates with the MMD test; this detector's attention is "
      f"{detector.attention!r} (score its images in batches instead)"
    )
  gated = gate_stream(detector.mmd_state_, x, window, key)
  attention = np.asarray(gated.attention, np.float32)
  if mesh is None:
    score_fn = lambda xb, a: np.asarray(detector._score_fn(xb, a))  # noqa: SLF001
  else:
    score_fn = make_sharded_score_fn(detector.model, detector.variables, detector.convention, mesh)
  scores = np.concatenate(
    [score_fn(x[i : i + window], attention[i : i + window]) for i in range(0, len(x), window)]
  )
  return {
    "index": np.arange(len(x)),
    "score": scores,
    "batch_p_value": np.asarray(gated.p_value),
    "image_p_value": np.full(len(x), np.nan),
    "attention": attention,
    "is_ood": detector.decide(attention, scores),
  }
