"""InFlow: inverse, exact log-det against autodiff Jacobians, configs, input validation."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.cifar10 import get_config
from inflow_jax.model import InFlow
from test_flows import (ATTENTION_ROWS, assert_jacobian_log_det, jacobian_and_log_det, random_images,
                        to_x64)

CONFIGS = {
    "paper": dict(num_blocks=2, width=8),
    "multiscale": dict(num_blocks=1, width=8, glow=True, num_scales=2),
}


def init(model, x, attention=1.0):
  return jax.jit(model.init)(jax.random.PRNGKey(0), x, attention)


@functools.lru_cache(maxsize=None)
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
  assert block["subnet_s2"]["kernel_0"].shape == (3, 3, 2 + 3, 256)   # [x2, c] -> 256
  assert block["subnet_s1"]["kernel_0"].shape == (3, 3, 1 + 3, 256)   # [y1, c] -> 256
  assert block["subnet_t1"]["kernel_1"].shape == (3, 3, 256, 2)
  assert block["subnet_t2"]["kernel_1"].shape == (3, 3, 256, 1)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_model_inverts_and_log_det_is_jacobian(name):
  model = InFlow(**CONFIGS[name])
  x = random_images(1, (2, 4, 4, 3))
  variables = init(model, x * 2 - 0.5)   # ActNorm's data-dependent init sees another batch

  @jax.jit
  def round_trip(a):
    z, log_det = model.apply(variables, x, a)
    x_back, inverse_log_det = model.apply(variables, z, a, method=InFlow.inverse_and_log_det)
    return z, log_det, x_back, inverse_log_det

  for a in ATTENTION_ROWS:
    z, log_det, x_back, inverse_log_det = round_trip(jnp.asarray(a, jnp.float32))
    assert z.shape == x.shape and log_det.shape == (2,)
    np.testing.assert_allclose(x_back, x, atol=1e-5, err_msg=f"{name} a={a}")
    np.testing.assert_allclose(inverse_log_det, -log_det, rtol=1e-6, atol=1e-5)
  with jax.enable_x64(True):
    x64, vars64 = jnp.asarray(x, jnp.float64), to_x64(variables)
    jacobian_case = jax.jit(lambda a: jacobian_and_log_det(
        lambda inputs: model.apply(vars64, inputs, a), x64))
    for a in ATTENTION_ROWS:
      jac, log_det = jacobian_case(jnp.asarray(a))
      assert_jacobian_log_det(jac, x.shape[0], log_det)


def test_zero_attention_is_the_fixed_permutation_and_paper_log_det_is_ungated():
  exact, variables, x = paper_model()
  paper = InFlow(width=8, paper_compat=True)
  outputs = jax.jit(lambda v: (exact.apply(v, x, 0.0), exact.apply(v, x, 0.5),
                               paper.apply(v, x, 0.5), exact.apply(v, x, jnp.full((2,), 0.5))))
  (z0, log_det0), (z, log_det), (z_paper, log_det_paper), (z_vec, log_det_vec) = outputs(variables)
  x_back = jax.jit(lambda v, z: exact.apply(v, z, 0.5, method=InFlow.inverse))(variables, z)
  np.testing.assert_allclose(x_back, x, atol=1e-5)
  # perm_1 o perm_0 with the default seeds 0 and 1 (numpy RandomState(k).permutation(3)).
  composed = np.arange(3)[list(np.random.RandomState(0).permutation(3))][
      list(np.random.RandomState(1).permutation(3))]
  np.testing.assert_array_equal(z0, np.asarray(x)[..., composed])
  np.testing.assert_array_equal(log_det0, 0.0)
  np.testing.assert_array_equal(z_paper, z)
  np.testing.assert_allclose(log_det_paper, log_det / 0.5, rtol=1e-6)
  np.testing.assert_allclose(z_vec, z, rtol=1e-6)
  np.testing.assert_allclose(log_det_vec, log_det, rtol=1e-6)


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
