"""Scoring images that arrive one at a time: every image is tested from the first one on.

Image t is gated by the detector's gate (`inflow_jax.detector.gate`) on the last m_t images
t - m_t + 1 .. t, with the key fold_in(key, t) (as `inflow_jax.gates.gate_stream`): m_t = window
once t + 1 >= window; while the window fills, the largest power of two <= t + 1 (the first image is
tested together with the second: a batch test needs 2 images). With a conformal gate, each image is
also tested by its own conformal p-value (a = 0 when p(x_t) < level). So no image passes untested
while the window fills; `tested_by` says what tested each one. Why powers of two: every window size
compiles its own test, and log2(window) sizes cost seconds where window - 1 sizes cost minutes. Full
windows of the paper's gate go through the jitted `gate_stream` (identical p-values, one pass).
"""

from typing import Dict, Optional

import jax
import numpy as np

from inflow_jax.detector.gate import gate_batches
from inflow_jax.gates import gate_stream
from inflow_jax.model.density import make_sharded_score_fn, scores_from_terms


def window_bounds(t: int, window: int, n: int):
  """(lo, hi): the images t's window holds, x[lo:hi] (module docstring); n >= 2 images."""
  if t + 1 >= window:
    return t - window + 1, t + 1
  if t == 0:
    return 0, 2
  size = 1 << int(np.floor(np.log2(t + 1)))
  return t - size + 1, t + 1


def _window_p_values(detector, x: np.ndarray, window: int, key, image_p) -> np.ndarray:
  """(T,) the gate's p-value of each image's window (module docstring)."""
  n = len(x)
  p = np.empty(n)
  fast = detector.attention == "mmd" and n >= window
  first_loop = window - 1 if fast else n
  for t in range(first_loop):
    lo, hi = window_bounds(t, window, n)
    part = None if image_p is None else image_p[lo:hi]
    gate = gate_batches(detector, x[lo:hi], hi - lo, key, first_batch=t, image_p=part)
    p[t] = gate.p_value[0]
  if fast:
    p[first_loop:] = np.asarray(gate_stream(detector.mmd_state_, x, window, key).p_value)[
      first_loop:
    ]
  return p


def _tested_by(detector, x: np.ndarray, window: int) -> np.ndarray:
  sizes = [np.subtract(*window_bounds(t, window, len(x))[::-1]) for t in range(len(x))]
  if detector.conformal_state_ is None:
    return np.array([f"window of {m} images (a verdict per window)" for m in sizes])
  return np.array([f"its own p-value (window of {m} beside)" for m in sizes])


def score_stream(
  detector, x: np.ndarray, window: int, key: jax.Array, mesh: Optional[jax.sharding.Mesh]
) -> Dict[str, np.ndarray]:
  """Per image of preprocessed x (unchecked, >= 2 images): score, the window's p-value, the image's
  own p-value (NaN without a conformal gate), attention, the verdict and what tested it."""
  image_p = None
  if detector.conformal_state_ is not None:
    image_p = detector.image_p_values(x, preprocessed=True)
  p_window = _window_p_values(detector, x, window, key, image_p)
  attention = (p_window >= detector.level).astype(np.float32)
  if image_p is not None:
    attention *= (image_p >= detector.level).astype(np.float32)
  if mesh is None:
    score_fn = lambda xb, a: np.asarray(detector._score_fn(xb, a))  # noqa: SLF001
  else:
    score_fn = make_sharded_score_fn(detector.model, detector.variables, detector.convention, mesh)
  scores = np.concatenate(
    [score_fn(x[i : i + window], attention[i : i + window]) for i in range(0, len(x), window)]
  )
  if image_p is not None:  # as `score_batches`: the flagged images' scores at a = 0
    at_zero = scores_from_terms(
      np.sum(np.square(x, dtype=np.float64), axis=(1, 2, 3)), 0.0, x[0].size, detector.convention
    )
    scores = np.where(attention == 1.0, scores, at_zero).astype(np.float32)
  return {
    "index": np.arange(len(x)),
    "score": scores,
    "batch_p_value": p_window,
    "image_p_value": np.full(len(x), np.nan) if image_p is None else image_p,
    "attention": attention,
    "is_ood": detector.decide(attention, scores, image_p),
    "batch_is_ood": (p_window < detector.level).astype(np.int64),
    "tested_by": _tested_by(detector, x, window),
  }
