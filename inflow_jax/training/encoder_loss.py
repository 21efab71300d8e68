"""The in-distribution encoder's loss (RotPred: classification plus rotation prediction):

  L = CE_ls(class_logits(aug(x)), y) + w_rot * CE(rotation_logits(rot_k(aug(x_r))), k)

aug: random translation and flip (`inflow_jax.data.augment`); CE_ls: cross-entropy with label
smoothing eps (targets (1 - eps) one_hot(y) + eps / C); the rotation term on the first
ceil(rotation_fraction * B) images of the batch, each turned by k ~ U{0, 1, 2, 3} and passed through
the network with the others (one forward pass; batch-norm statistics over both);
rotation_fraction = 0 drops the rotation term (a plain classifier). Without labels (`use_labels`
False) the class term is dropped and every image gets a rotation. Augmentation and
rotations are drawn with fold_in(PRNGKey(seed), step): a pure function of (seed, step).
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from inflow_jax.data.augment import augment, rotate90
from inflow_jax.model.classifier_encoder import NUM_ROTATIONS


@dataclasses.dataclass(frozen=True)
class EncoderLoss:
  """loss_fn(variables, (x, y), step) -> (L, updated batch_stats) for `training.step.make_step`
  (hashable by value; `mutable`: the batch-norm statistics are updated by every step)."""

  model: Any
  label_smoothing: float = 0.2
  rotation_weight: float = 0.5
  rotation_fraction: float = 0.25
  translate: int = 2
  use_labels: bool = True
  seed: int = 0
  uses_step = True
  mutable = ("batch_stats",)

  def __call__(self, variables, batch, step):
    x, y = batch if self.use_labels else (batch[0] if isinstance(batch, tuple) else batch, None)
    key = jax.random.fold_in(jax.random.PRNGKey(self.seed), step)
    augment_key, rotation_key = jax.random.split(key)
    x = augment(augment_key, x, self.translate)
    n_rotated = len(x) if y is None else math.ceil(self.rotation_fraction * len(x))
    k = jax.random.randint(rotation_key, (n_rotated,), 0, NUM_ROTATIONS)
    inputs = rotate90(x, k) if y is None else jnp.concatenate([x, rotate90(x[:n_rotated], k)])
    out, updated = self.model.apply(variables, inputs, train=True, mutable=["batch_stats"])
    rotation_loss = (
      optax.softmax_cross_entropy_with_integer_labels(out.rotation_logits[-n_rotated:], k).mean()
      if n_rotated
      else 0.0
    )
    if y is None:
      return rotation_loss, updated
    logits = out.class_logits[: len(y)]
    targets = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]), self.label_smoothing)
    class_loss = optax.softmax_cross_entropy(logits, targets).mean()
    return class_loss + self.rotation_weight * rotation_loss, updated
