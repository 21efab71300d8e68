"""SHA-256 manifests of saved directories (checkpoints, saved detectors), verified on restore.

orbax checks a checkpoint's structure, not its bytes: a flipped bit in an array file restores as a
changed weight. `write_manifest(directory)` records the SHA-256 and size of every file below it in
`<directory>/MANIFEST.sha256.json`; `verify_manifest(directory)` returns the first problem found (a
missing, changed, truncated or extra-missing file), or None when every byte is as written.
"""

import hashlib
import json
import pathlib
from typing import Dict, Optional

MANIFEST = "MANIFEST.sha256.json"
_CHUNK = 1 << 20


def sha256(path: pathlib.Path) -> str:
  """The SHA-256 hex digest of a file's bytes."""
  digest = hashlib.sha256()
  with path.open("rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _files(directory: pathlib.Path) -> Dict[str, pathlib.Path]:
  return {
    str(p.relative_to(directory)): p
    for p in sorted(directory.rglob("*"))
    if p.is_file() and p.name != MANIFEST
  }


def write_manifest(directory) -> pathlib.Path:
  """Writes `<directory>/MANIFEST.sha256.json`: {relative path: {"sha256", "bytes"}} of every
  file."""
  directory = pathlib.Path(directory)
  entries = {
    name: {"sha256": sha256(p), "bytes": p.stat().st_size} for name, p in _files(directory).items()
  }
  path = directory / MANIFEST
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(entries, indent=0, sort_keys=True))
  tmp.replace(path)
  return path


def has_manifest(directory) -> bool:
  return (pathlib.Path(directory) / MANIFEST).is_file()


def verify_manifest(directory) -> Optional[str]:
  """None when every file listed in the manifest exists with its recorded size and SHA-256; else a
  sentence naming the first problem (the manifest itself unreadable, a file missing or changed)."""
  directory = pathlib.Path(directory)
  try:
    entries = json.loads((directory / MANIFEST).read_text())
  except (OSError, ValueError) as error:
    return f"its manifest {directory / MANIFEST} is missing or unreadable ({error})"
  for name, entry in entries.items():
    path = directory / name
    if not path.is_file():
      return f"the file {path} is missing"
    if path.stat().st_size != entry["bytes"]:
      return (
        f"the file {path} has {path.stat().st_size} bytes, {entry['bytes']} were written "
        "(truncated?)"
      )
    if sha256(path) != entry["sha256"]:
      return f"the file {path} does not match its SHA-256 checksum (its bytes changed)"
  return None
