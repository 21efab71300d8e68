"""OpenOOD v1.5 post-hoc baselines on a classifier's logits l(x) and penultimate features f(x).

Convention: every function returns per-image scores with **higher = more OOD**. OpenOOD's
postprocessors return a confidence (higher = more in-distribution): each score here is the NEGATIVE
of OpenOOD's `conf` (file in brackets, `openood/postprocessors/`), so AUROC/FPR95 are unchanged.

- **MSP** (Hendrycks & Gimpel 2017; `base_postprocessor.py`): `s = -max_c softmax(l)_c`.
- **Energy / EBO** (Liu et al. 2020; `ebo_postprocessor.py`, `temperature: 1`):
  `s = -T logsumexp_c(l_c / T)`.
- **MDS** (Lee et al. 2018, without input preprocessing; `mds_postprocessor.py`): class means
  `mu_c` of the training features (ground-truth labels), one shared covariance
  `Sigma = (1/N) sum_i (f_i - mu_{y_i})(f_i - mu_{y_i})^T` (sklearn `EmpiricalCovariance` of the
  class-centred features), `P = pinv(Sigma)`; `s = min_c (f - mu_c)^T P (f - mu_c)`, the SQUARED
  Mahalanobis distance, as in OpenOOD and the paper (float64 here; OpenOOD fits in float32).
- **KNN** (Sun et al. 2022; `knn_postprocessor.py`, `K: 50`): `z = f / ||f||`; `s = ||z - z_(k)||`,
  the Euclidean distance to the k-th nearest normalised training feature (exact search). OpenOOD's
  faiss `IndexFlatL2` returns the squared distance: same ranking, the paper's distance is kept.
- **ViM** (Wang et al. 2022; `vim_postprocessor.py`): with the linear head `l = f W^T + b`, origin
  `u = -pinv(W) b`; `R` = the eigenvectors of `(1/N) sum_i (f_i - u)(f_i - u)^T` (second moment
  about u, not about the mean) beyond the `dim` largest eigenvalues; residual
  `r(f) = ||(f - u) R||`; `alpha = sum_i max_c l_c(f_i) / sum_i r(f_i)` over the training features;
  `s = alpha r(f) - logsumexp_c l_c(f)`. OpenOOD's conf is `-alpha r + logsumexp l`; the paper's
  score, the softmax probability of the virtual logit, is `sigmoid(s)`: the same ranking.

OpenOOD v1.5's evaluator may re-pick KNN's K and ViM's dim on its OOD validation split (APS mode);
the defaults here are its config's fixed values. Why: the classifier-based rows the report shows
beside InFlow's, computed exactly as the OOD literature's reference benchmark computes them.
"""

from typing import NamedTuple, Optional

import numpy as np
from scipy import linalg as sp_linalg
from scipy.special import logsumexp

from inflow_jax.utils.checks import check_integer

KNN_DEFAULT_K = 50


def _check_matrix(x, name: str, *, min_rows: int = 1, cols: Optional[int] = None) -> np.ndarray:
  """`x` as a finite float64 (N, D) array with N >= min_rows (and D == cols when given)."""
  x = np.asarray(x)
  if x.dtype.kind not in "biuf":
    raise TypeError(f"{name} must be a real array, got dtype {x.dtype}")
  x = x.astype(np.float64)
  if x.ndim != 2 or x.shape[1] == 0:
    raise ValueError(f"{name} must be a 2-D (N, D) array with D >= 1, got shape {x.shape}")
  if cols is not None and x.shape[1] != cols:
    raise ValueError(f"{name} must have {cols} columns (the fitted size), got shape {x.shape}")
  if x.shape[0] < min_rows:
    raise ValueError(f"{name} needs at least {min_rows} row(s), got {x.shape[0]}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contains NaN or infinite values")
  return x


def msp_scores(logits) -> np.ndarray:
  """(N, C) logits -> (N,) `-max_c softmax(l)_c`: a flat softmax is unconfident, hence OOD."""
  logits = _check_matrix(logits, "logits")
  shifted = logits - logits.max(axis=1, keepdims=True)
  return -1.0 / np.exp(shifted).sum(axis=1)  # max softmax = exp(0) / sum_c exp(l_c - max l)


def energy_scores(logits, temperature: float = 1.0) -> np.ndarray:
  """(N, C) logits -> (N,) `-T logsumexp_c(l_c / T)`: the free energy, low density = OOD."""
  logits = _check_matrix(logits, "logits")
  if not (np.isfinite(temperature) and temperature > 0):
    raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
  return -temperature * logsumexp(logits / temperature, axis=1)


