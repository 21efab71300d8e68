"""The resolved config a job ran with, stored as `<workdir>/config.json` (written with the first
checkpoint, as PyTorch Lightning stores hyperparameters in its checkpoints).

`changed_training_keys` lists the settings that a resume may not change (model, training, training
data, seed); with `keys=SCHEDULE_KEYS`, those it may change with a warning (the schedule, clipping,
EMA, skip guard). JSON turns tuples into lists: `tuples_from_json` turns them back.
"""

import json
import os
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence

CONFIG_FILE = "config.json"
# Settings that define what the checkpoints are: a resume must not change them.
TRAINING_KEYS = (
  "seed",
  "checkpoint_path",
  "model",
  "data.train",
  "data.train_split",
  "data.image_size",
  "train.batch_size",
  "train.learning_rate",
  "train.b1",
  "train.b2",
  "train.eps",
  "train.weight_decay",
  "train.loss",
)
# Settings a resume may change (a continued run, a stitched schedule); the job warns when they
# differ.
SCHEDULE_KEYS = (
  "train.num_steps",
  "train.warmup_steps",
  "train.schedule",
  "train.decay_steps",
  "train.clip_norm",
  "train.ema_decay",
  "train.skip_factor",
)


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
  """JSON lists back to (nested) tuples: linen module attributes and config values must be
  hashable."""
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
    raise ValueError(
      f"{path} is not valid JSON ({error}); it is corrupt: restore or delete it"
    ) from error


def changed_training_keys(
  stored: Mapping[str, Any], current: Mapping[str, Any], keys: Sequence[str] = TRAINING_KEYS
) -> List[str]:
  """The `keys` (and their sub-keys) whose values differ between two config dicts."""
  old, new = (
    _flat(json.loads(json.dumps(stored, default=list))),
    _flat(json.loads(json.dumps(current, default=list))),
  )
  wanted = lambda k: any(k == t or k.startswith(t + ".") for t in keys)
  return [k for k in sorted(set(old) | set(new)) if wanted(k) and old.get(k) != new.get(k)]
