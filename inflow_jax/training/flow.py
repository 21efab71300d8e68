"""Maximum-likelihood training of the flow: a jitted, data-parallel optax step.

The losses ('paper', 'per_dim', 'bpd') are `inflow_jax.training.losses`'s. The optimiser
(PyTorch's Adam with coupled L2), the data-parallel step over the `data` mesh axis and the batch
order (a pure function of (seed, step), so a resumed run sees the batches of an uninterrupted one)
are `inflow_jax.training.step`'s, shared with the adversarial classifier; this module adds the
flow's loss, checkpointing (orbax), resuming, held-out bits/dim every `train.eval_every` steps and
the metrics log (`metrics.jsonl`, `inflow_jax.training.metrics`: one line per `log_every` steps;
`eval_bpd` on the lines of evaluated steps).
"""

import json
import pathlib
import time
from typing import Any, Callable, Dict, Iterable, NamedTuple, Optional, Sequence

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

from inflow_jax.training import checkpoint as checkpoint_lib
from inflow_jax.training import step as step_lib
from inflow_jax.training.losses import LOSSES, FlowLoss, check_8bit, heldout_bpd
from inflow_jax.training.metrics import METRICS_FILE, _log_record, _truncate_metrics
from inflow_jax.training.metrics import read_metrics as read_metrics  # re-exported
from inflow_jax.training.optimizer import check_optimizer_config
from inflow_jax.training.skip import skipped_steps
from inflow_jax.training.state import (
  CHECKPOINT_DIR,
  abstract_train_state,
  eval_variables,
  initial_train_state,
)
from inflow_jax.training.step import fit_batches, global_batch, make_mesh, make_step
from inflow_jax.utils.checks import check_images


class TrainResult(NamedTuple):
  variables: Any  # the model's variables after the last step
  steps: np.ndarray  # (n,) the step numbers run in this call (1-based: after the update)
  losses: np.ndarray  # (n,) the loss of each of these steps, computed before its update


def check_train_config(
  train_config: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1
) -> None:
  """Raises ValueError for settings that cannot train, before anything is loaded or compiled."""
  c = train_config
  check_optimizer_config(c, num_devices, num_processes, prefix="train")
  if c.loss not in LOSSES:
    raise ValueError(f"train.loss must be one of {LOSSES}, got {c.loss!r}")
  for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
    if c[name] < 1:
      raise ValueError(f"train.{name} must be >= 1, got {c[name]}")
  if c.eval_every < 0 or (c.eval_every and c.eval_every % c.log_every):
    raise ValueError(
      f"train.eval_every={c.eval_every} must be 0 (off) or a multiple of "
      f"train.log_every={c.log_every} (held-out bits/dim go on the metrics lines)"
    )
  if c.eval_every and c.eval_max_images < 1:
    raise ValueError(f"train.eval_max_images must be >= 1, got {c.eval_max_images}")


def make_train_step(
  model, train_config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, seed: int = 0
) -> Callable:
  """jit(state, constants, x) -> (state, constants, loss): `training.step.make_step` of the
  flow's loss (seed: of the bpd loss's dequantization noise)."""
  return make_step(FlowLoss(model, train_config.loss, seed), train_config, mesh)


def train_on_batches(
  model,
  variables,
  batches: Iterable,
  config: ml_collections.ConfigDict,
  *,
  devices: Optional[Sequence[jax.Device]] = None,
):
  """One step of `config.train`'s optimiser per batch, from fresh optimiser state (single process).

  Args:
    model: a flax module; `model.apply(variables, x, attention) -> (z, log_det)`.
    variables: its starting variables (trained: 'params'; other collections are kept).
    batches: iterable of (B, H, W, C) float32 arrays in [0, 1] (B divisible by the device count).
    config: a full config (uses `config.train`).
    devices: the devices to shard over (default: all).
  Returns:
    (variables, losses): the variables after the last step, and (n,) losses, each computed before
    its step's update.
  """
  return fit_batches(
    FlowLoss(model, config.train.loss, config.seed),
    variables,
    batches,
    config.train,
    devices=devices,
  )


def _start_state(model, config, sample: np.ndarray, mesh, manager, workdir) -> tuple:
  """(state, constants, step): the newest checkpoint's, or the initial ones at step 0."""
  abstract_state, abstract_constants = abstract_train_state(model, config, sample, mesh)
  state, start_step = checkpoint_lib.restore_latest(manager, abstract_state)
  if state is None or jax.tree_util.tree_leaves(abstract_constants):
    initial_state, constants = initial_train_state(model, config, sample, mesh)
    state = initial_state if state is None else state
  else:
    constants = abstract_constants  # an empty tree: nothing to initialise
  if int(jax.device_get(state.step)) != start_step:
    raise checkpoint_lib.CheckpointError(
      f"the checkpoint of step {start_step} in {pathlib.Path(workdir) / CHECKPOINT_DIR} holds a "
      f"state of step {int(jax.device_get(state.step))}"
    )
  return state, constants, start_step


def _check_inputs(c, x_train: np.ndarray, x_eval: Optional[np.ndarray], mesh) -> None:
  """Raises ValueError for settings or images that `train` cannot use."""
  check_train_config(c, mesh.size, jax.process_count())
  check_images(x_train, name="x_train", value_range=(0.0, 1.0))
  if c.batch_size > len(x_train):
    raise ValueError(f"train.batch_size={c.batch_size} exceeds the {len(x_train)} training images")
  if c.loss == "bpd":
    check_8bit(x_train, "x_train")
  if c.eval_every and (x_eval is None or not len(x_eval)):
    raise ValueError(
      "train.eval_every > 0 needs held-out images (train.eval_data / eval_split); none were given"
    )


