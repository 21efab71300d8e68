"""Adversarial sets, and how well InFlow (and the baselines) detect them.

Every set is float32 images in [0, 1] with ||x' - x||_inf <= epsilon (pixel units of [0, 1]): the
in-distribution test images attacked through the classifier (`classifier_sets`, `{in}_pgd{k}`) and
the OOD sets attacked through the detector itself (`adaptive`, `{ood}_adaptive_{target}`).

Every attack keeps PGD's best iterate (`attacks.pgd`) and, when the data go through a JPEG round
trip (`data.jpeg_quality`), attacks through it (`preprocessing.ThroughJPEG`, BPDA) and hands the
detector the round trip of its result: the attacker's images take the pipeline every other set took.

`evaluate_adversarial` scores these sets as OOD sets with `evaluation.protocols.ood_table` (paper
and strict protocols, the baselines, and the mixed protocol when the config asks for it) and adds
the classifier's accuracy under attack and the adaptive attacks' effect on their own objectives
(before/after).
"""

from typing import Dict, Mapping, Optional, Tuple

import jax
import ml_collections
import numpy as np

from inflow_jax.adversarial import classifier as classifier_lib
from inflow_jax.adversarial.adaptive import attack_detector
from inflow_jax.adversarial.classifier_sets import attack_classifier, classifier_sets
from inflow_jax.adversarial.settings import check_attack_config
from inflow_jax.evaluation.protocols import ood_table

__all__ = ["attack_classifier", "attack_detector", "evaluate_adversarial"]


def evaluate_adversarial(
  config: ml_collections.ConfigDict,
  *,
  model,
  variables,
  mmd_state,
  x_test: np.ndarray,
  ood_sets: Mapping[str, np.ndarray],
  x_heldout: Optional[np.ndarray],
  key: jax.Array,
  classifier: Optional[Tuple[classifier_lib.Classifier, object]] = None,
  x_train: Optional[np.ndarray] = None,
  y_train: Optional[np.ndarray] = None,
  y_test: Optional[np.ndarray] = None,
  in_name: str = "in",
  include_clean: bool = False,
  conformal_state=None,
  combination: str = "bonferroni",
) -> Dict:
  """Builds the adversarial sets and scores them with `ood_table` as OOD sets (paper, strict, the
  baselines, and the mixed protocol when `config.eval.protocols` has it).

  Args:
    config: a run config: `adversarial` (`seed`, `model`, `train`, `attack`), `seed`, `eval`,
      optionally `data.jpeg_quality` (the attacked images go through that round trip too).
    model, variables, mmd_state, conformal_state, combination: the detector (as `ood_table`).
    x_test: (N, H, W, C) in-distribution test images; x_heldout: the typicality baseline's.
    ood_sets: the clean OOD sets; those of `attack.adaptive_ood` (None: all) are attacked.
    key: PRNG key; fold_in 0: the classifier attack, 1: the adaptive attacks, 2: the tests.
    classifier: (Classifier, variables) trained, or None: one is trained on (x_train, y_train).
      Without labels (y_test None) the classifier attack is skipped.
    in_name: the classifier-attack sets' prefix; include_clean: also score the clean attacked sets.
  Returns:
    `ood_table`'s table plus "classifier" (accuracy under attack, or None) and "adaptive"
    (`attack_detector`'s before/after), JSON-serialisable.
  """
  attack = config.adversarial.attack
  check_attack_config(attack, tuple(ood_sets))
  if attack.max_images is not None:
    x_test = x_test[: attack.max_images]
    y_test = None if y_test is None else y_test[: attack.max_images]
  jpeg_quality = config.get("data", {}).get("jpeg_quality")
  keys = [jax.random.fold_in(key, i) for i in range(3)]
  sets, classifier_table = {}, None
  if y_test is not None:
    labelled = (x_train, y_train, x_test, y_test)
    sets, classifier_table = classifier_sets(
      config.adversarial, classifier, *labelled, keys[0], in_name, jpeg_quality
    )
  attacked = {n: ood_sets[n] for n in attack.adaptive_ood or tuple(ood_sets)}
  flow = (model, variables, mmd_state)
  adaptive_sets, adaptive_table = attack_detector(
    *flow, attacked, attack, config.eval.batch_size, keys[1], conformal_state, jpeg_quality
  )
  if include_clean:
    sets.update(attacked)
  sets.update(adaptive_sets)
  table = _scored(config, *flow, x_test, sets, keys[2], x_heldout, conformal_state, combination)
  table.update(classifier=classifier_table, adaptive=adaptive_table)
  return table


def _scored(
  config, model, variables, mmd_state, x_test, sets, key, x_heldout, conformal_state, combination
) -> Dict:
  """`ood_table`'s table of the sets against x_test with the settings of `config.eval`."""
  e = config.eval
  mixed = (
    {
      "mixed_rhos": tuple(e.mixed_rhos),
      "mixed_batch_sizes": tuple(e.mixed_batch_sizes),
      "mixed_n_batches": e.mixed_n_batches,
    }
    if "mixed" in tuple(e.get("protocols", ()))
    else {}
  )
  protocols = ("paper", "strict") + (("mixed",) if mixed else ())
  table, _ = ood_table(
    model,
    variables,
    mmd_state,
    x_test,
    sets,
    key=key,
    batch_size=e.batch_size,
    protocols=protocols,
    baselines=e.baselines,
    x_heldout=x_heldout,
    n_bootstrap=e.n_bootstrap,
    seed=config.seed,
    conformal_state=conformal_state,
    combination=combination,
    **mixed,
  )
  return table
