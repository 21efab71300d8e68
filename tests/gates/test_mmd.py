"""The MMD permutation test (`inflow_jax.gates.mmd`, fitted by `inflow_jax.gates.mmd_fit`):
alibi-detect parity, brute-force float64 truth, calibration, bad input."""

import jax
import numpy as np
import pytest
import scipy.stats
from helpers import mmd_test_size, nhwc, shared_file

from inflow_jax.gates import fit_mmd, fit_mmd_embedded, kernels, mmd, mmd_test, mmd_test_embedded
from inflow_jax.gates.encoder import load_reference_encoder, make_encoder


def _flatten(x):
  """An identity 'encoder' for tests: (n, 1, 1, d) images -> (n, d)."""
  return x.reshape(x.shape[0], -1)


def _vectors(rng, n, d=6, shift=0.0):
  return np.clip(0.5 + shift + 0.1 * rng.standard_normal((n, 1, 1, d)), 0, 1).astype(np.float32)


def _mmd2_float64(kernel, n, m):
  """alibi-detect's unbiased MMD^2 on a pooled kernel matrix [ref; test], diagonal zeroed."""
  kernel = kernel.copy()
  np.fill_diagonal(kernel, 0.0)
  return (
    kernel[:n, :n].sum() / (n * (n - 1))
    + kernel[n:, n:].sum() / (m * (m - 1))
    - 2.0 * kernel[n:, :n].mean()
  )


def _kernel_float64(z, sigmas):
  d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
  return np.mean([np.exp(-d2 / (2.0 * s * s)) for s in sigmas], axis=0)


@pytest.mark.shared
def test_parity_with_alibi_detect_fixture():
  data = np.load(shared_file("fixtures/mmd_reference_public.npz"))
  encoder = load_reference_encoder(shared_file("fixtures/uae_encoder_torch_seed0.npz"))
  n_permutations = int(data["n_permutations"])
  state = fit_mmd(nhwc(data["x_ref_nchw_uint8"]), encoder, n_permutations=n_permutations)
  np.testing.assert_allclose(state.reference + state.center, data["emb_ref"], atol=1e-4, rtol=0)
  assert abs(float(state.sigma[0]) / float(data["sigma"][0]) - 1.0) < 1e-5
  for i, name in enumerate(("same", "shifted", "small_same")):
    result = mmd_test(state, nhwc(data[f"x_{name}_nchw_uint8"]), jax.random.PRNGKey(i))
    assert abs(float(result.mmd2) - float(data[f"{name}_mmd2"])) < 1e-6, name
    assert abs(float(result.p_value) - float(data[f"{name}_p_val"])) < 0.03, name
    # the 5% threshold is a Monte-Carlo quantile too: agreement within its sampling spread
    assert abs(float(result.threshold) / float(data[f"{name}_threshold"]) - 1.0) < 0.15, name
    assert float(result.attention) == (0.0 if name == "shifted" else 1.0), name


