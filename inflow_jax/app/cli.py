"""The command line's plumbing for `run.py`: flag parsing whose mistakes are one line, and the exit.

Errors are `error: <what, naming the flag or config key>` on stderr, exit status 2 for a usage or
input error and 1 for a failure while running; `--debug` (or INFLOW_DEBUG=1) re-raises them with
the traceback. This module imports nothing heavy (no JAX), so `--help` and flag mistakes answer at
once, before any compilation.
"""

import difflib
import os
import re
import runpy
import sys
from typing import List, Optional, Sequence

EXIT_USAGE = 2
EXIT_FAILURE = 1
# What a bad flag, config value, input file or workdir raises in this project: a usage error.
USAGE_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, NotADirectoryError,
                PermissionError)  # fmt: skip
_OVERRIDE = re.compile(r"^--config\.([A-Za-z0-9_.]+)(?:=|$)")


def debugging(argv: Sequence[str]) -> bool:
  """True with --debug on the command line or INFLOW_DEBUG set (not empty, not 0)."""
  return "--debug" in argv or os.environ.get("INFLOW_DEBUG", "0") not in ("", "0")


def fail(message: str, code: int = EXIT_USAGE) -> None:
  """Prints `error: message` (its first line) to stderr and exits with `code`."""
  print(f"error: {one_line(message)}", file=sys.stderr)
  sys.exit(code)


def one_line(message) -> str:
  """The first non-empty line of a message, without the quotes a KeyError adds."""
  lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
  text = lines[0] if lines else type(message).__name__
  return text[1:-1] if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" else text


def _config_path(argv: Sequence[str]) -> Optional[str]:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def unknown_config_key(argv: Sequence[str]) -> Optional[str]:
  """The message for the first `--config.KEY` override that names no key of the config file, with
  the closest keys ("did you mean ..."); None when every override names a key (or no config)."""
  path = _config_path(argv)
  if path is None or not os.path.isfile(path):
    return None
  config = runpy.run_path(path)["get_config"]()
  for arg in argv:
    match = _OVERRIDE.match(arg)
    if not match:
      continue
    node, keys = config, match.group(1).split(".")
    for depth, key in enumerate(keys):
      known = list(node.keys()) if hasattr(node, "keys") else []
      if key not in known:
        where = "config." + ".".join(keys[:depth]) if depth else "the config"
        prefix = ".".join(keys[:depth] + [""])
        close = difflib.get_close_matches(key, known, n=3)
        hint = (
          f" (did you mean {' or '.join('--config.' + prefix + c for c in close)}?)"
          if close
          else ""
        )
        return f"--config.{match.group(1)}: {where} has no key {key!r}{hint}"
      node = node[key]
  return None


def parse_flags(argv: List[str], flag_values) -> List[str]:
  """`flag_values(argv)` with every mistake as one line (exit 2): unknown flags, bad values,
  config keys that do not exist, a config file that is missing or fails to load."""
  argv = [a for a in argv if a != "--debug"]
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path):
    fail(f"--config {path}: no such config file (configs/*.py)")
  try:
    return flag_values(argv)
  except Exception as error:  # noqa: BLE001  (every parse error becomes one line)
    if debugging(sys.argv):
      raise
    fail(unknown_config_key(argv) or _flag_message(error))
  return []


def _flag_message(error) -> str:
  text = one_line(error)
  return text if text.startswith("--") else f"{text} (python run.py --help lists the flags)"


def bare_path_problem(source: str) -> Optional[str]:
  """The one-line advice for a bare path given as --input (the likeliest mistake), else None."""
  if ":" in source or not os.path.exists(source):
    return None
  kind = "folder" if os.path.isdir(source) else "npz" if source.endswith(".npz") else "npy"
  return (
    f"--input {source} is a path: write --input {kind}:{source} (folder:PATH for a folder of "
    "images, npz:PATH or npy:PATH for an array file)"
  )


def score_input_problem(source: str, workdir, detector) -> Optional[str]:
  """The score mode's mistakes found without JAX (a bare path as --input, a missing workdir, an
  unknown pretrained name), as one line; None when there is none."""
  problem = bare_path_problem(source)
  if problem:
    return problem
  if detector is None and not os.path.isdir(workdir):
    return (
      f"--workdir {workdir} does not exist: give the workdir of a job run with --mode=all or "
      "--mode=evaluate"
    )
  if detector is not None:
    from inflow_jax import pretrained  # noqa: PLC0415  (no JAX: names only)

    if detector not in pretrained.names():
      names = ", ".join(pretrained.names()) or "none"
      return f"--detector {detector}: no pretrained detector {detector!r}; the names: {names}"
  return None


def run_guarded(main, argv: Sequence[str]) -> None:
  """main(argv) with its errors as one line: USAGE_ERRORS exit 2, the rest 1 (not with --debug)."""
  try:
    main(argv)
  except KeyboardInterrupt:
    fail("interrupted", EXIT_FAILURE)
  except SystemExit:
    raise
  except USAGE_ERRORS as error:
    if debugging(sys.argv):
      raise
    fail(one_line(error), EXIT_USAGE)
  except Exception as error:  # noqa: BLE001
    if debugging(sys.argv):
      raise
    fail(f"{type(error).__name__}: {one_line(error)} (rerun with --debug for the traceback)",
         EXIT_FAILURE)  # fmt: skip
