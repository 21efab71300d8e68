"""The dense attention-gated coupling (`inflow_jax.flows.dense_coupling`) against independent
truth: exact inverse, log-det = log|det| of the autodiff Jacobian for random non-zero nets, the
equations written again in numpy, a = 0 as the identity, Glow's zero init, the permutation layer on
vectors, input errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import apply_with_grads, check_inverse_and_jacobian, fast_jit

from inflow_jax.flows import DenseAttentionCoupling, Permutation
from inflow_jax.flows.coupling import CLAMP_SLOPE

X = np.random.default_rng(5).normal(size=(2, 5)).astype(np.float32)  # D odd: d1 = 3, d2 = 2
VARIANTS = [(False, "relu"), (True, "gelu")]  # (two_sided, activation)


def perturb_outputs(variables, seed=0, scale=0.7):
  """Adds N(0, scale^2) to every net's zero-initialised output layer, so that s, t != 0."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
    lambda path, p: (
      p + scale * rng.normal(size=p.shape).astype(p.dtype)
      if "output" in jax.tree_util.keystr(path)
      else p
    ),
    variables,
  )


@functools.cache
def dense_case(two_sided, activation):
  """(DenseAttentionCoupling(width=8), variables with non-zero output layers) (cached)."""
  layer = DenseAttentionCoupling(width=8, activation=activation, two_sided=two_sided)
  variables = fast_jit(layer.init)(jax.random.PRNGKey(3), jnp.asarray(X), 1.0)
  return layer, perturb_outputs(variables)


def reference(params, x, a, two_sided, activation, clamp=2.0):
  """The module docstring's equations in float64 numpy."""
  act = {
    "relu": lambda h: np.maximum(h, 0.0),
    "gelu": lambda h: 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3))),
  }[activation]
  p = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), params)
  a = np.broadcast_to(np.asarray(a, np.float64), (x.shape[0],))[:, None]

  def half(name, reads, moves):
    h = np.concatenate([reads, a], axis=1)
    for i in range(2):
      h = act(h @ p[name][f"hidden_{i}"]["kernel"] + p[name][f"hidden_{i}"]["bias"])
    out = h @ p[name]["output"]["kernel"] + p[name]["output"]["bias"]
    s, t = np.split(out, 2, axis=1)
    s = clamp * CLAMP_SLOPE * np.arctan(s)
    return np.exp(a * s) * moves + a * t, a[:, 0] * s.sum(1)

  x1, x2 = x[:, :3].astype(np.float64), x[:, 3:].astype(np.float64)
  log_det = 0.0
  if two_sided:
    x1, log_det = half("subnet_2", x2, x1)
  y2, log_det_1 = half("subnet_1", x1, x2)
  return np.concatenate([x1, y2], axis=1), log_det + log_det_1


@pytest.mark.parametrize("two_sided, activation", VARIANTS)
def test_inverts_and_log_det_is_jacobian(two_sided, activation):
  layer, variables = dense_case(two_sided, activation)
  outputs = check_inverse_and_jacobian(
    layer.apply, functools.partial(layer.apply, method=layer.inverse), variables, jnp.asarray(X)
  )
  y, log_det = outputs[2]  # a = 1: the nets are not trivial
  assert np.abs(y - X).max() > 0.1 and np.abs(log_det).min() > 0.01
  np.testing.assert_array_equal(y[:, :3] == X[:, :3], not two_sided)  # only two-sided moves x1


@pytest.mark.parametrize("two_sided, activation", VARIANTS)
def test_matches_the_equations_and_round_trips(two_sided, activation):
  layer, variables = dense_case(two_sided, activation)
  x = np.random.default_rng(6).normal(size=(4, 5)).astype(np.float32)
  per_sample = np.array([0.0, 0.3, 0.7, 1.0], np.float32)

  @fast_jit
  def run(a):
    y, log_det = layer.apply(variables, x, a)
    return y, log_det, layer.apply(variables, y, a, method=layer.inverse)

  for a in (np.float32(1.0), np.float32(0.3), per_sample):
    y, log_det, (x_back, inverse_log_det) = run(jnp.asarray(a))
    y_ref, log_det_ref = reference(variables["params"], x, a, two_sided, activation)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_det, log_det_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x_back, x, atol=1e-5)
    np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-6)


def test_zero_attention_is_the_identity_and_scalar_is_its_broadcast():
  layer, variables = dense_case(True, "gelu")
  x = jnp.asarray(X)
  zero, scalar, broadcast = fast_jit(
    lambda v: (
      layer.apply(v, x, 0.0),
      layer.apply(v, x, 0.4),
      layer.apply(v, x, jnp.full((2,), 0.4)),
    )
  )(variables)
  np.testing.assert_array_equal(zero[0], X)
  np.testing.assert_array_equal(zero[1], 0.0)
  for s, b in zip(scalar, broadcast):
    np.testing.assert_allclose(s, b, rtol=1e-6)


def test_zero_init_starts_as_the_identity_and_still_learns():
  layer = DenseAttentionCoupling(width=8, two_sided=True)
  x = jnp.asarray(X)
  y, log_det, variables, grads = apply_with_grads(layer, x)
  np.testing.assert_array_equal(y, X)
  np.testing.assert_array_equal(log_det, 0.0)
  for name in ("subnet_1", "subnet_2"):
    net = variables["params"][name]
    assert not np.any(net["output"]["kernel"]) and np.any(net["hidden_0"]["kernel"])
    assert np.any(grads["params"][name]["output"]["kernel"])  # the zero layer gets a gradient


def test_permutation_layer_permutes_vectors():
  layer = Permutation(seed=3)
  x = jnp.asarray(X)
  (y, log_det), (x_back, inverse_log_det) = fast_jit(
    lambda x: (layer.apply({}, x), layer.apply({}, layer.apply({}, x)[0], method=layer.inverse))
  )(x)
  np.testing.assert_array_equal(y, X[:, np.random.RandomState(3).permutation(5)])
  np.testing.assert_array_equal(x_back, X)
  assert log_det.shape == inverse_log_det.shape == (2,) and not np.any(log_det)


def test_bad_inputs_raise_errors_that_name_the_argument():
  layer, variables = dense_case(False, "relu")
  x = jnp.asarray(X)
  with pytest.raises(ValueError, match="x must have rank 2"):
    layer.apply(variables, x[None], 1.0)
  with pytest.raises(ValueError, match="y must have rank 2"):
    layer.apply(variables, x[0], 1.0, method=layer.inverse)
  with pytest.raises(ValueError, match="D >= 2"):
    DenseAttentionCoupling(width=8).init(jax.random.PRNGKey(0), x[:, :1], 1.0)
  for attention in (jnp.nan, jnp.array([0.5, jnp.nan]), 1.5):
    with pytest.raises(ValueError, match="attention must lie in"):
      layer.apply(variables, x, attention)
  with pytest.raises(ValueError, match=r"attention must be a scalar or have shape \(2,\)"):
    layer.apply(variables, x, jnp.ones((3,)))
  with pytest.raises(ValueError, match="activation"):
    DenseAttentionCoupling(width=8, activation="tanh").init(jax.random.PRNGKey(0), x, 1.0)
