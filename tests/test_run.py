"""run.py, the command line: an unknown override fails, SIGKILL + rerun ends on the uninterrupted
parameters, and a 2-process jax.distributed training run ends on the one-process parameters.
Subprocesses share a persistent compilation cache to stay quick."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import REPO, free_port

from configs import tiny
from inflow_jax.app.datasets import load_data
from inflow_jax.model import InFlow
from inflow_jax.training import flow as train
from inflow_jax.training import state
from inflow_jax.training.step import local_batches

TIMEOUT_S = 400


@pytest.fixture(scope="module")
def subprocess_env():
  """Environment of run.py subprocesses: CPU, 8 devices (as the tests), and the test run's
  compilation cache (tests/conftest.py), shared with the in-process runs of the same programs."""
  return dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="8")


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
  x_train = load_data(config, "train")["train"]
  straight = train.train(model, x_train, config, tmp_path / "straight", progress=False)
  resumed, step = state.restore_variables(
    model, config, workdir, x_train[: config.train.batch_size]
  )
  assert step == num_steps
  leaves = zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(straight.variables))
  for a, b in leaves:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise


def test_two_processes_end_on_the_one_process_parameters(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
  env["JAX_PLATFORMS"] = "cpu"
  port = free_port()
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
  encoder = [k for k in results[0].files if k.startswith("encoder")]  # equal on both: above
  assert encoder and all(np.all(np.isfinite(results[0][k])) for k in encoder)
  assert (tmp_path / "workdir" / "encoder_checkpoints" / "5").is_dir()
  copies = [k for k in results[0].files if k.startswith("leaf")]
  assert {k.split("_")[1] for k in copies} == {"device0", "device1"}  # 2 local devices each
  for key in copies:  # and every local copy is the same
    np.testing.assert_array_equal(results[0][key], results[0][key.split("_")[0] + "_device0"])
  losses = results[0]["losses"]
  np.testing.assert_array_equal(results[0]["steps"], np.arange(1, 7))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert _latest_checkpoint(tmp_path / "workdir") == 6
  # and the parameters of one process on one device trained on the same global batches (each
  # step's batch is process 0's slice, then process 1's), from the same initial variables. (A plain
  # one-process run of the config trains on other batches: each process takes a contiguous half of
  # the epoch's permutation, so the global batches depend on the process count.)
  config = tiny.get_config()
  x_train = load_data(config, "train")["train"]
  halves = [
    local_batches(x_train, batch_size=16, seed=config.seed, process_index=k, process_count=2)
    for k in range(2)
  ]
  batches = [np.concatenate([next(half) for half in halves]) for _ in range(6)]
  model = InFlow(**config.model)
  initial = state.init_variables(model, config.seed, x_train[:16])
  variables, one_losses = train.train_on_batches(
    model, initial, batches, config, devices=jax.devices()[:1]
  )
  np.testing.assert_allclose(losses, one_losses, rtol=1e-5)
  for i, leaf in enumerate(jax.tree_util.tree_leaves(variables["params"])):
    np.testing.assert_allclose(results[0][f"leaf{i}_device0"], leaf, rtol=1e-5, atol=1e-6)
