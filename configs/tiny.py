"""A seconds-long run for tests: a narrow flow on 256 offline digits, a small evaluation."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.width = 8
  config.data.update(
    train="digits",
    train_split="train[:256]",
    heldout_split="train[256:320]",
    test="digits",
    test_split="test",
    ood=("uniform_noise", "constant"),
    max_eval_images=64,
  )
  config.train.update(
    num_steps=6,
    batch_size=16,
    learning_rate=1e-3,
    log_every=2,
    checkpoint_every=2,
    keep_checkpoints=2,
  )
  config.attention.update(n_reference=64, n_permutations=20, mean_shift_components=8)
  config.eval.update(
    batch_size=16,
    mixed_rhos=(0.5, 1.0),
    mixed_batch_sizes=(16,),
    mixed_n_batches=4,
    n_bootstrap=100,
  )
  # off, as in the schema; `--config.adversarial.enabled=True` adds a seconds-long adversarial part
  config.adversarial.model.update(features=(4,), hidden=16)
  config.adversarial.train.update(num_steps=10, batch_size=16)
  config.adversarial.attack.update(
    epsilons=(8 / 255,),
    num_steps=2,
    batch_size=16,
    adaptive_ood=("uniform_noise",),
    adaptive_targets=("mmd",),
  )
  return config
