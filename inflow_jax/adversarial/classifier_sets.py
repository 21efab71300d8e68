"""The classic "adversarial OOD" sets: in-distribution test images attacked through the classifier.

`{in_name}_pgd{k}` holds the test images perturbed by untargeted PGD against the classifier
(maximising its cross-entropy, `classifier.ClassifierLoss`) at epsilon = k/255, float32 in [0, 1]
with ||x' - x||_inf <= epsilon; FGSM at the same epsilons only enters the accuracy table.
"""

from typing import Dict, Optional, Tuple

import jax
import numpy as np

from inflow_jax.adversarial import classifier as classifier_lib
from inflow_jax.adversarial.attacks import fgsm, pgd
from inflow_jax.adversarial.names import eps_name
from inflow_jax.adversarial.settings import classifier_step_size
from inflow_jax.data.jpeg import jpeg_round_trip
from inflow_jax.utils.batching import batched


def attack_classifier(
  model: classifier_lib.Classifier, variables, x, y, attack_config, key, *, name: str = "in"
) -> Tuple[Dict[str, np.ndarray], Dict]:
  """PGD (and, for the accuracy table, FGSM) against the classifier at each
  `attack_config.epsilons`; the PGD key of epsilon e and chunk i is fold_in(fold_in(key, e), i).

  Returns:
    ({f"{name}_pgd{k}": (N, H, W, C) float32}, accuracy table {"clean": a, "fgsm": {k: a},
    "pgd": {k: a}, "n_images": N}), k = epsilon * 255 as text.
  """
  y = np.asarray(y)
  loss = classifier_lib.ClassifierLoss(model)
  batch = int(attack_config.batch_size)
  sets, table = (
    {},
    {
      "n_images": int(len(x)),
      "fgsm": {},
      "pgd": {},
      "clean": classifier_lib.accuracy(model, variables, x, y),
    },
  )
  for e, epsilon in enumerate(attack_config.epsilons):
    k = eps_name(epsilon)
    x_pgd = batched(
      lambda i, xb, yb: pgd(
        loss,
        xb,
        epsilon,
        step_size=classifier_step_size(attack_config, epsilon),
        num_steps=attack_config.num_steps,
        random_start=attack_config.random_start,
        key=jax.random.fold_in(jax.random.fold_in(key, e), i),
        loss_args=(variables, yb),
      ),
      (x, y),
      batch,
      with_index=True,
    )
    x_fgsm = batched(
      lambda xb, yb: fgsm(loss, xb, epsilon, loss_args=(variables, yb)), (x, y), batch
    )
    table["pgd"][k] = classifier_lib.accuracy(model, variables, x_pgd, y)
    table["fgsm"][k] = classifier_lib.accuracy(model, variables, x_fgsm, y)
    sets[f"{name}_pgd{k}"] = x_pgd
  return sets, table


def classifier_sets(
  adv, classifier, x_train, y_train, x_test, y_test, key, in_name: str, jpeg_quality: Optional[int]
) -> Tuple[Dict[str, np.ndarray], Dict]:
  """`attack_classifier` with the given classifier, or one trained on (x_train, y_train) with the
  settings `adv` (`config.adversarial`); the sets through the JPEG round trip when there is one
  (what the detector scores; the accuracies are of the classifier on the attacked images
  themselves)."""
  if classifier is None:
    if x_train is None or y_train is None:
      raise ValueError("evaluate_adversarial needs a trained classifier or (x_train, y_train)")
    classifier_model = classifier_lib.Classifier(**adv.model)
    classifier = (
      classifier_model,
      classifier_lib.train_classifier(classifier_model, x_train, y_train, adv).variables,
    )
  sets, table = attack_classifier(*classifier, x_test, y_test, adv.attack, key, name=in_name)
  if jpeg_quality is not None:
    sets = {name: jpeg_round_trip(x, jpeg_quality) for name, x in sets.items()}
  return sets, table
