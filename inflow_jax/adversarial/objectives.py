"""Objectives of the adaptive attacks on the InFlow detector, each maximised by `attacks.pgd`:

`LowerScore(score_fn)`:  -score(x) per image; with `make_score_fn(..., 'nll')` at a = 1 this is
                         the flow log-likelihood (bits/dim, up to a constant), so PGD raises
                         log p(x).
`LowerMMD()`:            -MMD^2(x, reference) of the whole batch, `loss_args=(mmd_state,)`: the
                         batch moves towards passing the attention test (a = 1).
`LowerMeanShift()`:      -T(x) of the whole batch, the combined gate's mean-shift statistic
                         (`inflow_jax.gates.mean_shift`), `loss_args=(mean_shift_state,)`.
`LowerImageScore(model)`: -s(x) per image, the conformal attention's per-image score
                         (`inflow_jax.gates`), `loss_args=(variables, density, complexity)`: the
                         image moves towards a large conformal p-value. The PNG lengths are not
                         differentiable; they are held at the clean image's values during the ascent
                         (BPDA, Athalye et al. 2018) and recomputed when the result is scored.
`LowerImageScoreSurrogate(model)`: the same score with the PNG lengths replaced by their
                         differentiable surrogate (`complexity_surrogate`), `loss_args=(variables,
                         density, coefficients)`: the ascent also keeps the image compressible.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from inflow_jax.adversarial.complexity_surrogate import surrogate_complexity_bits
from inflow_jax.gates.density import density_scores
from inflow_jax.gates.features import scale_bits
from inflow_jax.gates.mean_shift import MeanShiftState, batch_statistic
from inflow_jax.gates.mmd import MMDState, mmd2_embedded
from inflow_jax.model import InFlow


@dataclasses.dataclass(frozen=True)
class LowerScore:
  """Objective -score_fn(x, attention) (B,): the attack lowers a detector's OOD score.

  `score_fn` comes from `inflow_jax.model.density.make_score_fn` (traceable; higher = more OOD).
  With the 'nll' convention and attention 1 the objective is log p(x) / (D log 2) + const: the
  log-likelihood of the ordinary (a = 1) flow. Hashable by the identity of `score_fn`: build one
  per scored model.
  """

  score_fn: Callable[..., jax.Array]
  attention: float = 1.0

  def __call__(self, x: jax.Array) -> jax.Array:
    return -self.score_fn(x, self.attention)


def batch_mmd2(state: MMDState, x: jax.Array) -> jax.Array:
  """The attention test's unbiased MMD^2 between the images x (m, H, W, C) and the fitted
  reference: `mmd2_embedded(state, embed(x))`, differentiable in x; equals
  `mmd_test(state, x).mmd2`."""
  return mmd2_embedded(state, state.embed(x))


@dataclasses.dataclass(frozen=True)
class LowerMMD:
  """Objective -MMD^2(x, reference) (a scalar over the batch): `loss_args=(mmd_state,)`.

  The attention's test rejects (a = 0) when MMD^2 is large; lowering it makes an OOD batch pass as
  in-distribution, so the flow scores it with a = 1.
  """

  def __call__(self, x: jax.Array, state: MMDState) -> jax.Array:
    return -batch_mmd2(state, x)


@dataclasses.dataclass(frozen=True)
class LowerMeanShift:
  """Objective -T(x) (a scalar over the batch) of the mean-shift test, `loss_args=(state,)`: the
  batch's whitened pixel mean moves towards the in-distribution images', so the test passes it."""

  def __call__(self, x: jax.Array, state: MeanShiftState) -> jax.Array:
    return -batch_statistic(state, x)


def image_score(model, x: jax.Array, variables, density, complexity: jax.Array) -> jax.Array:
  """(B,) the conformal per-image score of x from the flow's scale bits and the given (B, 2) PNG
  bits/dim (traceable)."""
  stats = model.apply(variables, x, 1.0, method=InFlow.statistics)
  dims = x.shape[1] * x.shape[2] * x.shape[3]
  return density_scores(density, jnp.concatenate([scale_bits(stats, dims), complexity], axis=1))


@dataclasses.dataclass(frozen=True)
class LowerImageScore:
  """Objective -s(x) (B,) of the conformal per-image score, `loss_args=(variables, density,
  complexity)` with complexity (B, 2) the clean images' `inflow_jax.gates.features.complexity_bits`
  (held fixed: see the module docstring)."""

  model: Any

  def __call__(self, x: jax.Array, variables, density, complexity: jax.Array) -> jax.Array:
    return -image_score(self.model, x, variables, density, complexity)


@dataclasses.dataclass(frozen=True)
class LowerImageScoreSurrogate:
  """Objective -s(x) (B,) with the PNG bits/dim of x replaced by
  `surrogate_complexity_bits(coefficients, x)`, `loss_args=(variables, density, coefficients)`."""

  model: Any

  def __call__(self, x: jax.Array, variables, density, coefficients: jax.Array) -> jax.Array:
    return -image_score(
      self.model, x, variables, density, surrogate_complexity_bits(coefficients, x)
    )
