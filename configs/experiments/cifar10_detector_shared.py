"""The shipped CIFAR-10 detector (`inflow_jax.pretrained.load("cifar10")`): the OpenOOD benchmark
job (`cifar10_openood_shared`: splits, fair JPEG protocol, metrics) with every part trained by this
project: the pixel flow by `configs/cifar10_glow.py`'s recipe (its model and train sections; 12000
steps, hours on 2 CPU cores) instead of the Glow fixture, the encoder by `configs/default.py`'s
encoder recipe, the semantic view and the gates fitted by the job.

  python run.py --config configs/experiments/cifar10_detector_shared.py --workdir DIR
  python -m inflow_jax.app.ship DIR cifar10

The job resumes whatever DIR already holds: a Glow run of `configs/cifar10_glow.py` copied into
DIR/checkpoints, an encoder run into DIR/encoder_checkpoints (measurements: docs/results.md).
"""

import ml_collections

from configs import cifar10_glow
from configs.experiments import cifar10_openood_shared


def get_config() -> ml_collections.ConfigDict:
  config = cifar10_openood_shared.get_config()
  glow = cifar10_glow.get_config()
  config.checkpoint_path = None  # the flow is trained (or resumed) in the workdir
  config.model = glow.model
  config.train = glow.train
  return config
