"""README.md stays a user's guide whose examples run as written.

Every ```python block of README.md runs in a fresh interpreter (cwd = the repository root, TMPDIR a
temporary directory, so `tempfile` outputs land there) and must exit cleanly; a block that defines
`get_config` (a config file) must also pass the job's config checks. A block whose first line is
`# needs ../shared/PATH` runs only when that file exists (it is skipped on a fresh clone). Shell
blocks are not run; the quickstart's two commands (CI runs the test command from the README) must
stay as they are.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 350
SHARED_MARKER = "# needs ../shared/"
BLOCK_TIMEOUT_S = 300
QUICKSTART = (
  "pip install -e . && python run.py --config configs/digits.py --workdir /tmp/inflow_digits",
  "pip install -e '.[test]' && python -m pytest -q -n 2 tests",
)
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)

# runs one block (argv[1]) as a script; a config file's get_config() must pass the job's checks
_RUNNER = """
import runpy, sys
namespace = runpy.run_path(sys.argv[1], run_name="__main__")
if callable(namespace.get("get_config")):
  from inflow_jax.app.config_checks import check_config
  check_config(namespace["get_config"](), "all")
"""


def python_blocks():
  """(line number of the opening fence, code) of every ```python block of README.md."""
  text = README.read_text()
  return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _PYTHON_BLOCK.finditer(text)]


def needed_shared_file(code: str):
  """The ../shared file a block's first line names (`# needs ../shared/PATH`), or None."""
  first = code.lstrip("\n").splitlines()[0] if code.strip() else ""
  if not first.startswith(SHARED_MARKER):
    return None
  return first[len("# needs ") :].split()[0]


BLOCKS = python_blocks()


def test_readme_length():
  lines = len(README.read_text().splitlines())
  assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES})"


def test_quickstart_commands_are_verbatim():
  lines = [line.strip() for line in README.read_text().splitlines()]
  for command in QUICKSTART:
    assert command in lines, f"README.md lost the quickstart command {command!r}"


def test_readme_has_python_examples():
  assert BLOCKS, "README.md has no ```python block"


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_only_marked_blocks_use_shared(line, code):
  if needed_shared_file(code) is None:
    assert "../shared" not in code, (
      f"README.md line {line}: a block that uses ../shared must start with "
      f"'{SHARED_MARKER}PATH' (the file it needs)"
    )


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_python_block_runs(line, code, tmp_path):
  needed = needed_shared_file(code)
  if needed is not None and not (ROOT / needed).exists():
    pytest.skip(f"README.md line {line} needs {needed}, which is absent")
  script = tmp_path / f"readme_line{line}.py"
  script.write_text(code)
  env = dict(os.environ, TMPDIR=str(tmp_path))
  result = subprocess.run(
    [sys.executable, "-c", _RUNNER, str(script)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=BLOCK_TIMEOUT_S,
  )
  assert result.returncode == 0, (
    f"the ```python block at README.md line {line} failed (exit {result.returncode}):\n"
    f"{result.stderr[-4000:]}"
  )
