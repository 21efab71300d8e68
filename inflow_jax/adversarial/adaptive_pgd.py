"""The PGD runs of the adaptive attacks: one target's objective ascended over a set x.

The per-image objectives (the flow likelihood, the conformal score) are attacked in chunks of
`attack.batch_size`, chunk i's random start drawn from fold_in(key, i); the batch statistics (the
MMD^2, the mean-shift T) over exactly the batches the evaluation tests (`batching.batch_starts`),
batch i from fold_in(key, i). With the detector's JPEG round trip g every objective is taken at
g(x) with the straight-through derivative (`preprocessing.ThroughJPEG`, BPDA) and the result is
g(x_adv): the attacker's images take the pipeline every other set took.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.adversarial.attacks import pgd
from inflow_jax.adversarial.objectives import (
  LowerImageScore,
  LowerImageScoreSurrogate,
  LowerMeanShift,
  LowerMMD,
  LowerScore,
)
from inflow_jax.adversarial.preprocessing import ThroughJPEG
from inflow_jax.adversarial.settings import adaptive_steps
from inflow_jax.adversarial.two_view_objective import LowerTwoViewScore, two_view_arrays
from inflow_jax.data.jpeg import jpeg_round_trip
from inflow_jax.gates.features import complexity_bits
from inflow_jax.model.density import exact_log_det
from inflow_jax.utils.batching import batch_starts, batched


@dataclasses.dataclass(frozen=True, eq=False)
class AttackedDetector:
  """The detector the adaptive attacks face, and their settings.

  model, variables: the InFlow flow; nll_fn: its 'nll' score (`make_score_fn`), built once so that
  `LowerScore(nll_fn)` compiles once; mmd_state: the attention test; conformal_state: the conformal
  attention or None; batch_size: the evaluation's test batch size; attack_config:
  `adversarial.attack`; jpeg_quality: the detector's JPEG round trip, or None.
  """

  model: Any
  variables: Any
  mmd_state: Any
  conformal_state: Any
  nll_fn: Callable[..., jax.Array]
  batch_size: int
  attack_config: Any
  jpeg_quality: Optional[int] = None


def adaptive_images(
  detector: AttackedDetector, target: str, x: np.ndarray, key, coefficients=None
) -> np.ndarray:
  """x perturbed by PGD against `target` (one of `settings.ADAPTIVE_TARGETS`) at
  `adaptive_epsilon`; `coefficients`: the fitted PNG surrogate of 'conformal_surrogate'."""
  config, quality = detector.attack_config, detector.jpeg_quality
  epsilon = float(config.adaptive_epsilon)
  num_steps, step_size = adaptive_steps(config)

  def run(objective, xb, i, args=()):
    """PGD on the chunk (or test batch) i of x."""
    return pgd(
      objective if quality is None else ThroughJPEG(objective, int(quality)),
      xb,
      epsilon,
      step_size=step_size,
      num_steps=num_steps,
      random_start=config.random_start,
      key=jax.random.fold_in(key, i),
      loss_args=args,
    )

  if target in ("mmd", "mean_shift"):
    x_adv = _per_test_batch(detector, target, x, run)
  else:
    x_adv = _per_image(detector, target, x, run, coefficients)
  return x_adv if quality is None else jpeg_round_trip(x_adv, int(quality))


def _per_image(detector: AttackedDetector, target: str, x, run, coefficients) -> np.ndarray:
  """`run(objective, chunk, index, loss_args)` over the chunks of x, for the per-image targets
  'log_likelihood', 'conformal', 'conformal_surrogate' and 'two_view'."""
  chunk = int(detector.attack_config.batch_size)
  if target == "log_likelihood":
    return batched(lambda i, xb: run(LowerScore(detector.nll_fn), xb, i), x, chunk, with_index=True)
  state = detector.conformal_state
  density = jax.tree.map(jnp.asarray, state.density)
  log_det = exact_log_det(detector.model)
  views = ()  # the two-view objective's extra argument
  if target == "two_view":  # BPDA: the clean chunk's PNG lengths
    objective = LowerTwoViewScore.for_semantic(log_det, state.semantic)
    complexity, views = complexity_bits, (two_view_arrays(state),)
  elif target == "conformal":  # BPDA: the clean chunk's PNG lengths
    objective, complexity = LowerImageScore(log_det), complexity_bits
  else:  # the fitted surrogate's coefficients
    objective, complexity = LowerImageScoreSurrogate(log_det), lambda _: coefficients
  return batched(
    lambda i, xb: run(
      objective,
      xb,
      i,
      (detector.variables, density, jnp.asarray(complexity(xb), jnp.float32), *views),
    ),
    x,
    chunk,
    with_index=True,
  )


def _per_test_batch(detector: AttackedDetector, target: str, x, run) -> np.ndarray:
  """`run(objective, batch, index, loss_args)` over the test batches of x, for the batch
  statistics 'mmd' and 'mean_shift'."""
  objective, args = (
    (LowerMMD(), (detector.mmd_state,))
    if target == "mmd"
    else (LowerMeanShift(), (detector.conformal_state.mean_shift,))
  )
  starts = batch_starts(len(x), detector.batch_size)
  return np.concatenate(
    [
      np.asarray(run(objective, x[lo:hi], i, args))
      for i, (lo, hi) in enumerate(zip(starts[:-1], starts[1:]))
    ]
  )
