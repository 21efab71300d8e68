"""The small CNN classifier of the offline digits set, and the adversarial evaluation settings.

`get_config()` trains `inflow_jax.classifier.Classifier(**config.model)` on `config.data.train` with
`inflow_jax.train.make_optimizer(config.train)` (plain Adam here: no weight decay) and attacks it with
the settings of `config.attack` (also what `config.adversarial` of a run config holds).
"""
import ml_collections


def get_attack_config() -> ml_collections.ConfigDict:
  """Attack settings (L-infinity, pixel units of [0, 1] images)."""
  return ml_collections.ConfigDict(dict(
      # classifier attacks on the in-distribution test images. 32/255 is there because a classifier
      # of the smooth, upsampled 8x8 digits keeps ~90% accuracy under PGD at 8/255 (it drops to ~6%
      # at 32/255); on CIFAR-10, 8/255 already breaks it.
      epsilons=(1 / 255, 2 / 255, 8 / 255, 32 / 255),
      num_steps=10,                           # PGD steps
      step_size=ml_collections.config_dict.placeholder(float),  # None: 2.5 * epsilon / num_steps
      random_start=True,
      batch_size=250,                         # images per attacked batch
      max_images=ml_collections.config_dict.placeholder(int),   # None: the whole test split
      # adaptive attacks on the detector: these OOD sets (None: config.data.ood), at this epsilon
      adaptive_ood=ml_collections.config_dict.placeholder(tuple),
      adaptive_epsilon=8 / 255,
      adaptive_targets=('log_likelihood', 'mmd'),
  ))


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(
      train='digits', train_split='train',
      test='digits', test_split='test',
      data_dir=ml_collections.config_dict.placeholder(str),
      image_size=32,
  ))
  # inflow_jax.classifier.Classifier(**config.model)
  config.model = ml_collections.ConfigDict(dict(num_classes=10, features=(16, 32), hidden=64))
  config.train = ml_collections.ConfigDict(dict(
      num_steps=300,
      batch_size=50,
      learning_rate=1e-3,
      b1=0.9, b2=0.999, eps=1e-8,
      weight_decay=0.0,
  ))
  config.attack = get_attack_config()
  return config
