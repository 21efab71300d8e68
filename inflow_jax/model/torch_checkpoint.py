"""Import (and export) of the original InFlow PyTorch checkpoint.

The original state dict (the `net` entry of its `ckptdir/*.pt`, or an .npz of the same arrays)
holds, for coupling block k (module_list index 2k; the odd indices are the parameter-free
permutations):

    module_list.{2k}.subnet_{s1,t1,s2,t2}.{0,2}.weight   OIHW conv kernels (out, in, 3, 3)
    module_list.{2k}.subnet_{s1,t1,s2,t2}.{0,2}.bias     (out,)

and, in the .npz fixtures, `perm_{k}`: the fixed channel permutation after block k. These map to
`InFlow` parameters `coupling_{k}/subnet_*/{kernel_0, bias_0, kernel_1, bias_1}` with the kernels
transposed OIHW -> HWIO (torch's conv is a cross-correlation, as `lax.conv`, so no flip).
"""

import os
import re
import zipfile
from typing import Any, Dict, Mapping, Optional, Tuple

import jax.numpy as jnp
import numpy as np

from inflow_jax.flows.permutation import check_permutation, seeded_permutation
from inflow_jax.model import InFlow

_SUBNETS = ("s1", "t1", "s2", "t2")
_CONV_KEY = re.compile(r"^module_list\.(\d+)\.subnet_(s1|t1|s2|t2)\.(0|2)\.(weight|bias)$")
_PERM_KEY = re.compile(r"^perm_(\d+)$")
_STATE_DICT_ENTRIES = ("net", "state_dict", "model_state_dict", "model")


