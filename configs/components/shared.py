"""Where the local copies of the data and fixtures are: `../shared` (or $INFLOW_SHARED).

`npz(stem)` names a data file as a dataset (`npz:<path>`), `fixture(name)` a fixture's path.
"""

import os
import pathlib

SHARED = pathlib.Path(
  os.environ.get("INFLOW_SHARED", pathlib.Path(__file__).resolve().parents[3] / "shared")
)
OOD_FILES = ("svhn_test_5k", "celeba_3k", "mnist_test_5k", "fashion_mnist_test_1k")


def data_file(stem: str) -> pathlib.Path:
  return SHARED / "data" / f"{stem}.npz"


def npz(stem: str) -> str:
  """The dataset name of `../shared/data/<stem>.npz`."""
  return f"npz:{data_file(stem)}"


def fixture(name: str) -> str:
  return str(SHARED / "fixtures" / name)
