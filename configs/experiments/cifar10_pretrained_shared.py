"""The original CIFAR-10 evaluation on the local ../shared copies (no tfds): the converted original
checkpoint and encoder, no training.

Reference = the first 5000 images of cifar10_train_10k.npz (all of `train[:5000]`); held-out
in-distribution images for the typicality test: cifar10_train_10k[5000:7000]; in-distribution test
images: the first 2000 of cifar10_test_5k.npz; OOD: the first 2000 of svhn_test_5k, celeba_3k,
mnist_test_5k and all 1000 of fashion_mnist_test_1k (28x28 grayscale resized to 32x32x3 by
`inflow_jax.data`). Batches of 250, 100 permutations, level 0.05 (the defaults).

  python run.py --config configs/experiments/cifar10_pretrained_shared.py --workdir DIR

The CIFAR-10 copies went through JPEG quality 75 and the OOD sets did not
(../shared/data/README.md): likelihood-based baselines can separate them by compression artefacts
alone.
"""

import ml_collections

from configs import cifar10_pretrained
from configs.components.shared import OOD_FILES, fixture, npz


def get_config() -> ml_collections.ConfigDict:
  config = cifar10_pretrained.get_config()
  config.checkpoint_path = fixture("inflow_cifar10_epoch150_torch_state.npz")
  config.attention.encoder_path = fixture("uae_encoder_torch_seed0.npz")
  config.data.update(
    train=npz("cifar10_train_10k"),
    train_split="train[:5000]",
    heldout_split="train[5000:7000]",
    test=npz("cifar10_test_5k"),
    test_split="test[:2000]",
    ood=tuple(npz(stem) for stem in OOD_FILES),
    ood_split="test",
    max_eval_images=2000,
  )
  return config
