"""Scoring a set batch by batch with the paper's gate (`inflow_jax.detector.batch_scores`): each
batch's MMD test, the attention it gives, the scores at that attention, and the overrides."""

import jax
import numpy as np
import pytest

from inflow_jax.detector.batch_scores import score_batches
from inflow_jax.gates.encoder import make_encoder
from inflow_jax.gates.mmd import fit_mmd, mmd_test
from inflow_jax.model import InFlow
from inflow_jax.model.density import make_score_fn


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

  x_ref, x_in = smooth(300), smooth(23)  # the shapes of other tests: one compile
  x_out = rng.uniform(0, 1, (23, 32, 32, 3)).astype(np.float32)
  state = fit_mmd(x_ref, make_encoder(seed=0), n_permutations=50, level=0.05)
  model = InFlow(num_blocks=2, width=8, paper_compat=True)
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), x, 1.0)
  return state, make_score_fn(model, variables, "paper"), x_in, x_out


def test_score_batches_uses_each_batch_test(mmd_setup):
  state, score_fn, x_in, x_out = mmd_setup
  key = jax.random.PRNGKey(3)
  x = np.concatenate([x_in[:10], x_out[:10], x_in[10:11]])  # batches of 10: in, out + leftover 1
  result = score_batches(score_fn, state, x, 10, key)
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
  result = score_batches(score_fn, state, x_in[:21], 10, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(result.batch_starts, [0, 10, 21])  # image 21 tested with batch 2
  assert result.n_batches == 2 and result.scores.shape == (21,)
  per_batch = score_batches(
    score_fn, state, x_in[:21], 10, jax.random.PRNGKey(0), attention=np.array([0.0, 1.0])
  )
  np.testing.assert_array_equal(per_batch.attention, np.repeat([0.0, 1.0], [10, 11]))
  np.testing.assert_array_equal(per_batch.p_values, result.p_values)  # the test still ran
  per_image = np.linspace(0, 1, 21).astype(np.float32)
  untested = score_batches(score_fn, None, x_in[:21], 10, attention=per_image)
  assert np.all(np.isnan(untested.p_values))
  np.testing.assert_allclose(
    untested.scores,
    np.concatenate([score_fn(x_in[:10], per_image[:10]), score_fn(x_in[10:21], per_image[10:])]),
    rtol=1e-6,
  )
  with pytest.raises(ValueError, match="attention must be"):
    score_batches(score_fn, None, x_in[:21], 10, attention=np.ones(3))
  with pytest.raises(ValueError, match="larger than the set"):
    score_batches(score_fn, state, x_in[:5], 10, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="PRNG key"):
    score_batches(score_fn, state, x_in, 10)
  with pytest.raises(ValueError, match="at least 1"):
    score_batches(score_fn, state, x_in[:0], 10, jax.random.PRNGKey(0))
