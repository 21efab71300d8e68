"""The job (`inflow_jax.app.job.run_job`) with its adversarial part and the combined gate: the
attacked sets scored, each adaptive attack moving its own objective, the gates in the mixed
protocol, the saved detector."""

import json

import numpy as np
import pytest

from configs import tiny
from inflow_jax import InFlowDetector
from inflow_jax.app import job
from inflow_jax.app import score as score_job


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
  """(workdir, table, config) of the tiny job with its adversarial part and, beyond the paper, the
  combined gate (calibrated on held-out test images) and JPEG for every set."""
  workdir = tmp_path_factory.mktemp("gated")
  config = tiny.get_config()
  config.adversarial.enabled = (
    True  # tiny's settings: PGD at 8/255, the MMD attack on uniform_noise
  )
  config.train.num_steps = 2  # the flow's training is tested in test_job.py
  config.attention.update(kind="combined", n_components=2)
  config.data.update(
    calibration_split="test[-100:]",
    density_split="test[-160:-100]",
    test_split="test[:-160]",
    jpeg_quality=75,
  )
  config.eval.update(mixed_rhos=(0.0, 1.0), mixed_batch_sizes=(1, 16))
  config.adversarial.attack.adaptive_targets = (
    "mmd",
    "conformal",
    "conformal_surrogate",
    "mean_shift",
  )
  table = job.run_job(config, workdir, "all", progress=False)
  return workdir, table, config


def test_the_adversarial_sets_are_scored_and_each_attack_moves_its_objective(gated):
  workdir, _, config = gated
  report = json.loads((workdir / "report.json").read_text())
  adversarial = report["evaluation"]["adversarial"]
  assert set(adversarial["ood"]) == {
    "digits_pgd8",
    "uniform_noise_adaptive_mmd",
    "uniform_noise_adaptive_conformal",
    "uniform_noise_adaptive_conformal_surrogate",
    "uniform_noise_adaptive_mean_shift",
  }  # data.test = digits
  for row in adversarial["ood"].values():
    for method in ("paper", "strict", "likelihood", "input_complexity", "image_score"):
      assert 0.0 <= row[method]["auroc"] <= 1.0, (row, method)  # also rejects NaN
  classifier = adversarial["classifier"]
  assert classifier["n_images"] == config.data.max_eval_images and set(classifier["pgd"]) == {"8"}
  mmd_attack = adversarial["adaptive"]["uniform_noise_adaptive_mmd"]
  assert mmd_attack["target"] == "mmd" and np.all(np.isfinite(mmd_attack["mmd2"]))
  attacked = adversarial["adaptive"]["uniform_noise_adaptive_conformal"]
  assert attacked["surrogate_score"][0] == pytest.approx(attacked["image_score"][0])
  assert (
    attacked["surrogate_score"][1] < attacked["surrogate_score"][0]
  )  # PGD lowered its objective
  smooth = adversarial["adaptive"]["uniform_noise_adaptive_conformal_surrogate"]
  assert smooth["surrogate_score"][1] < smooth["surrogate_score"][0]
  assert len(smooth["surrogate_rms"]) == 2 and np.all(np.isfinite(smooth["surrogate_rms"]))
  shifted = adversarial["adaptive"]["uniform_noise_adaptive_mean_shift"]
  assert shifted["mean_shift_statistic"][1] < shifted["mean_shift_statistic"][0]  # its objective
  assert all(0 <= n <= shifted["n_batches"] for n in shifted["mean_shift_flagged"])


def test_the_report_has_the_adversarial_tables_and_the_attacked_mixed_protocol(gated):
  workdir, _, _ = gated
  report = json.loads((workdir / "report.json").read_text())
  adversarial = report["evaluation"]["adversarial"]
  assert report["timings_s"]["adversarial"] > 0
  # the mixed protocol on the attacked sets too: the gates' power on attacked batches
  assert set(adversarial["mixed"]["false_alarm"]) == {
    "inflow",
    "typicality",
    "conformal",
    "combined",
  }
  markdown = (workdir / "report.md").read_text()
  assert "## Adversarial inputs" in markdown and "| 8/255 |" in markdown
  for name in adversarial["ood"]:
    assert f"| {name} | InFlow, paper protocol |" in markdown
  assert "| uniform_noise_adaptive_conformal | one image | combined |" in markdown


def test_the_combined_gate_is_evaluated_with_the_mixed_protocol(gated):
  workdir, table, _ = gated
  markdown = (workdir / "report.md").read_text()
  assert table["settings"]["attention"] == "combined" and table["settings"]["jpeg_quality"] == 75
  assert 0.0 <= table["in_distribution"]["image_false_alarm"] <= 1.0
  mixed = table["mixed"]
  assert set(mixed["false_alarm"]) == {"inflow", "typicality", "conformal", "combined"}
  # batches of 1: no MMD test, the combined gate without it
  assert np.isnan(mixed["false_alarm"]["inflow"][0])
  assert not np.isnan(mixed["false_alarm"]["combined"][0])
  assert "| uniform_noise | one image | combined |" in markdown


def test_the_saved_detector_is_the_combined_gate_and_scores_new_images(gated):
  workdir, _, _ = gated
  detector = InFlowDetector.load(workdir / "detector")
  assert (detector.attention, detector.jpeg_quality) == ("combined", 75)
  summary = score_job.run_score(workdir, "uniform_noise", progress=False)
  rows = (workdir / score_job.SCORES_FILE).read_text().splitlines()
  assert rows[0].split(",")[:4] == ["index", "score", "batch_p_value", "image_p_value"]
  p = np.array([float(r.split(",")[3]) for r in rows[1:]])
  assert summary["images"] == len(p) and np.all((p > 0) & (p <= 1))
