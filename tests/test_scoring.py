"""Scores against the original's fixtures, autodiff Jacobians and closed forms; `score_batches`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import shared_file
from scipy import stats

from inflow_jax.evaluation import scores as scoring
from inflow_jax.gates.encoder import make_encoder
from inflow_jax.gates.mmd import fit_mmd, mmd_test
from inflow_jax.model import InFlow
from inflow_jax.utils import batching


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
  from inflow_jax.model.torch_checkpoint import load_reference_checkpoint

  model, variables = load_reference_checkpoint(
    shared_file("fixtures/inflow_cifar10_epoch150_torch_state.npz"), paper_compat=paper_compat
  )
  with np.load(shared_file("fixtures/inflow_reference_outputs_public.npz")) as ref:
    x = ref["x_nchw"].transpose(0, 2, 3, 1)
    score_fn = scoring.make_score_fn(model, variables, "paper")
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
  got = scoring.make_score_fn(model, variables, "paper")(x, 0.0)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert pytest.approx(stats.norm.ppf(0.975), abs=1e-12) == scoring.PAPER_PRIOR_VARIANCE


def test_nll_bits_per_dim_against_autodiff_jacobian(small):
  model, variables, x = small
  exact = model.clone(paper_compat=False)
  dims = x[0].size

  @jax.jit
  def jacobian_and_z(v, a):
    flat = lambda v: exact.apply(variables, v.reshape(1, *x.shape[1:]), a)[0].reshape(-1)
    return jax.jacfwd(flat)(v), flat(v)

  score_fn = scoring.make_score_fn(model, variables, "nll")
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
  score_fn = scoring.make_score_fn(model, variables, "nll")
  plain = score_fn(x, 1.0)
  a, b = score_fn(x, 1.0, jax.random.PRNGKey(0)), score_fn(x, 1.0, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(a, score_fn(x, 1.0, jax.random.PRNGKey(0)))
  assert not np.allclose(a, b)
  assert np.max(np.abs(a - plain)) < 0.05  # noise of +-1/510 per pixel moves the NLL only a little
  with pytest.raises(ValueError, match="convention='nll' only"):
    scoring.make_score_fn(model, variables, "paper")(x, 1.0, jax.random.PRNGKey(0))


def test_score_fn_bad_input(small):
  model, variables, x = small
  score_fn = scoring.make_score_fn(model, variables, "paper")
  with pytest.raises(ValueError, match="convention"):
    scoring.make_score_fn(model, variables, "bpd")
  with pytest.raises(ValueError, match="NaN"):
    score_fn(x.at[0, 0, 0, 0].set(jnp.nan), 1.0)
  with pytest.raises(ValueError, match="rank 4"):
    score_fn(x[0], 1.0)
  with pytest.raises(ValueError, match="attention"):
    score_fn(x, jnp.ones(5))
  # (Gradients through score_fn are exercised by tests/test_adversarial.py's attacks.)


def test_batch_starts():
  np.testing.assert_array_equal(
    batching.batch_starts(7, 3), [0, 3, 7]
  )  # leftover of 1 joins batch 2
  np.testing.assert_array_equal(
    batching.batch_starts(8, 3), [0, 3, 6, 8]
  )  # partial batch of 2 kept
  np.testing.assert_array_equal(batching.batch_starts(6, 3), [0, 3, 6])
  with pytest.raises(ValueError, match="larger than the set"):
    batching.batch_starts(5, 6)
  with pytest.raises(ValueError, match="at least 2"):
    batching.batch_starts(1, 2)


def test_fixed_size_calls_see_full_slices_and_drop_the_padding():
  sizes = []
  fn = lambda x: (sizes.append(len(x)), {"double": 2 * x, "sum": x.sum(axis=1)})[1]
  x = np.arange(14.0).reshape(7, 2)
  out = batching.fixed_size(fn, x, 3)
  assert sizes == [3, 3, 3]
  np.testing.assert_array_equal(out["double"], 2 * x)
  np.testing.assert_array_equal(out["sum"], x.sum(axis=1))
  out, extra = batching.fixed_size(jnp.square, x, 4, host_work=lambda: "png")
  assert extra == "png" and sizes == [3, 3, 3]
  np.testing.assert_array_equal(out, np.square(x))


@pytest.fixture(scope="module")
def mmd_setup():
  rng = np.random.default_rng(0)
  # In-distribution: smooth random colour gradients; OOD: pixel noise.
  ramp = np.linspace(0, 1, 32, dtype=np.float32)

  def smooth(n):
    c = rng.uniform(0.2, 0.8, (n, 1, 1, 3)).astype(np.float32)
    rows = ramp[None, :, None, None] * rng.uniform(-0.2, 0.2, (n, 1, 1, 3))
    cols = ramp[None, None, :, None] * rng.uniform(-0.2, 0.2, (n, 1, 1, 3))
    return np.clip(c + rows + cols, 0, 1).astype(np.float32)

  x_ref, x_in = (
    smooth(300),
    smooth(23),
  )  # shapes shared with test_evaluate/test_detector: one compile
  x_out = rng.uniform(0, 1, (23, 32, 32, 3)).astype(np.float32)
  state = fit_mmd(x_ref, make_encoder(seed=0), n_permutations=50, level=0.05)
  model, variables, _ = _small_model(size=32)
  return state, scoring.make_score_fn(model, variables, "paper"), x_in, x_out


def test_score_batches_uses_each_batch_test(mmd_setup):
  state, score_fn, x_in, x_out = mmd_setup
  key = jax.random.PRNGKey(3)
  x = np.concatenate([x_in[:10], x_out[:10], x_in[10:11]])  # batches of 10: in, out + leftover 1
  result = scoring.score_batches(score_fn, state, x, 10, key)
  np.testing.assert_array_equal(result.batch_starts, [0, 10, 21])
  for i in range(2):
    expected = mmd_test(
      state, x[result.batch_starts[i] : result.batch_starts[i + 1]], jax.random.fold_in(key, i)
    )
    assert result.p_values[i] == pytest.approx(float(expected.p_value))
  np.testing.assert_array_equal(result.flagged, result.p_values < state.level)
  assert result.flagged[1]  # pixel noise vs. smooth images
  a = np.where(result.flagged, 0.0, 1.0)
  np.testing.assert_array_equal(result.attention, np.repeat(a, [10, 11]))
  np.testing.assert_allclose(
    result.scores, np.concatenate([score_fn(x[:10], a[0]), score_fn(x[10:], a[1])]), rtol=1e-6
  )


def test_score_batches_leftover_single_image_and_overrides(mmd_setup):
  state, score_fn, x_in, _ = mmd_setup
  result = scoring.score_batches(score_fn, state, x_in[:21], 10, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(result.batch_starts, [0, 10, 21])  # image 21 tested with batch 2
  assert result.n_batches == 2 and result.scores.shape == (21,)
  per_batch = scoring.score_batches(
    score_fn, state, x_in[:21], 10, jax.random.PRNGKey(0), attention=np.array([0.0, 1.0])
  )
  np.testing.assert_array_equal(per_batch.attention, np.repeat([0.0, 1.0], [10, 11]))
  np.testing.assert_array_equal(per_batch.p_values, result.p_values)  # the test still ran
  per_image = np.linspace(0, 1, 21).astype(np.float32)
  untested = scoring.score_batches(score_fn, None, x_in[:21], 10, attention=per_image)
  assert np.all(np.isnan(untested.p_values))
  np.testing.assert_allclose(
    untested.scores,
    np.concatenate([score_fn(x_in[:10], per_image[:10]), score_fn(x_in[10:21], per_image[10:])]),
    rtol=1e-6,
  )
  with pytest.raises(ValueError, match="attention must be"):
    scoring.score_batches(score_fn, None, x_in[:21], 10, attention=np.ones(3))
  with pytest.raises(ValueError, match="larger than the set"):
    scoring.score_batches(score_fn, state, x_in[:5], 10, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="PRNG key"):
    scoring.score_batches(score_fn, state, x_in, 10)
  with pytest.raises(ValueError, match="at least 1"):
    scoring.score_batches(score_fn, state, x_in[:0], 10, jax.random.PRNGKey(0))
