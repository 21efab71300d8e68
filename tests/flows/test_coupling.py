"""The attention-gated coupling (`inflow_jax.flows.coupling`) and its subnets
(`inflow_jax.flows.subnet`) against independent truth: lax.conv subnets, the coupling's equations
in value and gradient, the paper's log-det, Glow's zero init."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
  ATTENTION_ROWS,
  LAYER_INPUT,
  apply_with_grads,
  coupling_case,
  fast_jit,
  random_images,
  to_x64,
)

from inflow_jax.flows import AttentionCoupling, subnet
from inflow_jax.flows.coupling import CLAMP_SLOPE
from inflow_jax.flows.subnet import fused_subnets


def reference_subnet(u, a, weights):
  """conv3x3 - ReLU - conv3x3 on concat([u, a * ones(m)]) with lax.conv (zero padding 1)."""
  kernel_0, bias_0, kernel_1, bias_1 = weights
  m = kernel_0.shape[2] - u.shape[-1]
  cond = jnp.broadcast_to(jnp.reshape(a, (-1, 1, 1, 1)), u.shape[:3] + (m,)).astype(u.dtype)
  conv = functools.partial(
    jax.lax.conv_general_dilated,
    window_strides=(1, 1),
    padding=((1, 1), (1, 1)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    precision=jax.lax.Precision.HIGHEST,
  )
  hidden = jax.nn.relu(conv(jnp.concatenate([u, cond], -1), kernel_0) + bias_0)
  return conv(hidden, kernel_1) + bias_1


def reference_coupling(params, x, a, clamp=2.0):
  """The coupling equations of inflow_jax.flows.coupling written with `reference_subnet`."""
  net = lambda name, u: reference_subnet(
    u, a, tuple(params[name][k] for k in ("kernel_0", "bias_0", "kernel_1", "bias_1"))
  )
  f = lambda u: clamp * CLAMP_SLOPE * jnp.arctan(u)
  ab = jnp.reshape(a, (-1, 1, 1, 1))
  x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
  s2 = f(net("subnet_s2", x2))
  y1 = jnp.exp(ab * s2) * x1 + ab * net("subnet_t2", x2)
  s1 = f(net("subnet_s1", y1))
  y2 = jnp.exp(ab * s1) * x2 + ab * net("subnet_t1", y1)
  return jnp.concatenate([y1, y2], -1), jnp.reshape(a, (-1,)) * (
    s1.sum((1, 2, 3)) + s2.sum((1, 2, 3))
  )


@pytest.mark.parametrize("rows_per_chunk", [1024, 60])  # 60: 2 images of 5x6 per chunk, 3 chunks
def test_fused_subnets_equal_convolution(rows_per_chunk, monkeypatch):
  monkeypatch.setattr(subnet, "ROWS_PER_CHUNK", rows_per_chunk)
  x = random_images(0, (5, 5, 6, 3))
  rng = np.random.default_rng(3)
  weights = lambda: tuple(
    jnp.asarray(rng.normal(size=shape), jnp.float32)
    for shape in ((3, 3, 5, 8), (8,), (3, 3, 8, 1), (1,))
  )
  ws, wt = weights(), weights()

  @fast_jit
  def both(a):
    fused = fused_subnets(x[..., 1:], a, ws, wt)
    return fused, (reference_subnet(x[..., 1:], a, ws), reference_subnet(x[..., 1:], a, wt))

  for a in (jnp.float32(0.7), jnp.linspace(0.1, 0.9, 5).reshape(5, 1, 1, 1)):
    (s, t), (s_ref, t_ref) = both(a)
    np.testing.assert_allclose(s, s_ref, atol=2e-4, rtol=1e-5)
    np.testing.assert_allclose(t, t_ref, atol=2e-4, rtol=1e-5)


def test_coupling_matches_reference_in_value_and_gradient():
  layer, variables = coupling_case()
  with jax.enable_x64(True):
    x = jnp.asarray(LAYER_INPUT, jnp.float64)
    params = to_x64(variables)["params"]
    loss = lambda fn: lambda p: jnp.sum(fn(p)[0] ** 2) - jnp.sum(fn(p)[1])

    @fast_jit
    def outputs(a):
      ours = lambda p: layer.apply({"params": p}, x, a)
      ref = lambda p: reference_coupling(p, x, a)
      return (ours(params), jax.grad(loss(ours))(params)), (
        ref(params),
        jax.grad(loss(ref))(params),
      )

    for a in ATTENTION_ROWS:
      ours, ref = outputs(jnp.asarray(a))
      jax.tree_util.tree_map(lambda o, r: np.testing.assert_allclose(o, r, atol=1e-9), ours, ref)


def test_paper_compat_log_det_is_not_gated():
  x = jnp.asarray(LAYER_INPUT)
  layer, variables = coupling_case()
  paper_layer = AttentionCoupling(width=8, paper_compat=True)
  (y, exact), (y_paper, paper) = fast_jit(
    lambda v: (layer.apply(v, x, 0.5), paper_layer.apply(v, x, 0.5))
  )(variables)
  np.testing.assert_allclose(paper, exact / 0.5, rtol=1e-6)
  np.testing.assert_array_equal(y_paper, y)


def test_zero_init_coupling_starts_as_the_identity_and_still_learns():
  x = jnp.asarray(LAYER_INPUT)
  layer = AttentionCoupling(width=8, zero_init=True)
  y, log_det, variables, grads = apply_with_grads(layer, x)
  np.testing.assert_array_equal(y, x)
  np.testing.assert_array_equal(log_det, 0.0)
  first = variables["params"]["subnet_s1"]
  assert not np.any(first["kernel_1"]) and np.any(first["kernel_0"])  # only the last conv is zero
  assert np.any(grads["params"]["subnet_t2"]["kernel_1"])  # and it gets a gradient


def test_coupling_needs_two_channels():
  with pytest.raises(ValueError, match="at least 2 channels"):
    AttentionCoupling(width=8).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)), 1.0)
