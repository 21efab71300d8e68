"""A small CNN classifier of the in-distribution data: the target of the classic adversarial attack.

Adversarial examples against it (`inflow_jax.adversarial`) are the "adversarial OOD" sets that InFlow
is asked to detect. Its loss is the mean softmax cross-entropy

  L(theta) = -(1/B) sum_i log softmax(f_theta(x_i))[y_i].
"""
import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from inflow_jax import train as train_lib
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


class ClassifierResult(NamedTuple):
  variables: Any        # the classifier's variables after the last step
  losses: np.ndarray    # (num_steps,) the mean cross-entropy of each step's batch, before its update


def train_classifier(model: Classifier, x_train, y_train, config) -> ClassifierResult:
  """Trains `model` on labelled images with `config.train`'s optimiser (`train.make_optimizer`).

  The batch of step s is epoch e = s // steps_per_epoch of a permutation seeded by
  `train.epoch_seed(config.seed, e)` (incomplete last batches dropped), as the flow's training.

  Args:
    model: a `Classifier`.
    x_train: (N, H, W, C) float32 images in [0, 1].
    y_train: (N,) integer labels in [0, model.num_classes).
    config: `seed`, and `train` with `num_steps`, `batch_size` and the optimiser fields of
      `train.make_optimizer` (learning_rate, b1, b2, eps, weight_decay).
  """
  check_images(x_train, name="x_train", value_range=(0.0, 1.0))
  y_train = np.asarray(y_train)
  if y_train.shape != (len(x_train),) or not np.issubdtype(y_train.dtype, np.integer):
    raise ValueError(f"y_train must be ({len(x_train)},) integer labels, got {y_train.dtype} "
                     f"{y_train.shape}")
  if y_train.min() < 0 or y_train.max() >= model.num_classes:
    raise ValueError(f"y_train must lie in [0, {model.num_classes}), got [{y_train.min()}, "
                     f"{y_train.max()}]")
  batch_size, num_steps = int(config.train.batch_size), int(config.train.num_steps)
  if not 1 <= batch_size <= len(x_train):
    raise ValueError(f"train.batch_size must lie in [1, {len(x_train)}], got {batch_size}")
  if num_steps < 1:
    raise ValueError(f"train.num_steps must be >= 1, got {num_steps}")
  optimizer = train_lib.make_optimizer(config.train)
  variables = init_classifier(model, jax.random.PRNGKey(config.seed), x_train.shape[1:])
  params = variables["params"]

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_of(params):
      return jnp.mean(cross_entropy(model.apply({"params": params}, x), y))
    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = optimizer.init(params)
  steps_per_epoch = len(x_train) // batch_size
  losses, order = [], None
  for s in range(num_steps):
    epoch, offset = divmod(s, steps_per_epoch)
    if offset == 0:
      order = np.random.default_rng(train_lib.epoch_seed(config.seed, epoch)).permutation(len(x_train))
    index = order[offset * batch_size:(offset + 1) * batch_size]
    params, opt_state, loss = step(params, opt_state, jnp.asarray(x_train[index]),
                                   jnp.asarray(y_train[index]))
    losses.append(loss)
  losses = np.asarray(jax.device_get(losses), np.float32)
  if not np.all(np.isfinite(losses)):
    raise FloatingPointError("the classifier's training loss became NaN/inf; lower train.learning_rate")
  return ClassifierResult({"params": params}, losses)