def _strip_prefix(state_dict: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """Drops a DataParallel `module.` prefix and converts the values to numpy arrays."""
  out = {}
  for key, value in state_dict.items():
    key = key[len("module.") :] if key.startswith("module.module_list.") else key
    out[key] = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
  return out


def _paper_layout(state_dict: Mapping[str, np.ndarray]) -> Tuple[int, int, int, int]:
  """(num_blocks, width, channels, condition_channels) implied by the state dict's keys and
  shapes."""
  indices = sorted({int(m.group(1)) for m in map(_CONV_KEY.match, state_dict) if m})
  if not indices:
    raise ValueError(
      "state dict holds no coupling weights (module_list.{2k}.subnet_*); keys: "
      f"{sorted(state_dict)[:10]}"
    )
  num_blocks = max(indices) // 2 + 1
  try:
    width, in_s1 = state_dict["module_list.0.subnet_s1.0.weight"].shape[:2]
    len2 = state_dict["module_list.0.subnet_s1.2.weight"].shape[0]
    len1 = state_dict["module_list.0.subnet_s2.2.weight"].shape[0]
  except KeyError as missing:
    raise ValueError(f"state dict is missing key {missing}") from None
  return num_blocks, int(width), int(len1 + len2), int(in_s1 - len1)


def _expected_shapes(num_blocks, width, channels, condition_channels) -> Dict[str, tuple]:
  len1, len2 = channels // 2, channels - channels // 2
  shapes = {}
  for k in range(num_blocks):
    for net in _SUBNETS:
      half, out = (len1, len2) if net.endswith("1") else (len2, len1)
      prefix = f"module_list.{2 * k}.subnet_{net}"
      shapes[f"{prefix}.0.weight"] = (width, half + condition_channels, 3, 3)
      shapes[f"{prefix}.0.bias"] = (width,)
      shapes[f"{prefix}.2.weight"] = (out, width, 3, 3)
      shapes[f"{prefix}.2.bias"] = (out,)
  return shapes


def _check_keys(state_dict: Mapping[str, np.ndarray]) -> Tuple[int, int, int, int]:
  layout = _paper_layout(state_dict)
  expected = _expected_shapes(*layout)
  weights = {k for k in state_dict if not _PERM_KEY.match(k)}
  missing, extra = sorted(set(expected) - weights), sorted(weights - set(expected))
  bad = sorted(
    f"{k}: {tuple(state_dict[k].shape)} (expected {expected[k]})"
    for k in set(expected) & weights
    if tuple(state_dict[k].shape) != expected[k]
  )
  problems = [
    f"{label}: {items}"
    for label, items in (("missing keys", missing), ("unexpected keys", extra), ("mis-shaped", bad))
    if items
  ]
  if problems:
    raise ValueError(
      "state dict does not match the InFlow layout "
      f"(num_blocks={layout[0]}, width={layout[1]}, channels={layout[2]}) -- " + "; ".join(problems)
    )
  return layout


def state_dict_to_variables(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
  """Original (torch-named, OIHW) state dict -> `{'params': ...}` for `InFlow`.

  `perm_{k}` entries are accepted and ignored here (see `permutations_from_state_dict`); any other
  missing, unexpected or mis-shaped key raises a ValueError that names it.
  """
  state_dict = _strip_prefix(state_dict)
  num_blocks, _, _, _ = _check_keys(state_dict)
  params = {}
  for k in range(num_blocks):
    block = {}
    for net in _SUBNETS:
      prefix = f"module_list.{2 * k}.subnet_{net}"
      block[f"subnet_{net}"] = {
        "kernel_0": jnp.asarray(
          state_dict[f"{prefix}.0.weight"].transpose(2, 3, 1, 0), jnp.float32
        ),
        "bias_0": jnp.asarray(state_dict[f"{prefix}.0.bias"], jnp.float32),
        "kernel_1": jnp.asarray(
          state_dict[f"{prefix}.2.weight"].transpose(2, 3, 1, 0), jnp.float32
        ),
        "bias_1": jnp.asarray(state_dict[f"{prefix}.2.bias"], jnp.float32),
      }
    params[f"coupling_{k}"] = block
  return {"params": params}


def variables_to_state_dict(
  variables: Mapping[str, Any], permutations: Optional[Tuple[Tuple[int, ...], ...]] = None
) -> Dict[str, np.ndarray]:
  """The inverse of `state_dict_to_variables` (paper architecture only); adds `perm_{k}` if
  given."""
  params = variables["params"]
  blocks = sorted(params)
  expected = [f"coupling_{k}" for k in range(len(blocks))]
  if blocks != expected:
    raise ValueError(
      f"only the paper architecture (coupling_0..coupling_K-1) converts, got {blocks}"
    )
  out = {}
  for k, name in enumerate(expected):
    for net in _SUBNETS:
      p = params[name][f"subnet_{net}"]
      prefix = f"module_list.{2 * k}.subnet_{net}"
      out[f"{prefix}.0.weight"] = np.asarray(p["kernel_0"]).transpose(3, 2, 0, 1)
      out[f"{prefix}.0.bias"] = np.asarray(p["bias_0"])
      out[f"{prefix}.2.weight"] = np.asarray(p["kernel_1"]).transpose(3, 2, 0, 1)
      out[f"{prefix}.2.bias"] = np.asarray(p["bias_1"])
  for k, perm in enumerate(permutations or ()):
    out[f"perm_{k}"] = np.asarray(perm, np.int64)
  return out


def permutations_from_state_dict(state_dict: Mapping[str, Any]) -> Tuple[Tuple[int, ...], ...]:
  """The permutations `perm_{k}`, or the original's seeded ones (PermuteRandom(seed=k)) if
  absent."""
  state_dict = _strip_prefix(state_dict)
  num_blocks, _, channels, _ = _paper_layout(state_dict)
  perms = []
  for k in range(num_blocks):
    value = state_dict.get(f"perm_{k}")
    perms.append(
      seeded_permutation(k, channels)
      if value is None
      else check_permutation(np.asarray(value).reshape(-1), channels)
    )
  return tuple(perms)


def _read(path: str) -> Dict[str, Any]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint {path} does not exist")
  if path.endswith(".npz"):
    try:
      with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
      raise ValueError(f"could not read checkpoint {path} as .npz: {error}") from error
  if path.endswith((".pt", ".pth")):
    try:
      import torch  # optional: only for the original .pt files
    except ImportError as error:
      raise ImportError(
        f"reading {path} needs PyTorch (pip install torch), or convert it to .npz"
      ) from error
    try:
      loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
      raise ValueError(
        f"could not read checkpoint {path} with torch.load(weights_only=True): {error}"
      ) from error
    if isinstance(loaded, Mapping):
      for entry in _STATE_DICT_ENTRIES:
        if isinstance(loaded.get(entry), Mapping):
          return dict(loaded[entry])
      return dict(loaded)
    raise ValueError(f"checkpoint {path} holds a {type(loaded).__name__}, not a state dict")
  raise ValueError(f"checkpoint {path}: unknown format (expected .npz or .pt)")


def load_reference_checkpoint(
  path: str, paper_compat: bool = True
) -> Tuple[InFlow, Dict[str, Any]]:
  """Reads the original checkpoint (.npz, or .pt when torch is installed) -> (InFlow, variables).

  The model has the checkpoint's number of blocks, width and permutations, clamp 2, and the given
  `paper_compat` (True: the original's log-det, not multiplied by the attention).
  """
  state_dict = _strip_prefix(_read(str(path)))
  variables = state_dict_to_variables(state_dict)
  num_blocks, width, _, condition_channels = _paper_layout(state_dict)
  model = InFlow(
    num_blocks=num_blocks,
    width=width,
    clamp=2.0,
    paper_compat=paper_compat,
    permutations=permutations_from_state_dict(state_dict),
    condition_channels=condition_channels,
  )
  return model, variables
