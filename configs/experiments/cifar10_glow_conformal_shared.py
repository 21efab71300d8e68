"""The conformal attention (issue 14) against the paper's MMD gate, on the local ../shared copies,
with the Glow fixture flow (`../shared/fixtures/inflow_glow_cifar10.npz`: InFlow(num_blocks=4,
width=128, glow=True, num_scales=3), trained on all 50k CIFAR-10 training images). No training.

Splits (say which is which): reference (the MMD reference) = 5000 of the 50k training images (the
flow's own training data); the per-image density's fitting set = 40000 training images, the
reference among them (`attention.n_density`: more images support more mixture components);
calibration = cifar10_test_5k[:2500] (unseen by the flow and the density; the job checks it shares
no image with the training set);
in-distribution evaluation = cifar10_test_5k[2500:]; OOD = the first 2500 of svhn_test_5k,
celeba_3k, mnist_test_5k and all 1000 of fashion_mnist_test_1k; typicality held-out = the last 2000
training images. Fair JPEG protocol: every set, OOD included, goes through JPEG q75
(`data.jpeg_quality`), as the CIFAR-10 copies already did. Mixed protocol at m in {1, 2, 5, 10, 25,
50, 100, 250}, rho in {one image, 0.1, 0.25, 0.5, 1}, 100 batches per cell.

  python run.py --config configs/experiments/cifar10_glow_conformal_shared.py --workdir DIR \
      --mode evaluate

(measurements: docs/results.md)
"""

import ml_collections

from configs import default
from configs.components.shared import OOD_FILES, fixture, npz


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.checkpoint_path = fixture("inflow_glow_cifar10.npz")
  config.model.update(num_blocks=4, width=128, glow=True, num_scales=3)  # as the fixture's .json
  config.data.update(
    train=npz("cifar10_train_50k"),
    train_split="train",
    heldout_split="train[-2000:]",
    test=npz("cifar10_test_5k"),
    test_split="test[2500:]",
    calibration_split="test[:2500]",
    ood=tuple(npz(stem) for stem in OOD_FILES),
    ood_split="test",
    max_eval_images=2500,
    jpeg_quality=75,
  )
  config.attention.update(kind="combined", n_reference=5000, n_density=40000)
  # adaptive attacks (with adversarial.enabled): 50 sign steps of 1/255 through the JPEG round trip,
  # from the image itself: a random start adds noise up to 8/255, which a flow's density punishes
  # (measurements: docs/results.md).
  config.adversarial.attack.update(
    adaptive_num_steps=50,
    adaptive_step_size=1 / 255,
    random_start=False,
    adaptive_targets=("mmd", "conformal", "conformal_surrogate"),
  )
  config.eval.update(
    protocols=("strict", "mixed"),
    mixed_batch_sizes=(1, 2, 5, 10, 25, 50, 100, 250),
    mixed_rhos=(0.0, 0.1, 0.25, 0.5, 1.0),
    mixed_n_batches=100,
  )
  return config