def _resume(model, config, sample: np.ndarray, mesh, manager, workdir: pathlib.Path) -> tuple:
  """`_start_state`, checked against `train.num_steps`; closes the manager when it raises."""
  c = config.train
  try:
    state, constants, start_step = _start_state(model, config, sample, mesh, manager, workdir)
  except checkpoint_lib.CheckpointError:
    manager.close()
    raise
  if start_step:
    logging.warning(
      "resuming from the checkpoint of step %d in %s", start_step, workdir / CHECKPOINT_DIR
    )
  if start_step > c.num_steps:
    manager.close()
    raise ValueError(
      f"train.num_steps={c.num_steps} is below step {start_step} of the newest "
      f"checkpoint in {workdir / CHECKPOINT_DIR}; ask for at least {start_step} steps"
    )
  return state, constants, start_step


def train(
  model,
  x_train: np.ndarray,
  config: ml_collections.ConfigDict,
  workdir,
  *,
  x_eval: Optional[np.ndarray] = None,
  devices: Optional[Sequence[jax.Device]] = None,
  progress: bool = True,
) -> TrainResult:
  """Trains (or resumes) `model` on `x_train` for `config.train.num_steps` steps.

  Args:
    model: a flax module (see `train_on_batches`).
    x_train: (N, H, W, C) float32 in [0, 1]; every process holds the whole set and feeds its slice.
    config: a full config (`seed`, `train`).
    workdir: holds `checkpoints/` (orbax) and `metrics.jsonl`; an existing checkpoint is resumed.
    x_eval: held-out images whose bits/dim are logged every `train.eval_every` steps (needed then).
    devices: the devices to shard over (default: all devices of all processes).
    progress: show a tqdm bar (on process 0).
  Returns:
    TrainResult with the final variables (`eval_variables`: the EMA parameters with
    train.ema_decay) and the losses of the steps this call ran.
  """
  c = config.train
  mesh = make_mesh(devices)
  _check_inputs(c, x_train, x_eval, mesh)
  workdir = pathlib.Path(workdir)
  sample = x_train[: min(len(x_train), c.batch_size)]
  manager = checkpoint_lib.make_manager(
    workdir / CHECKPOINT_DIR, keep=c.keep_checkpoints, every=c.checkpoint_every
  )
  state, constants, start_step = _resume(model, config, sample, mesh, manager, workdir)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    _truncate_metrics(workdir / METRICS_FILE, start_step)
  try:
    state, steps, losses = _run_steps(
      model,
      x_train,
      x_eval,
      config,
      state,
      constants,
      start_step,
      mesh,
      manager,
      workdir / METRICS_FILE,
      progress,
    )
  finally:
    manager.wait_until_finished()
    manager.close()
  return TrainResult(eval_variables(state, constants), steps, losses)


def _interval_record(
  model, config, state, constants, x_eval, step: int, values: np.ndarray, images_per_s: float
) -> Dict[str, Any]:
  """The metrics line of the interval ending at `step`, with `eval_bpd` on evaluated steps."""
  c = config.train
  record = _log_record(
    step,
    values,
    images_per_s,
    None if c.skip_factor is None else skipped_steps(state.opt_state),
  )
  if c.eval_every and (step % c.eval_every == 0 or step == c.num_steps):
    record["eval_bpd"] = heldout_bpd(
      model,
      eval_variables(state, constants),
      x_eval,
      seed=config.seed,
      batch_size=c.batch_size,
    )
  return record


def _publish(bar, record: Dict[str, Any], metrics_path: pathlib.Path, is_main: bool) -> None:
  """Shows the record on the progress bar and appends it to metrics.jsonl (on process 0)."""
  bar.set_postfix(
    {
      **{k: f"{record[k]:.4g}" for k in ("last_loss", "eval_bpd") if k in record},
      "img_per_s": f"{record['images_per_s']:.0f}",
    }
  )
  if is_main:
    with metrics_path.open("a") as f:
      f.write(json.dumps(record) + "\n")


def _run_steps(
  model,
  x_train,
  x_eval,
  config,
  state,
  constants,
  start_step,
  mesh,
  manager,
  metrics_path: pathlib.Path,
  progress: bool,
):
  """The training loop from `start_step`: steps, logging, held-out evaluation, checkpoints."""
  c, is_main = config.train, jax.process_index() == 0
  train_step = make_train_step(model, c, mesh, config.seed)
  stream = step_lib.process_batches(
    x_train, batch_size=c.batch_size, seed=config.seed, start_step=start_step
  )
  bar = tqdm.tqdm(
    total=c.num_steps,
    initial=start_step,
    disable=not (progress and is_main),
    desc="train",
    unit="step",
    dynamic_ncols=True,
  )
  pending, all_steps, all_losses = [], [], []
  tick, tick_step = time.perf_counter(), start_step
  try:
    for step in range(start_step + 1, c.num_steps + 1):
      state, constants, loss = train_step(
        state, constants, global_batch(next(stream), mesh, c.batch_size)
      )
      pending.append((step, loss))
      bar.update(1)
      if step % c.log_every == 0 or step == c.num_steps:
        values = np.asarray(jax.device_get([value for _, value in pending]), np.float64)
        now = time.perf_counter()
        images_per_s = (step - tick_step) * c.batch_size / max(now - tick, 1e-9)
        record = _interval_record(
          model, config, state, constants, x_eval, step, values, images_per_s
        )
        tick, tick_step = time.perf_counter(), step
        all_steps += [s for s, _ in pending]
        all_losses += list(values)
        pending = []
        _publish(bar, record, metrics_path, is_main)
      checkpoint_lib.save(manager, step, state, force=step == c.num_steps)
  finally:
    bar.close()
  return state, np.asarray(all_steps, np.int64), np.asarray(all_losses, np.float32)
