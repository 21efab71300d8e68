"""configs/digits.py with the adversarial sets in the report (`config.adversarial.enabled`).

The classifier and attack settings are configs/components/digits_classifier.py's: PGD against the
classifier at 1, 2, 8, 32/255 on the digits test split, adaptive attacks (raise the flow likelihood,
lower the MMD^2) at 8/255 on three OOD sets. The attacks and their evaluation take most of the run's
time, so configs/digits.py itself leaves them off (measurements: docs/results.md).
"""

import ml_collections

from configs import digits
from configs.components import digits_classifier


def get_config() -> ml_collections.ConfigDict:
  config = digits.get_config()
  classifier = digits_classifier.get_config()
  config.adversarial.enabled = True
  for key in ("seed", "model", "train", "attack"):
    config.adversarial[key] = classifier[key]
  config.adversarial.attack.adaptive_ood = ("digits_inverted", "photo_patches", "uniform_noise")
  return config
