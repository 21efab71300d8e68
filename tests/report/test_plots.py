"""The report's figures (`inflow_jax.report.plots`): PNG files of the mixed protocol, the scores and
the training loss."""

import numpy as np
import pytest

from inflow_jax.report import plots


def test_plots_write_pngs(tmp_path):
  mixed = {
    "batch_sizes": [10, 25],
    "rhos": [0.5, 1.0],
    "false_alarm": {"inflow": [0.0, 0.1], "typicality": [0.05, 0.05]},
    "power": {"svhn": {"inflow": [[0.2, 0.5], [0.6, 1.0]], "typicality": [[0.1, 0.2], [0.3, 0.4]]}},
  }
  table = {"mixed": mixed}
  rng = np.random.default_rng(0)
  paths = plots.plot_all(
    table, {"paper": {"in": rng.normal(size=50), "svhn": rng.normal(1, 1, 40)}}, str(tmp_path)
  )
  paths["loss"] = plots.plot_training_loss(
    np.arange(5), np.linspace(3, 1, 5), str(tmp_path / "l.png")
  )
  for path in paths.values():
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="equal length"):
    plots.plot_training_loss([1, 2], [1.0], str(tmp_path / "bad.png"))