class MDSState(NamedTuple):
  """means: (C, D) class means; precision: (D, D) pinv of the shared (tied) covariance."""

  means: np.ndarray
  precision: np.ndarray


def fit_mds(features_train, labels_train, num_classes: Optional[int] = None) -> MDSState:
  """Class means and the shared covariance's pseudo-inverse from labelled training features.

  Args:
    features_train: (N, D) penultimate features of the training images.
    labels_train: (N,) integer labels in [0, num_classes); every class needs an image.
    num_classes: C; None: max(labels_train) + 1.
  """
  features = _check_matrix(features_train, "features_train", min_rows=2)
  labels = np.asarray(labels_train)
  if labels.dtype.kind not in "iu" or labels.shape != (features.shape[0],):
    raise ValueError(
      f"labels_train must be {features.shape[0]} integer labels (one per row of features_train), "
      f"got shape {labels.shape} and dtype {labels.dtype}"
    )
  if num_classes is None:
    num_classes = int(labels.max()) + 1
  num_classes = check_integer(num_classes, "num_classes", 1)
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(
      f"labels_train must lie in [0, {num_classes}), got values {labels.min()} to {labels.max()}"
    )
  counts = np.bincount(labels, minlength=num_classes)
  if np.any(counts == 0):
    raise ValueError(f"labels_train has no image of classes {np.flatnonzero(counts == 0)}")
  if features.shape[0] <= num_classes:
    raise ValueError(
      f"features_train needs more than num_classes = {num_classes} rows for a covariance"
    )
  means = np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])
  centred = features - means[labels]
  covariance = centred.T @ centred / features.shape[0]
  return MDSState(means=means, precision=sp_linalg.pinvh(covariance))


def mds_scores(state: MDSState, features) -> np.ndarray:
  """(N, D) features -> (N,) `min_c (f - mu_c)^T P (f - mu_c)`: far from every class = OOD."""
  features = _check_matrix(features, "features", cols=state.means.shape[1])
  best = np.full(features.shape[0], np.inf)
  for mean in state.means:
    diff = features - mean
    best = np.minimum(best, np.sum((diff @ state.precision) * diff, axis=1))
  return best


class KNNState(NamedTuple):
  """bank: (N, D) L2-normalised training features; k: the neighbour whose distance is the score."""

  bank: np.ndarray
  k: int


def _normalise(features: np.ndarray) -> np.ndarray:
  """Rows divided by their L2 norm; an all-zero row stays zero (OpenOOD's gives NaN there)."""
  norms = np.linalg.norm(features, axis=1, keepdims=True)
  return features / np.maximum(norms, 1e-12)


def fit_knn(features_train, k: int = KNN_DEFAULT_K) -> KNNState:
  """The normalised training features as the neighbour bank (k = 50: OpenOOD's `knn.yml`).

  Args:
    features_train: (N, D) penultimate features of the training images, N >= k.
    k: which nearest neighbour's distance scores an image.
  """
  k = check_integer(k, "k", 1)
  features = _check_matrix(features_train, "features_train")
  if features.shape[0] < k:
    raise ValueError(f"features_train needs at least k = {k} rows, got {features.shape[0]}")
  return KNNState(bank=_normalise(features), k=k)


def knn_scores(state: KNNState, features, *, block_size: int = 1024) -> np.ndarray:
  """(N, D) features -> (N,) `||z - z_(k)||`, z = f / ||f||: a sparse neighbourhood = OOD.

  Exact: the squared distances `|z|^2 + |b|^2 - 2 z.b` to the whole bank, `block_size` queries at
  a time.
  """
  block_size = check_integer(block_size, "block_size", 1)
  queries = _normalise(_check_matrix(features, "features", cols=state.bank.shape[1]))
  bank_sq = np.sum(state.bank**2, axis=1)
  scores = np.empty(queries.shape[0])
  for start in range(0, queries.shape[0], block_size):
    q = queries[start : start + block_size]
    sq = np.sum(q**2, axis=1)[:, None] + bank_sq[None, :] - 2.0 * q @ state.bank.T
    kth = np.partition(sq, state.k - 1, axis=1)[:, state.k - 1]
    scores[start : start + q.shape[0]] = np.sqrt(np.maximum(kth, 0.0))
  return scores


class ViMState(NamedTuple):
  """kernel (D, C), bias (C,): the head; origin u (D,); residual_basis R (D, D - dim); alpha."""

  kernel: np.ndarray
  bias: np.ndarray
  origin: np.ndarray
  residual_basis: np.ndarray
  alpha: float


