"""Detectors trained by this project's own jobs and shipped inside the package.

    detector = inflow_jax.pretrained.load("cifar10")   # an InFlowDetector, ready to score
    inflow_jax.pretrained.manifest("cifar10")          # how it was made and what it measured

Each name is a folder `inflow_jax/pretrained/<name>/` holding `detector/` (`InFlowDetector.save`'s
files) and `manifest.json`: the config, the commit and the data splits that produced it, its
measured figures and the SHA-256 of every file, checked before loading (a damaged or edited copy
is refused). Why shipped: a user scores images in minutes, without training for hours.
"""

import json
import pathlib
from typing import Any, Dict, List

from inflow_jax.utils import integrity  # hashlib and json only: no JAX

ROOT = pathlib.Path(__file__).resolve().parent
MANIFEST = "manifest.json"


def names() -> List[str]:
  """The pretrained detectors this installation holds."""
  return sorted(p.name for p in ROOT.iterdir() if (p / MANIFEST).is_file())


def _directory(name: str) -> pathlib.Path:
  if not isinstance(name, str) or name not in names():
    available = ", ".join(names()) or "none"
    raise ValueError(f"no pretrained detector {name!r}; the names: {available}")
  return ROOT / name


def manifest(name: str) -> Dict[str, Any]:
  """The manifest of pretrained detector `name` (module docstring)."""
  return json.loads((_directory(name) / MANIFEST).read_text())


def check_files(name: str) -> None:
  """Raises ValueError naming the first file of `name` whose SHA-256 is not the manifest's (or
  that is missing)."""
  directory = _directory(name)
  for relative, expected in manifest(name)["sha256"].items():
    path = directory / relative
    if not path.is_file():
      raise ValueError(f"pretrained detector {name!r} is incomplete: {relative} is missing")
    if integrity.sha256(path) != expected:
      raise ValueError(f"pretrained detector {name!r} is damaged: {relative} fails its SHA-256")


def load(name: str):
  """The pretrained `InFlowDetector` `name` (files checked first)."""
  from inflow_jax.detector import InFlowDetector  # noqa: PLC0415  (JAX only when loading)

  check_files(name)
  return InFlowDetector.load(_directory(name) / "detector")
