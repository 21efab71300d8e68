"""Shared test helpers (no test file imports another); tests import them as
`from helpers import ...` (tests/conftest.py puts this folder on sys.path).

`../shared` (fixtures and real data) exists on CI and on the developers' machines, not on a
fresh user's machine: tests that need it carry `@pytest.mark.shared` and call `shared_file(...)`,
which skips with a reason.
"""

import functools
import os
import pathlib
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inflow_jax.flows import AttentionCoupling

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("INFLOW_SHARED", REPO.parent / "shared"))


def shared_file(relative: str) -> pathlib.Path:
  """Path of `../shared/<relative>`, or skip the calling test when it is absent."""
  path = SHARED / relative
  if not path.exists():
    pytest.skip(f"needs {path} (the ../shared fixtures/data), which is absent on this machine")
  return path


# Test functions are small and run a few times: compile them with little optimisation (~2x faster
# to compile on CPU; numerics are unchanged).
fast_jit = functools.partial(
  jax.jit,
  compiler_options={"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True},
)

# Attention per image for a batch of 2: a = 0, 0.5, 1 for both, and distinct values per image.
# (Scalar attention is checked against its broadcast in `test_scalar_attention_...`.)
ATTENTION_ROWS = np.array([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0], [0.25, 1.0]])


def to_x64(tree):
  return jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64), tree)


def jacobian_and_log_det(flow, x):
  """(the (B*D, B*D) Jacobian of x -> flow(x)[0], flattened, and flow(x)[1]) in one pass."""
  flat_flow = lambda flat: tuple((lambda y, ld: (y.reshape(-1), ld))(*flow(flat.reshape(x.shape))))
  return jax.jacfwd(flat_flow, has_aux=True)(x.reshape(-1))


def check_inverse_and_jacobian(forward, inverse, variables, x):
  """For every row of ATTENTION_ROWS: inverse(forward(x)) == x within 1e-5 (float32), the inverse's
  log-det is minus the forward's, and (float64) the forward log-det is the Jacobian's log|det|.

  forward(variables, x, a) -> (y, log_det); inverse(variables, y, a) -> (x, log_det).
  Returns {row index: (y, log_det)} of the float32 forward passes, for further checks.
  """

  @fast_jit
  def round_trip(a):
    y, log_det = forward(variables, x, a)
    return y, log_det, inverse(variables, y, a)

  outputs = {}
  for i, a in enumerate(ATTENTION_ROWS):
    y, log_det, (x_back, inverse_log_det) = round_trip(jnp.asarray(a, jnp.float32))
    assert y.shape == x.shape and log_det.shape == (x.shape[0],)
    np.testing.assert_allclose(x_back, x, atol=1e-5, err_msg=f"a={a}")
    np.testing.assert_allclose(inverse_log_det, -log_det, rtol=1e-6, atol=1e-5)
    outputs[i] = (y, log_det)
  with jax.enable_x64(True):
    x64, vars64 = jnp.asarray(x, jnp.float64), to_x64(variables)
    jacobian_case = fast_jit(
      lambda a: jacobian_and_log_det(lambda inputs: forward(vars64, inputs, a), x64)
    )
    for a in ATTENTION_ROWS:
      jac, log_det = jacobian_case(jnp.asarray(a))
      assert_jacobian_log_det(jac, x.shape[0], log_det)
  return outputs


def assert_jacobian_log_det(jac, batch, log_det, atol=1e-5):
  """jac: the (B*D, B*D) Jacobian of a flattened batch map. Checks log_det[b] == slogdet of image
  b's block, and that images do not interact (off-diagonal blocks are zero)."""
  jac = np.asarray(jac).reshape(batch, jac.shape[0] // batch, batch, -1)
  for b in range(batch):
    sign, value = np.linalg.slogdet(jac[b, :, b, :])
    assert sign != 0
    np.testing.assert_allclose(log_det[b], value, atol=atol, rtol=1e-7)
    others = np.delete(jac[b], b, axis=1)
    assert np.abs(others).max(initial=0.0) == 0.0


def random_images(seed, shape, dtype=jnp.float32):
  """Uniform [0, 1) test inputs (numpy: drawing 4-d shapes with jax.random compiles slowly)."""
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), dtype)


def nhwc(uint8_nchw):
  """uint8 NCHW images (the original's fixtures) -> float32 NHWC in [0, 1]."""
  return uint8_nchw.transpose(0, 2, 3, 1).astype(np.float32) / 255.0


def tiny_images(n=64, seed=0):
  """Smooth random images (B, 32, 32, 3) in [0, 1]: cheap stand-ins for training data."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(size=(n, 4, 4, 3))
  return np.clip(
    np.kron(coarse, np.ones((1, 8, 8, 1))) + 0.05 * rng.normal(size=(n, 32, 32, 3)), 0, 1
  ).astype(np.float32)


def free_port() -> int:
  """A free TCP port on localhost (for a jax.distributed coordinator)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


# The input every flow-layer test uses (tests/flows/).
LAYER_INPUT = np.random.default_rng(4).uniform(-0.5, 1.5, size=(2, 4, 4, 3)).astype(np.float32)


@functools.cache
def coupling_case():
  """(AttentionCoupling(width=8), variables) initialised on LAYER_INPUT (cached: init compiles),
  with last-layer weights 4x torch's init, so that s and t are far from 0 and the tests bite."""
  layer = AttentionCoupling(width=8)
  scale = lambda variables: jax.tree_util.tree_map_with_path(
    lambda path, p: 4 * p if "kernel_1" in jax.tree_util.keystr(path) else p, variables
  )
  init = fast_jit(lambda key: scale(layer.init(key, jnp.asarray(LAYER_INPUT), 1.0)))
  return layer, init(jax.random.PRNGKey(1))


def mmd_test_size(level, n_permutations):
  """The exact size of the MMD permutation test: P(p < level) under the null, where the p-value is
  uniform on {1, ..., P + 1} / (P + 1) (e.g. 5/101 at level 0.05 with P = 100)."""
  return (np.ceil(level * (n_permutations + 1)) - 1) / (n_permutations + 1)


def apply_with_grads(layer, x):
  """(y, log_det, variables, grads) of a freshly initialised layer at a = 1, with the gradient of
  sum(y^2) with respect to its variables (one jitted call): does a zero-initialised layer learn?"""
  variables = fast_jit(layer.init)(jax.random.PRNGKey(0), x, 1.0)
  (y, log_det), grads = fast_jit(
    lambda v: (
      layer.apply(v, x, 1.0),
      jax.grad(lambda v: jnp.sum(layer.apply(v, x, 1.0)[0] ** 2))(v),
    )
  )(variables)
  return y, log_det, variables, grads


def semantic_detector(trained_encoder, x_ref, x_calibration, x_features, semantic_score="auto"):
  """A tiny paper-compatible flow (2 blocks, width 8, untrained) with the conformal gate and the
  semantic view of `trained_encoder` (`semantic_score`), fitted on the given images."""
  from inflow_jax import InFlowDetector
  from inflow_jax.model import InFlow

  model = InFlow(num_blocks=2, width=8, paper_compat=True)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x_ref[:2], 1.0)
  detector = InFlowDetector(
    model,
    variables,
    attention="conformal",
    n_components=1,
    trained_encoder=trained_encoder,
    semantic_score=semantic_score,
  )
  detector.fit(x_ref, x_calibration=x_calibration, x_features=x_features)
  return detector
