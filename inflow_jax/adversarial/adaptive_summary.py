"""What an adaptive attack did to the detector: its statistics on the clean and the attacked set.

The summary of an attacked set `{ood}_adaptive_{suffix}` holds "target", "epsilon", "n_batches" (the
test batches) and, each as [before, after]:

* "nll_bpd": the mean NLL in bits/dim at a = 1 (lower = more likely); "mmd2": the mean MMD^2 over
  the test batches; "batches_flagged": the test batches the attention test flags;
* with the conformal attention, "image_score" (the mean per-image score: with a semantic view the
  two views' Fisher statistic) and "images_flagged" (the fraction with p < level); with its
  mean-shift test, "mean_shift_flagged" (the test batches it flags) and "mean_shift_statistic"
  (their mean T, the 'mean_shift' attack's objective);
* for the 'conformal' targets, "surrogate_score": the objective the attack lowers (the score with
  the clean images' PNG lengths, or with the surrogate's); for 'conformal_surrogate' also
  "surrogate_rms" (2,): the surrogate's error on the attacked images (bits/dim).
"""

import functools
from typing import Dict, Optional, Tuple

import numpy as np

from inflow_jax import gates as conformal
from inflow_jax.adversarial.adaptive_pgd import AttackedDetector
from inflow_jax.adversarial.complexity_surrogate import (
  surrogate_complexity_bits,
  surrogate_residual_rms,
)
from inflow_jax.gates.conformal import scores_of_features, two_view_scores
from inflow_jax.gates.features import image_features
from inflow_jax.gates.mean_shift import batch_statistic
from inflow_jax.gates.mmd_batches import attention_tests
from inflow_jax.utils.batching import batched


def describe(
  detector: AttackedDetector, x: np.ndarray, test_key
) -> Tuple[Dict, Optional[np.ndarray]]:
  """(the summary's entries for x, x's conformal features or None); `test_key` draws the attention
  tests (the same before and after the attack)."""
  tests = attention_tests(detector.mmd_state, x, detector.batch_size, test_key)
  nll = batched(lambda xb: detector.nll_fn(xb, 1.0), x, int(detector.attack_config.batch_size))
  described = {
    "nll_bpd": float(nll.mean()),
    "mmd2": float(tests.mmd2.mean()),
    "batches_flagged": int(tests.flagged.sum()),
    "n_batches": int(tests.flagged.size),
  }
  state = detector.conformal_state
  if state is None:
    return described, None
  if state.mean_shift is not None:
    described.update(_mean_shift_entries(state, x, tests.starts, test_key))
  features = image_features(detector.model, detector.variables, x)
  scores = scores_of_features(state.density, features)
  if state.semantic is not None:  # the two views' statistic, as the detector scores x
    scores = two_view_scores(state, scores, x)
  described["image_score"] = float(np.mean(scores))
  described["images_flagged"] = float(
    np.mean(conformal.image_p_values(state, scores) < state.level)
  )
  return described, features


def _mean_shift_entries(conformal_state, x: np.ndarray, starts, test_key) -> Dict:
  """ "mean_shift_flagged" and "mean_shift_statistic" of x over the test batches `starts`."""
  shift = conformal_state.mean_shift
  p_values = conformal.mean_shift_p_values(shift, x, starts, test_key)
  return {
    "mean_shift_flagged": int(np.sum(p_values < conformal_state.level)),
    "mean_shift_statistic": float(
      np.mean([batch_statistic(shift, x[lo:hi]) for lo, hi in zip(starts[:-1], starts[1:])])
    ),
  }


def objective_summary(target: str, conformal_state, coefficients, clean, attacked) -> Dict:
  """For the 'conformal' targets, "surrogate_score" (and for 'conformal_surrogate'
  "surrogate_rms"), else {}; clean and attacked are (images, conformal features)."""
  (x, features), (x_adv, features_adv) = clean, attacked
  objective = functools.partial(_score_with_complexity, conformal_state)
  if target == "conformal":  # BPDA: the clean images' PNG lengths
    return {
      "surrogate_score": [
        objective(features, features[:, -2:]),
        objective(features_adv, features[:, -2:]),
      ]
    }
  if target == "conformal_surrogate":
    return {
      "surrogate_score": [
        objective(f, surrogate_complexity_bits(coefficients, xs))
        for f, xs in ((features, x), (features_adv, x_adv))
      ],
      "surrogate_rms": surrogate_residual_rms(coefficients, x_adv, features_adv[:, -2:]).tolist(),
    }
  return {}


def _score_with_complexity(conformal_state, features: np.ndarray, complexity) -> float:
  """The mean per-image score of images with these conformal features, their (N, 2) PNG bits/dim
  replaced by `complexity`: the objective a 'conformal' attack lowers (the true score has the
  images' own lengths)."""
  features = features.copy()
  features[:, -2:] = np.asarray(complexity)
  return float(np.mean(scores_of_features(conformal_state.density, features)))
