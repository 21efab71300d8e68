"""The training machinery shared by every model here: an optax step over a `data`-sharded batch.

A model is trained by minimising `loss_fn(variables, batch)`, a scalar, with PyTorch's
`Adam(lr, betas=(b1, b2), eps, weight_decay=wd)`, i.e. L2 *coupled* into the gradient before the
moments (not AdamW), optionally with a warm-up/cosine schedule, clipping and an EMA of the
parameters (`inflow_jax.training.optimizer`):

  g_t = grad L(w) + wd * w;   m_t = b1 m + (1 - b1) g_t;   v_t = b2 v + (1 - b2) g_t^2
  w  <- w - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

A batch is an image array x (B, H, W, C) or a tuple (x, y, ...) of arrays with the same leading B
(e.g. integer labels y (B,)). Data parallelism: one mesh axis `data` over the devices
(`jax.make_mesh`); every array of the batch is sharded along its leading axis, parameters and
optimiser state are replicated, and XLA inserts the gradient all-reduce. On several hosts every
process feeds its own slice of each global batch through `jax.make_array_from_process_local_data`.

Batches: the batch of step s is a pure function of (seed, s) (`local_batches`), so a resumed run
sees exactly the batches of an uninterrupted one. Users: the flow (`inflow_jax.training.flow`) and
the adversarial classifier (`inflow_jax.adversarial.classifier`).
"""

import functools
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import flax
import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inflow_jax import data as data_lib
from inflow_jax.training.optimizer import make_optimizer, optimizer_settings
from inflow_jax.utils.checks import check_images

# loss_fn(variables, batch) -> scalar, or loss_fn(variables, batch, step) when it has a true
# `uses_step` attribute (e.g. fresh dequantization noise per step); hashable by value (a frozen
# dataclass), so that equal losses share one compiled step. A loss with a non-empty `mutable`
# attribute (collection names, e.g. ("batch_stats",)) returns (scalar, updated collections), and the
# step returns the constants with those collections replaced.
LossFn = Callable[[Any, Any], jax.Array]


@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds: the step count, the trainable parameters and the optimiser state."""

  step: jax.Array
  params: Any
  opt_state: Any


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> jax.sharding.Mesh:
  """A one-axis (`data`) mesh over `devices` (default: every device of every process)."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh(
    (len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
  )


def split_variables(variables) -> tuple:
  """(params, the other collections): what is trained, and the constants passed through."""
  variables = flax.core.unfreeze(variables)
  if "params" not in variables:
    raise ValueError(f"the model variables have no 'params' collection (got {sorted(variables)})")
  params = variables.pop("params")
  return params, variables


def make_step(
  loss_fn: LossFn, train_config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
) -> Callable:
  """jit(state, constants, batch) -> (state, constants, loss): one optimiser step on a batch
  sharded over `data`.

  The loss is `loss_fn({"params": state.params, **constants}, batch)`; `constants` are the model's
  non-trainable variable collections (passed through unchanged, except the collections a loss
  declares `mutable`: batch-norm statistics). The jitted function is cached per (loss_fn,
  optimiser settings, mesh): repeated runs in one process compile once.
  """
  settings = optimizer_settings(train_config)
  if settings["schedule"] == "constant" and not settings["lookahead_every"]:
    settings["num_steps"] = None  # unused: runs of other lengths share one compiled step
  if settings["schedule"] != "wsd":
    settings["decay_steps"] = None
  return _cached_step(loss_fn, tuple(settings.items()), mesh)


@functools.lru_cache(maxsize=32)
def _cached_step(loss_fn, settings: tuple, mesh) -> Callable:
  optimizer = make_optimizer(ml_collections.ConfigDict(dict(settings)))
  replicated = NamedSharding(mesh, P())
  sharded = NamedSharding(mesh, P("data"))
  uses_step = getattr(loss_fn, "uses_step", False)
  mutable = bool(getattr(loss_fn, "mutable", ()))

  def step(state: TrainState, constants, batch):
    def loss_of(params):
      variables = {"params": params, **constants}
      out = loss_fn(variables, batch, state.step) if uses_step else loss_fn(variables, batch)
      return out if mutable else (out, {})

    (value, updated), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    return state, {**constants, **updated}, value

  return jax.jit(
    step,
    in_shardings=(replicated, replicated, sharded),
    out_shardings=(replicated, replicated, replicated),
    donate_argnums=(0,),
  )


def replicate(tree, mesh: jax.sharding.Mesh):
  """Places a pytree of arrays, identical on every process, on every device of `mesh`."""
  replicated = NamedSharding(mesh, P())
  return jax.tree_util.tree_map(
    lambda a: jax.make_array_from_process_local_data(replicated, np.asarray(a)), tree
  )


