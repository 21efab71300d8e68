"""Shared test helpers.

`../shared` (fixtures and real data) exists on CI and on the developers' machines, not on a
fresh user's machine: tests that need it call `shared_file(...)`, which skips with a reason.
"""
import os
import pathlib

import jax
import pytest

# Eight simulated CPU devices, so that data-parallel code is exercised on any machine.
# Must happen before JAX initialises its backends.
jax.config.update("jax_num_cpu_devices", 8)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("INFLOW_SHARED", REPO.parent / "shared"))


def shared_file(relative: str) -> pathlib.Path:
  """Path of `../shared/<relative>`, or skip the calling test when it is absent."""
  path = SHARED / relative
  if not path.exists():
    pytest.skip(f"needs {path} (the ../shared fixtures/data), which is absent on this machine")
  return path
