"""`inflow_jax.pretrained`: detectors shipped in the package load by name after their files are
checked against the manifest; unknown names list the known ones; damaged files are refused."""

import json

import jax
import numpy as np
import pytest

import inflow_jax
from inflow_jax import InFlowDetector, data, pretrained
from inflow_jax.model import InFlow
from inflow_jax.utils import integrity


@pytest.fixture
def shipped(tmp_path, monkeypatch):
  """A pretrained folder holding one detector, `tiny`, with its manifest."""
  x = data.load_images("digits", "train")[0]
  model = InFlow(num_blocks=2, width=8, paper_compat=True)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x[:2], 1.0)
  detector = InFlowDetector(model, variables, n_permutations=20, batch_size=10).fit(x[:100])
  x = x[500:520]
  folder = tmp_path / "tiny"
  detector.save(folder / "detector")
  files = sorted(p for p in folder.rglob("*") if p.is_file())
  sha = {str(p.relative_to(folder)): integrity.sha256(p) for p in files}
  (folder / pretrained.MANIFEST).write_text(json.dumps({"sha256": sha, "image_size": 32}))
  monkeypatch.setattr(pretrained, "ROOT", tmp_path)
  return folder, detector, x


def test_a_shipped_detector_loads_by_name(shipped):
  folder, detector, x = shipped
  assert pretrained.names() == ["tiny"]
  loaded = inflow_jax.pretrained.load("tiny")
  np.testing.assert_array_equal(loaded.score(x), detector.score(x))
  assert pretrained.manifest("tiny")["image_size"] == 32


def test_unknown_names_and_damaged_files_are_refused(shipped):
  folder, _, _ = shipped
  with pytest.raises(ValueError, match="no pretrained detector 'cifar100'; the names: tiny"):
    pretrained.load("cifar100")
  (folder / "detector" / "config.json").write_text("{}")
  with pytest.raises(ValueError, match="is damaged: detector/config.json fails its SHA-256"):
    pretrained.load("tiny")


@pytest.mark.skipif(
  "cifar10" not in pretrained.names(), reason="no shipped cifar10 detector in this checkout"
)
def test_the_shipped_cifar10_detector_scores_images_without_training():
  """What a fresh clone does (no ../shared): load by name, score images; p-values lie in (0, 1],
  the classifier's logits have 10 classes, uniform noise is flagged, and the manifest names the
  calibration split it was calibrated on."""
  detector = pretrained.load("cifar10")
  rng = np.random.default_rng(0)
  noise = rng.random((6, 32, 32, 3)).astype(np.float32)
  scores = detector.image_scores(noise)
  np.testing.assert_allclose(detector.image_scores(noise[:3]), scores[:3], rtol=1e-6)
  p = detector.image_p_values(noise)
  assert p.shape == (6,) and np.all((p > 0) & (p < 0.05))
  assert detector.class_logits(noise[:2]).shape == (2, 10)
  batch = detector.test_batch(noise, jax.random.PRNGKey(0))
  assert batch.attention == 0.0 and 0.0 < batch.p_value < 0.05
  assert pretrained.manifest("cifar10")["splits"]["calibration_split"] == "test[:2500]"
