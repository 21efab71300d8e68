"""The job's workdir: the run lock (busy, stale), the stored config and resume checks, the report's
evaluated step, and the table written before the figures."""
import json
import os
import subprocess
import sys
import time

import pytest

from configs import tiny
from helpers import REPO
from inflow_jax import job, workdir as workdir_lib
from inflow_jax.report import plots


def test_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path):
  with workdir_lib.WorkdirLock(tmp_path):
    with pytest.raises(workdir_lib.WorkdirBusy, match="workdir in use"):
      workdir_lib.WorkdirLock(tmp_path).acquire()
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()   # released
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / workdir_lib.LOCK_FILE).write_text(json.dumps(
      {"host": os.uname().nodename, "pid": dead.pid}))
  with workdir_lib.WorkdirLock(tmp_path) as lock:        # the dead process's lock is taken over
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_second_run_on_a_busy_workdir_fails_at_once_while_the_first_finishes(tmp_path):
  workdir = tmp_path / "busy"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  first = subprocess.Popen(
      [sys.executable, str(REPO / "run.py"), "--config", "configs/tiny.py", "--workdir", str(workdir),
       "--mode=train", "--config.train.num_steps=40"], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while not (workdir / workdir_lib.LOCK_FILE).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
  assert first.poll() is None, first.communicate()[1][-2000:]
  start = time.monotonic()
  with pytest.raises(workdir_lib.WorkdirBusy, match="workdir in use"):
    job.run_job(tiny.get_config(), workdir, "train", progress=False)
  assert time.monotonic() - start < 30
  _, stderr = first.communicate(timeout=600)
  assert first.returncode == 0, stderr[-3000:]
  steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(set(steps)) and steps[-1] == 40   # no line written twice


def test_resume_checks_the_stored_config_and_the_report_names_the_step(tmp_path):
  config = tiny.get_config()
  config.train.num_steps = 4
  job.run_job(config, tmp_path, "train", progress=False)
  stored = json.loads((tmp_path / workdir_lib.CONFIG_FILE).read_text())
  assert stored["train"]["learning_rate"] == config.train.learning_rate
  for key, value in [("learning_rate", 0.5), ("batch_size", 8)]:
    changed = tiny.get_config()
    changed.train.update({key: value, "num_steps": 6})
    with pytest.raises(ValueError, match=f"train.{key} \\(stored"):
      job.run_job(changed, tmp_path, "train", progress=False)
  other_seed = tiny.get_config()
  other_seed.seed = 3
  with pytest.raises(ValueError, match="seed"):
    job.run_job(other_seed, tmp_path, "train", progress=False)
  fewer = tiny.get_config()
  fewer.train.num_steps = 2
  with pytest.raises(ValueError, match="train.num_steps=2 is below step 4"):
    job.run_job(fewer, tmp_path, "all", progress=False)
  forced = tiny.get_config()
  forced.train.update(num_steps=6, learning_rate=0.5)
  job.run_job(forced, tmp_path, "train", progress=False, force_resume=True)
  job.run_job(tiny.get_config(), tmp_path, "evaluate", progress=False)   # evaluate: no resume check
  report = json.loads((tmp_path / "report.json").read_text())
  assert report["checkpoint_step"] == 6
  assert "the checkpoint of step 6" in (tmp_path / "report.md").read_text()


def test_bad_settings_fail_before_anything_is_written(tmp_path):
  cases = [("level", dict(attention=dict(level=1.5)), "attention.level|level must lie in"),
           ("never_rejects", dict(attention=dict(n_permutations=10)), "can never reject"),
           ("reference", dict(attention=dict(n_reference=8)), "eval.batch_size=16 exceeds"),
           ("untrained", dict(train=dict(num_steps=0)), "trains nothing"),
           ("protocols", dict(eval=dict(protocols=("paper,strict",))), "eval.protocols must be"),
           ("small_test", dict(data=dict(max_eval_images=10)), "fewer than eval.batch_size=16"),
           ("no_heldout", dict(data=dict(heldout_split=None)), "needs held-out")]
  for name, groups, message in cases:
    config = tiny.get_config()
    for group, values in groups.items():
      config[group].update(values)
    workdir = tmp_path / name
    with pytest.raises((ValueError, TypeError), match=message):
      job.run_job(config, workdir, "all", progress=False)
    if name in ("small_test", "no_heldout"):   # found once the data are loaded: nothing written yet
      assert not list(workdir.iterdir()), name
    else:                                       # found from the config alone: no workdir at all
      assert not workdir.exists(), name
  blocked = tmp_path / "a_file"
  blocked.write_text("not a directory")
  with pytest.raises(PermissionError, match="not writable"):
    job.run_job(tiny.get_config(), blocked / "workdir", "all", progress=False)


def test_the_table_is_written_before_the_figures(tmp_path, monkeypatch):
  def broken(*args, **kwargs):
    raise RuntimeError("plotting failed")
  config = tiny.get_config()
  config.train.num_steps = 2
  monkeypatch.setattr(plots, "plot_all", broken)
  with pytest.raises(RuntimeError, match="plotting failed"):
    job.run_job(config, tmp_path, "all", progress=False)
  report = json.loads((tmp_path / "report.json").read_text())
  assert set(report["evaluation"]["ood"]) == set(config.data.ood) and report["checkpoint_step"] == 2
  assert "| uniform_noise | InFlow, paper protocol |" in (tmp_path / "report.md").read_text()
