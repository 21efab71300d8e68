"""The classifier the attacks target (`inflow_jax.adversarial.classifier`): training refuses bad
labels."""

import numpy as np
import pytest

from configs.components import digits_classifier as digits_classifier_config
from inflow_jax.adversarial import classifier


def _images(seed=0, shape=(4, 8, 8, 3)):
  return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


def test_classifier_training_rejects_bad_labels():
  model = classifier.Classifier(features=(4,), hidden=8)
  config = digits_classifier_config.get_config()
  x = _images(shape=(8, 8, 8, 3))
  with pytest.raises(ValueError, match="y_train"):
    classifier.train_classifier(model, x, np.full(8, 10), config)
  with pytest.raises(ValueError, match="y_train"):
    classifier.train_classifier(model, x, np.zeros(7, int), config)
