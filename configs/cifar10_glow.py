"""A real density model: a Glow-style multi-scale InFlow trained by dequantized bits/dim on
CIFAR-10.

InFlow(num_blocks=4, width=128, glow=True, num_scales=3) (1.75M parameters: ActNorm, LU 1x1
convolution and an attention-gated affine coupling per block, squeeze/split between scales;
PyTorch's initialisation); uniform dequantization with fresh noise every step (`train.loss='bpd'`);
Adam lr 1e-3 after a 500-step linear warm-up, constant, then linear decay to 0 over the last 2,400
steps ('wsd'), global-norm clipping at 50, steps whose gradient norm is non-finite or above 5x its
running geometric mean skipped (`train.skip_factor`), an EMA (0.999) of the parameters for
evaluation; batch 64; held-out bits/dim on 2000 CIFAR-10 test images every 1000 steps. Chosen by
measurement against larger learning rates, batch 32 and the zero-initialised last subnet conv
(`model.zero_init`), which led early but fell behind or diverged in long runs (measurements:
docs/results.md).

Variants (`--config configs/cifar10_glow.py:VARIANT`, big_vision style):
  ''     12,000 steps (15 epochs, decay from step 9,600): hours of training on 2 CPU cores
         (timings: docs/results.md); the README gives the curves.
  script the recipe of the fixture flow's 30-line script (issue 13): PyTorch's initialisation,
         constant learning rate after the warm-up, no EMA; benchmarks/glow_equal_images.py runs it
         beside the default.
  accelerator  the same model and recipe for 200,000 steps (256 epochs; warm-up 2000, decay 40,000
         steps), for a GPU/TPU: the README gives the figure expected from the two-hour curve (not
         run here).

Data: `npz:../shared/data/cifar10_train_50k.npz` (train) and `cifar10_test_5k.npz` (test) when
../shared is there (INFLOW_SHARED honoured; JPEG-75 copies), else tfds `cifar10`.

  python run.py --config configs/cifar10_glow.py --workdir DIR
"""

from typing import Tuple

import ml_collections

from configs import default
from configs.components.shared import OOD_FILES, data_file, npz

VARIANTS = ("", "script", "accelerator")


def _set_data(config: ml_collections.ConfigDict) -> Tuple[str, str]:
  """Sets `config.data` (../shared copies when present, else tfds) and returns the held-out
  (eval_data, eval_split) of the training-time bits/dim."""
  train_file, test_file = data_file("cifar10_train_50k"), data_file("cifar10_test_5k")
  if train_file.exists() and test_file.exists():
    config.data.update(
      train=f"npz:{train_file}",
      train_split="train",
      test=f"npz:{test_file}",
      test_split="test[2000:]",
      heldout_split=None,
      ood=tuple(npz(stem) for stem in OOD_FILES),
      ood_split="test",
      max_eval_images=2000,
    )
    return f"npz:{test_file}", "test[:2000]"
  config.data.update(
    train="cifar10",
    train_split="train",
    test="cifar10",
    test_split="test[2000:]",
    heldout_split="train[-1000:]",
  )
  return "cifar10", "test[:2000]"


def _set_train(config: ml_collections.ConfigDict, eval_data: str, eval_split: str) -> None:
  """Sets `config.train`: the default variant's recipe (see the module docstring)."""
  config.train.update(
    num_steps=12_000,
    batch_size=64,
    loss="bpd",
    learning_rate=1e-3,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    warmup_steps=500,
    schedule="wsd",
    decay_steps=2_400,
    clip_norm=50.0,
    ema_decay=0.999,
    skip_factor=5.0,
    log_every=100,
    checkpoint_every=1000,
    keep_checkpoints=2,
    eval_every=1000,
    eval_data=eval_data,
    eval_split=eval_split,
    eval_max_images=2000,
  )


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(
      f"unknown variant {variant!r} of configs/cifar10_glow.py; expected one of {VARIANTS}"
    )
  config = default.get_config()
  config.model.update(num_blocks=4, width=128, glow=True, num_scales=3, zero_init=False)
  eval_data, eval_split = _set_data(config)
  _set_train(config, eval_data, eval_split)
  if variant == "script":
    config.train.update(
      learning_rate=1e-3, schedule="constant", decay_steps=0, ema_decay=None, skip_factor=None
    )
  elif variant == "accelerator":
    config.train.update(
      num_steps=200_000,
      warmup_steps=2000,
      decay_steps=40_000,
      checkpoint_every=5000,
      eval_every=5000,
    )
  # the paper's protocols; the baselines and the mixed protocol need data.heldout_split
  config.eval.update(baselines=False, protocols=("paper", "strict"))
  return config
