"""The job with a trained in-distribution encoder (config.encoder.enabled): trained on the training
labels (or on rotations alone when the data have none, said in the report), its statistics in the
per-image density, OpenOOD's post-hoc baselines on it in the report, near/far averages."""

import numpy as np

from configs import tiny
from inflow_jax import InFlowDetector
from inflow_jax.app import job
from inflow_jax.data import load_split


def _config(**data):
  config = tiny.get_config()
  config.data.update(test_split="test[:200]", calibration_split="test[200:]", **data)
  config.attention.update(kind="conformal", n_components=1)
  config.eval.update(protocols=("paper",), baselines=False, near_ood=("constant",))
  config.encoder.enabled = True
  config.encoder.model.update(stem_width=4, widths=(8, 16))
  config.encoder.train.update(
    num_steps=8, batch_size=32, warmup_steps=2, decay_steps=6, log_every=4, eval_every=0
  )
  return config


def test_the_job_reports_the_anchors_beside_the_per_image_score(tmp_path):
  config = _config()
  config.attention.encoder = "trained"  # the MMD test on the encoder's features
  config.encoder.rotation_fraction = 0.0  # a plain classifier
  table = job.run_job(config, tmp_path, "all", progress=False)
  assert table["encoder"]["labels"] and 0.0 <= table["encoder"]["test_accuracy"] <= 1.0
  for row in table["ood"].values():
    for score in ("image_score", "msp", "energy", "mds", "knn", "vim"):
      assert 0.0 <= row[score]["auroc"] <= 1.0, score
  averages = table["averages"]
  assert averages["knn"]["near"] == table["ood"]["constant"]["knn"]["auroc"]
  assert averages["knn"]["far"] == table["ood"]["uniform_noise"]["knn"]["auroc"]
  report = (tmp_path / "report.md").read_text()
  assert "KNN, k=50 (trained encoder)" in report and "near-OOD" in report
  assert "steps on classes; test accuracy" in report
  assert "the MMD test embeds images with its features (attention.encoder='trained')" in report
  # trained without rotations: its rotation head stays out of the per-image view
  assert table["encoder"]["semantic_scores"] == ["vim", "energy"]
  assert "its scores in the per-image view: ViM, energy; the MMD test" in report
  detector = InFlowDetector.load(tmp_path / "detector")  # the saved detector keeps the encoder
  x = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
  assert detector.class_logits(x).shape == (3, 10)
  assert detector.mmd_encoder == "trained" and 0.0 < detector.test_batch(x).p_mmd <= 1.0


def test_without_labels_the_encoder_learns_rotations_and_the_report_says_so(tmp_path):
  """Also: --mode=train trains the encoder beside the flow (on every process of a multi-host job)
  and --mode=evaluate restores it (no step run again)."""
  images, _ = load_split("digits", "train")
  np.savez(tmp_path / "unlabelled.npz", x_train=images[:256], x_test=images[256:320])
  config = _config(train=f"npz:{tmp_path / 'unlabelled.npz'}", train_split="train")
  config.data.heldout_split = "test"
  assert job.run_job(config, tmp_path / "run", "train", progress=False) is None
  metrics = (tmp_path / "run" / "encoder_metrics.jsonl").read_text()
  assert (tmp_path / "run" / "encoder_checkpoints" / "8").is_dir() and '"step": 8' in metrics
  table = job.run_job(config, tmp_path / "run", "evaluate", progress=False)
  assert (tmp_path / "run" / "encoder_metrics.jsonl").read_text() == metrics
  assert table["encoder"] == {
    "steps": 8,
    "labels": False,
    "rotations": True,
    "mmd_encoder": "random",
    "semantic_scores": ["feature_flow"],
  }
  assert "msp" not in table["ood"]["constant"]  # no classes: no classifier baselines
  assert "rotation prediction alone (no labels)" in (tmp_path / "run" / "report.md").read_text()
