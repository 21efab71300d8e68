"""Ship a job's detector inside the package, as `inflow_jax/pretrained/<name>/`.

  python -m inflow_jax.app.ship WORKDIR NAME

copies WORKDIR/detector (saved by the job) and writes manifest.json: the job's config, the commit
the repository was at, the data splits, the report's measured figures, the native input shape and
image size, and the SHA-256 of every shipped file (`inflow_jax.pretrained.check_files` verifies them
before loading). Data paths are written relative to the repository (`../shared/data/...`), not as
the shipping machine's absolute paths. Refuses to overwrite an existing name.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any, Dict

from inflow_jax import pretrained
from inflow_jax.detector.job_files import DETECTOR_DIR, INPUT_SHAPE_FILE
from inflow_jax.utils import integrity

SPLIT_KEYS = (
  "train",
  "train_split",
  "test",
  "test_split",
  "calibration_split",
  "heldout_split",
  "ood",
  "jpeg_quality",
)


REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


def portable(value):
  """`value` (JSON: dicts, lists, strings) with every absolute path, bare or in a "SOURCE:PATH"
  data name, in values and keys, relative to the repository."""
  if isinstance(value, dict):
    return {portable(k): portable(v) for k, v in value.items()}
  if isinstance(value, list):
    return [portable(v) for v in value]
  if not isinstance(value, str):
    return value
  source, colon, path = value.partition(":") if not value.startswith("/") else ("", "", value)
  if not os.path.isabs(path):
    return value
  return source + colon + os.path.relpath(path, REPOSITORY)


def _commit() -> str:
  try:
    out = subprocess.run(
      ["git", "rev-parse", "HEAD"], cwd=pretrained.ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def manifest_of(workdir: pathlib.Path, target: pathlib.Path) -> Dict[str, Any]:
  config = portable(json.loads((workdir / "config.json").read_text()))
  report = portable(json.loads((workdir / "report.json").read_text()))
  data = config["data"]
  files = sorted(p for p in target.rglob("*") if p.is_file() and p.name != pretrained.MANIFEST)
  return {
    "commit": _commit(),
    "config": config,
    "splits": {k: data.get(k) for k in SPLIT_KEYS},
    "figures": {k: v for k, v in report.get("evaluation", {}).items() if k != "figures"},
    "image_size": data["image_size"],
    "input_shape": json.loads((workdir / DETECTOR_DIR / INPUT_SHAPE_FILE).read_text()),
    "sha256": {str(p.relative_to(target)): integrity.sha256(p) for p in files},
  }


def ship(workdir, name: str) -> pathlib.Path:
  """Copies the job's detector into the package as `name` and writes its manifest."""
  workdir, target = pathlib.Path(workdir), pretrained.ROOT / name
  if target.exists():
    raise FileExistsError(f"{target} exists: remove it first to ship another detector as {name!r}")
  if not (workdir / DETECTOR_DIR).is_dir():
    raise FileNotFoundError(f"{workdir} holds no saved detector: run the job on it first")
  shutil.copytree(workdir / DETECTOR_DIR, target / "detector")
  (target / pretrained.MANIFEST).write_text(json.dumps(manifest_of(workdir, target), indent=1))
  return target


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit("usage: python -m inflow_jax.app.ship WORKDIR NAME")
  print(ship(sys.argv[1], sys.argv[2]))
