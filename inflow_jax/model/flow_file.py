"""A trained flow as two files: `<name>.npz` (the flax variables flattened with '/') and
`<name>.json` (`{"model": InFlow's constructor arguments, ...}`), as
`../shared/fixtures/inflow_glow_cifar10.*`.

    model, variables = load_flow_file("inflow_glow_cifar10.npz")
    z, log_det = model.apply(variables, x, 1.0)
"""

import json
import pathlib
from typing import Any, Dict

import numpy as np

from inflow_jax.model import InFlow
from inflow_jax.utils.stored_config import tuples_from_json


def flow_file_json(path) -> pathlib.Path:
  """The `.json` beside a flow's `.npz`."""
  return pathlib.Path(path).with_suffix(".json")


def is_flow_file(path) -> bool:
  """True when `path` is an `.npz` with a `.json` beside it that names the model's arguments."""
  meta = flow_file_json(path)
  if pathlib.Path(path).suffix != ".npz" or not meta.is_file():
    return False
  try:
    return "model" in json.loads(meta.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError):
    return False


def unflatten(flat: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """{'a/b/c': array} -> {'a': {'b': {'c': array}}}."""
  tree: Dict[str, Any] = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def load_flow_file(path):
  """(InFlow, variables) of a flow saved as `<name>.npz` + `<name>.json` (module docstring)."""
  path = pathlib.Path(path)
  if not is_flow_file(path):
    raise ValueError(
      f"{path} is not a flow file: an .npz of '/'-flattened variables with a .json "
      "beside it holding the model's arguments under 'model'"
    )
  meta = json.loads(flow_file_json(path).read_text())
  with np.load(path) as flat:
    variables = unflatten({k: flat[k] for k in flat.files})
  if "params" not in variables:
    raise ValueError(f"{path} holds no 'params/...' arrays (got {sorted(variables)})")
  return InFlow(**{k: tuples_from_json(v) for k, v in meta["model"].items()}), variables
