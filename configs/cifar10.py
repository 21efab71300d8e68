"""The paper's setting: InFlow trained on CIFAR-10, evaluated against SVHN, CelebA, MNIST,
Fashion-MNIST.

The paper's values are the defaults of `configs/default.py` (2 coupling blocks of width 256; Adam lr
1e-4, betas (0.8, 0.99), L2 2e-5 coupled into the gradient; batch 250, 200 x 100 steps; reference
5000, 100 permutations, level 0.05), so this config is the default one.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  return default.get_config()
