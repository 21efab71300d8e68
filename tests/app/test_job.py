"""The job (`inflow_jax.app.job.run_job`) on the tiny config: trained, evaluated, its report
readable; evaluate alone restores the final checkpoint."""

import json
import os

from PIL import Image

from configs import tiny
from inflow_jax.app import job


def test_tiny_job_writes_a_readable_report(tmp_path):
  config = tiny.get_config()
  table = job.run_job(config, tmp_path, "all", progress=False)

  report = json.loads((tmp_path / "report.json").read_text())
  assert report["training"]["steps"] == [2, 4, 6]
  assert report["config"]["model"]["width"] == config.model.width
  assert set(report["evaluation"]["ood"]) == set(config.data.ood)
  for row in report["evaluation"]["ood"].values():
    assert 0.0 <= row["paper"]["auroc"] <= 1.0
  markdown = (tmp_path / "report.md").read_text()
  for name in config.data.ood:
    assert f"| {name} | InFlow, paper protocol |" in markdown
  assert "![training_loss](training_loss.png)" in markdown
  for name, path in report["figures"].items():
    assert os.path.dirname(path) == str(tmp_path), name
    with Image.open(path) as image:
      assert image.format == "PNG" and min(image.size) >= 200, (name, image.size)

  # evaluate alone restores the final checkpoint: the same model, hence the same table
  again = job.run_job(config, tmp_path, "evaluate", progress=False)
  assert json.dumps(again["ood"], sort_keys=True) == json.dumps(table["ood"], sort_keys=True)
