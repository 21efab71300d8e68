"""The optimiser beyond the paper: warm-up/cosine schedules, clipping and the EMA are the configured
ones (against hand-written optax-free formulas); bad settings fail naming the key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar10_glow, tiny
from inflow_jax.app.config_checks import check_config
from inflow_jax.training import optimizer, skip


def _train_config(**settings):
  config = tiny.get_config().train
  config.update(
    {"weight_decay": 0.0, "b1": 0.0, "b2": 0.0, "eps": 1e-30, "num_steps": 20, **settings}
  )
  return config


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


def _grads(norm):
  return {"w": jnp.array([0.6, 0.8]) * norm}  # global norm `norm`


def test_skip_guard_skips_nonfinite_and_outlier_steps_keeping_the_state():
  """After the guard's warm-up, a gradient 20x its running norm and a NaN gradient change nothing
  (zero updates, the Adam/EMA state kept: the next step equals the unguarded chain's), ordinary
  steps equal the unguarded chain's, and the skips are counted."""
  settings = dict(learning_rate=0.1, b1=0.9, b2=0.999, eps=1e-8, ema_decay=0.9)
  guarded = optimizer.make_optimizer(_train_config(skip_factor=5.0, **settings))
  plain = optimizer.make_optimizer(_train_config(**settings))
  params = {"w": jnp.ones(2)}
  state_g, state_p = guarded.init(params), plain.init(params)
  rng = np.random.default_rng(0)
  norms = list(rng.uniform(0.5, 2.0, skip.WARMUP_STEPS + 5))
  sequence = norms + [20.0 * np.exp(np.mean(np.log(norms))), np.nan, 1.0, 1.5]
  for i, norm in enumerate(sequence):
    is_outlier = i >= len(norms) and i < len(norms) + 2
    got, state_g = guarded.update(_grads(norm), state_g, params)
    if is_outlier:
      assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(got)), norm
      continue
    want, state_p = plain.update(_grads(norm), state_p, params)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)
  assert skip.skipped_steps(state_g) == 2
  np.testing.assert_allclose(optimizer.ema_params(state_g)["w"], optimizer.ema_params(state_p)["w"])
  assert skip.skipped_steps(state_p) == 0


def test_skip_guard_follows_a_lasting_rise_of_the_gradient_norm():
  """A gradient norm that jumps 10x and stays there is skipped only for a while: the reference
  rises (skipped norms enter it at the threshold) and the steps are applied again."""
  guarded = optimizer.make_optimizer(_train_config(skip_factor=5.0, learning_rate=0.1))
  params = {"w": jnp.ones(2)}
  state = guarded.init(params)
  for _ in range(skip.WARMUP_STEPS + 10):
    _, state = guarded.update(_grads(1.0), state, params)
  applied = []
  for _ in range(400):
    updates, state = guarded.update(_grads(10.0), state, params)
    applied.append(bool(np.any(np.asarray(updates["w"]) != 0)))
  assert not applied[0] and all(applied[-100:])
  assert 0 < skip.skipped_steps(state) < 400


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


@pytest.mark.parametrize("variant", cifar10_glow.VARIANTS)
def test_glow_config_variants_pass_the_job_checks_and_differ_only_in_the_recipe(variant):
  config = cifar10_glow.get_config(variant)
  check_config(config, "all")
  default = cifar10_glow.get_config()
  assert config.train.batch_size == 64 and config.train.loss == "bpd"
  assert dict(config.model) == dict(default.model) and not default.model.zero_init
  if variant == "script":  # the fixture script's recipe: constant lr 1e-3, no EMA, no skipping
    assert config.train.learning_rate == 1e-3
    assert (config.train.schedule, config.train.ema_decay, config.train.skip_factor) == (
      "constant",
      None,
      None,
    )
  else:
    assert config.train.skip_factor is not None
  if variant == "accelerator":
    assert config.train.num_steps > 10 * default.train.num_steps
