"""The flow's training loop (`inflow_jax.training.flow`): the original's recorded trajectory, data
parallelism (8 devices == 1 device), exact resume, and errors before any training."""

import shutil

import jax
import numpy as np
import pytest
from helpers import fast_jit, shared_file, tiny_images

from configs import cifar10, tiny
from inflow_jax import load_flow
from inflow_jax.model import InFlow
from inflow_jax.model import torch_checkpoint as convert
from inflow_jax.training import flow as train
from inflow_jax.training import state
from inflow_jax.utils import stored_config


@pytest.mark.shared
def test_training_matches_the_original_trajectory():
  """The original's 20 steps (torch Adam, seed-0 init, 20 recorded CIFAR-10 batches of 32)."""
  trajectory = np.load(shared_file("fixtures/train_trajectory_public.npz"))
  images = np.load(shared_file("data/cifar10_train_10k.npz"))["x"]
  model, variables = convert.load_reference_checkpoint(
    shared_file("fixtures/train_trajectory_public_init.npz")
  )
  with np.load(shared_file("fixtures/train_trajectory_public_final.npz")) as final:
    expected = convert.state_dict_to_variables(dict(final))
  batches = [images[idx].astype(np.float32) / 255.0 for idx in trajectory["batch_indices"]]

  variables, losses = train.train_on_batches(model, variables, batches, cifar10.get_config())

  relative = np.abs(losses - trajectory["losses"]) / np.abs(trajectory["losses"])
  assert relative.max() < 1e-4, relative
  errors = jax.tree_util.tree_map(
    lambda a, b: np.max(np.abs(np.asarray(a) - np.asarray(b))), variables, expected
  )
  assert max(jax.tree_util.tree_leaves(errors)) < 1e-4, errors


def test_eight_devices_give_the_one_device_trajectory(tmp_path):
  assert jax.device_count() == 8
  config = tiny.get_config()
  config.train.num_steps = 4
  model, x = InFlow(**config.model), tiny_images()
  one = train.train(model, x, config, tmp_path / "one", devices=jax.devices()[:1], progress=False)
  eight = train.train(model, x, config, tmp_path / "eight", progress=False)
  np.testing.assert_array_equal(one.steps, np.arange(1, 5))
  np.testing.assert_allclose(eight.losses, one.losses, rtol=1e-5)
  assert eight.losses[-1] < eight.losses[0]  # it learns


def _params(variables):
  return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(variables["params"])]


GLOW_LIKE = dict(
  loss="bpd", warmup_steps=2, schedule="cosine", clip_norm=5.0, ema_decay=0.9, skip_factor=5.0
)


GLOW_MODEL = dict(glow=True, num_scales=2, num_blocks=1, width=4, zero_init=True)


@pytest.mark.parametrize(
  "model_settings, settings",
  [({}, {}), (GLOW_MODEL, GLOW_LIKE)],
  ids=["paper", "glow_bpd_schedule_clip_ema"],
)
def test_resume_is_exact_and_metrics_are_not_duplicated(tmp_path, model_settings, settings):
  config = tiny.get_config()  # 6 steps, checkpoints every 2, keeps 2
  config.model.update(model_settings)
  config.train.update(settings)
  model, x = InFlow(**config.model), tiny_images()
  x = np.round(x * 255) / 255 if config.train.loss == "bpd" else x  # bpd: 8-bit images
  devices = jax.devices()[:1]
  straight = train.train(model, x, config, tmp_path / "straight", devices=devices, progress=False)

  config.train.num_steps = 3  # "killed" after step 3: its last checkpoint is step 2
  first = train.train(model, x, config, tmp_path / "resumed", devices=devices, progress=False)
  np.testing.assert_array_equal(first.steps, [1, 2, 3])
  assert sorted(int(p.name) for p in (tmp_path / "resumed/checkpoints").iterdir()) == [2, 3]
  config.train.num_steps = 6
  (tmp_path / "resumed/checkpoints/3").rename(tmp_path / "resumed/checkpoints/tmp_discarded")
  shutil.rmtree(tmp_path / "resumed/checkpoints/tmp_discarded")  # as if killed before saving 3
  second = train.train(model, x, config, tmp_path / "resumed", devices=devices, progress=False)

  np.testing.assert_array_equal(second.steps, [3, 4, 5, 6])
  np.testing.assert_array_equal(second.losses, straight.losses[2:])
  for a, b in zip(_params(second.variables), _params(straight.variables)):
    np.testing.assert_array_equal(a, b)
  logged = [r["step"] for r in train.read_metrics(tmp_path / "resumed")]
  assert logged == [2, 4, 6]  # the line of step 2 kept, nothing written twice
  kept = sorted(int(p.name) for p in (tmp_path / "resumed/checkpoints").iterdir())
  assert kept == [4, 6]
  restored, step = state.restore_variables(model, config, tmp_path / "resumed", x[:16])
  assert step == 6
  for a, b in zip(_params(restored), _params(straight.variables)):
    np.testing.assert_array_equal(a, b)
  if settings:  # load_flow: the model from config.json, the trained (EMA) variables from checkpoint
    stored_config.write_config(tmp_path / "resumed", config.to_dict())
    loaded_model, loaded = load_flow(tmp_path / "resumed", devices=devices)
    assert loaded_model == model
    for a, b in zip(_params(loaded), _params(straight.variables)):
      np.testing.assert_array_equal(a, b)
    z, log_det = fast_jit(model.apply)(loaded, x[:4], 1.0)
    assert z.shape == x[:4].shape and np.all(np.isfinite(np.asarray(log_det)))


def test_batch_size_not_divisible_by_devices(tmp_path):
  config = tiny.get_config()
  config.train.batch_size = 12
  with pytest.raises(ValueError, match="not divisible by the number of devices"):
    train.train(InFlow(**config.model), tiny_images(), config, tmp_path, progress=False)
  assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize(
  "setting, message",
  [
    (dict(num_steps=-1), "num_steps"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(b1=1.0), "b1"),
    (dict(loss="bits"), "loss"),
    (dict(checkpoint_every=0), "checkpoint_every"),
  ],
)
def test_bad_train_settings(setting, message):
  config = tiny.get_config()
  config.train.update(setting)
  with pytest.raises(ValueError, match=message):
    train.check_train_config(config.train, num_devices=1)


def test_train_on_batches_rejects_bad_batches():
  config = tiny.get_config()
  model = InFlow(**config.model)
  variables = state.init_variables(model, 0, tiny_images(n=16))
  with pytest.raises(ValueError, match="lie in"):
    train.train_on_batches(model, variables, [2.0 * tiny_images(n=8) + 1.0], config)
  with pytest.raises(ValueError, match="not divisible"):
    train.train_on_batches(model, variables, [tiny_images(n=6)], config)


def test_bpd_loss_refuses_continuous_images_before_training(tmp_path):
  config = tiny.get_config()
  config.train.loss = "bpd"
  with pytest.raises(ValueError, match="needs 8-bit images"):
    train.train(InFlow(**config.model), tiny_images(), config, tmp_path, progress=False)
  assert not (tmp_path / "checkpoints").exists()
