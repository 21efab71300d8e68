"""The flow's per-image scores (`inflow_jax.model.density`): against the original's fixtures,
autodiff Jacobians and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import shared_file
from scipy import stats

from inflow_jax.model import InFlow, density
from inflow_jax.model.torch_checkpoint import load_reference_checkpoint


def _small_model(size=4, paper_compat=True, width=8):
  model = InFlow(num_blocks=2, width=width, paper_compat=paper_compat)
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, size, size, 3))
  return model, jax.jit(model.init)(jax.random.PRNGKey(1), x, 1.0), x


@pytest.fixture(scope="module")
def small():
  return _small_model()


@pytest.mark.shared
@pytest.mark.parametrize("paper_compat", [True, False])
def test_paper_score_matches_original_fixture(paper_compat):
  model, variables = load_reference_checkpoint(
    shared_file("fixtures/inflow_cifar10_epoch150_torch_state.npz"), paper_compat=paper_compat
  )
  with np.load(shared_file("fixtures/inflow_reference_outputs_public.npz")) as ref:
    x = ref["x_nchw"].transpose(0, 2, 3, 1)
    score_fn = density.make_score_fn(model, variables, "paper")
    for a in (1, 0):
      np.testing.assert_allclose(score_fn(x, float(a)), ref[f"score_alpha{a}"], rtol=1e-4)
    # Per-sample attention: each image gets its own case of the original.
    a = np.array([1, 0, 1, 0, 0, 1, 1, 0], np.float32)
    np.testing.assert_allclose(
      score_fn(x, a), np.where(a == 1, ref["score_alpha1"], ref["score_alpha0"]), rtol=1e-4
    )


def test_paper_score_at_zero_attention_is_the_prior_of_x(small):
  # At a = 0 the flow is a channel permutation with log-det 0: score = sum log N(x_i; 0, 1.96).
  model, variables, x = small
  expected = stats.norm.logpdf(np.asarray(x, np.float64), scale=np.sqrt(1.95996398454)).sum(
    axis=(1, 2, 3)
  )
  got = density.make_score_fn(model, variables, "paper")(x, 0.0)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert pytest.approx(stats.norm.ppf(0.975), abs=1e-12) == density.PAPER_PRIOR_VARIANCE


def test_nll_bits_per_dim_against_autodiff_jacobian(small):
  model, variables, x = small
  exact = model.clone(paper_compat=False)
  dims = x[0].size

  @jax.jit
  def jacobian_and_z(v, a):
    flat = lambda v: exact.apply(variables, v.reshape(1, *x.shape[1:]), a)[0].reshape(-1)
    return jax.jacfwd(flat)(v), flat(v)

  score_fn = density.make_score_fn(model, variables, "nll")
  expected = {}
  for attention in (1.0, 0.5, 0.0):
    got = score_fn(x, attention)
    for i in range(x.shape[0]):
      jacobian, z = jacobian_and_z(x[i].reshape(-1), jnp.float32(attention))
      log_det = np.linalg.slogdet(np.asarray(jacobian, np.float64))[1]
      log_p = (
        stats.norm.logpdf(np.asarray(z, np.float64)).sum() + log_det
      )  # density of x in [0, 1]^D
      expected[attention, i] = (-log_p + dims * np.log(255.0)) / (dims * np.log(2.0))  # 1/255 bins
      assert got[i] == pytest.approx(expected[attention, i], rel=1e-5)
  # Per-sample attention: image i scored at its own a.
  per_sample = score_fn(x, jnp.array([1.0, 0.5, 0.0]))
  np.testing.assert_allclose(
    per_sample, [expected[1.0, 0], expected[0.5, 1], expected[0.0, 2]], rtol=1e-5
  )


def test_nll_dequantization_noise(small):
  model, variables, x = small
  score_fn = density.make_score_fn(model, variables, "nll")
  plain = score_fn(x, 1.0)
  a, b = score_fn(x, 1.0, jax.random.PRNGKey(0)), score_fn(x, 1.0, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(a, score_fn(x, 1.0, jax.random.PRNGKey(0)))
  assert not np.allclose(a, b)
  assert np.max(np.abs(a - plain)) < 0.05  # noise of +-1/510 per pixel moves the NLL only a little
  with pytest.raises(ValueError, match="convention='nll' only"):
    density.make_score_fn(model, variables, "paper")(x, 1.0, jax.random.PRNGKey(0))


def test_score_fn_bad_input(small):
  model, variables, x = small
  score_fn = density.make_score_fn(model, variables, "paper")
  with pytest.raises(ValueError, match="convention"):
    density.make_score_fn(model, variables, "bpd")
  with pytest.raises(ValueError, match="NaN"):
    score_fn(x.at[0, 0, 0, 0].set(jnp.nan), 1.0)
  with pytest.raises(ValueError, match="rank 4"):
    score_fn(x[0], 1.0)
  with pytest.raises(ValueError, match="attention"):
    score_fn(x, jnp.ones(5))
  # (Gradients through score_fn are exercised by the attacks of tests/adversarial/.)
