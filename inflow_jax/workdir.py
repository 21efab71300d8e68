"""The job's working directory: a lock held for the run, a writability probe, the stored config.

* `WorkdirLock(workdir)`: `<workdir>/inflow.lock` holds the owner's host and PID, created atomically
  (O_EXCL). A second run on the same workdir fails at once with `WorkdirBusy` ("workdir in use"); a
  lock left by a process that no longer exists (same host) is taken over with a warning.
* `probe_writable(workdir)`: creates the directory and writes/removes a file, so a read-only workdir
  fails before any work.
* `config.json`: the resolved config the job ran with (written with the first checkpoint, as PyTorch
  Lightning stores hyperparameters in its checkpoints). `changed_training_keys` lists the settings that
  a resume may not change (model, training, training data, seed); with `keys=SCHEDULE_KEYS`, those it
  may change with a warning (the schedule, clipping, EMA, skip guard).
"""
import json
import os
import pathlib
import socket
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import logging

LOCK_FILE = "inflow.lock"
CONFIG_FILE = "config.json"
# Settings that define what the checkpoints are: a resume must not change them.
TRAINING_KEYS = ("seed", "checkpoint_path", "model", "data.train", "data.train_split", "data.image_size",
                 "train.batch_size", "train.learning_rate", "train.b1", "train.b2", "train.eps",
                 "train.weight_decay", "train.loss")
# Settings a resume may change (a continued run, a stitched schedule); the job warns when they differ.
SCHEDULE_KEYS = ("train.num_steps", "train.warmup_steps", "train.schedule", "train.decay_steps",
                 "train.clip_norm", "train.ema_decay", "train.skip_factor")


class WorkdirBusy(RuntimeError):
  """Another live process holds the workdir's lock."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # exists, owned by someone else
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
      return None   # vanished, or half-written by a process that died while creating it

  def acquire(self) -> "WorkdirLock":
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
      if self._try_create():
        return self
      holder = self._holder()
      if holder and holder.get("host") == self.owner["host"] and holder.get("pid") == self.owner["pid"]:
        raise WorkdirBusy(f"workdir in use: this process already holds {self.path}")
      if holder and (holder.get("host") != self.owner["host"] or _pid_alive(int(holder.get("pid", -1)))):
        raise WorkdirBusy(f"workdir in use: {self.path.parent} is locked by process {holder.get('pid')} "
                          f"on {holder.get('host')} ({self.path}); wait for it, or use another --workdir")
      logging.warning("taking over the stale lock %s of process %s, which no longer runs", self.path,
                      None if holder is None else holder.get("pid"))
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


def _flat(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  out = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(_flat(value, name + "."))
    else:
      out[name] = list(value) if isinstance(value, tuple) else value
  return out


def tuples_from_json(value):
  """JSON lists back to (nested) tuples: linen module attributes and config values must be hashable."""
  return tuple(tuples_from_json(v) for v in value) if isinstance(value, list) else value


def flat_value(config: Mapping[str, Any], key: str) -> Any:
  """The value of a dotted key ("train.learning_rate") of a config dict (None when absent)."""
  return _flat(json.loads(json.dumps(config, default=list))).get(key)


def write_config(workdir, config_dict: Mapping[str, Any]) -> pathlib.Path:
  """Writes the resolved config to `<workdir>/config.json` (atomically: temporary file, rename)."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(config_dict, indent=1, default=list) + "\n")
  os.replace(tmp, path)
  return path


def read_config(workdir) -> Optional[Dict[str, Any]]:
  """The stored config of `<workdir>`, or None when there is none."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError as error:
    raise ValueError(f"{path} is not valid JSON ({error}); it is corrupt: restore or delete it") from error


def changed_training_keys(stored: Mapping[str, Any], current: Mapping[str, Any],
                          keys: Sequence[str] = TRAINING_KEYS) -> List[str]:
  """The `keys` (and their sub-keys) whose values differ between two config dicts."""
  old, new = _flat(json.loads(json.dumps(stored, default=list))), _flat(
      json.loads(json.dumps(current, default=list)))
  wanted = lambda k: any(k == t or k.startswith(t + ".") for t in keys)
  return [k for k in sorted(set(old) | set(new)) if wanted(k) and old.get(k) != new.get(k)]
