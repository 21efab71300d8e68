"""Training the in-distribution encoder (`ClassifierEncoder`) with the project's one machinery:
`training.step.make_step` of `EncoderLoss` (data-parallel over the `data` mesh axis, the batch of
step s a pure function of (seed, s)), `training.optimizer` (e.g. SGD with Nesterov momentum and a
warm-up / linear-decay schedule), orbax checkpoints holding the optimiser state and the batch-norm
statistics (a resumed run continues exactly), and `metrics.jsonl` with the held-out accuracy
(flip-averaged logits) every `eval_every` steps.
"""

import json
import pathlib
import time
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from inflow_jax.model.classifier_encoder import encode
from inflow_jax.model.whitening import set_whitening
from inflow_jax.training import checkpoint as checkpoint_lib
from inflow_jax.training.encoder_loss import EncoderLoss
from inflow_jax.training.metrics import METRICS_FILE, _log_record, _truncate_metrics
from inflow_jax.training.optimizer import check_optimizer_config, make_optimizer
from inflow_jax.training.step import (
  TrainState,
  global_batch,
  make_mesh,
  make_step,
  process_batches,
  replicate,
  split_variables,
)
from inflow_jax.utils.checks import check_images

CHECKPOINT_DIR = "encoder_checkpoints"


class EncoderTrainResult(NamedTuple):
  variables: Any  # {"params", "batch_stats"} after the last step
  steps: np.ndarray  # (n,) the steps run by this call
  losses: np.ndarray  # (n,) their losses


def encoder_loss(model, config: ml_collections.ConfigDict) -> EncoderLoss:
  """The `EncoderLoss` of `config.encoder` (labels used when the model has classes)."""
  c = config.encoder
  return EncoderLoss(
    model,
    label_smoothing=c.label_smoothing,
    rotation_weight=c.rotation_weight,
    rotation_fraction=c.rotation_fraction,
    translate=c.translate,
    use_labels=model.num_classes > 0,
    seed=config.seed,
  )


def accuracy(model, variables, x: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
  """Fraction of x whose flip-averaged class logits' argmax is the label."""
  logits = encode(model, variables, x, batch_size=batch_size).class_logits
  return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))


def _initial(model, config, x_train: np.ndarray, mesh) -> tuple:
  variables = jax.jit(model.init)(jax.random.PRNGKey(config.seed), jnp.asarray(x_train[:2]))
  if model.whiten:  # the frozen stem from 2000 seeded training images (a constant collection)
    order = np.random.default_rng(config.seed).permutation(len(x_train))[:2000]
    variables = set_whitening(variables, x_train[np.sort(order)])
  params, constants = split_variables(variables)
  opt_state = make_optimizer(config.encoder.train).init(params)
  return replicate(TrainState(np.zeros((), np.int32), params, opt_state), mesh), replicate(
    constants, mesh
  )


def _restore(model, config, x_train, mesh, manager) -> tuple:
  """(state, constants, step) of the newest checkpoint, or the initial ones at step 0."""
  state, constants = _initial(model, config, x_train, mesh)
  abstract = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
    {"state": state, "constants": constants},
  )
  restored, step = checkpoint_lib.restore_latest(manager, abstract)
  if restored is None:
    return state, constants, 0
  return restored["state"], restored["constants"], step


def _check(config, x_train, y_train, mesh) -> None:
  c = config.encoder.train
  check_optimizer_config(c, mesh.size, jax.process_count(), prefix="encoder.train", min_steps=1)
  check_images(x_train, name="x_train", value_range=(0.0, 1.0))
  if y_train is not None and len(y_train) != len(x_train):
    raise ValueError(f"{len(y_train)} labels for {len(x_train)} training images")


def _publish(bar, record, metrics_path: pathlib.Path) -> None:
  """The record on the progress bar and (process 0) appended to the metrics file."""
  bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "eval_accuracy")})
  if jax.process_index() == 0:
    with metrics_path.open("a") as f:
      f.write(json.dumps(record) + "\n")


def _start(model, config, x_train, workdir: pathlib.Path, mesh) -> tuple:
  """(manager, state, constants, start step, metrics path): resumed or initial."""
  c = config.encoder.train
  manager = checkpoint_lib.make_manager(
    workdir / CHECKPOINT_DIR, keep=c.keep_checkpoints, every=c.checkpoint_every
  )
  state, constants, start = _restore(model, config, x_train, mesh, manager)
  metrics_path = workdir / ("encoder_" + METRICS_FILE)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    _truncate_metrics(metrics_path, start)
  return manager, state, constants, start, metrics_path


def train_encoder(
  model,
  x_train: np.ndarray,
  y_train: Optional[np.ndarray],
  config: ml_collections.ConfigDict,
  workdir,
  *,
  eval_set: Optional[tuple] = None,
  devices: Optional[Sequence[jax.Device]] = None,
  progress: bool = True,
) -> EncoderTrainResult:
  """Trains (or resumes) `model` for `config.encoder.train.num_steps` steps. Args:
  model: a `ClassifierEncoder` (num_classes 0: rotation prediction only, y_train None).
  x_train: (N, H, W, 3) float32 in [0, 1]; y_train: (N,) integer labels or None.
  config: a full config (`seed`, `encoder`).
  workdir: holds `encoder_checkpoints/` and `encoder_metrics.jsonl`; a checkpoint is resumed.
  eval_set: (x, y) held-out images whose accuracy is logged every `encoder.train.eval_every`."""
  c = config.encoder.train
  mesh = make_mesh(devices)
  _check(config, x_train, y_train, mesh)
  manager, state, constants, start, metrics_path = _start(
    model, config, x_train, pathlib.Path(workdir), mesh
  )
  step_fn = make_step(encoder_loss(model, config), c, mesh)
  labels = None if y_train is None else np.asarray(y_train, np.int32)
  stream = process_batches(
    x_train, batch_size=c.batch_size, seed=config.seed, start_step=start, labels=labels
  )
  bar = tqdm.tqdm(total=c.num_steps, initial=start, disable=not progress, desc="encoder")
  steps, losses, pending, tick = [], [], [], (time.perf_counter(), start)
  try:
    for step in range(start + 1, c.num_steps + 1):
      batch = next(stream)
      state, constants, loss = step_fn(state, constants, global_batch(batch, mesh, c.batch_size))
      pending.append(loss)
      bar.update(1)
      evaluate = (
        eval_set is not None and c.eval_every and (step % c.eval_every == 0 or step == c.num_steps)
      )
      if evaluate or step % c.log_every == 0 or step == c.num_steps:
        values = np.asarray(jax.device_get(pending), np.float64)
        rate = (step - tick[1]) * c.batch_size / max(time.perf_counter() - tick[0], 1e-9)
        record = _log_record(step, values, rate)
        if evaluate:
          variables = {"params": state.params, **constants}
          record["eval_accuracy"] = accuracy(model, jax.device_get(variables), *eval_set)
        steps += range(step - len(values) + 1, step + 1)
        losses += list(values)
        pending, tick = [], (time.perf_counter(), step)
        _publish(bar, record, metrics_path)
      checkpoint_lib.save(
        manager, step, {"state": state, "constants": constants}, force=step == c.num_steps
      )
  finally:
    bar.close()
    manager.wait_until_finished()
    manager.close()
  variables = jax.device_get({"params": state.params, **constants})
  return EncoderTrainResult(variables, np.asarray(steps), np.asarray(losses, np.float32))
