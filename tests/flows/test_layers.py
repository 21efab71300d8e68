"""Every flow layer (`inflow_jax.flows`: the coupling, `permutation`, `actnorm`, `invconv`,
`squeeze`, and the attention `gate`): exact inverses, log-dets against autodiff Jacobians, scalar
attention as its broadcast, a = 0 as the identity, the layers' initialisations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import LAYER_INPUT, check_inverse_and_jacobian, coupling_case, fast_jit, random_images

from inflow_jax.flows import ActNorm, InvertibleConv1x1, Permutation, squeeze, unsqueeze


@functools.cache
def layer_cases():
  """{name: (layer, variables)} for every flow layer, initialised on LAYER_INPUT (cached:
  compiles)."""
  x = jnp.asarray(LAYER_INPUT)
  key = jax.random.PRNGKey(2)
  actnorm = ActNorm()
  invconv = InvertibleConv1x1()
  return {
    "coupling": coupling_case(),
    "permutation": (Permutation(seed=5), {}),
    "actnorm": (actnorm, fast_jit(actnorm.init)(key, x * 3 + 1, 1.0)),
    "invconv": (invconv, fast_jit(invconv.init)(key, x, 1.0)),
  }


@pytest.mark.parametrize("name", ["coupling", "permutation", "actnorm", "invconv"])
def test_layers_invert_and_log_det_is_jacobian(name):
  x = jnp.asarray(LAYER_INPUT)
  layer, variables = layer_cases()[name]

  check_inverse_and_jacobian(
    layer.apply, functools.partial(layer.apply, method=layer.inverse), variables, x
  )


def test_scalar_attention_is_its_broadcast_and_zero_is_identity():
  x = jnp.asarray(LAYER_INPUT)
  for name, (layer, variables) in layer_cases().items():
    scalar, broadcast, zero = fast_jit(
      lambda v: (
        layer.apply(v, x, 0.5),
        layer.apply(v, x, jnp.full((2,), 0.5)),
        layer.apply(v, x, 0.0),
      )
    )(variables)
    jax.tree_util.tree_map(
      lambda s, b: np.testing.assert_allclose(s, b, rtol=1e-6), scalar, broadcast
    )
    if name != "permutation":
      np.testing.assert_array_equal(zero[0], x, err_msg=name)
      np.testing.assert_array_equal(zero[1], 0.0, err_msg=name)


def test_actnorm_data_dependent_init_normalises_the_batch():
  x = random_images(7, (8, 4, 4, 3)) * jnp.array([1.0, 5.0, 0.1]) + jnp.array([0.0, -2.0, 3.0])
  layer = ActNorm()
  variables = fast_jit(layer.init)(jax.random.PRNGKey(0), x, 1.0)
  y, _ = fast_jit(layer.apply)(variables, x, 1.0)
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, atol=1e-4)


def test_invconv_starts_orthogonal():
  basis = jnp.eye(6).reshape(1, 1, 6, 6)  # one image of 6 pixels; pixel j holds e_j
  layer = InvertibleConv1x1()
  variables = fast_jit(layer.init)(jax.random.PRNGKey(0), basis, 1.0)
  columns, _ = fast_jit(layer.apply)(variables, basis, 1.0)
  w = columns[0, 0].T  # pixel j of y is W e_j, column j of W
  np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-5)
  assert not np.allclose(w, np.eye(6))


def test_squeeze_is_a_permutation_of_pixels_and_inverts():
  x = random_images(9, (2, 4, 6, 3))
  y, log_det = squeeze(x)
  assert y.shape == (2, 2, 3, 12)
  np.testing.assert_array_equal(np.sort(y.reshape(-1)), np.sort(x.reshape(-1)))
  np.testing.assert_array_equal(y[:, 1, 2, 3:6], x[:, 2, 5, :])  # (p, q) = (0, 1) of pixel (1, 2)
  np.testing.assert_array_equal(unsqueeze(y)[0], x)
  np.testing.assert_array_equal(log_det, 0.0)
  with pytest.raises(ValueError, match="even"):
    squeeze(x[:, :3])
