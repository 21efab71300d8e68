"""Maximum-likelihood training of a `FeatureFlow` on a frozen encoder's features.

The features f (N, D) are standardised with the training set's per-dimension mean and standard
deviation, u = (f - mean) / std (a fixed affine map: it shifts every NLL by the same
sum(log std), so rankings and p-values are unchanged, and it puts every dimension on the scale the
flow's initialisation expects). The flow minimises the mean NLL per dimension,

  L(theta) = (1 / (B D)) sum_b [ -log N(z_b; 0, I) - log|det dz_b/du_b| ],  z = flow(u), a = 1,

with the project's optimiser and data-parallel step (`training.step.fit_batches`) over shuffled
mini-batches, epoch e's order a pure function of (seed, e).
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inflow_jax.model.feature_flow import FeatureFlow, check_features
from inflow_jax.model.feature_flow import nll as feature_nll
from inflow_jax.training.step import epoch_seed, fit_batches, host_copy
from inflow_jax.utils.batching import fixed_size

# the feature flow's default shape (4 two-sided blocks of width 256: not tuned yet)
DEFAULT_FEATURE_FLOW = FeatureFlow(num_blocks=4, width=256, depth=2)


class FittedFeatureFlow(NamedTuple):
  """A trained feature flow and its standardisation: nll(f) = flow NLL of (f - mean) / std."""

  model: FeatureFlow
  variables: Any
  mean: np.ndarray  # (D,)
  std: np.ndarray  # (D,)


@dataclasses.dataclass(frozen=True)
class FeatureFlowLoss:
  """The mean NLL per dimension of a batch of standardised features (hashable by value)."""

  model: FeatureFlow

  def __call__(self, variables, u: jax.Array) -> jax.Array:
    return jnp.mean(feature_nll(self.model, variables, u, 1.0, per_dimension=True))


def default_train_config(num_steps: int) -> ml_collections.ConfigDict:
  """Adam (lr 1e-3, cosine decay to 0 after 100 warm-up steps), no weight decay."""
  return ml_collections.ConfigDict(
    dict(
      optimizer="adam",
      learning_rate=1e-3,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.0,
      num_steps=num_steps,
      warmup_steps=min(100, num_steps // 10),
      schedule="cosine",
      decay_steps=0,
      clip_norm=10.0,
      ema_decay=None,
      skip_factor=None,
    )
  )


def _batches(u: np.ndarray, batch_size: int, num_epochs: int, seed: int):
  for epoch in range(num_epochs):
    order = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(u))
    for i in range(len(u) // batch_size):
      yield u[order[i * batch_size : (i + 1) * batch_size]]


def fit_feature_flow(
  features,
  model: FeatureFlow = DEFAULT_FEATURE_FLOW,
  *,
  num_epochs: int = 20,
  batch_size: int = 256,
  seed: int = 0,
) -> FittedFeatureFlow:
  """Trains `model` on features (N, D) float (module docstring); N >= batch_size."""
  f = check_features(features, name="features").astype(np.float64)
  if len(f) < batch_size:
    raise ValueError(f"fit_feature_flow needs >= batch_size={batch_size} vectors, got {len(f)}")
  mean, std = f.mean(0), f.std(0) + 1e-6
  u = ((f - mean) / std).astype(np.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(seed), u[:batch_size], 1.0)
  num_steps = num_epochs * (len(u) // batch_size)
  trained, _ = fit_batches(
    FeatureFlowLoss(model),
    variables,
    _batches(u, batch_size, num_epochs, seed),
    default_train_config(num_steps),
    images=False,
  )
  return FittedFeatureFlow(
    model, host_copy(trained), mean.astype(np.float32), std.astype(np.float32)
  )


@functools.lru_cache(maxsize=8)
def _jitted_nll(model: FeatureFlow):
  return jax.jit(lambda variables, u: feature_nll(model, variables, u, 1.0, per_dimension=True))


def feature_flow_nll(fitted: FittedFeatureFlow, features, batch_size: int = 250) -> np.ndarray:
  """(N,) NLL per dimension (nats) of features (N, D) under the fitted flow; higher = less
  typical."""
  u = (np.asarray(features, np.float32) - fitted.mean) / fitted.std
  nll = _jitted_nll(fitted.model)
  return fixed_size(lambda ub: nll(fitted.variables, ub), u, batch_size)
