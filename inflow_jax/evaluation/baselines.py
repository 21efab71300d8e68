"""The baselines InFlow is compared with: the typicality test and the input-complexity score.

The third baseline, the plain flow likelihood, is `scoring.make_score_fn(..., convention='nll')`
with a = 1 everywhere.

- **Typicality test** (Nalisnick et al. 2019, "Detecting out-of-distribution inputs to deep
  generative models using typicality"): a batch of M images is atypical when its mean negative
  log-likelihood is far from the model's entropy estimate,
  `eps_hat = | mean_{x in batch} NLL(x) - H_hat |`,  flagged when `eps_hat > eps_M`,
  with `H_hat` the mean NLL of held-out in-distribution images and `eps_M` the (1 - level) quantile
  of `eps_hat` over `n_bootstrap` batches of M images drawn with replacement from those held-out
  images.
- **Input complexity** (Serra et al. 2020, "Input complexity and out-of-distribution detection with
  likelihood-based generative models"): `S(x) = NLL(x) - L(x)` in bits per dimension, where `L(x)`
  is the length of the losslessly compressed image (PNG, PIL `compress_level=9`) in bits per
  dimension. Higher S means more OOD.
"""

import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np

from inflow_jax.data.png import png_bits_per_dim


def _check_nll(nll, name: str) -> np.ndarray:
  nll = np.asarray(nll, dtype=np.float64)
  if nll.ndim != 1 or nll.size == 0:
    raise ValueError(
      f"{name} must be a non-empty 1-D array of per-image NLLs, got shape {nll.shape}"
    )
  if not np.all(np.isfinite(nll)):
    raise ValueError(f"{name} contains NaN or infinite values")
  return nll


@dataclasses.dataclass(frozen=True)
class TypicalityState:
  """entropy: H_hat; thresholds: {batch size M: eps_M}; level: the test's false-alarm level."""

  entropy: float
  thresholds: Dict[int, float]
  level: float


def fit_typicality(
  nll_heldout,
  batch_sizes: Sequence[int],
  *,
  level: float = 0.05,
  n_bootstrap: int = 1000,
  seed: int = 0,
) -> TypicalityState:
  """Entropy estimate and bootstrap thresholds eps_M from held-out in-distribution NLLs.

  Args:
    nll_heldout: (N,) NLLs (any consistent unit, e.g. bits/dim) of in-distribution images that
      are not in the test set.
    batch_sizes: the batch sizes M the test will be used at.
    level: false-alarm level; eps_M is the (1 - level) quantile of the bootstrapped eps_hat.
    n_bootstrap: number of bootstrap batches per batch size.
    seed: seed of the bootstrap draws.
  """
  nll = _check_nll(nll_heldout, "nll_heldout")
  if not 0 < level < 1:
    raise ValueError(f"level must lie in (0, 1), got {level}")
  if n_bootstrap < 1:
    raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
  entropy = float(nll.mean())
  rng = np.random.default_rng(seed)
  thresholds = {}
  for m in batch_sizes:
    m = int(m)
    if m < 1:
      raise ValueError(f"batch sizes must be >= 1, got {m}")
    draws = rng.integers(0, nll.size, size=(n_bootstrap, m))
    eps = np.abs(nll[draws].mean(axis=1) - entropy)
    thresholds[m] = float(np.quantile(eps, 1.0 - level))
  return TypicalityState(entropy=entropy, thresholds=thresholds, level=float(level))


def typicality_statistic(state: TypicalityState, nll_batch) -> float:
  """eps_hat = |mean(nll_batch) - H_hat|."""
  nll = _check_nll(nll_batch, "nll_batch")
  return float(abs(nll.mean() - state.entropy))


def typicality_test(state: TypicalityState, nll_batch) -> bool:
  """True (flagged as OOD) when eps_hat exceeds the bootstrap threshold for this batch size."""
  nll = _check_nll(nll_batch, "nll_batch")
  if nll.size not in state.thresholds:
    raise ValueError(
      f"no typicality threshold for batch size {nll.size}; fitted sizes: {sorted(state.thresholds)}"
    )
  return typicality_statistic(state, nll) > state.thresholds[nll.size]


def input_complexity_score(nll_bpd, x, *, png_bpd: Optional[np.ndarray] = None) -> np.ndarray:
  """S(x) = NLL(x) - L(x), both in bits per dimension; higher = more OOD.

  Args:
    nll_bpd: (N,) the flow's NLL in bits/dim (`convention='nll'`, a = 1).
    x: the (N, H, W, C) images, float in [0, 1].
    png_bpd: precomputed `png_bits_per_dim(x)`, to skip recompressing.
  """
  nll = _check_nll(nll_bpd, "nll_bpd")
  complexity = png_bits_per_dim(x) if png_bpd is None else _check_nll(png_bpd, "png_bpd")
  if complexity.shape != nll.shape:
    raise ValueError(f"nll_bpd has shape {nll.shape} but the images give {complexity.shape}")
  return nll - complexity
