"""The density model of the per-image statistics: bagged Gaussian mixtures on standardised
features.

    s(x) = -log p(f(x)),  p(f) = (1/B) sum_b sum_k w_bk N((f - mu) / sd; m_bk, S_bk)
    (higher = more OOD)

Each of the B mixtures is fitted by scikit-learn's `GaussianMixture` (EM, full covariances,
`reg_covar` added to each diagonal) on a bootstrap resample of the in-distribution features; their
average is one mixture of B*K components, so scoring is one jax.numpy log-sum-exp over the stored
Cholesky factors (traceable, so attacks can differentiate it), and a fitted density is a few arrays
that save and load without sklearn objects. K is chosen without looking at any OOD data
(`n_components="auto"`): the candidate of COMPONENT_CANDIDATES whose mixture, fitted on a seeded 4/5
of the features, gives the other 1/5 the highest mean log-likelihood.

Why bagged mixtures with K chosen by held-out likelihood: the held-out log-likelihood of
in-distribution features keeps rising up to a dozen or more components (more with more images), the
tail the conformal p-values need follows it, and bagging averages out EM's dependence on the fitting
set (measurements: docs/results.md).
"""

from typing import Any, Dict, Union

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.mixture import GaussianMixture

DENSITY_ARRAYS = ("mean", "scale", "log_weights", "means", "precisions_cholesky")
COMPONENT_CANDIDATES = (1, 2, 4, 8, 12, 16, 24)
MIN_PER_COMPONENT = 10  # a mixture is fitted on more than this many images per component


def check_components(n_components: Union[int, str]) -> Union[int, str]:
  """n_components as given when it is "auto" or a positive int, else ValueError."""
  if n_components == "auto":
    return n_components
  if isinstance(n_components, (bool, str)) or int(n_components) != n_components or n_components < 1:
    raise ValueError(f"n_components must be a positive int or 'auto', got {n_components!r}")
  return int(n_components)


def min_density_images(n_components: Union[int, str]) -> int:
  """The fewest images a density with `n_components` (an int or "auto") can be fitted on."""
  if n_components != "auto":
    return MIN_PER_COMPONENT * n_components + 1
  n = MIN_PER_COMPONENT * COMPONENT_CANDIDATES[0] + 1  # choose_components fits on n - n // 5
  while n - n // 5 <= MIN_PER_COMPONENT * COMPONENT_CANDIDATES[0]:
    n += 1
  return n


def _mixture(u: np.ndarray, n_components: int, seed: int, reg_covar: float) -> GaussianMixture:
  return GaussianMixture(
    n_components, covariance_type="full", reg_covar=reg_covar, random_state=seed
  ).fit(u)


def choose_components(u: np.ndarray, seed: int = 0, reg_covar: float = 1e-3) -> int:
  """The K of COMPONENT_CANDIDATES (more than MIN_PER_COMPONENT points each in the fitting part)
  maximising the mean log-likelihood of a seeded held-out 1/5 of the rows of u under a K-mixture
  fitted on the other 4/5."""
  order = np.random.default_rng([seed, 2]).permutation(len(u))
  held_out, fit = u[order[: len(u) // 5]], u[order[len(u) // 5 :]]
  candidates = [k for k in COMPONENT_CANDIDATES if len(fit) > MIN_PER_COMPONENT * k]
  log_likelihoods = [_mixture(fit, k, seed, reg_covar).score(held_out) for k in candidates]
  return candidates[int(np.argmax(log_likelihoods))]


def fit_density(
  features: np.ndarray,
  n_components: Union[int, str] = "auto",
  seed: int = 0,
  reg_covar: float = 1e-3,
  n_bags: int = 8,
) -> Dict[str, np.ndarray]:
  """The arrays (DENSITY_ARRAYS) of the average of `n_bags` K-component mixtures, each fitted on a
  seeded bootstrap resample of `features` (n, d) (n_bags = 1: one mixture on the features
  themselves); K = n_components, or `choose_components` for "auto". Needs
  n >= min_density_images(n_components)."""
  mean, scale = features.mean(axis=0), features.std(axis=0)
  scale = np.where(scale > 0, scale, 1.0)
  u = (features - mean) / scale
  k = choose_components(u, seed, reg_covar) if n_components == "auto" else n_components
  rng = np.random.default_rng([seed, 3])
  mixtures = [
    _mixture(u if n_bags == 1 else u[rng.integers(0, len(u), len(u))], k, seed + b, reg_covar)
    for b in range(n_bags)
  ]
  arrays = {
    "mean": mean,
    "scale": scale,
    "log_weights": np.concatenate([np.log(m.weights_) for m in mixtures]) - np.log(n_bags),
    "means": np.concatenate([m.means_ for m in mixtures]),
    "precisions_cholesky": np.concatenate([m.precisions_cholesky_ for m in mixtures]),
  }
  return {name: np.asarray(v, np.float32) for name, v in arrays.items()}


def density_scores(density: Dict[str, Any], features) -> jax.Array:
  """(n,) s = -log p(f) of `features` (n, d) under a fitted mixture (log-density of the standardised
  features, so s is shift-invariant but not the density of f itself); float32, traceable."""
  u = (jnp.asarray(features, jnp.float32) - density["mean"]) / density["scale"]
  d = u.shape[1]
  chol = jnp.asarray(
    density["precisions_cholesky"], jnp.float32
  )  # (K, d, d): precision = chol chol^T
  y = jnp.einsum("nd,kde->nke", u, chol) - jnp.einsum("kd,kde->ke", density["means"], chol)[None]
  log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)  # (K,)
  log_prob = -0.5 * jnp.sum(y * y, axis=2) - 0.5 * d * np.log(2 * np.pi) + log_det[None]
  return -jax.scipy.special.logsumexp(log_prob + density["log_weights"][None], axis=1)
