"""The job's working directory: a lock held for the run, a writability probe.

* `WorkdirLock(workdir)`: `<workdir>/inflow.lock` holds the owner's host and PID, created atomically
  (O_EXCL). A second run on the same workdir fails at once with `WorkdirBusy` ("workdir in use"); a
  lock left by a process that no longer exists (same host) is taken over with a warning.
* `check_resume(config, workdir, mode, force_resume)`: the newest checkpoint, if training may go
  on from it with this config.
* `probe_writable(workdir)`: creates the directory and writes/removes a file, so a read-only workdir
  fails before any work.
The stored config (`config.json`) is `inflow_jax.utils.stored_config`.
"""

import json
import os
import pathlib
import socket
from typing import Any, Dict, Optional

import ml_collections
from absl import logging

from inflow_jax.training import checkpoint as checkpoint_lib
from inflow_jax.training.flow import CHECKPOINT_DIR
from inflow_jax.utils import stored_config

LOCK_FILE = "inflow.lock"


class WorkdirBusy(RuntimeError):
  """Another live process holds the workdir's lock."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


class WorkdirLock:
  """Context manager holding `<workdir>/inflow.lock` for the run (see the module docstring)."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self.owner = {"host": socket.gethostname(), "pid": os.getpid()}

  def _try_create(self) -> bool:
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      json.dump(self.owner, f)
    return True

  def _holder(self) -> Optional[Dict[str, Any]]:
    try:
      return json.loads(self.path.read_text())
    except (OSError, ValueError):
      return None  # vanished, or half-written by a process that died while creating it

  def acquire(self) -> "WorkdirLock":
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
      if self._try_create():
        return self
      holder = self._holder()
      if (
        holder
        and holder.get("host") == self.owner["host"]
        and holder.get("pid") == self.owner["pid"]
      ):
        raise WorkdirBusy(f"workdir in use: this process already holds {self.path}")
      if holder and (
        holder.get("host") != self.owner["host"] or _pid_alive(int(holder.get("pid", -1)))
      ):
        raise WorkdirBusy(
          f"workdir in use: {self.path.parent} is locked by process {holder.get('pid')} "
          f"on {holder.get('host')} ({self.path}); wait for it, or use another --workdir"
        )
      logging.warning(
        "taking over the stale lock %s of process %s, which no longer runs",
        self.path,
        None if holder is None else holder.get("pid"),
      )
      self.path.unlink(missing_ok=True)
    raise WorkdirBusy(f"workdir in use: could not take the lock {self.path}")

  def release(self) -> None:
    if self._holder() == self.owner:
      self.path.unlink(missing_ok=True)

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def probe_writable(workdir) -> None:
  """Creates `workdir` and writes a file there; raises PermissionError naming it when it cannot."""
  workdir = pathlib.Path(workdir)
  probe = workdir / ".write_probe"
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe.write_text("probe")
    probe.unlink()
  except OSError as error:
    raise PermissionError(f"the workdir {workdir} is not writable: {error}") from error


def check_resume(
  config: ml_collections.ConfigDict, workdir: pathlib.Path, mode: str, force_resume: bool
) -> Optional[int]:
  """The newest checkpoint step in workdir (None: none). Training on from it must not change the
  stored training settings (unless force_resume) nor ask for fewer steps than it holds."""
  step = checkpoint_lib.latest_step(workdir / CHECKPOINT_DIR)
  if step is None or mode == "evaluate" or config.checkpoint_path is not None:
    return step
  stored, current = stored_config.read_config(workdir), config.to_dict()
  changed = lambda keys: (
    [] if stored is None else stored_config.changed_training_keys(stored, current, keys)
  )
  values = lambda k: (stored_config.flat_value(stored, k), stored_config.flat_value(current, k))
  training = changed(stored_config.TRAINING_KEYS)
  if training and not force_resume:
    raise ValueError(
      f"the workdir {workdir} holds checkpoints of another config: "
      + ", ".join("{} (stored {!r}, now {!r})".format(k, *values(k)) for k in training)
      + " differ; rerun with the stored settings, pass --force_resume, or use another --workdir"
    )
  # more steps at a constant rate continue the same run: no warning for num_steps alone then
  rescheduled = [
    k
    for k in changed(stored_config.SCHEDULE_KEYS)
    if k != "train.num_steps" or config.train.schedule != "constant"
  ]
  if rescheduled:
    logging.warning(
      "resuming from step %d with other optimiser settings than the stored ones: %s; "
      "the steps after it follow the new values",
      step,
      ", ".join("{} {!r} -> {!r}".format(k, *values(k)) for k in rescheduled),
    )
  if config.train.num_steps < step:
    raise ValueError(
      f"train.num_steps={config.train.num_steps} is below step {step} of the newest "
      f"checkpoint in {workdir / CHECKPOINT_DIR}; ask for at least {step} steps (or "
      "--mode=evaluate to evaluate it)"
    )
  return step