def vim_default_dim(num_features: int) -> int:
  """Principal dimension: 1000 if D >= 2048 and 512 if D >= 768 (the ViM authors' benchmark.py),
  else D // 2 (OpenOOD: 256 for ResNet-18's 512-d features, 42 for LeNet's 84)."""
  num_features = check_integer(num_features, "num_features", 2)
  if num_features >= 2048:
    return 1000
  return 512 if num_features >= 768 else num_features // 2


def _check_head(kernel, bias, num_features: int):
  """The head as float64 (D, C) kernel and (C,) bias, finite, matching the features."""
  kernel = _check_matrix(kernel, "kernel")
  if kernel.shape[0] != num_features:
    raise ValueError(
      f"kernel must have shape (D, C) = ({num_features}, C) (logits = f @ kernel + bias, Flax "
      f"Dense layout; pass W.T for a (C, D) weight), got {kernel.shape}"
    )
  bias = np.asarray(bias, dtype=np.float64)
  if bias.shape != (kernel.shape[1],) or not np.all(np.isfinite(bias)):
    raise ValueError(f"bias must be {kernel.shape[1]} finite values, got shape {bias.shape}")
  return kernel, bias


def linear_head(features, logits, *, tolerance: float = 1e-3):
  """(kernel (D, C), bias (C,)) with logits = features @ kernel + bias, by least squares on pairs
  of a network's outputs: the head ViM needs, as the network computes it (a scale on the logits,
  such as `ClassifierEncoder.logit_scale`, included), for any encoder whose logits are linear in
  its features. Raises ValueError when they are not (relative residual above `tolerance`), or
  when the features do not determine the head (N <= D)."""
  features = _check_matrix(features, "features", min_rows=2)
  logits = _check_matrix(logits, "logits")
  if logits.shape[0] != features.shape[0]:
    raise ValueError(
      f"features and logits must have one row per image each, got {features.shape[0]} and "
      f"{logits.shape[0]}"
    )
  if features.shape[0] <= features.shape[1]:
    raise ValueError(
      f"a linear head of {features.shape[1]} features needs more than {features.shape[1]} "
      f"images, got {features.shape[0]}"
    )
  design = np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)
  solution = np.linalg.lstsq(design, logits, rcond=None)[0]
  residual = np.linalg.norm(design @ solution - logits) / max(np.linalg.norm(logits), 1e-12)
  if residual > tolerance:
    raise ValueError(
      f"the logits are not a linear function of the features (relative residual {residual:.2g}): "
      "ViM needs a network whose last layer is linear"
    )
  return solution[:-1], solution[-1]


def fit_vim(features_train, kernel, bias, dim: Optional[int] = None) -> ViMState:
  """Origin, residual subspace and matching constant alpha from the training features.

  Args:
    features_train: (N, D) penultimate features of the training images, N > dim.
    kernel: (D, C) the last linear layer (logits = f @ kernel + bias), i.e. W^T.
    bias: (C,) its bias.
    dim: the principal dimension, 1 <= dim < D; None: `vim_default_dim(D)`.
  """
  features = _check_matrix(features_train, "features_train", min_rows=2)
  num_features = features.shape[1]
  kernel, bias = _check_head(kernel, bias, num_features)
  dim = vim_default_dim(num_features) if dim is None else check_integer(dim, "dim", 1)
  if dim >= num_features:
    raise ValueError(f"dim must be < D = {num_features} (no residual space), got {dim}")
  if features.shape[0] <= dim:
    raise ValueError(f"features_train needs more than dim = {dim} rows, got {features.shape[0]}")
  origin = -np.linalg.pinv(kernel.T) @ bias
  offset = features - origin
  _, eigenvectors = np.linalg.eigh(offset.T @ offset / features.shape[0])  # ascending eigenvalues
  residual_basis = eigenvectors[:, : num_features - dim]
  residual = np.linalg.norm(offset @ residual_basis, axis=1)
  if residual.sum() <= 1e-12 * np.linalg.norm(offset, axis=1).sum():
    raise ValueError(f"features_train lies in a {dim}-dimensional subspace: no residual to match")
  max_logits = (features @ kernel + bias).max(axis=1)
  alpha = float(max_logits.sum() / residual.sum())
  return ViMState(kernel, bias, origin, residual_basis, alpha)


def vim_scores(state: ViMState, features) -> np.ndarray:
  """(N, D) features -> (N,) `alpha ||(f - u) R|| - logsumexp(f @ kernel + bias)`."""
  features = _check_matrix(features, "features", cols=state.kernel.shape[0])
  residual = np.linalg.norm((features - state.origin) @ state.residual_basis, axis=1)
  return state.alpha * residual - logsumexp(features @ state.kernel + state.bias, axis=1)
