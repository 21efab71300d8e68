"""The paper's evaluation with the original pretrained weights: no training.

The original checkpoint (a PyTorch state dict as .npz or .pt) is read by
`inflow_jax.model.torch_checkpoint.load_reference_checkpoint`; give its path here or on the command
line:
  python run.py --config configs/cifar10_pretrained.py --workdir DIR \
      --config.checkpoint_path=../shared/fixtures/inflow_cifar10_epoch150_torch_state.npz
"""

import os

import ml_collections

from configs import default

DEFAULT_CHECKPOINT = os.path.join(
  os.path.dirname(os.path.abspath(__file__)),
  os.pardir,
  os.pardir,
  "shared",
  "fixtures",
  "inflow_cifar10_epoch150_torch_state.npz",
)


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.checkpoint_path = os.path.normpath(DEFAULT_CHECKPOINT)
  config.model.paper_compat = True  # the original's log-det convention
  config.train.num_steps = 0  # nothing to train
  return config
