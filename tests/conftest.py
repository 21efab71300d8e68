"""pytest setup: eight simulated CPU devices, so that data-parallel code is exercised on any
machine.

The test folders mirror the package (`tests/gates/test_mmd.py` tests `inflow_jax/gates/mmd.py`) and
are packages (`__init__.py`), so that equal basenames in different folders do not clash: pytest
imports `tests.gates.test_mmd` with the repository root on sys.path. This folder goes on sys.path
too, so every test imports the shared helpers (the ../shared paths, jit and Jacobian checks) as
`from helpers import ...` (tests/helpers.py).

XLA's compilations go to one persistent cache per test run (a temporary folder shared by the xdist
workers and the `run.py` subprocesses, removed at the end): many tests compile the same programs
(a training step, a flow's scores) through fresh `jax.jit` closures, which JAX's in-memory cache
does not share. Every computation still runs; only identical compilations are reused.
"""

import os
import pathlib
import shutil
import sys
import tempfile

import jax

_CACHE_VARIABLE = "INFLOW_JAX_TEST_XLA_CACHE"
if _CACHE_VARIABLE not in os.environ:  # the controller process: workers inherit the folder
  os.environ[_CACHE_VARIABLE] = tempfile.mkdtemp(prefix="inflow_jax_xla_cache_")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ[_CACHE_VARIABLE])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

# Must happen before JAX initialises its backends.
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
  "jax_persistent_cache_min_compile_time_secs",
  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)

_TESTS = str(pathlib.Path(__file__).resolve().parent)
if _TESTS not in sys.path:
  sys.path.insert(0, _TESTS)


def pytest_unconfigure(config):
  """The controller (not an xdist worker) removes the run's compilation cache."""
  if not hasattr(config, "workerinput"):
    shutil.rmtree(os.environ[_CACHE_VARIABLE], ignore_errors=True)
