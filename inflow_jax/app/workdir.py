"""The job's working directory: a lock held for the run, a writability probe.

* `WorkdirLock(workdir)`: `<workdir>/inflow.lock` holds the owner's host and PID, created atomically
  (O_EXCL). A second run on the same workdir fails at once with `WorkdirBusy` ("workdir in use"); a
  lock left by a process that no longer exists (same host) is taken over with a warning.
* `probe_writable(workdir)`: creates the directory and writes/removes a file, so a read-only workdir
  fails before any work.
The stored config (`config.json`) is `inflow_jax.utils.stored_config`.
"""

import json
import os
import pathlib
import socket
from typing import Any, Dict, Optional

from absl import logging

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
