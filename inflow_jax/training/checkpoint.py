"""Orbax checkpoints of the training state: periodic, the last N kept, atomic, exactly resumable.

A checkpoint directory holds one sub-directory per saved step (`<workdir>/checkpoints/<step>/`).
Orbax writes each one under a temporary name and renames it when complete, so a run killed mid-save
leaves the previous checkpoints intact and the partial one is never restored. Each finished step
gets a SHA-256 manifest of its files (`inflow_jax.utils.integrity`); a step whose bytes changed (a
flipped bit, a truncated file) or whose arrays are not finite is reported as corrupt, moved aside to
`corrupt-<step>/` and the newest intact step is restored instead (`restore_latest`). Restoring needs
an abstract state (shapes, dtypes, shardings; `jax.eval_shape` of the initial state), which places
every array on the current mesh directly.
"""

import pathlib
from typing import Any, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from inflow_jax.utils import integrity


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be read into the expected training state."""


def make_manager(directory, *, keep: int, every: int) -> ocp.CheckpointManager:
  """A manager that saves every `every` steps (plus forced saves) and keeps the last `keep`.

  Args:
    directory: where the step directories live; created if missing.
    keep: how many of the most recent checkpoints to keep (>= 1).
    every: save interval in steps (>= 1); `save(..., force=True)` saves regardless.
  """
  if keep < 1:
    raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
  if every < 1:
    raise ValueError(f"checkpoint_every must be >= 1, got {every}")
  directory = pathlib.Path(directory).resolve()
  if directory.exists() and not directory.is_dir():
    raise CheckpointError(f"checkpoint directory {directory} exists and is not a directory")
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep, save_interval_steps=every, create=True, cleanup_tmp_directories=True
  )
  return ocp.CheckpointManager(directory, options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False) -> bool:
  """Saves `state` as step `step` if the interval (or `force`) says so, then (process 0) writes the
  step's SHA-256 manifest once orbax has finished it; True when it saved."""
  saved = manager.save(step, args=ocp.args.StandardSave(state), force=force)
  if saved:
    manager.wait_until_finished()
    if jax.process_index() == 0:
      integrity.write_manifest(pathlib.Path(manager.directory) / str(step))
  return saved


def latest_step(directory) -> Optional[int]:
  """The newest finished step directory under `directory` (None when there is none); no orbax."""
  directory = pathlib.Path(directory)
  steps = (
    [int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    if directory.is_dir()
    else []
  )
  return max(steps, default=None)


def _problem(where: pathlib.Path) -> Optional[str]:
  """Why the step directory `where` cannot be trusted (its manifest fails), or None."""
  if not integrity.has_manifest(where):
    return None  # written before manifests existed, or killed between finishing and the manifest
  return integrity.verify_manifest(where)


def _set_aside(manager: ocp.CheckpointManager, step: int, reason: str) -> None:
  where = pathlib.Path(manager.directory) / str(step)
  aside = where.with_name(f"corrupt-{step}")
  logging.warning(
    "the checkpoint %s is corrupt: %s; moved to %s, falling back to the newest intact checkpoint",
    where,
    reason,
    aside,
  )
  if jax.process_index() == 0:
    where.rename(aside)
  manager.reload()


def restore_latest(
  manager: ocp.CheckpointManager, abstract_state: Any
) -> Tuple[Optional[Any], int]:
  """Restores the newest checkpoint into the structure of `abstract_state`.

  A step whose manifest fails or whose arrays are not finite is moved aside with a warning, and the
  next older step is tried; when none is left, CheckpointError (nothing is trained from scratch
  silently).

  Returns:
    (state, step), or (None, 0) when the directory holds no (intact) checkpoint.
  Raises:
    CheckpointError: the checkpoint is unreadable or does not match `abstract_state` (another
      model width, optimiser or config wrote it).
  """
  set_aside = []
  while True:
    step = manager.latest_step()
    if step is None and set_aside:
      raise CheckpointError(
        f"cannot restore the checkpoint {set_aside[-1][0]}: it is corrupt ({set_aside[-1][1]}) "
        "and no older intact checkpoint remains; the corrupt ones were moved to corrupt-<step> "
        "(delete them to train from scratch)"
      )
    if step is None:
      return None, 0
    problem = _problem(pathlib.Path(manager.directory) / str(step))
    if problem is None:
      state = restore_step(manager, step, abstract_state)
      problem = _non_finite(state)
    if problem is None:
      return state, step
    _set_aside(manager, step, problem)
    set_aside.append((pathlib.Path(manager.directory) / str(step), problem))


def _non_finite(state: Any) -> Optional[str]:
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    values = np.asarray(
      jax.device_get(leaf.addressable_data(0) if hasattr(leaf, "addressable_data") else leaf)
    )
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
      return f"its array {jax.tree_util.keystr(path)} holds NaN or infinite values"
  return None


def restore_step(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
  """Restores checkpoint `step` into the structure of `abstract_state` (see `restore_latest`)."""
  where = pathlib.Path(manager.directory) / str(step)
  _check_stored_arrays(where, abstract_state)
  try:
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except Exception as error:  # orbax raises many types (ValueError, KeyError, FileNotFoundError...)
    raise CheckpointError(
      f"cannot restore the checkpoint {where}: {type(error).__name__}: {error}. It is corrupt or "
      "was written by a different model/optimiser config; delete it or use another --workdir"
    ) from error
  expected = jax.tree_util.tree_structure(abstract_state)
  if jax.tree_util.tree_structure(state) != expected:
    raise CheckpointError(
      f"the checkpoint {where} does not have the structure of the training state"
    )
  for got, want in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(abstract_state)):
    if got.shape != want.shape or got.dtype != want.dtype:
      raise CheckpointError(
        f"the checkpoint {where} holds an array {got.shape} {got.dtype} where the training state "
        f"has {want.shape} {want.dtype}: it was written by a different model config"
      )
  return state


def _shapes_and_dtypes(leaves) -> list:
  return sorted((tuple(int(n) for n in leaf.shape), str(leaf.dtype)) for leaf in leaves)


def _check_stored_arrays(where: pathlib.Path, abstract_state: Any) -> None:
  """Compares the stored arrays' shapes and dtypes (checkpoint metadata) with the state's before any
  array is read: a checkpoint of another model config fails here with a clear message."""
  try:
    # the handler reads the item's own metadata (the checkpointer would also look for the step's
    # _CHECKPOINT_METADATA inside the item folder and warn that it is missing there)
    metadata = ocp.StandardCheckpointHandler().metadata(where / "default")
    item = getattr(metadata, "item_metadata", metadata)
    if item is None:
      raise ValueError("no readable array metadata")
    stored = jax.tree_util.tree_leaves(item.tree)
  except Exception as error:  # a missing, truncated or garbled metadata file
    raise CheckpointError(
      f"cannot read the checkpoint metadata of {where}: {type(error).__name__}: {error}. It is "
      "corrupt; delete it or use another --workdir"
    ) from error
  expected = jax.tree_util.tree_leaves(abstract_state)
  if _shapes_and_dtypes(stored) != _shapes_and_dtypes(expected):
    raise CheckpointError(
      f"the checkpoint {where} holds {len(stored)} arrays that differ in shape or dtype from the "
      f"{len(expected)} of the training state: it was written by a different model config"
    )
