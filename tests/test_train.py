"""Training: the optimiser against PyTorch's Adam equations and the original's recorded trajectory,
data parallelism (8 devices == 1 device), exact resume, and errors before any training."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import fast_jit, shared_file

from configs import cifar10, tiny
from inflow_jax import load_flow
from inflow_jax.model import InFlow
from inflow_jax.model import torch_checkpoint as convert
from inflow_jax.training import checkpoint, losses, state
from inflow_jax.training import flow as train
from inflow_jax.training.optimizer import make_optimizer
from inflow_jax.training.step import local_batches
from inflow_jax.utils import stored_config


def tiny_images(n=64, seed=0):
  """Smooth random images (B, 32, 32, 3) in [0, 1]: cheap stand-ins for training data."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(size=(n, 4, 4, 3))
  return np.clip(
    np.kron(coarse, np.ones((1, 8, 8, 1))) + 0.05 * rng.normal(size=(n, 32, 32, 3)), 0, 1
  ).astype(np.float32)


def torch_adam_reference(w, grads, lr, b1, b2, eps, wd):
  """torch.optim.Adam(weight_decay=wd) as in its documentation, in float64 numpy."""
  m, v = np.zeros_like(w), np.zeros_like(w)
  for t, g in enumerate(grads, start=1):
    g = g + wd * w
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    step_size = lr / (1 - b1**t)
    denom = np.sqrt(v) / np.sqrt(1 - b2**t) + eps
    w = w - step_size * m / denom
  return w


def test_optimizer_is_torch_adam_with_coupled_weight_decay():
  config = cifar10.get_config()
  config.train.update(learning_rate=0.1, weight_decay=0.3, eps=1e-3)  # large: every term visible
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=5)
  grads = [rng.normal(size=5) for _ in range(4)]
  optimizer = make_optimizer(config.train)
  w, state = jnp.asarray(w0, jnp.float32), optimizer.init(jnp.asarray(w0, jnp.float32))
  for g in grads:
    updates, state = optimizer.update(jnp.asarray(g, jnp.float32), state, w)
    w = w + updates
  c = config.train
  expected = torch_adam_reference(w0, grads, c.learning_rate, c.b1, c.b2, c.eps, c.weight_decay)
  np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-5, atol=1e-6)
  decoupled = torch_adam_reference(w0, grads, c.learning_rate, c.b1, c.b2, c.eps, 0.0)
  assert np.max(np.abs(expected - decoupled)) > 1e-2  # the decay term matters in this check


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
  import shutil

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
  if (
    settings
  ):  # load_flow: the model from config.json, the trained (EMA) variables from the checkpoint
    stored_config.write_config(tmp_path / "resumed", config.to_dict())
    loaded_model, loaded = load_flow(tmp_path / "resumed", devices=devices)
    assert loaded_model == model
    for a, b in zip(_params(loaded), _params(straight.variables)):
      np.testing.assert_array_equal(a, b)
    z, log_det = fast_jit(model.apply)(loaded, x[:4], 1.0)
    assert z.shape == x[:4].shape and np.all(np.isfinite(np.asarray(log_det)))


def test_batches_depend_only_on_the_step():
  x = tiny_images(n=40)
  whole = local_batches(x, batch_size=8, seed=3)
  reference = [next(whole) for _ in range(12)]  # 5 steps per epoch: crosses two epoch boundaries
  for start in (0, 4, 5, 7):
    resumed = local_batches(x, batch_size=8, seed=3, start_step=start)
    for step in range(start, 12):
      np.testing.assert_array_equal(next(resumed), reference[step])
  assert not np.array_equal(reference[0], reference[5])  # epochs are reshuffled
  halves = [
    local_batches(x, batch_size=8, seed=3, process_index=i, process_count=2) for i in range(2)
  ]
  first = [next(h) for h in halves]
  assert first[0].shape == (4, 32, 32, 3)
  assert not np.array_equal(first[0], first[1])


def test_labelled_batches_are_the_image_batches_with_their_labels():
  x = tiny_images(n=40)
  labels = np.arange(40)[::-1].copy()  # label i <-> image 39 - i
  images = local_batches(x, batch_size=8, seed=3, start_step=3)
  labelled = local_batches(x, batch_size=8, seed=3, start_step=3, labels=labels)
  for _ in range(4):  # crosses an epoch boundary
    x_batch, y_batch = next(labelled)
    np.testing.assert_array_equal(x_batch, next(images))
    np.testing.assert_array_equal(x_batch, x[39 - y_batch])


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

  for path in (tmp_path / "run/checkpoints").rglob(
    "*"
  ):  # every step: nothing intact to fall back to
    if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
      path.write_bytes(b"garbage")
  with pytest.raises(checkpoint.CheckpointError, match="cannot (read|restore) the checkpoint"):
    train.train(model, x, config, tmp_path / "run", devices=devices, progress=False)
  lines = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [2]  # nothing trained by the failed runs


def test_train_on_batches_rejects_bad_batches():
  config = tiny.get_config()
  model = InFlow(**config.model)
  variables = state.init_variables(model, 0, tiny_images(n=16))
  with pytest.raises(ValueError, match="lie in"):
    train.train_on_batches(model, variables, [2.0 * tiny_images(n=8) + 1.0], config)
  with pytest.raises(ValueError, match="not divisible"):
    train.train_on_batches(model, variables, [tiny_images(n=6)], config)


def test_flow_loss_is_the_original_formula():
  class Fixed:  # a "model" whose output is given: the loss formula alone is under test
    def apply(self, variables, x, attention):
      assert attention == 1.0
      return variables["z"], variables["log_det"]

  rng = np.random.default_rng(0)
  x = tiny_images(n=4)
  variables = dict(
    z=rng.normal(size=x.shape).astype(np.float32), log_det=rng.normal(size=4).astype(np.float32)
  )
  by_hand = (
    np.mean(
      [
        0.5 * np.sum(variables["z"][b].astype(np.float64) ** 2) - variables["log_det"][b]
        for b in range(4)
      ]
    )
    / 3
  )
  np.testing.assert_allclose(losses.flow_loss(Fixed(), variables, x), by_hand, rtol=1e-6)
  np.testing.assert_allclose(
    losses.flow_loss(Fixed(), variables, x, loss="per_dim"), by_hand * 3 / (32 * 32 * 3), rtol=1e-6
  )


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


def test_bpd_loss_refuses_continuous_images_before_training(tmp_path):
  config = tiny.get_config()
  config.train.loss = "bpd"
  with pytest.raises(ValueError, match="needs 8-bit images"):
    train.train(InFlow(**config.model), tiny_images(), config, tmp_path, progress=False)
  assert not (tmp_path / "checkpoints").exists()


def test_a_nonfinite_loss_fails_without_the_skip_guard_and_is_logged_with_it():
  values = np.array([3.0, np.nan, 2.0])
  with pytest.raises(FloatingPointError, match="skip_factor"):
    train._log_record(10, values, 1.0)
  record = train._log_record(10, values, 1.0, skipped=1)
  assert (record["loss"], record["last_loss"], record["skipped_steps"]) == (2.5, 2.0, 1)
  with pytest.raises(FloatingPointError, match="nan"):
    train._log_record(10, np.full(3, np.nan), 1.0, skipped=3)
