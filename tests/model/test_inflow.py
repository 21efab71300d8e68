"""InFlow (`inflow_jax.model.inflow`): inverse, exact log-det against autodiff Jacobians, the
per-image statistics of the forward pass, configs, input validation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import check_inverse_and_jacobian, fast_jit, random_images

from configs.cifar10 import get_config
from inflow_jax.model import InFlow
from inflow_jax.model.density import gaussian_log_prob

CONFIGS = {
  "paper": dict(num_blocks=2, width=8),
  "multiscale": dict(num_blocks=1, width=8, glow=True, num_scales=2),
}


def init(model, x, attention=1.0):
  return fast_jit(model.init)(jax.random.PRNGKey(0), x, attention)


@functools.cache
def paper_model():
  """(InFlow(width=8), variables, x): a small paper-architecture model (cached: init compiles)."""
  x = random_images(2, (2, 4, 4, 3))
  model = InFlow(width=8)
  return model, init(model, x), x


def test_config_builds_the_paper_architecture():
  model = InFlow(**get_config().model)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), 1.0)
  params = shapes["params"]
  assert sorted(params) == ["coupling_0", "coupling_1"]
  block = params["coupling_0"]
  assert block["subnet_s2"]["kernel_0"].shape == (3, 3, 2 + 3, 256)  # [x2, c] -> 256
  assert block["subnet_s1"]["kernel_0"].shape == (3, 3, 1 + 3, 256)  # [y1, c] -> 256
  assert block["subnet_t1"]["kernel_1"].shape == (3, 3, 256, 2)
  assert block["subnet_t2"]["kernel_1"].shape == (3, 3, 256, 1)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_model_inverts_and_log_det_is_jacobian(name):
  model = InFlow(**CONFIGS[name])
  x = random_images(1, (2, 4, 4, 3))
  variables = init(model, x * 2 - 0.5)  # ActNorm's data-dependent init sees another batch

  outputs = check_inverse_and_jacobian(
    model.apply, functools.partial(model.apply, method=InFlow.inverse_and_log_det), variables, x
  )
  if name == "paper":
    # a = 0 (row 0): only the ungated permutations act, perm_1 o perm_0 (numpy RandomState(k)
    # seeds).
    z, log_det = outputs[0]
    perm_0, perm_1 = (np.random.RandomState(seed).permutation(3) for seed in (0, 1))
    np.testing.assert_array_equal(z, np.asarray(x)[..., np.arange(3)[perm_0][perm_1]])
    np.testing.assert_array_equal(log_det, 0.0)


def test_paper_log_det_is_ungated_and_inverse_recovers_x():
  exact, variables, x = paper_model()
  paper = InFlow(width=8, paper_compat=True)

  @fast_jit
  def outputs(v):
    z, log_det = exact.apply(v, x, 0.5)
    return z, log_det, paper.apply(v, x, 0.5), exact.apply(v, z, 0.5, method=InFlow.inverse)

  z, log_det, (z_paper, log_det_paper), x_back = outputs(variables)
  np.testing.assert_array_equal(z_paper, z)
  np.testing.assert_allclose(log_det_paper, log_det / 0.5, rtol=1e-6)
  np.testing.assert_allclose(x_back, x, atol=1e-5)


def test_statistics_sum_to_the_forward_pass():
  model = InFlow(num_blocks=1, width=4, glow=True, num_scales=2)
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 8, 8, 3))
  variables = fast_jit(model.init)(jax.random.PRNGKey(0), x, 1.0)
  attention = np.array([1.0, 0.5, 0.0], np.float32)
  z, log_det, stats_ = fast_jit(
    lambda v, x, a: model.apply(v, x, a) + (model.apply(v, x, a, method=InFlow.statistics),)
  )(variables, x, attention)
  assert stats_["log_det_blocks"].shape == (3, 2) and stats_["log_prior_scales"].shape == (3, 2)
  np.testing.assert_allclose(stats_["log_det_blocks"].sum(1), log_det, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(
    stats_["log_prior_scales"].sum(1), gaussian_log_prob(z, 1.0), rtol=1e-6
  )
  np.testing.assert_allclose(
    stats_["sq_norm_scales"].sum(1), np.sum(np.square(z), axis=(1, 2, 3)), rtol=1e-6
  )
  np.testing.assert_allclose(stats_["log_det_blocks"][2], 0.0, atol=1e-6)  # a = 0: the identity


def test_bad_inputs_raise_errors_that_name_the_problem():
  model, variables, x = paper_model()
  cases = [
    (x[0], ValueError, "rank 4"),
    (x[..., :2], ValueError, "3 channels"),
    ((x * 255).astype(jnp.uint8), TypeError, "floating point"),
    (x.at[0, 0, 0, 0].set(jnp.nan), ValueError, "NaN"),
  ]
  for bad, error, message in cases:
    with pytest.raises(error, match=message):
      model.apply(variables, bad, 1.0)
  with pytest.raises(ValueError, match="attention"):
    model.apply(variables, x, jnp.ones((3,)))
  with pytest.raises(ValueError, match="attention"):
    model.apply(variables, x, 1.5)
  with pytest.raises(ValueError, match="divisible"):
    InFlow(width=8, num_scales=2).init(jax.random.PRNGKey(0), x[:, :2], 1.0)
  with pytest.raises(ValueError, match="permutations"):
    InFlow(width=8, permutations=((0, 1, 2),)).init(jax.random.PRNGKey(0), x, 1.0)
