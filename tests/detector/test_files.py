"""The detector's files (`inflow_jax.detector.files`): the save-load round trip, and corrupt saves
refused on load."""

import re

import numpy as np
import pytest

from inflow_jax import InFlowDetector


def test_save_load_round_trip(fitted_mmd, tmp_path):
  detector, x_in = fitted_mmd
  path = detector.save(tmp_path / "det")
  loaded = InFlowDetector.load(path)
  assert loaded.model == detector.model and loaded.threshold_ == detector.threshold_
  assert loaded.model.paper_compat and loaded.batch_size == 20
  np.testing.assert_array_equal(loaded.score(x_in), detector.score(x_in))
  with pytest.raises(FileExistsError):
    detector.save(path)
  with pytest.raises(FileNotFoundError, match="does not hold"):
    InFlowDetector.load(tmp_path)


def _flip_middle_byte(path):
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))


def test_load_rejects_corrupt_saves(fitted_mmd, tmp_path):
  detector, _ = fitted_mmd
  path = detector.save(tmp_path / "det")
  files = [p for p in (path / "arrays").rglob("*") if p.is_file()]
  _flip_middle_byte(max(files, key=lambda p: ("d/" in str(p), p.stat().st_size)))
  with pytest.raises(ValueError, match=re.escape(f"{path}: the saved detector is corrupt")):
    InFlowDetector.load(path)
  path = detector.save(tmp_path / "config")
  config = path / "config.json"
  config.write_text(config.read_text()[:40])
  with pytest.raises(ValueError, match=r"corrupt.*config\.json.*truncated"):
    InFlowDetector.load(path)
  (path / "MANIFEST.sha256.json").unlink()  # no manifest: loaded unchecked, config.json parsed
  with pytest.raises(ValueError, match=r"config\.json is corrupt"):
    InFlowDetector.load(path)
