"""The flow's training losses (`inflow_jax.training.losses`): the original's formula, the
dequantized bits/dim loss against a direct computation, its noise fresh per step and a function of
(seed, step), and the 8-bit check."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import fast_jit, tiny_images

from inflow_jax.model import InFlow
from inflow_jax.training import losses


@pytest.fixture(scope="module")
def flow():
  model = InFlow(num_blocks=2, width=4)
  x = np.round(np.random.default_rng(0).uniform(size=(4, 8, 8, 3)) * 255).astype(np.float32) / 255
  return model, fast_jit(model.init)(jax.random.PRNGKey(0), x, 1.0), x


@functools.cache
def _jitted_loss(model, seed):
  return fast_jit(losses.FlowLoss(model, "bpd", seed))


def direct_bpd(model, variables, x, u):
  """Bits/dim written out in float64: x~ = x + (u - 1/2)/255,
  -log N(z; 0, I) - log_det + D log 255."""
  z, log_det = fast_jit(model.apply)(variables, x + (u - 0.5) / 255.0, 1.0)
  z, log_det = np.asarray(z, np.float64), np.asarray(log_det, np.float64)
  d = x[0].size
  nll = 0.5 * np.sum(z.reshape(len(x), -1) ** 2, 1) + 0.5 * d * np.log(2 * np.pi) - log_det
  return np.mean((nll + d * np.log(255.0)) / (d * np.log(2.0)))


def test_bpd_loss_is_the_dequantized_bits_per_dim(flow):
  model, variables, x = flow
  loss = losses.FlowLoss(model, "bpd", seed=3)
  assert loss.uses_step and not losses.FlowLoss(model, "paper").uses_step
  jitted = _jitted_loss(model, 3)
  for step in (0, 7):
    key = jax.random.fold_in(jax.random.PRNGKey(3), step)
    u = jax.random.uniform(key, x.shape, jnp.float32)
    np.testing.assert_allclose(
      float(jitted(variables, x, step)), direct_bpd(model, variables, x, u), rtol=1e-5
    )


def test_noise_is_fresh_per_step_and_fixed_by_the_seed(flow):
  model, variables, x = flow
  values = [
    float(_jitted_loss(model, seed)(variables, x, step))
    for seed, step in [(3, 1), (3, 1), (3, 2), (4, 1)]
  ]
  assert values[0] == values[1]  # same seed and step: same noise
  assert values[0] != values[2] and values[0] != values[3]  # another step or seed: other noise


def test_heldout_bpd_uses_a_fixed_seed(flow):
  model, variables, x = flow
  first = losses.heldout_bpd(model, variables, x, seed=5, batch_size=2)
  assert first == losses.heldout_bpd(model, variables, x, seed=5, batch_size=2)
  assert first != losses.heldout_bpd(model, variables, x, seed=6, batch_size=2)
  u = [
    jax.random.uniform(jax.random.fold_in(jax.random.PRNGKey(5), i), (2,) + x.shape[1:])
    for i in range(2)
  ]
  direct = np.mean([direct_bpd(model, variables, x[2 * i : 2 * i + 2], u[i]) for i in range(2)])
  assert first == pytest.approx(direct, rel=1e-5)


def test_bpd_needs_8bit_images():
  losses.check_8bit(np.arange(256, dtype=np.float32) / 255, "x")
  with pytest.raises(ValueError, match="needs 8-bit images"):
    losses.check_8bit(np.array([0.5 / 255]), "x_train")


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
