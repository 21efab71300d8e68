"""The adaptive attacks on the detector: OOD sets perturbed against its own statistics.

Each OOD set `{ood}` gives, within ||x' - x||_inf <= `adaptive_epsilon`, one set per target:

* `{ood}_adaptive_llh`: PGD RAISES the flow log-likelihood at a = 1 (`LowerScore` of the 'nll'
  score): an attacker who knows the flow.
* `{ood}_adaptive_mmd`: PGD LOWERS the attention test's MMD^2, batch by batch over exactly the
  batches the evaluation tests: an attacker who knows the test.
* `{ood}_adaptive_mean_shift`: the same on the combined gate's mean-shift statistic.
* `{ood}_adaptive_conformal`: PGD LOWERS the conformal attention's per-image score
  (`LowerImageScore`, white-box through the flow and the density; the PNG lengths held fixed during
  the ascent): an attacker who knows the new gate.
* `{ood}_adaptive_conformal_surrogate`: the same with the PNG lengths replaced during the ascent by
  a differentiable surrogate fitted to them (`complexity_surrogate`): the attack also keeps the
  image compressible.
* `{ood}_adaptive_two_view`: PGD LOWERS the smoothed Fisher statistic of the pixel and semantic
  p-values (`two_view_objective`), through the trained encoder, the feature flow and the pixel
  flow: an attacker who knows the semantic detector.

The PGD runs are `adaptive_pgd`'s, the before/after summary `adaptive_summary`'s.
"""

from typing import Dict, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

from inflow_jax.adversarial.adaptive_pgd import AttackedDetector, adaptive_images
from inflow_jax.adversarial.adaptive_summary import describe, objective_summary
from inflow_jax.adversarial.complexity_surrogate import fit_surrogate
from inflow_jax.adversarial.settings import check_attack_config
from inflow_jax.model.density import make_score_fn

_TARGET_SUFFIX = {
  "log_likelihood": "llh",
  "mmd": "mmd",
  "conformal": "conformal",
  "conformal_surrogate": "conformal_surrogate",
  "mean_shift": "mean_shift",
  "two_view": "two_view",
}


def attack_detector(
  model,
  variables,
  mmd_state,
  ood_sets: Mapping[str, np.ndarray],
  attack_config,
  batch_size: int,
  key,
  conformal_state=None,
  jpeg_quality: Optional[int] = None,
) -> Tuple[Dict[str, np.ndarray], Dict]:
  """The adaptive attacks of `attack_config.adaptive_targets` on each OOD set.

  Set s draws from fold_in(key, s): target t's random starts from fold_in(., t), its surrogate's
  noise from fold_in(., 100 + t), the attention tests (the same before and after) from
  fold_in(., 99).

  Args:
    model, variables: the InFlow flow.
    mmd_state: the fitted attention test.
    ood_sets: {name: (N, H, W, C) float32 in [0, 1]}.
    attack_config: `adaptive_num_steps`, `adaptive_step_size` (`adaptive_steps`), `random_start`,
      `adaptive_epsilon`, `adaptive_targets`, `batch_size`.
    batch_size: the evaluation's test batch size (the MMD attack perturbs exactly these batches).
    key: PRNG key of the random starts and of the before/after attention tests.
    conformal_state: the conformal attention (`inflow_jax.gates`), needed by the 'conformal'
      targets; with it the summary also gives the fraction of images its per-image test flags.
    jpeg_quality: the detector's JPEG round trip g, attacked through (BPDA); the images are g(x').
  Returns:
    ({f"{name}_adaptive_{llh|mmd|mean_shift|conformal|conformal_surrogate|two_view}": images},
    {that name: its before/after summary, `adaptive_summary`}).
  """
  check_attack_config(attack_config, tuple(ood_sets))
  targets = tuple(attack_config.adaptive_targets)
  _check_targets(targets, conformal_state)
  detector = AttackedDetector(
    model=model,
    variables=variables,
    mmd_state=mmd_state,
    conformal_state=conformal_state,
    nll_fn=make_score_fn(model, variables, "nll"),
    batch_size=batch_size,
    attack_config=attack_config,
    jpeg_quality=jpeg_quality,
  )
  sets, summary = {}, {}
  for s, (name, x) in enumerate(ood_sets.items()):
    set_images, set_summary = _attack_set(detector, name, x, targets, jax.random.fold_in(key, s))
    sets.update(set_images)
    summary.update(set_summary)
  return sets, summary


def _check_targets(targets: Sequence[str], conformal_state) -> None:
  """Raises ValueError for targets whose gate the detector does not have."""
  if {"conformal", "conformal_surrogate"} & set(targets) and conformal_state is None:
    raise ValueError(
      "the 'conformal' adaptive targets need the conformal attention (attention.kind "
      "'conformal' or 'combined')"
    )
  if "two_view" in targets and (conformal_state is None or conformal_state.semantic is None):
    raise ValueError(
      "the 'two_view' adaptive target needs the semantic view (config.encoder.enabled with a "
      "conformal or combined gate)"
    )
  if "mean_shift" in targets and (conformal_state is None or conformal_state.mean_shift is None):
    raise ValueError(
      "the 'mean_shift' adaptive target needs the combined gate's mean-shift test "
      "(attention.kind 'combined', attention.mean_shift_components set)"
    )


def _attack_set(
  detector: AttackedDetector, name: str, x: np.ndarray, targets: Sequence[str], set_key
) -> Tuple[Dict[str, np.ndarray], Dict]:
  """Every target's attack on the OOD set `name`, and their summaries."""
  epsilon = detector.attack_config.adaptive_epsilon
  test_key = jax.random.fold_in(set_key, 99)  # the same tests before and after
  before, features = describe(detector, x, test_key)
  sets, summary = {}, {}
  for t, target in enumerate(targets):
    coefficients = (
      None
      if target != "conformal_surrogate"
      else fit_surrogate(x, jax.random.fold_in(set_key, 100 + t), epsilon)
    )
    x_adv = adaptive_images(detector, target, x, jax.random.fold_in(set_key, t), coefficients)
    adv_name = f"{name}_adaptive_{_TARGET_SUFFIX[target]}"
    after, features_adv = describe(detector, x_adv, test_key)
    sets[adv_name] = x_adv
    summary[adv_name] = {
      "target": target,
      "epsilon": float(epsilon),
      "n_batches": before["n_batches"],
      **{k: [before[k], after[k]] for k in before if k != "n_batches"},
      **objective_summary(
        target, detector.conformal_state, coefficients, (x, features), (x_adv, features_adv)
      ),
    }
  return sets, summary
