"""Regression tests of detection quality: the offline digits job (`python run.py --config
configs/digits.py`, the job of `inflow_jax.app.job`) run once, its report's numbers against
thresholds set a margin below what it measures (one device, seed 0).

Measured (2 CPU cores, 51 s with the mixed protocol at m = 10 and 50): paper-protocol AUROC 1.0
against every OOD set; every far-OOD test batch flagged (10 of 10 each); mixed-protocol false alarms
in 200 pure in-distribution batches: MMD gate 11 (m = 10) and 6 (m = 50), typicality 14 and 7;
power on pure OOD batches (rho = 1) 1.0 for both gates, every set and size.

The mixed protocol runs with 200 batches per cell (the config's 10 are too few to bound a rate) at
rho = 1 and m = 10 only (the power check needs no other fraction; the larger m is the easier one
for the power and costs five times the images): 200 batches give a two-sided 99.9% binomial
interval of [2, 21] flagged at the 5% level, so a gate that always flags fails, and one that never
flags fails both that interval and the power check.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, mmd_test_size
from PIL import Image
from scipy import stats

from inflow_jax import data

N_BATCHES = 200
FAR_OOD = ("photo_patches", "uniform_noise", "gaussian_noise", "constant")
MIN_AUROC = 0.95  # measured 1.0 for each far-OOD set
MIN_POWER = 0.95  # measured 1.0: pure OOD batches of 10 and 50 flagged


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """The digits job's workdir, run by run.py on one CPU device (as a user runs it)."""
  workdir = tmp_path_factory.mktemp("digits")
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  args = ["--config", "configs/digits.py", "--workdir", str(workdir)]
  args += [f"--config.eval.mixed_n_batches={N_BATCHES}", "--config.eval.mixed_rhos=(1.0,)"]
  args += ["--config.eval.mixed_batch_sizes=(10,)"]
  process = subprocess.run(
    [sys.executable, str(REPO / "run.py"), *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert process.returncode == 0, process.stderr[-3000:]
  return workdir


@pytest.fixture(scope="module")
def report(workdir):
  """report.json's evaluation of the digits job."""
  return json.loads((workdir / "report.json").read_text())["evaluation"]


def test_far_ood_sets_are_detected_under_the_paper_protocol(report):
  for name in FAR_OOD:
    row = report["ood"][name]
    assert row["paper"]["auroc"] >= MIN_AUROC, (name, row["paper"])
    assert row["batches_flagged"] == row["n_batches"], name  # every far-OOD batch: a = 0


def test_mixed_false_alarms_lie_in_the_binomial_interval_of_the_level(report):
  settings, mixed = report["settings"], report["mixed"]
  assert mixed["n_batches"] == N_BATCHES and mixed["batch_sizes"] == [10]
  level = settings["level"]
  sizes = {
    "inflow": mmd_test_size(level, settings["n_permutations"]),  # 5/101 at P = 100
    "typicality": level,  # bootstrapped thresholds: the level approximately
  }
  for gate, probability in sizes.items():
    low, high = stats.binom.interval(0.999, N_BATCHES, probability)
    assert low >= 1  # so that a gate that never flags fails too
    for m, rate in zip(mixed["batch_sizes"], mixed["false_alarm"][gate]):
      assert low <= round(rate * N_BATCHES) <= high, (gate, m, rate, (low, high))


def test_mixed_power_on_pure_ood_batches(report):
  mixed = report["mixed"]
  assert mixed["rhos"] == [1.0]
  for name in FAR_OOD:
    for gate in ("inflow", "typicality"):
      for m, power in zip(mixed["batch_sizes"], mixed["power"][name][gate][0]):
        assert power >= MIN_POWER, (name, gate, m, power)


def _score(workdir, folder, *flags):
  output = folder.parent / f"{folder.name}{''.join(flags)}.csv"
  args = ["--mode=score", "--workdir", str(workdir), "--input", f"folder:{folder}"]
  process = subprocess.run(
    [sys.executable, str(REPO / "run.py"), *args, "--output", str(output), *flags],
    cwd=REPO,
    env=dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1"),
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert process.returncode == 0, process.stderr[-3000:]
  with open(output, newline="") as f:
    return {os.path.basename(row["path"]): int(row["is_ood"]) for row in csv.DictReader(f)}


def test_a_users_mixed_folder_gets_per_image_verdicts(workdir, tmp_path):
  """10 unseen digits (test[:10]: neither trained on nor calibrated on) and 10 photo crops in one
  folder, scored as one batch: each image's own verdict, not its batch's; in stream mode, with a
  photo first, that photo is flagged."""
  digits = data.load_split("digits", "test[:10]")[0]
  photos = data.load_split("photo_patches", "test")[0][:10]
  folder = tmp_path / "mixed"
  folder.mkdir()
  for i, image in enumerate(np.concatenate([photos[:1], digits, photos[1:]])):
    Image.fromarray(image).save(folder / f"{i:02d}.png")
  is_ood = _score(workdir, folder, "--batch-size", "20")
  ood = [is_ood[f"{i:02d}.png"] for i in [0] + list(range(11, 20))]
  clean = [is_ood[f"{i:02d}.png"] for i in range(1, 11)]
  assert sum(ood) >= 9 and len(clean) - sum(clean) >= 8, (ood, clean)
  streamed = _score(workdir, folder, "--stream")
  assert streamed["00.png"] == 1
