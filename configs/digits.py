"""The offline default: scikit-learn's handwritten digits against the embedded offline OOD sets.

Nothing is downloaded. Far-OOD sets: photo_patches, uniform_noise, gaussian_noise, constant;
near-OOD: digits_inverted. A narrow flow trained briefly, so that the whole job (training included)
takes minutes on 2 CPU cores (measurements: docs/results.md).

The saved detector's gate is "combined" (per-image conformal p-values, calibrated on test[300:],
tested together with the paper's MMD test per batch), so `--mode=score` gives each image its own
verdict; the evaluation reports the paper's MMD gate beside it. The in-distribution test images
are test[:300] (disjoint from the calibration images).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.width = 16
  config.data.update(
    train="digits",
    train_split="train[:1200]",
    heldout_split="train[1200:]",
    test="digits",
    test_split="test[:300]",
    calibration_split="test[300:]",
    ood=("digits_inverted", "photo_patches", "uniform_noise", "gaussian_noise", "constant"),
  )
  config.train.update(
    num_steps=150,
    batch_size=16,
    learning_rate=1e-3,
    log_every=10,
    checkpoint_every=50,
    keep_checkpoints=2,
  )
  config.attention.update(kind="combined", n_reference=500, n_permutations=100)
  config.eval.update(
    batch_size=50,
    mixed_rhos=(0.1, 0.25, 0.5, 1.0),
    mixed_batch_sizes=(10, 50),
    mixed_n_batches=10,
    n_bootstrap=500,
  )
  return config
