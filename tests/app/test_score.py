"""The score mode (`inflow_jax.app.score`, `run.py --mode=score`): the job's saved detector scores
new images in order; 8 devices and 2 processes give the single-device CSV; bad input exits with one
line naming it."""

import csv
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import REPO, free_port

from configs import tiny
from inflow_jax import data
from inflow_jax.app import job
from inflow_jax.app import score as score_job
from inflow_jax.detector import InFlowDetector
from inflow_jax.gates import mmd_test

TIMEOUT_S = 400


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tiny job's workdir (trained, evaluated, its detector saved) and an npz of 48 digits test
  images followed by 48 uniform-noise images."""
  workdir = tmp_path_factory.mktemp("job")
  job.run_job(tiny.get_config(), workdir, "all", progress=False)
  digits, _ = data.load_split("digits", "test")
  noise = np.random.default_rng(0).integers(0, 256, (48,) + digits.shape[1:], np.uint8)
  np.savez(workdir / "inputs.npz", x=np.concatenate([digits[:48], noise]))
  return workdir


def read_rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_scores_keep_the_order_and_flag_the_noise(workdir):
  summary = score_job.run_score(workdir, f"npz:{workdir / 'inputs.npz'}", progress=False)
  rows = read_rows(workdir / "scores.csv")
  assert [int(r["index"]) for r in rows] == list(range(96)) and summary["images"] == 96
  is_ood = np.array([int(r["is_ood"]) for r in rows])
  assert is_ood[48:].mean() >= 0.95 and is_ood[:48].mean() <= 0.25
  assert summary["batches"] == 6 and summary["images_flagged"] == is_ood.sum()
  detector = InFlowDetector.load(workdir / "detector")
  x = data.preprocess(np.load(workdir / "inputs.npz")["x"], 32)
  np.testing.assert_array_equal(detector.predict(x), is_ood)  # the loaded detector agrees
  np.testing.assert_allclose(detector.score(x), [float(r["score"]) for r in rows], rtol=1e-5)


def test_eight_devices_give_the_single_device_csv(workdir, tmp_path):
  source = f"npz:{workdir / 'inputs.npz'}"
  score_job.run_score(
    workdir, source, output=tmp_path / "one.csv", devices=jax.devices()[:1], progress=False
  )
  score_job.run_score(
    workdir, source, output=tmp_path / "eight.csv", devices=jax.devices()[:8], progress=False
  )
  one, eight = read_rows(tmp_path / "one.csv"), read_rows(tmp_path / "eight.csv")
  assert [(r["index"], r["is_ood"], r["attention"], r["batch_p_value"]) for r in one] == [
    (r["index"], r["is_ood"], r["attention"], r["batch_p_value"]) for r in eight
  ]
  np.testing.assert_allclose(
    [float(r["score"]) for r in one], [float(r["score"]) for r in eight], rtol=1e-6
  )


def test_stream_mode_gates_every_image(workdir, tmp_path):
  """Every image is tested from the first one on: image t by the window of the images so far
  (at least 2), each window's p-value that of its own MMD test with the key fold_in(key, t)."""
  summary = score_job.run_score(
    workdir, f"npz:{workdir / 'inputs.npz'}", output=tmp_path / "s.csv", stream=True, progress=False
  )
  rows = read_rows(tmp_path / "s.csv")
  attention = np.array([float(r["attention"]) for r in rows])
  p_window = np.array([float(r["batch_p_value"]) for r in rows])
  assert len(rows) == 96 and summary["images"] == 96
  assert attention[70:].max() == 0.0  # windows of pure noise are flagged
  sizes = [2, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8] + [16] * 81  # powers of two, then full
  assert [r["tested_by"] for r in rows] == [
    f"window of {m} images (a verdict per window)" for m in sizes
  ]
  detector = InFlowDetector.load(workdir / "detector")
  x = data.preprocess(np.load(workdir / "inputs.npz")["x"], 32)
  key = jax.random.PRNGKey(detector.seed)
  for t in (0, 1, 7, 14, 15, 40, 95):  # warm-up windows and full ones
    lo, hi = (0, 2) if t == 0 else (t + 1 - sizes[t], t + 1)
    expected = mmd_test(detector.mmd_state_, x[lo:hi], jax.random.fold_in(key, t)).p_value
    np.testing.assert_allclose(p_window[t], float(expected), rtol=1e-5, err_msg=f"image {t}")