def host_copy(tree):
  """Host numpy copies of (replicated, possibly multi-process) arrays, for single-process use."""
  return jax.tree_util.tree_map(lambda a: np.asarray(a.addressable_data(0)), tree)


def global_batch(local_batch, mesh: jax.sharding.Mesh, global_batch_size: int):
  """The global, `data`-sharded batch of this process's slice: images x as float32, (x, y, ...) kept
  as a tuple of arrays with `global_batch_size` rows."""
  sharding = NamedSharding(mesh, P("data"))

  def place(a, dtype=None):
    a = np.asarray(a, dtype)
    return jax.make_array_from_process_local_data(sharding, a, (global_batch_size,) + a.shape[1:])

  if isinstance(local_batch, tuple):
    return (place(local_batch[0], np.float32),) + tuple(place(a) for a in local_batch[1:])
  return place(local_batch, np.float32)


def fit_batches(
  loss_fn: LossFn,
  variables,
  batches: Iterable,
  train_config: ml_collections.ConfigDict,
  *,
  devices: Optional[Sequence[jax.Device]] = None,
  images: bool = True,
):
  """One step of `train_config`'s optimiser per batch, from fresh optimiser state (single process).

  Args:
    loss_fn: `loss_fn(variables, batch)` -> scalar (see `make_step`).
    variables: the starting variables (trained: 'params'; other collections are kept).
    batches: iterable of batches x (B, H, W, C) float32 in [0, 1], or tuples (x, y, ...) of arrays
      with B rows; B divisible by the device count.
    train_config: the optimiser settings (`make_optimizer`).
    devices: the devices to shard over (default: all).
    images: the first array of each batch is an image batch, checked as such (False: vectors,
      checked by the caller).
  Returns:
    (variables, losses): the variables after the last step (replicated over `devices`), and (n,)
    losses, each computed before its step's update.
  """
  mesh = make_mesh(devices)
  train_step = make_step(loss_fn, train_config, mesh)
  params, constants = split_variables(variables)
  state = TrainState(np.zeros((), np.int32), params, make_optimizer(train_config).init(params))
  state, constants = replicate(state, mesh), replicate(constants, mesh)
  losses = []
  for i, batch in enumerate(batches):
    arrays = batch if isinstance(batch, tuple) else (batch,)
    if images:
      check_images(arrays[0], name=f"batch {i}", value_range=(0.0, 1.0))
    rows = {len(a) for a in arrays}
    if len(rows) > 1:
      raise ValueError(f"the arrays of batch {i} have different numbers of rows {sorted(rows)}")
    if len(arrays[0]) % mesh.size:
      raise ValueError(
        f"batch {i} has {len(arrays[0])} images, not divisible by {mesh.size} devices"
      )
    state, constants, loss = train_step(state, constants, global_batch(batch, mesh, len(arrays[0])))
    losses.append(loss)
  return {"params": state.params, **constants}, np.asarray(jax.device_get(losses), np.float32)


def epoch_seed(seed: int, epoch: int) -> int:
  """The shuffling seed of an epoch: (seed, epoch) mixed by numpy's SeedSequence."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def process_batches(x_train, *, batch_size: int, seed: int, start_step: int, labels=None):
  """`local_batches` for this process of `jax.process_count()` (its slice of each global batch)."""
  return local_batches(
    x_train,
    batch_size=batch_size,
    seed=seed,
    start_step=start_step,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    labels=labels,
  )


def local_batches(
  x_train: np.ndarray,
  *,
  batch_size: int,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  labels: Optional[np.ndarray] = None,
) -> Iterator:
  """This process's slice (batch_size / process_count images) of the global batches of steps
  start_step + 1, start_step + 2, ...: arrays x, or (x, y) tuples when `labels` (N,) are given.

  Epoch e = step // steps_per_epoch is `data.batches` over a permutation seeded by
  `epoch_seed(seed, e)` (incomplete last batches dropped), so the batch of a step does not depend on
  where the iteration started: skipping into an epoch costs at most one epoch of slicing.
  """
  local_batch_size = batch_size // process_count
  steps_per_epoch = (len(x_train) // process_count) // local_batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"train.batch_size={batch_size} exceeds the {len(x_train)} training images")
  epoch, offset = divmod(start_step, steps_per_epoch)
  while True:
    stream = data_lib.batches(
      x_train,
      local_batch_size,
      seed=epoch_seed(seed, epoch),
      shuffle=True,
      drop_remainder=True,
      process_index=process_index,
      process_count=process_count,
      repeat=False,
      labels=labels,
    )
    for i, batch in enumerate(stream):
      if i >= offset:
        yield batch
    epoch, offset = epoch + 1, 0
