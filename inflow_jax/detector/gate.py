"""The gate: every test's p-value on each batch of a set, and the detector's decision from them.

The one place where the tests are run together and combined; the detector, its evaluation (the mixed
protocol) and the score mode all call `gate_batches`. For batches B_i = x[starts[i]:starts[i+1]]:

    p_mmd(B)        the paper's MMD permutation test against the reference (key fold_in(key, i))
    p_conformal(B)  the conformal batch test of the images' p-values p(x) (Cauchy, Fisher or Simes)
    p_mean_shift(B) the mean-shift test of the batch's whitened mean (when the state has one)
    p_combined(B)   weighted Bonferroni / Cauchy of p_conformal (weight 1/2) and the batch tests
                    (sharing the other 1/2), `inflow_jax.gates.combined_p_values`

and the gate's p-value is p_mmd ("mmd"), p_conformal ("conformal") or p_combined ("combined");
a = 0 where it is below the level. Why in one place: a gate assembled twice drifts apart.
"""

from typing import NamedTuple, Optional

import jax
import numpy as np

from inflow_jax import gates
from inflow_jax.gates.semantic import encoder_outputs
from inflow_jax.utils.batching import batch_starts


class GatePValues(NamedTuple):
  """Per batch (n_batches,): the gate's p-value and attention (1.0 passed, 0.0 flagged), each test's
  p-value (NaN where not run) and the combined gate's; per image (N,) with a conformal state, else
  None: the conformal p-values and the flow's score at a = 1 from the same pass."""

  p_value: np.ndarray
  attention: np.ndarray
  p_mmd: np.ndarray
  p_conformal: np.ndarray
  p_mean_shift: np.ndarray
  p_combined: np.ndarray
  image_p: Optional[np.ndarray]
  flow_score: Optional[np.ndarray]
  starts: np.ndarray


def gate_batches(
  detector,
  x: np.ndarray,
  batch_size: int,
  key: jax.Array,
  *,
  first_batch: int = 0,
  image_p: Optional[np.ndarray] = None,
) -> GatePValues:
  """Every test the fitted `detector` holds on each batch of preprocessed x (unchecked).

  Batches are `batch_starts(len(x), batch_size)`; batch i's tests use the keys of batch
  first_batch + i (x a slice of a larger set). image_p: the images' conformal p-values when the
  caller has them already (the flow is then not run). With the MMD test on the trained encoder's
  features, the encoder runs once for both tests. The MMD test needs 2 images: with
  batch_size 1 it is not run (NaN) and the combination leaves it out.
  """
  starts = np.arange(len(x) + 1) if batch_size == 1 else batch_starts(len(x), batch_size)
  n_batches = len(starts) - 1
  nan = np.full(n_batches, np.nan)
  p_mmd = p_conformal = p_mean_shift = p_combined = nan
  flow_score = None
  mmd_state, conformal_state = detector.mmd_state_, detector.conformal_state_
  mmd_run = mmd_state is not None and batch_size >= 2
  shared = _shared_encoder_outputs(detector, x) if mmd_run and image_p is None else None
  if mmd_run:
    embedded = None if shared is None else shared.features
    tests = gates.attention_tests(
      mmd_state, x, batch_size, key, first_batch=first_batch, embedded=embedded
    )
    p_mmd = tests.p_values
  if conformal_state is not None:
    if image_p is None:
      scores, flow_score = gates.image_scores(
        conformal_state, detector.model, detector.variables, x, detector.convention, shared
      )
      image_p = gates.image_p_values(conformal_state, scores)
    p_conformal = gates.batch_p_values(conformal_state, image_p, starts)
    p_combined, p_mean_shift = gates.combined_p_values(
      conformal_state,
      detector.combination,
      p_conformal,
      p_mmd if mmd_run else None,
      x,
      starts,
      key,
      first_batch,
    )
  p_value = {"mmd": p_mmd, "conformal": p_conformal, "combined": p_combined}[detector.attention]
  attention = np.where(p_value < detector.level, 0.0, 1.0)
  return GatePValues(
    p_value, attention, p_mmd, p_conformal, p_mean_shift, p_combined, image_p, flow_score, starts
  )


def _shared_encoder_outputs(detector, x: np.ndarray):
  """The trained encoder's outputs of x when the MMD test embeds with it as the semantic view reads
  it (mmd_encoder 'trained': the same model, variables and flip average), so one pass serves both;
  else None (each runs its own)."""
  conformal_state = detector.conformal_state_
  semantic = None if conformal_state is None else conformal_state.semantic
  embed = detector.mmd_state_.embed
  if semantic is None or not isinstance(embed, gates.TrainedEmbedder):
    return None
  same = (embed.model, embed.flip_average) == (semantic.encoder, semantic.flip_average)
  if not same or embed.variables is not semantic.encoder_variables:
    return None
  return encoder_outputs(semantic, x)
