"""The small CNN classifier of the offline digits set, and the adversarial evaluation settings.

A component, not a run config: `configs/digits_adversarial.py` puts it into `config.adversarial`.
`get_config()` trains `inflow_jax.adversarial.classifier.Classifier(**config.model)` on
`config.data.train` with `inflow_jax.training.make_optimizer(config.train)` (plain Adam here: no
weight decay) and attacks it with the settings of `config.attack`
(`configs/default.get_attack_config()`, also what `config.adversarial.attack` of a run config
holds).
"""

import copy

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict(
    dict(
      train="digits",
      train_split="train",
      test="digits",
      test_split="test",
      data_dir=ml_collections.config_dict.placeholder(str),
      image_size=32,
    )
  )
  # inflow_jax.adversarial.classifier.Classifier(**config.model)
  config.model = ml_collections.ConfigDict(dict(num_classes=10, features=(16, 32), hidden=64))
  # the run configs' classifier optimiser (configs/default.py `adversarial.train`), shorter here
  config.train = copy.deepcopy(default.get_config().adversarial.train)
  config.train.update(num_steps=300, batch_size=50)
  config.attack = default.get_attack_config()
  return config
