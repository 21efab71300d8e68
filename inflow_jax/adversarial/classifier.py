"""A small CNN classifier of the in-distribution data: the target of the classic adversarial attack.

Adversarial examples against it (`inflow_jax.adversarial`) are the "adversarial OOD" sets that
InFlow is asked to detect. Its loss is the mean softmax cross-entropy

  L(theta) = -(1/B) sum_i log softmax(f_theta(x_i))[y_i],

minimised by the flow's training machinery (`inflow_jax.training.step`: the same Adam,
data-parallel step over the `data` mesh axis and epoch permutations).
"""

import dataclasses
import functools
import itertools
from typing import Any, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inflow_jax.training import step as train_step_lib
from inflow_jax.training.optimizer import check_optimizer_config
from inflow_jax.utils.batching import batched
from inflow_jax.utils.checks import check_images


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
  """Per-image cross-entropy of `model` as a function of the images: the untargeted objective.

  Call as `loss(x, variables, labels)` -> (B,). Frozen (hashable by value), so it can be the static
  `loss_fn` of `inflow_jax.adversarial.pgd` with `loss_args=(variables, labels)`.
  """

  model: Classifier

  def __call__(self, x: jax.Array, variables: Any, labels: jax.Array) -> jax.Array:
    return cross_entropy(self.model.apply(variables, x), labels)


@dataclasses.dataclass(frozen=True)
class MeanCrossEntropy:
  """The training loss L(theta) of the module docstring as the `loss_fn(variables, (x, y))` of
  `train_step.make_step` (hashable by value: one compiled step per model and optimiser)."""

  model: Classifier

  def __call__(self, variables: Any, batch) -> jax.Array:
    x, labels = batch
    return jnp.mean(cross_entropy(self.model.apply(variables, x), labels))


def check_labels(
  labels, n: int, num_classes: int, *, name: str = "y_train", classes_name: str = "num_classes"
) -> np.ndarray:
  """Returns `labels` as a numpy array after checking it is (n,) integers in [0, num_classes)."""
  labels = np.asarray(labels)
  if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name} must be ({n},) integer labels, got {labels.dtype} {labels.shape}")
  if n and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
      f"{name} must lie in [0, {num_classes}) ({classes_name}), got [{labels.min()}, "
      f"{labels.max()}]"
    )
  return labels


def check_classifier_train_config(
  train_config: ml_collections.ConfigDict, num_devices: int, *, prefix: str = "train"
) -> None:
  """Raises ValueError, naming `{prefix}.<key>`, for settings `train_classifier` cannot use."""
  check_optimizer_config(train_config, num_devices, prefix=prefix, min_steps=1)


def init_classifier(model: Classifier, key: jax.Array, image_shape: Sequence[int]) -> Any:
  """Initial variables for images of shape (H, W, C) (jitted: one compile instead of one per op)."""
  return jax.jit(model.init)(key, jnp.zeros((1, *image_shape), jnp.float32))


@functools.partial(jax.jit, static_argnums=0)
def _predict(model: Classifier, variables, x):
  return jnp.argmax(model.apply(variables, x), axis=-1)


def predict(model: Classifier, variables: Any, x, *, batch_size: int = 500) -> np.ndarray:
  """Predicted labels (N,) of float images (N, H, W, C) in [0, 1], computed in batches."""
  check_images(x, name="x", value_range=(0.0, 1.0))
  return batched(lambda xb: _predict(model, variables, jnp.asarray(xb, jnp.float32)), x, batch_size)


def accuracy(model: Classifier, variables: Any, x, labels, *, batch_size: int = 500) -> float:
  """Fraction of images whose predicted label equals `labels`."""
  labels = np.asarray(labels)
  if labels.shape != (len(x),):
    raise ValueError(f"labels must have shape ({len(x)},), got {labels.shape}")
  return float(np.mean(predict(model, variables, x, batch_size=batch_size) == labels))


class ClassifierResult(NamedTuple):
  variables: Any  # the classifier's variables after the last step
  losses: np.ndarray  # (num_steps,) the mean cross-entropy of each step's batch, before its update


def train_classifier(
  model: Classifier, x_train, y_train, config, *, devices: Optional[Sequence[jax.Device]] = None
) -> ClassifierResult:
  """Trains `model` on labelled images with `config.train`'s optimiser, as the flow is trained.

  `train_step.fit_batches` of `MeanCrossEntropy` over the batches (x, y) of
  `train_step.local_batches(x_train, labels=y_train, seed=config.seed)`: step s takes epoch
  e = s // steps_per_epoch of a permutation seeded by `epoch_seed(config.seed, e)`, each batch
  sharded over the `data` axis of a mesh of `devices`.

  Args:
    model: a `Classifier`.
    x_train: (N, H, W, C) float32 images in [0, 1].
    y_train: (N,) integer labels in [0, model.num_classes).
    config: `seed`, and `train` with `num_steps` (>= 1), `batch_size` (divisible by the device
      count) and the optimiser fields of `inflow_jax.training.optimizer.make_optimizer`
      (OPTIMIZER_KEYS).
    devices: the devices to shard over (default: all of this process's).
  Returns:
    ClassifierResult; the variables are host (numpy) copies.
  """
  check_images(x_train, name="x_train", value_range=(0.0, 1.0))
  y_train = check_labels(y_train, len(x_train), model.num_classes)
  devices = jax.local_devices() if devices is None else devices
  check_classifier_train_config(config.train, len(devices))
  batches = train_step_lib.local_batches(
    x_train, labels=y_train, batch_size=int(config.train.batch_size), seed=config.seed
  )
  variables = init_classifier(model, jax.random.PRNGKey(config.seed), x_train.shape[1:])
  variables, losses = train_step_lib.fit_batches(
    MeanCrossEntropy(model),
    variables,
    itertools.islice(batches, int(config.train.num_steps)),
    config.train,
    devices=devices,
  )
  if not np.all(np.isfinite(losses)):
    raise FloatingPointError(
      "the classifier's training loss became NaN/inf; lower train.learning_rate"
    )
  return ClassifierResult(train_step_lib.host_copy(variables), losses)
