"""run.py: the whole job on the tiny config, errors before any training, SIGKILL + resume, and a
2-process jax.distributed run. Subprocesses share a persistent compilation cache to stay quick."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import REPO
from PIL import Image

from configs import tiny
from inflow_jax import InFlowDetector
from inflow_jax.app import config_checks, job
from inflow_jax.app import score as score_job
from inflow_jax.gates.conformal import image_hashes
from inflow_jax.model import InFlow
from inflow_jax.training import flow as train
from inflow_jax.training import state

TIMEOUT_S = 400


@pytest.fixture(scope="module")
def subprocess_env(tmp_path_factory):
  """Environment of run.py subprocesses: CPU, 8 devices (as the tests), a shared compilation cache."""
  env = dict(os.environ)
  env.update(
    JAX_PLATFORMS="cpu",
    JAX_NUM_CPU_DEVICES="8",
    JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )
  return env


def run_py(args, env, **kwargs):
  return subprocess.Popen(
    [sys.executable, str(REPO / "run.py"), *args],
    env=env,
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    **kwargs,
  )


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


def test_tiny_job_reports_the_adversarial_sets_and_the_conformal_gates(tmp_path):
  config = tiny.get_config()
  config.adversarial.enabled = (
    True  # tiny's settings: PGD at 8/255, the MMD attack on uniform_noise
  )
  config.train.num_steps = 2  # the flow's training is tested above
  # beyond the paper: the combined gate (calibrated on held-out test images), JPEG for every set
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
  table = job.run_job(config, tmp_path, "all", progress=False)

  report = json.loads((tmp_path / "report.json").read_text())
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
  assert report["timings_s"]["adversarial"] > 0
  # the mixed protocol on the attacked sets too: the gates' power on attacked batches
  assert set(adversarial["mixed"]["false_alarm"]) == {
    "inflow",
    "typicality",
    "conformal",
    "combined",
  }
  markdown = (tmp_path / "report.md").read_text()
  assert "## Adversarial inputs" in markdown and "| 8/255 |" in markdown
  for name in adversarial["ood"]:
    assert f"| {name} | InFlow, paper protocol |" in markdown
  assert "| uniform_noise_adaptive_conformal | one image | combined |" in markdown

  assert table["settings"]["attention"] == "combined" and table["settings"]["jpeg_quality"] == 75
  assert 0.0 <= table["in_distribution"]["image_false_alarm"] <= 1.0
  mixed = table["mixed"]
  assert set(mixed["false_alarm"]) == {"inflow", "typicality", "conformal", "combined"}
  assert np.isnan(mixed["false_alarm"]["inflow"][0]) and not np.isnan(
    mixed["false_alarm"]["combined"][0]
  )
  assert "| uniform_noise | one image | combined |" in markdown
  detector = InFlowDetector.load(tmp_path / "detector")
  assert (detector.attention, detector.jpeg_quality) == ("combined", 75)
  summary = score_job.run_score(tmp_path, "uniform_noise", progress=False)
  rows = (tmp_path / score_job.SCORES_FILE).read_text().splitlines()
  assert rows[0].split(",")[:4] == ["index", "score", "batch_p_value", "image_p_value"]
  p = np.array([float(r.split(",")[3]) for r in rows[1:]])
  assert summary["images"] == len(p) and np.all((p > 0) & (p <= 1))


def _error_cases(tmp_path):
  unknown_ood = tiny.get_config()
  unknown_ood.data.ood = ("uniform_noise", "no_such_dataset")
  unknown_train = tiny.get_config()
  unknown_train.data.train = "no_such_dataset"
  indivisible = tiny.get_config()
  indivisible.train.batch_size = 12
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not a zip file")
  unreadable = tiny.get_config()
  unreadable.checkpoint_path = str(garbage)
  missing = tiny.get_config()
  missing.checkpoint_path = str(tmp_path / "absent.npz")
  typo = tiny.get_config()
  typo.train.learning_rat = 0.1  # a key the schema does not have
  nested_typo = tiny.get_config()
  nested_typo.model.widht = 4
  adversarial = {}
  for case, group, setting in [
    ("epsilon", "attack", dict(epsilons=(8 / 255, -1 / 255))),
    ("attack_steps", "attack", dict(num_steps=0)),
    ("adaptive_steps", "attack", dict(adaptive_num_steps=-2)),
    ("adaptive_step", "attack", dict(adaptive_step_size=0.0)),
    ("ood", "attack", dict(adaptive_ood=("no_such_set",))),
    ("classifier_steps", "train", dict(num_steps=0)),
    ("classifier_batch", "train", dict(batch_size=12)),
    ("classes", "model", dict(num_classes=5)),
  ]:
    adversarial[case] = tiny.get_config()
    adversarial[case].adversarial.enabled = True
    adversarial[case].adversarial[group].update(setting)
  conformal = {}
  for case, group, setting in [
    ("kind", "attention", dict(kind="kde")),
    ("calibration", "attention", dict(kind="combined")),
    ("jpeg", "data", dict(jpeg_quality=100)),
    ("overlap", "data", dict(calibration_split="train[200:300]")),
    ("density_mmd", "data", dict(density_split="test[:50]")),
    ("density_overlap", "data", dict(density_split="test[:50]")),
    ("density_small", "data", dict(density_split="test[-110:-100]")),
    ("components", "attention", dict(kind="conformal", n_components=0)),
    ("mean_shift", "attention", dict(kind="combined", mean_shift_components=64)),
    ("mean_shift_negative", "attention", dict(kind="combined", mean_shift_components=-1)),
    ("density_both", "attention", dict(kind="conformal", n_density=100)),
    ("density_many", "attention", dict(kind="conformal", n_density=10**6)),
  ]:
    conformal[case] = tiny.get_config()
    conformal[case][group].update(setting)
  conformal["overlap"].attention.kind = "conformal"
  conformal["overlap"].data.test = "digits"
  conformal["density_overlap"].attention.kind = "conformal"  # density images among the test images
  conformal["density_overlap"].data.update(
    calibration_split="test[-100:]", test_split="test[:-100]"
  )
  conformal["density_small"].attention.kind = "conformal"
  conformal["density_small"].data.update(calibration_split="test[-100:]", test_split="test[:-110]")
  conformal["components"].data.update(calibration_split="test[-100:]", test_split="test[:-100]")
  for case in ("mean_shift", "mean_shift_negative"):
    conformal[case].data.update(calibration_split="test[-100:]", test_split="test[:-100]")
  conformal["density_both"].data.update(calibration_split="test[-100:]", density_split="test[:50]")
  conformal["density_many"].data.update(calibration_split="test[-100:]", test_split="test[:-100]")
  conformal["mean_shift_target"] = tiny.get_config()  # the attack needs the combined gate's test
  conformal["mean_shift_target"].attention.kind = "conformal"
  conformal["mean_shift_target"].data.update(
    calibration_split="test[-100:]", test_split="test[:-100]"
  )
  conformal["mean_shift_target"].adversarial.enabled = True
  conformal["mean_shift_target"].adversarial.attack.adaptive_targets = ("mean_shift",)
  unlabelled = tmp_path / "unlabelled.npy"
  np.save(unlabelled, np.random.default_rng(0).integers(0, 256, (320, 32, 32, 3), np.uint8))
  adversarial["labels"] = tiny.get_config()
  adversarial["labels"].adversarial.enabled = True
  adversarial["labels"].data.train = f"npy:{unlabelled}"
  return [
    (unknown_ood, "all", ValueError, "no_such_dataset"),
    (unknown_train, "train", ValueError, "no_such_dataset"),
    (indivisible, "all", ValueError, "not divisible by the number of devices"),
    (unreadable, "evaluate", ValueError, "unreadable"),
    (missing, "all", ValueError, "unreadable"),
    (unreadable, "train", ValueError, "nothing to train"),
    (typo, "all", KeyError, "config.train.learning_rat is not a config key"),
    (nested_typo, "all", KeyError, "config.model.widht"),
    (
      adversarial["epsilon"],
      "all",
      ValueError,
      r"adversarial.attack.epsilons\[1\]: epsilon must be",
    ),
    (adversarial["attack_steps"], "all", ValueError, "adversarial.attack.num_steps"),
    (adversarial["adaptive_steps"], "all", ValueError, "adversarial.attack.adaptive_num_steps"),
    (adversarial["adaptive_step"], "all", ValueError, "adversarial.attack.adaptive_step_size"),
    (adversarial["ood"], "all", ValueError, "adversarial.attack.adaptive_ood names"),
    (
      adversarial["classifier_steps"],
      "all",
      ValueError,
      "adversarial.train.num_steps must be >= 1",
    ),
    (adversarial["classifier_batch"], "all", ValueError, "adversarial.train.batch_size=12 is not"),
    (adversarial["classes"], "all", ValueError, "adversarial.model.num_classes"),
    (
      adversarial["labels"],
      "all",
      ValueError,
      r"data.train='npy:.*' split 'train\[:256\]' has none",
    ),
    (conformal["kind"], "all", ValueError, r"attention.kind must be one of \('mmd', 'conformal'"),
    (conformal["calibration"], "all", ValueError, "needs data.calibration_split"),
    (
      conformal["jpeg"],
      "all",
      ValueError,
      r"jpeg_quality must be None \(off\) or an integer in \[1, 95\]",
    ),
    (
      conformal["overlap"],
      "all",
      ValueError,
      r"56 calibration images also appear in the training images",
    ),
    (
      conformal["density_mmd"],
      "all",
      ValueError,
      r"data.density_split is for the conformal density",
    ),
    (
      conformal["density_overlap"],
      "all",
      ValueError,
      r"50 images of data.density_split='test\[:50\]' also appear in the test images",
    ),
    (
      conformal["density_small"],
      "all",
      ValueError,
      r"n_components='auto' needs at least 13 images of data.density_split='test\[-110:-100\]', got 10",
    ),
    (
      conformal["components"],
      "all",
      ValueError,
      r"attention.n_components: n_components must be a positive int or 'auto', got 0",
    ),
    (
      conformal["mean_shift"],
      "all",
      ValueError,
      r"attention.mean_shift_components=64 needs more reference images than components, got attention.n_reference=64",
    ),
    (
      conformal["mean_shift_negative"],
      "all",
      ValueError,
      r"attention.mean_shift_components must be an int >= 0 \(0 or None: no mean-shift test\), got -1",
    ),
    (
      conformal["mean_shift_target"],
      "all",
      ValueError,
      r"adaptive_targets has 'mean_shift', which attacks the combined gate's mean-shift test",
    ),
    (
      conformal["density_both"],
      "all",
      ValueError,
      r"attention.n_density=100 and data.density_split='test\[:50\]' both say",
    ),
    (
      conformal["density_many"],
      "all",
      ValueError,
      r"attention.n_density=1000000 exceeds the 256 images",
    ),
  ]


def test_mean_shift_components_zero_or_none_turns_the_test_off():
  """0 (what the command line can set) and None mean no mean-shift test; both pass the checks."""
  config = tiny.get_config()
  config.attention.kind = "combined"
  config.data.update(calibration_split="test[-100:]", test_split="test[:-100]")
  for value, expected in ((0, None), (None, None), (8, 8)):
    config.attention.mean_shift_components = value
    config_checks.check_evaluation_config(config)
    assert config_checks.mean_shift_components(config) == expected


def test_n_density_fits_the_density_on_training_images_that_include_the_reference():
  config = tiny.get_config()
  config.attention.update(kind="conformal", n_reference=50, n_density=200)
  config.data.update(calibration_split="test[-100:]", test_split="test[:-100]")
  sets = job.load_data(config, "evaluate")
  reference = job.reference_images(sets["train"], 50, config.seed)
  assert sets["density"].shape == (200,) + sets["train"].shape[1:]
  assert image_hashes(reference) <= image_hashes(sets["density"]) <= image_hashes(sets["train"])


def test_errors_before_any_training(tmp_path):
  for i, (config, mode, error, message) in enumerate(_error_cases(tmp_path)):
    workdir = tmp_path / f"case{i}"
    with pytest.raises(error, match=message):
      job.run_job(config, workdir, mode, progress=False)
    assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists(), i


def test_unknown_config_override_fails_at_the_command_line(tmp_path, subprocess_env):
  process = run_py(
    ["--config", "configs/tiny.py", "--workdir", str(tmp_path / "w"), "--config.train.bogus=1"],
    subprocess_env,
  )
  _, stderr = process.communicate(timeout=TIMEOUT_S)
  assert process.returncode != 0
  assert "bogus" in stderr
  assert not (tmp_path / "w").exists()


def _latest_checkpoint(workdir) -> int:
  directory = workdir / "checkpoints"
  steps = (
    [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.exists() else []
  )
  return max(steps, default=0)


def test_sigkill_then_rerun_ends_with_the_uninterrupted_parameters(tmp_path, subprocess_env):
  num_steps, every = 30, 10
  workdir = tmp_path / "killed"
  args = [
    "--config",
    "configs/tiny.py",
    "--workdir",
    str(workdir),
    "--mode=train",
    f"--config.train.num_steps={num_steps}",
    f"--config.train.checkpoint_every={every}",
    "--config.train.log_every=5",
  ]
  recipe = dict(warmup_steps=5, schedule="cosine", clip_norm=1.0, ema_decay=0.9, skip_factor=5.0)
  args += [f"--config.train.{k}={v}" for k, v in recipe.items()]  # bit-exact with all of them

  process = run_py(args, subprocess_env)
  deadline = time.monotonic() + TIMEOUT_S
  while (
    _latest_checkpoint(workdir) < every and process.poll() is None and time.monotonic() < deadline
  ):
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL, (
    f"the run ended before it could be killed:\n{stderr[-3000:]}"
  )
  killed_at = _latest_checkpoint(workdir)
  assert every <= killed_at < num_steps

  process = run_py(args, subprocess_env)  # the same command again
  _, stderr = process.communicate(timeout=TIMEOUT_S)
  assert process.returncode == 0, stderr[-3000:]
  assert f"resuming from the checkpoint of step {killed_at}" in stderr
  steps = [r["step"] for r in train.read_metrics(workdir)]
  assert steps == list(range(5, num_steps + 1, 5))  # one line per interval, none twice

  config = tiny.get_config()
  config.train.update(num_steps=num_steps, checkpoint_every=every, log_every=5, **recipe)
  model = InFlow(**config.model)
  x_train = job.load_data(config, "train")["train"]
  straight = train.train(model, x_train, config, tmp_path / "straight", progress=False)
  resumed, step = state.restore_variables(
    model, config, workdir, x_train[: config.train.batch_size]
  )
  assert step == num_steps
  for a, b in zip(
    jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(straight.variables)
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_end_on_identical_parameters(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
  env["JAX_PLATFORMS"] = "cpu"
  port = _free_port()
  workers = [
    subprocess.Popen(
      [
        sys.executable,
        str(REPO / "tests" / "distributed_worker.py"),
        str(port),
        str(i),
        str(tmp_path / "workdir"),
        str(tmp_path / f"process{i}.npz"),
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  for i, worker in enumerate(workers):
    output, _ = worker.communicate(timeout=TIMEOUT_S)
    assert worker.returncode == 0, f"process {i}:\n{output[-3000:]}"

  results = [np.load(tmp_path / f"process{i}.npz") for i in range(2)]
  assert results[0].files == results[1].files
  for key in results[0].files:
    np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)
  copies = [k for k in results[0].files if k.startswith("leaf")]
  assert {k.split("_")[1] for k in copies} == {"device0", "device1"}  # 2 local devices each
  for key in copies:  # and every local copy is the same
    np.testing.assert_array_equal(results[0][key], results[0][key.split("_")[0] + "_device0"])
  losses = results[0]["losses"]
  np.testing.assert_array_equal(results[0]["steps"], np.arange(1, 7))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert _latest_checkpoint(tmp_path / "workdir") == 6