@pytest.mark.parametrize("sigma", [None, (0.05, 0.2)])
def test_statistic_p_value_threshold_match_float64_brute_force(sigma):
  rng = np.random.default_rng(0)
  n, m, n_permutations, level = 200, 20, 50, 0.05
  x_ref, x = _vectors(rng, n), _vectors(rng, m, shift=0.03)
  state = fit_mmd(x_ref, _flatten, n_permutations=n_permutations, level=level, sigma=sigma)
  key = jax.random.PRNGKey(7)
  result = mmd_test_embedded(state, _flatten(x), key)

  pooled = np.concatenate([_flatten(x_ref), _flatten(x)]).astype(np.float64)
  if sigma is None:  # the median heuristic, from every distinct pair, lower median
    d2 = ((pooled[:n, None] - pooled[None, :n]) ** 2).sum(-1)[np.triu_indices(n, 1)]
    sigmas = [np.sqrt(0.5 * np.sort(d2)[(d2.size - 1) // 2])]
  else:
    sigmas = list(sigma)
  np.testing.assert_allclose(state.sigma, sigmas, rtol=1e-5)
  kernel = _kernel_float64(pooled, sigmas)
  observed = _mmd2_float64(kernel, n, m)
  assert abs(float(result.mmd2) - observed) < 1e-6
  # the same random splits, each statistic recomputed from the full permuted kernel matrix
  subsets = np.asarray(kernels.random_subsets(key, n_permutations, n + m, m))
  permuted = []
  for test_part in subsets:
    order = np.concatenate([np.setdiff1d(np.arange(n + m), test_part), test_part])
    permuted.append(_mmd2_float64(kernel[np.ix_(order, order)], n, m))
  permuted = np.array(permuted)
  expected_p = (1 + np.sum(permuted >= observed)) / (1 + n_permutations)
  assert float(result.p_value) == pytest.approx(expected_p, abs=1e-6)
  expected_threshold = np.sort(permuted)[::-1][int(level * n_permutations)]
  assert abs(float(result.threshold) - expected_threshold) < 1e-6
  assert float(result.attention) == float(expected_p >= level)


def test_permutations_in_chunks_match_one_batch(monkeypatch):
  """Past _PERMUTATION_ENTRIES kernel entries the permutations run in lax.map chunks: same
  results."""
  rng = np.random.default_rng(4)
  state = fit_mmd(_vectors(rng, 150), _flatten, n_permutations=9, level=0.2)
  emb, key = _flatten(_vectors(rng, 10, shift=0.02)), jax.random.PRNGKey(3)
  whole = mmd_test_embedded(state, emb, key)
  jax.clear_caches()
  monkeypatch.setattr(mmd, "_PERMUTATION_ENTRIES", 2 * 10 * 10)  # 2 permutations per chunk
  chunked = mmd_test_embedded(state, emb, key)
  jax.clear_caches()
  assert float(chunked.p_value) == float(whole.p_value)
  assert float(chunked.threshold) == pytest.approx(float(whole.threshold), abs=1e-7)
  assert float(chunked.mmd2) == float(whole.mmd2)


def test_statistic_coefficients_do_not_overflow_at_large_n():
  """n (n - 1) exceeds int32 at n = 50,000: the coefficients must stay Python floats."""
  n, m = 50_000, 250
  value = jax.jit(lambda t: mmd._mmd2_from_sums(t, 3.0, 2.0, n, m))(5.0)
  expected = (5.0 - 6.0 + 2.0) / (n * (n - 1)) + 2.0 / (m * (m - 1)) - 2.0 * (3.0 - 2.0) / (n * m)
  assert float(value) == pytest.approx(expected, rel=1e-6)


def test_p_values_uniform_under_the_null_and_shift_detected():
  """Synthetic null, a fresh reference set and batch per trial (so trials are independent and the
  permutation test is exact): the p-values (randomised within their 1/(P+1) grid cell) are uniform,
  and the flagged fraction lies in the two-sided 99.9% binomial interval of the test's exact size
  (2/51 at level 0.05 with 50 permutations): a gate that always or never flags fails."""
  rng = np.random.default_rng(3)
  trials, n_permutations, level = 400, 50, 0.05
  keys = jax.random.split(jax.random.PRNGKey(0), trials)
  p_null = []
  for key in keys:
    state = fit_mmd_embedded(_flatten(_vectors(rng, 200)), None, n_permutations=n_permutations)
    p_null.append(float(mmd_test_embedded(state, _flatten(_vectors(rng, 20)), key).p_value))
  p_null = np.array(p_null)
  randomised = p_null - rng.uniform(size=p_null.size) / (1 + n_permutations)
  assert scipy.stats.kstest(randomised, "uniform").pvalue > 0.01
  assert 0.0 <= np.mean(p_null < level) <= 0.15
  low, high = scipy.stats.binom.interval(0.999, trials, mmd_test_size(level, n_permutations))
  assert low > 0 and low <= np.sum(p_null < level) <= high, (low, np.sum(p_null < level), high)
  shifted = mmd_test_embedded(state, _flatten(_vectors(rng, 20, shift=0.15)), keys[0])
  assert float(shifted.p_value) == pytest.approx(1 / 51) and float(shifted.attention) == 0.0


@pytest.mark.shared
def test_calibration_on_cifar10_and_svhn_short():
  """Short version of benchmarks/calibration_attention.py: CIFAR-10 train reference (300, redrawn
  for each trial so that trials are independent) against CIFAR-10 test batches of 50: p-values
  uniform; SVHN batches of 50 always flagged."""

  def embedded(name, count):
    images = np.load(shared_file(f"data/{name}"))["x"][:count].astype(np.float32) / 255.0
    return np.asarray(encoder(images))

  encoder = make_encoder(seed=0)
  train, test = embedded("cifar10_train_10k.npz", 600), embedded("cifar10_test_5k.npz", 500)
  svhn = embedded("svhn_test_5k.npz", 150)
  rng = np.random.default_rng(0)
  keys = jax.random.split(jax.random.PRNGKey(1), 40)
  p_values, svhn_attention = [], []
  for i, key in enumerate(keys):
    state = fit_mmd_embedded(
      train[rng.choice(600, 300, replace=False)], encoder, n_permutations=100
    )
    p_values.append(
      float(mmd_test_embedded(state, test[rng.choice(500, 50, replace=False)], key).p_value)
    )
    if i < 3:
      svhn_attention.append(
        float(mmd_test_embedded(state, svhn[50 * i : 50 * (i + 1)], key).attention)
      )
  p_values = np.array(p_values)
  randomised = p_values - rng.uniform(size=p_values.size) / 101
  assert np.mean(p_values < 0.05) <= 0.15
  assert scipy.stats.kstest(randomised, "uniform").pvalue > 0.01
  assert svhn_attention == [0.0] * 3


def test_bad_input_raises_clear_errors():
  rng = np.random.default_rng(5)
  state = fit_mmd(_vectors(rng, 20), _flatten, n_permutations=20)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="at least 2"):
    mmd_test(state, _vectors(rng, 1), key)
  with pytest.raises(ValueError, match="more than the 20 reference"):
    mmd_test(state, _vectors(rng, 21), key)
  with pytest.raises(ValueError, match="channels"):
    mmd_test(state, np.zeros((5, 1, 1, 3), np.float32), key)
  with pytest.raises(ValueError, match="NaN"):
    mmd_test(state, np.full((5, 1, 1, 6), np.nan, np.float32), key)
  with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
    mmd_test(state, np.full((5, 1, 1, 6), 2.0, np.float32), key)
  with pytest.raises(ValueError, match="shape"):
    mmd_test_embedded(state, np.zeros((5, 4), np.float32), key)


def test_bad_keys_raise_clear_errors():
  rng = np.random.default_rng(6)
  state = fit_mmd(_vectors(rng, 20), _flatten, n_permutations=np.int64(20))
  emb = _flatten(_vectors(rng, 5))
  for call in (mmd_test_embedded, lambda s, e, k: mmd_test(s, e.reshape(5, 1, 1, 6), k)):
    with pytest.raises(ValueError, match="PRNG key"):
      call(state, emb, None)
    with pytest.raises(TypeError, match="PRNG key"):
      call(state, emb, 0)
    with pytest.raises(TypeError, match="PRNG key"):
      call(state, emb, np.zeros(3, np.uint32))
  raw = mmd_test_embedded(state, emb, jax.random.PRNGKey(0))
  typed = mmd_test_embedded(state, emb, jax.random.key(0))
  assert float(raw.p_value) == float(typed.p_value)
