"""The OpenOOD CIFAR-10 benchmark on the local ../shared copies: InFlow with a trained encoder
(issue 32) beside OpenOOD's post-hoc baselines on the same encoder.

In-distribution: CIFAR-10. Near-OOD: TinyImageNet (`tinyimagenet_3k`, OpenOOD v1.5's `test_tin`
list, CIFAR-10 classes removed). Far-OOD: SVHN, MNIST, Fashion-MNIST, CelebA. Fair JPEG protocol:
every set goes through JPEG q75 (`data.jpeg_quality`, the detector's own preprocessing), as the
CIFAR-10 and TinyImageNet copies already did.

Splits (say which is which): the encoder, the pixel flow and the semantic scores are fitted on all
50k CIFAR-10 training images; the per-image density's fitting set = 40000 of them
(`attention.n_density`); calibration = cifar10_test_5k[:2500] (unseen by everything fitted), also
the reference of the MMD test, which embeds with the trained encoder's features
(`attention.encoder`); in-distribution evaluation = cifar10_test_5k[2500:]; OOD = the first 2500 of
each set (Fashion-MNIST: its 1000); the typicality held-out set = the last 2000 training images.
The pixel flow is the Glow fixture (`cifar10_glow_conformal_shared`'s) until the project's own Glow
run replaces it. Metrics: per image (AUROC, AUPR, FPR95; near/far averages), batches of 5 and 10
and one OOD image among 10 (the mixed protocol, 200 batches per cell).

  python run.py --config configs/experiments/cifar10_openood_shared.py --workdir DIR

(measurements: docs/results.md)
"""

import ml_collections

from configs.components.shared import npz
from configs.experiments import cifar10_glow_conformal_shared

NEAR_OOD = (npz("tinyimagenet_3k"),)


def get_config() -> ml_collections.ConfigDict:
  config = cifar10_glow_conformal_shared.get_config()
  config.data.ood = NEAR_OOD + tuple(config.data.ood)
  config.encoder.enabled = True
  config.attention.encoder = "trained"  # the MMD test on the encoder's features
  config.eval.update(
    protocols=("strict", "mixed"),
    baselines=False,
    near_ood=NEAR_OOD,
    mixed_batch_sizes=(5, 10),
    mixed_rhos=(0.0, 1.0),
    mixed_n_batches=200,
  )
  return config