def test_stream_mode_flags_an_outlier_that_comes_first(workdir, tmp_path):
  """Noise first, then digits: the first image is tested (with the second) and flagged; the paper's
  gate tests windows, so the first two images are noise here."""
  x = np.load(workdir / "inputs.npz")["x"]
  np.savez(tmp_path / "noise_first.npz", x=np.concatenate([x[48:50], x[:30]]))
  score_job.run_score(
    workdir, f"npz:{tmp_path / 'noise_first.npz'}", output=tmp_path / "s.csv", stream=True,
    progress=False,
  )  # fmt: skip
  rows = read_rows(tmp_path / "s.csv")
  assert int(rows[0]["is_ood"]) == 1 and int(rows[1]["is_ood"]) == 1


def _score_argv(workdir, source, output, *extra):
  """run.py's command line for the score mode."""
  args = ["--mode=score", "--workdir", str(workdir), "--input", source, "--output", str(output)]
  return [sys.executable, str(REPO / "run.py"), *args, *extra]


def _score_process(workdir, output, extra=(), env=None):
  return subprocess.Popen(
    _score_argv(workdir, f"npz:{workdir / 'inputs.npz'}", output, *extra),
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def test_two_processes_write_the_single_process_csv(workdir, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2")
  port = free_port()
  workers = [
    _score_process(
      workdir,
      tmp_path / "multi.csv",
      env=env,
      extra=(f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"),
    )
    for i in range(2)
  ]
  score_job.run_score(
    workdir,
    f"npz:{workdir / 'inputs.npz'}",
    output=tmp_path / "single.csv",
    devices=jax.devices()[:2],
    progress=False,
  )  # one process, 2 devices as each worker
  for process in workers:
    _, stderr = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, stderr[-3000:]
  assert (tmp_path / "multi.csv").read_text() == (tmp_path / "single.csv").read_text()
  assert not list(tmp_path.glob(".multi.csv.part*"))


def test_bad_inputs_exit_with_one_line(workdir, tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "broken").mkdir()
  (tmp_path / "broken/a.png").write_bytes(b"not a png")
  np.savez(tmp_path / "small.npz", x=np.zeros((4, 28, 28, 3), np.uint8))
  for source, message in [(f"npz:{tmp_path / 'small.npz'}", "28x28x3")]:  # through run.py
    process = subprocess.run(
      _score_argv(workdir, source, tmp_path / "out.csv"),
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=TIMEOUT_S,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert process.returncode != 0, source
    assert message in process.stderr and "Traceback" not in process.stderr, process.stderr[-2000:]
    assert process.stderr.strip().splitlines()[-1].startswith("error: ")
  for source, message in [
    (f"folder:{tmp_path / 'missing'}", "does not exist"),  # the same errors
    (f"folder:{tmp_path / 'empty'}", "holds no"),
    (f"folder:{tmp_path / 'broken'}", "cannot read image file"),
  ]:
    with pytest.raises(score_job.ScoreError, match=message):
      score_job.run_score(workdir, source, output=tmp_path / "out.csv", progress=False)
  assert not (tmp_path / "out.csv").exists()
  with pytest.raises(score_job.ScoreError, match="holds no saved detector"):
    score_job.run_score(tmp_path, f"npz:{workdir / 'inputs.npz'}")
  with pytest.raises(score_job.ScoreError, match="cannot be written"):
    score_job.run_score(workdir, f"npz:{workdir / 'inputs.npz'}", output=tmp_path / "no/dir.csv")
