"""`inflow_jax.app.ship`: a job's detector shipped as a pretrained one loads by name, its manifest
says how it was made, and an existing name is not overwritten."""

import numpy as np
import pytest

from configs import tiny
from inflow_jax import pretrained
from inflow_jax.app import job, ship


def test_a_shipped_job_detector_loads_by_name_with_its_manifest(tmp_path, monkeypatch):
  workdir = tmp_path / "job"
  job.run_job(tiny.get_config(), workdir, "all", progress=False)
  monkeypatch.setattr(pretrained, "ROOT", tmp_path / "pretrained")
  (tmp_path / "pretrained").mkdir()
  ship.ship(workdir, "tiny")
  detector = pretrained.load("tiny")
  manifest = pretrained.manifest("tiny")
  assert manifest["input_shape"] == [32, 32, 3] and manifest["splits"]["train"] == "digits"
  assert "detector/config.json" in manifest["sha256"] and manifest["figures"]["ood"]
  assert "figures" not in manifest["figures"]  # the job's plots stay in its workdir
  x = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
  assert detector.score(x).shape == (4,)
  with pytest.raises(FileExistsError, match="remove it first"):
    ship.ship(workdir, "tiny")


def test_the_manifest_holds_data_paths_relative_to_the_repository():
  shared = ship.REPOSITORY.parent / "shared" / "data"
  config = {"data": {"ood": [f"npz:{shared / 'svhn.npz'}", "digits"], "data_dir": str(shared)}}
  assert ship.portable(config) == {
    "data": {"ood": ["npz:../shared/data/svhn.npz", "digits"], "data_dir": "../shared/data"}
  }
  assert ship.portable({f"npz:{shared / 'svhn.npz'}": 0.9}) == {"npz:../shared/data/svhn.npz": 0.9}
  assert ship.portable({"n": 3, "name": "tfds:cifar10", "split": "test[:2500]"}) == {
    "n": 3,
    "name": "tfds:cifar10",
    "split": "test[:2500]",
  }
