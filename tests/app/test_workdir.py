"""The job's workdir (`inflow_jax.app.workdir`): the run lock (busy, stale), the stored config and
the resume checks, the report's evaluated step and its table written before the figures."""

import json
import logging
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import tiny
from inflow_jax import load_flow
from inflow_jax.app import job
from inflow_jax.app import workdir as workdir_lib
from inflow_jax.model import InFlow
from inflow_jax.report import plots
from inflow_jax.training import state
from inflow_jax.utils import stored_config


def test_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path):
  with (
    workdir_lib.WorkdirLock(tmp_path),
    pytest.raises(workdir_lib.WorkdirBusy, match="workdir in use"),
  ):
    workdir_lib.WorkdirLock(tmp_path).acquire()
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()  # released
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / workdir_lib.LOCK_FILE).write_text(
    json.dumps({"host": os.uname().nodename, "pid": dead.pid})
  )
  with workdir_lib.WorkdirLock(tmp_path) as lock:  # the dead process's lock is taken over
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_a_run_on_a_busy_workdir_fails_at_once(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live process
  try:
    (tmp_path / workdir_lib.LOCK_FILE).write_text(
      json.dumps({"host": os.uname().nodename, "pid": holder.pid})
    )
    start = time.monotonic()
    with pytest.raises(workdir_lib.WorkdirBusy, match=f"locked by process {holder.pid}"):
      job.run_job(tiny.get_config(), tmp_path, "train", progress=False)
    assert time.monotonic() - start < 10
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()
    assert json.loads((tmp_path / workdir_lib.LOCK_FILE).read_text())["pid"] == holder.pid  # kept
  finally:
    holder.kill()
    holder.wait()


def test_resume_checks_the_stored_config_and_the_report_names_the_step(
  tmp_path, monkeypatch, caplog
):
  config = tiny.get_config()
  config.train.num_steps = 4
  job.run_job(config, tmp_path, "train", progress=False)
  stored = json.loads((tmp_path / stored_config.CONFIG_FILE).read_text())
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
  rescheduled = tiny.get_config()  # schedule settings may change on a resume, with a warning
  rescheduled.train.update(num_steps=6, warmup_steps=2, clip_norm=1.0)
  with caplog.at_level(logging.WARNING):
    assert workdir_lib.check_resume(rescheduled, tmp_path, "train", force_resume=False) == 4
  assert "train.clip_norm None -> 1.0, train.warmup_steps 0 -> 2" in caplog.text
  assert "train.num_steps" not in caplog.text  # a constant rate: more steps continue the same run
  forced = tiny.get_config()
  forced.train.update(num_steps=6, learning_rate=0.5)
  job.run_job(forced, tmp_path, "train", progress=False, force_resume=True)

  def broken(*args, **kwargs):
    raise RuntimeError("plotting failed")

  monkeypatch.setattr(plots, "plot_all", broken)  # evaluate (no resume check); a figure fails
  with pytest.raises(RuntimeError, match="plotting failed"):
    job.run_job(tiny.get_config(), tmp_path, "evaluate", progress=False)
  report = json.loads((tmp_path / "report.json").read_text())  # written before the figures
  assert report["checkpoint_step"] == 6 and set(report["evaluation"]["ood"]) == set(config.data.ood)
  markdown = (tmp_path / "report.md").read_text()
  assert "the checkpoint of step 6" in markdown
  assert "| uniform_noise | InFlow, paper protocol |" in markdown
  model, variables = load_flow(tmp_path)  # the paper flow back from the workdir
  restored, step = state.restore_variables(
    model, forced, tmp_path, np.zeros((2, 32, 32, 3), np.float32)
  )
  assert step == 6 and model == InFlow(**forced.model)
  for got, want in zip(jax.tree.leaves(variables), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
