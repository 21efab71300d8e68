"""Orbax checkpoints of the training loop (`inflow_jax.training.checkpoint`): unreadable and
mismatched ones refused, a corrupt or non-finite newest one set aside for the one before."""

import json

import jax
import numpy as np
import pytest
from helpers import tiny_images

from configs import tiny
from inflow_jax.model import InFlow
from inflow_jax.training import checkpoint, state
from inflow_jax.training import flow as train


def _params(variables):
  return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(variables["params"])]


def test_unreadable_and_mismatched_checkpoints(tmp_path):
  config = tiny.get_config()
  config.train.num_steps = 2
  model, x = InFlow(**config.model), tiny_images(n=32)
  devices = jax.devices()[:1]
  train.train(model, x, config, tmp_path / "run", devices=devices, progress=False)

  wider = tiny.get_config()
  wider.model.width = 16
  with pytest.raises(checkpoint.CheckpointError, match="different model"):
    train.train(InFlow(**wider.model), x, wider, tmp_path / "run", devices=devices, progress=False)

  # every step: nothing intact to fall back to
  for path in (tmp_path / "run/checkpoints").rglob("*"):
    if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
      path.write_bytes(b"garbage")
  with pytest.raises(checkpoint.CheckpointError, match="cannot (read|restore) the checkpoint"):
    train.train(model, x, config, tmp_path / "run", devices=devices, progress=False)
  lines = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [2]  # nothing trained by the failed runs


def _largest_array_file(directory):
  """The largest file of orbax's array data (under a `d/` folder) in a checkpoint directory."""
  return max(
    (p for p in directory.rglob("*") if p.is_file() and p.parent.name == "d"),
    key=lambda p: p.stat().st_size,
  )


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_newest_checkpoint_is_set_aside_and_training_resumes_from_the_one_before(
  tmp_path, damage, caplog
):
  config = tiny.get_config()  # 6 steps, checkpoints every 2, keeps 2: steps 4 and 6 remain
  model, x = InFlow(**config.model), tiny_images()
  devices = jax.devices()[:1]
  straight = train.train(model, x, config, tmp_path / "straight", devices=devices, progress=False)
  train.train(model, x, config, tmp_path / "run", devices=devices, progress=False)
  array_file = _largest_array_file(tmp_path / "run/checkpoints/6")
  data = bytearray(array_file.read_bytes())
  if damage == "flip":
    data[len(data) // 2] ^= 0x40
    array_file.write_bytes(bytes(data))
  else:
    array_file.write_bytes(bytes(data[: len(data) // 2]))
  with caplog.at_level("WARNING"):
    restored, step = state.restore_variables(model, config, tmp_path / "run", x[:16])
  assert step == 4 and "is corrupt" in caplog.text
  assert ("checksum" if damage == "flip" else "were written (truncated?)") in caplog.text
  assert (tmp_path / "run/checkpoints/corrupt-6").is_dir()  # moved aside, nothing deleted
  resumed = train.train(model, x, config, tmp_path / "run", devices=devices, progress=False)
  np.testing.assert_array_equal(resumed.steps, [5, 6])
  for a, b in zip(_params(resumed.variables), _params(straight.variables)):
    np.testing.assert_array_equal(a, b)


def test_checkpoint_with_non_finite_weights_is_set_aside(tmp_path, caplog):
  manager = checkpoint.make_manager(tmp_path / "checkpoints", keep=3, every=1)
  checkpoint.save(manager, 1, {"w": np.ones(3, np.float32)})
  checkpoint.save(manager, 2, {"w": np.array([1.0, np.nan, 7.7e33], np.float32)})
  abstract = {"w": jax.ShapeDtypeStruct((3,), np.float32)}
  with caplog.at_level("WARNING"):
    state, step = checkpoint.restore_latest(manager, abstract)
  manager.close()
  assert step == 1 and "NaN or infinite" in caplog.text
  np.testing.assert_array_equal(np.asarray(state["w"]), np.ones(3))
