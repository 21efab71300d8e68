"""The training log `<workdir>/metrics.jsonl`: one JSON line per `train.log_every` steps.

A line holds the step, the mean and last loss of its interval, images/s and the time; with the skip
guard (`train.skip_factor`) the count of skipped steps so far; on evaluated steps `eval_bpd`. A
resumed run first drops the lines written after its checkpoint (`_truncate_metrics`).
"""

import json
import pathlib
import time
from typing import Any, Dict, List, Optional

import numpy as np

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir) -> List[Dict[str, Any]]:
  """The JSON lines of `<workdir>/metrics.jsonl` (empty when absent)."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(path: pathlib.Path, last_step: int) -> None:
  """Drops lines written after `last_step` by a run that died before its next checkpoint."""
  if path.exists():
    kept = [
      line
      for line in path.read_text().splitlines()
      if line.strip() and json.loads(line)["step"] <= last_step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def _log_record(
  step: int, values: np.ndarray, images_per_s: float, skipped: Optional[int] = None
) -> Dict[str, Any]:
  """The metrics.jsonl line of a logging interval with losses `values`. Without the skip guard
  (`skipped` None) a non-finite loss fails; with it, such steps were skipped (their parameters kept)
  and the line averages the finite losses and counts the skipped steps so far."""
  finite = values[np.isfinite(values)]
  if len(finite) < (len(values) if skipped is None else 1):
    raise FloatingPointError(
      f"the training loss became {values[~np.isfinite(values)][0]} by step "
      f"{step}; lower train.learning_rate, set train.skip_factor or check the data"
    )
  record = dict(
    step=step,
    loss=float(finite.mean()),
    last_loss=float(finite[-1]),
    images_per_s=images_per_s,
    time=time.time(),
  )
  return record if skipped is None else {**record, "skipped_steps": skipped}
