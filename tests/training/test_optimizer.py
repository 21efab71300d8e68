"""The optimiser (`inflow_jax.training.optimizer`): PyTorch's Adam with coupled weight decay against
its equations; beyond the paper, warm-up/cosine schedules, clipping and the EMA are the configured
ones (against hand-written optax-free formulas); bad settings fail naming the key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar10, tiny
from inflow_jax.training import optimizer


def _train_config(**settings):
  config = tiny.get_config().train
  config.update(
    {"weight_decay": 0.0, "b1": 0.0, "b2": 0.0, "eps": 1e-30, "num_steps": 20, **settings}
  )
  return config


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
  tx = optimizer.make_optimizer(config.train)
  w, state = jnp.asarray(w0, jnp.float32), tx.init(jnp.asarray(w0, jnp.float32))
  for g in grads:
    updates, state = tx.update(jnp.asarray(g, jnp.float32), state, w)
    w = w + updates
  c = config.train
  expected = torch_adam_reference(w0, grads, c.learning_rate, c.b1, c.b2, c.eps, c.weight_decay)
  np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-5, atol=1e-6)
  decoupled = torch_adam_reference(w0, grads, c.learning_rate, c.b1, c.b2, c.eps, 0.0)
  assert np.max(np.abs(expected - decoupled)) > 1e-2  # the decay term matters in this check


def test_schedule_is_linear_warmup_then_cosine():
  config = _train_config(learning_rate=0.1, warmup_steps=5, schedule="cosine")
  schedule = optimizer.make_schedule(config)
  for t in range(21):
    expected = 0.1 * t / 5 if t < 5 else 0.05 * (1 + np.cos(np.pi * (t - 5) / 15))
    assert float(schedule(t)) == pytest.approx(expected, abs=1e-7), t
  constant = optimizer.make_schedule(_train_config(learning_rate=0.1, warmup_steps=4))
  assert [float(constant(t)) for t in (0, 2, 4, 10)] == pytest.approx([0.0, 0.05, 0.1, 0.1])
  assert optimizer.make_schedule(_train_config(learning_rate=0.1)) == 0.1  # the paper: a float


def test_wsd_schedule_is_warmup_constant_then_linear_to_zero():
  schedule = optimizer.make_schedule(
    _train_config(learning_rate=0.1, warmup_steps=4, schedule="wsd", decay_steps=6)
  )  # 20 steps
  for t in range(21):
    expected = 0.1 * t / 4 if t < 4 else 0.1 if t < 14 else 0.1 * (20 - t) / 6
    assert float(schedule(t)) == pytest.approx(expected, abs=1e-7), t


def test_clipping_scales_the_gradient_to_the_global_norm():
  params = {"a": jnp.ones(3), "b": jnp.ones(2)}
  grads = {"a": jnp.array([3.0, 0.0, 0.0]), "b": jnp.array([0.0, 4.0])}  # global norm 5
  # eps = 1: Adam is then not blind to the gradient's scale, so a wrong clip changes the update
  settings = dict(learning_rate=0.1, b1=0.9, b2=0.999, eps=1.0, weight_decay=0.01)
  clipped = optimizer.make_optimizer(_train_config(clip_norm=2.0, **settings))
  plain = optimizer.make_optimizer(_train_config(**settings))
  for scale, expected_scale in [
    (1.0, 2.0 / 5.0),
    (0.1, 1.0),
  ]:  # above the norm: scaled; below: kept
    g = jax.tree.map(lambda x: scale * x, grads)
    got, _ = clipped.update(g, clipped.init(params), params)
    want, _ = plain.update(
      jax.tree.map(lambda x: expected_scale * x, g), plain.init(params), params
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)


def test_ema_tracks_the_parameters_with_its_warm_up():
  config = _train_config(learning_rate=1.0, ema_decay=0.9)
  tx = optimizer.make_optimizer(config)
  params = {"w": jnp.zeros(2)}
  state = tx.init(params)
  ema, expected = np.zeros(2), np.zeros(2)
  for t in range(6):
    grads = {"w": jnp.array([1.0, -2.0])}
    updates, state = tx.update(grads, state, params)
    params = optimizer.optax.apply_updates(params, updates)
    d = min(0.9, (1 + t) / (10 + t))
    expected = d * expected + (1 - d) * np.asarray(params["w"])
  ema = optimizer.ema_params(state)["w"]
  np.testing.assert_allclose(ema, expected, rtol=1e-6)
  assert optimizer.ema_params(optimizer.make_optimizer(_train_config()).init(params)) is None


@pytest.mark.parametrize(
  "settings, message",
  [
    (dict(warmup_steps=20), "warmup_steps=20 must lie in"),
    (dict(warmup_steps=30), "warmup_steps=30"),
    (dict(clip_norm=0.0), "clip_norm must be > 0"),
    (dict(clip_norm=-1.0), "clip_norm must be > 0"),
    (dict(ema_decay=1.0), "ema_decay must lie in"),
    (dict(skip_factor=1.0), "skip_factor must be > 1"),
    (dict(schedule="linear"), "schedule must be one of"),
    (dict(norm_bias_lr_scale=0.0), "norm_bias_lr_scale must be > 0"),
    (dict(lookahead_every=21), r"lookahead_every must lie in \[0, num_steps=20\]"),
    (dict(schedule="wsd"), "decay_steps=0 must lie in"),
    (
      dict(schedule="wsd", warmup_steps=5, decay_steps=16),
      r"decay_steps=16 must lie in \(0, num_steps - ",
    ),
  ],
)
def test_bad_settings_name_the_key(settings, message):
  with pytest.raises(ValueError, match=message):
    optimizer.check_optimizer_config(_train_config(**settings), num_devices=1)


def test_sgd_is_nesterov_momentum_with_coupled_weight_decay():
  """optimizer 'sgd' against torch.optim.SGD(momentum=b1, nesterov=True, weight_decay=wd)'s
  documented update, in float64 numpy."""
  config = _train_config(optimizer="sgd", learning_rate=0.1, b1=0.9, weight_decay=0.3)
  rng = np.random.default_rng(1)
  w0 = rng.normal(size=5)
  grads = [rng.normal(size=5) for _ in range(4)]
  tx = optimizer.make_optimizer(config)
  w, state = jnp.asarray(w0, jnp.float32), tx.init(jnp.asarray(w0, jnp.float32))
  expected, buffer = w0.copy(), np.zeros_like(w0)
  for g in grads:
    updates, state = tx.update(jnp.asarray(g, jnp.float32), state, w)
    w = w + updates
    g = g + 0.3 * expected
    buffer = 0.9 * buffer + g
    expected = expected - 0.1 * (g + 0.9 * buffer)
  np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-5, atol=1e-6)


def test_unknown_optimizer_is_named():
  with pytest.raises(ValueError, match="train.optimizer must be one of"):
    optimizer.check_optimizer_config(_train_config(optimizer="adamw"), 1)


def test_lookahead_jumps_to_the_slow_weights_on_its_schedule():
  """Against a numpy loop: plain SGD steps, and every 5th (and the last) step
  w <- s <- d s + (1 - d) w with d = 0.95^5 (t / T)^3."""
  config = _train_config(optimizer="sgd", learning_rate=0.1, lookahead_every=5, num_steps=12)
  tx = optimizer.make_optimizer(config)
  rng = np.random.default_rng(2)
  w0 = rng.normal(size=3)
  w, state = jnp.asarray(w0, jnp.float32), tx.init(jnp.asarray(w0, jnp.float32))
  expected, slow = w0.copy(), w0.copy()
  for t in range(1, 13):
    g = rng.normal(size=3)
    updates, state = tx.update(jnp.asarray(g, jnp.float32), state, w)
    w = w + updates
    expected = expected - 0.1 * g
    if t % 5 == 0 or t == 12:
      d = 0.95**5 * (t / 12) ** 3
      slow = d * slow + (1 - d) * expected
      expected = slow.copy()
    np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-5, atol=1e-6)


def test_norm_bias_lr_scale_scales_only_batch_norm_biases_before_the_decay():
  """Gradients of leaves named bias under a BatchNorm module times the scale; the weight decay
  (added after) and every other leaf unscaled: w <- w - lr (scale g + wd w) for those biases."""
  config = _train_config(
    optimizer="sgd", learning_rate=0.1, weight_decay=0.5, norm_bias_lr_scale=8.0
  )
  params = {
    "Block": {"BatchNorm_0": {"bias": jnp.ones(2)}, "Conv": {"bias": jnp.ones(2)}},
    "head": {"kernel": jnp.ones(2)},
  }
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)
  tx = optimizer.make_optimizer(config)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["Block"]["BatchNorm_0"]["bias"], -0.1 * (8 * 0.25 + 0.5))
  np.testing.assert_allclose(updates["Block"]["Conv"]["bias"], -0.1 * (0.25 + 0.5))
  np.testing.assert_allclose(updates["head"]["kernel"], -0.1 * (0.25 + 0.5))
