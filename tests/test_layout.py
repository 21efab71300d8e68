"""The code's shape: file and function sizes, and imports that only run down the layers.

Layers of `inflow_jax`, lowest first: a module may import its own subpackage and the ones below it,
never one above (the package `__init__` only re-exports and is exempt).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = (
  "utils",
  "data",
  "flows",
  "model",
  "training",
  "gates",
  "detector",
  "pretrained",
  "evaluation",
  "adversarial",
  "report",
  "app",
)
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 60
SOURCES = ("inflow_jax", "tests", "configs", "benchmarks")


def python_files():
  files = [ROOT / "run.py"]
  for folder in SOURCES:
    files += sorted((ROOT / folder).rglob("*.py"))
  return [f for f in files if f.exists()]


def long_functions(path: pathlib.Path):
  """(name, lines) of every function or method of `path` longer than MAX_FUNCTION_LINES, decorators
  and docstring included."""
  tree = ast.parse(path.read_text())
  found = []
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      first = min([node.lineno] + [d.lineno for d in node.decorator_list])
      lines = node.end_lineno - first + 1
      if lines > MAX_FUNCTION_LINES:
        found.append((node.name, lines))
  return found


def imported_layers(path: pathlib.Path):
  """The `inflow_jax` subpackages `path` imports (anywhere in the file), with line numbers."""
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    modules = []
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      parts = node.module.split(".")
      if parts[0] == "inflow_jax":
        modules = [parts[1]] if len(parts) > 1 else [alias.name for alias in node.names]
    elif isinstance(node, ast.Import):
      modules = [a.name.split(".")[1] for a in node.names if a.name.startswith("inflow_jax.")]
    for module in modules:
      if module in LAYERS:
        yield module, node.lineno


def test_files_are_short():
  too_long = {
    str(f.relative_to(ROOT)): n
    for f in python_files()
    if (n := len(f.read_text().splitlines())) > MAX_FILE_LINES
  }
  assert not too_long, f"files over {MAX_FILE_LINES} lines: {too_long}"


def test_functions_are_short():
  too_long = {
    str(f.relative_to(ROOT)): found for f in python_files() if (found := long_functions(f))
  }
  assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_imports_run_down_the_layers():
  upward = []
  for path in sorted((ROOT / "inflow_jax").rglob("*.py")):
    relative = path.relative_to(ROOT / "inflow_jax").parts
    if len(relative) == 1:  # the package __init__ (re-exports only)
      continue
    own = LAYERS.index(relative[0])
    for module, line in imported_layers(path):
      if LAYERS.index(module) > own:
        upward.append(f"{path.relative_to(ROOT)}:{line} imports inflow_jax.{module}")
  assert not upward, "imports up a layer:\n" + "\n".join(upward)


def test_every_module_lives_in_a_layer():
  top_level = sorted(
    p.name for p in (ROOT / "inflow_jax").iterdir() if p.suffix == ".py" and p.name != "__init__.py"
  )
  folders = sorted(
    p.name for p in (ROOT / "inflow_jax").iterdir() if p.is_dir() and p.name != "__pycache__"
  )
  assert top_level == [], f"modules outside the subpackages: {top_level}"
  assert folders == sorted(LAYERS)


@pytest.mark.parametrize("bad", ["def f():\n" + "  x = 1\n" * 70])
def test_the_size_check_sees_a_long_function(tmp_path, bad):
  path = tmp_path / "bad.py"
  path.write_text(bad)
  assert long_functions(path) == [("f", 71)]
