"""pytest setup: eight simulated CPU devices, so that data-parallel code is exercised on any
machine.

The test folders mirror the package (`tests/gates/test_mmd.py` tests `inflow_jax/gates/mmd.py`) and
are packages (`__init__.py`), so that equal basenames in different folders do not clash: pytest
imports `tests.gates.test_mmd` with the repository root on sys.path. This folder goes on sys.path
too, so every test imports the shared helpers (the ../shared paths, jit and Jacobian checks) as
`from helpers import ...` (tests/helpers.py).
"""

import pathlib
import sys

import jax

# Must happen before JAX initialises its backends.
jax.config.update("jax_num_cpu_devices", 8)

_TESTS = str(pathlib.Path(__file__).resolve().parent)
if _TESTS not in sys.path:
  sys.path.insert(0, _TESTS)
