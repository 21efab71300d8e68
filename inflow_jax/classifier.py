"""A small CNN classifier of the in-distribution data: the target of the classic adversarial attack.

Adversarial examples against it (`inflow_jax.adversarial`) are the "adversarial OOD" sets that InFlow
is asked to detect. Its loss is the mean softmax cross-entropy

  L(theta) = -(1/B) sum_i log softmax(f_theta(x_i))[y_i].
"""
import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from inflow_jax.checks import check_images


class Classifier(nn.Module):
  """conv3x3-ReLU-avgpool2 per entry of `features`, then dense-ReLU and a linear head.

  Maps (B, H, W, C) float images in [0, 1] to (B, num_classes) logits.
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  hidden: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = 2.0 * x - 1.0  # centre the [0, 1] pixels
    for width in self.features:
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-image softmax cross-entropy -log softmax(logits)[label], shape (B,)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


@dataclasses.dataclass(frozen=True)
class ClassifierLoss:
  """Per-image cross-entropy of `model` as a function of the images: the untargeted attack objective.

  Call as `loss(x, variables, labels)` -> (B,). Frozen (hashable by value), so it can be the static
  `loss_fn` of `inflow_jax.adversarial.pgd` with `loss_args=(variables, labels)`.
  """
  model: Classifier

  def __call__(self, x: jax.Array, variables: Any, labels: jax.Array) -> jax.Array:
    return cross_entropy(self.model.apply(variables, x), labels)


def init_classifier(model: Classifier, key: jax.Array, image_shape: Sequence[int]) -> Any:
  """Initial variables for images of shape (H, W, C)."""
  return model.init(key, jnp.zeros((1, *image_shape), jnp.float32))


@functools.partial(jax.jit, static_argnums=0)
def _predict(model: Classifier, variables, x):
  return jnp.argmax(model.apply(variables, x), axis=-1)


def predict(model: Classifier, variables: Any, x, *, batch_size: int = 500) -> np.ndarray:
  """Predicted labels (N,) of float images (N, H, W, C) in [0, 1], computed in batches."""
  check_images(x, name="x", value_range=(0.0, 1.0))
  labels = [np.asarray(_predict(model, variables, jnp.asarray(x[i:i + batch_size], jnp.float32)))
            for i in range(0, len(x), batch_size)]
  return np.concatenate(labels)


def accuracy(model: Classifier, variables: Any, x, labels, *, batch_size: int = 500) -> float:
  """Fraction of images whose predicted label equals `labels`."""
  labels = np.asarray(labels)
  if labels.shape != (len(x),):
    raise ValueError(f"labels must have shape ({len(x)},), got {labels.shape}")
  return float(np.mean(predict(model, variables, x, batch_size=batch_size) == labels))
