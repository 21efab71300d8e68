"""The skip guard of the optimiser (`inflow_jax.training.skip`): non-finite and outlier gradients
skipped with the state kept, and a lasting rise of the gradient norm followed."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import tiny
from inflow_jax.training import optimizer, skip


def _train_config(**settings):
  config = tiny.get_config().train
  config.update(
    {"weight_decay": 0.0, "b1": 0.0, "b2": 0.0, "eps": 1e-30, "num_steps": 20, **settings}
  )
  return config


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
