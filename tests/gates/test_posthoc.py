"""The OpenOOD post-hoc baselines (`inflow_jax.gates.posthoc`) against independent per-image
computations (scipy's logsumexp and mahalanobis, brute-force sorted distances, an SVD for ViM's
subspace), their ranking of a shifted cluster, and their input errors."""

import numpy as np
import pytest
from scipy.spatial import distance
from scipy.special import logsumexp, softmax

from inflow_jax.evaluation import metrics
from inflow_jax.gates import posthoc


def test_msp_and_energy_against_scipy():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (40, 7)) + 500.0  # a large offset: the scores must be stable
  expected_msp = [-max(softmax(row)) for row in logits]
  np.testing.assert_allclose(posthoc.msp_scores(logits), expected_msp, rtol=1e-12)
  for t in (1.0, 2.5):
    expected = [-t * logsumexp(row / t) for row in logits]
    np.testing.assert_allclose(posthoc.energy_scores(logits, t), expected, rtol=1e-12)


def test_mds_against_scipy_mahalanobis():
  rng = np.random.default_rng(1)
  labels = np.repeat(np.arange(3), [20, 25, 15])
  train = rng.normal(0, 1, (60, 5)) @ rng.normal(0, 1, (5, 5)) + 3.0 * labels[:, None]
  test = rng.normal(0, 2, (30, 5))
  means = np.array([train[labels == c].mean(axis=0) for c in range(3)])
  scatter = sum(np.outer(f - means[y], f - means[y]) for f, y in zip(train, labels))
  inverse = np.linalg.inv(scatter / len(train))
  expected = [min(distance.mahalanobis(f, m, inverse) ** 2 for m in means) for f in test]
  state = posthoc.fit_mds(train, labels)
  np.testing.assert_allclose(state.means, means, rtol=1e-12)
  np.testing.assert_allclose(posthoc.mds_scores(state, test), expected, rtol=1e-9)


def test_knn_against_brute_force_sorted_distances():
  rng = np.random.default_rng(2)
  train, test = rng.normal(0, 1, (70, 6)), rng.normal(0.5, 1, (23, 6))
  unit_train = [f / np.sqrt(np.dot(f, f)) for f in train]
  for k in (1, 5, 50):
    expected = [
      sorted(np.linalg.norm(f / np.sqrt(np.dot(f, f)) - b) for b in unit_train)[k - 1] for f in test
    ]
    state = posthoc.fit_knn(train, k=k)
    np.testing.assert_allclose(posthoc.knn_scores(state, test, block_size=4), expected, rtol=1e-9)
  # A training image's nearest neighbour is itself; its scale does not matter (normalised).
  state = posthoc.fit_knn(train, k=1)
  np.testing.assert_allclose(posthoc.knn_scores(state, 3.0 * train[:5]), 0.0, atol=1e-7)
  assert posthoc.fit_knn(train).k == 50  # OpenOOD's knn.yml default


def _vim_reference(train, test, kernel, bias, dim):
  """ViM through an SVD of the offset features and the projection onto the principal space."""
  w = kernel.T  # (C, D), logits = W f + b
  origin = -np.linalg.lstsq(w, bias, rcond=None)[0]  # minimum-norm solution = pinv(W) b
  _, _, vt = np.linalg.svd(train - origin, full_matrices=False)  # rows: descending singular values
  principal = vt[:dim].T

  def residual(f):
    x = f - origin
    return np.linalg.norm(x - principal @ (principal.T @ x))

  alpha = sum(max(w @ f + bias) for f in train) / sum(residual(f) for f in train)
  return np.array([alpha * residual(f) - logsumexp(w @ f + bias) for f in test]), alpha


def test_vim_against_svd_reference():
  rng = np.random.default_rng(3)
  scales = np.linspace(3.0, 0.2, 10)  # distinct variances: a well-defined principal space
  train, test = rng.normal(0, 1, (200, 10)) * scales + 1.0, rng.normal(0, 1, (15, 10)) * 2
  kernel, bias = rng.normal(0, 1, (10, 4)), rng.normal(0, 1, 4)
  state = posthoc.fit_vim(train, kernel, bias, dim=4)
  expected, alpha = _vim_reference(train, test, kernel, bias, dim=4)
  assert state.alpha == pytest.approx(alpha, rel=1e-9)
  np.testing.assert_allclose(posthoc.vim_scores(state, test), expected, rtol=1e-8, atol=1e-9)
  # OpenOOD's confidence is -alpha r + logsumexp(l): ours is its negative.
  np.testing.assert_allclose(state.origin, -np.linalg.pinv(kernel.T) @ bias, atol=1e-10)
  assert posthoc.fit_vim(train, kernel, bias).residual_basis.shape == (10, 5)  # dim = D // 2


def test_linear_head_recovers_the_layer_and_refuses_a_nonlinear_one():
  rng = np.random.default_rng(5)
  features = rng.normal(0, 1, (300, 12))
  kernel, bias = rng.normal(0, 1, (12, 5)), rng.normal(0, 1, 5)
  logits = (features @ kernel + bias) / 9  # a logit scale, as ClassifierEncoder's
  got_kernel, got_bias = posthoc.linear_head(features.astype(np.float32), logits)
  np.testing.assert_allclose(got_kernel, kernel / 9, atol=1e-6)
  np.testing.assert_allclose(got_bias, bias / 9, atol=1e-6)
  with pytest.raises(ValueError, match="not a linear function of the features"):
    posthoc.linear_head(features, np.tanh(features @ kernel))
  with pytest.raises(ValueError, match="needs more than 12 images"):
    posthoc.linear_head(features[:12], logits[:12])
  with pytest.raises(ValueError, match="one row per image each"):
    posthoc.linear_head(features, logits[:200])


def test_vim_default_dim():
  assert [posthoc.vim_default_dim(d) for d in (84, 512, 768, 1024, 2048)] == [
    42,
    256,
    512,
    512,
    1000,
  ]


def _clusters(rng, n_per_class, shift=None):
  """Four Gaussian classes along e_0..e_3 (large variance in dims < 8, small beyond), or one cluster
  at `shift` (an OOD set), as (features, labels)."""
  scales = np.r_[np.ones(8), np.full(8, 0.3)]
  if shift is not None:
    return rng.normal(0, 1, (n_per_class, 16)) * scales + shift, None
  labels = np.repeat(np.arange(4), n_per_class)
  means = 5.0 * np.eye(16)[:4]
  return means[labels] + rng.normal(0, 1, (labels.size, 16)) * scales, labels


def test_each_score_ranks_a_shifted_cluster_as_ood():
  rng = np.random.default_rng(4)
  train, labels = _clusters(rng, 200)
  test_in, _ = _clusters(rng, 50)
  test_out, _ = _clusters(rng, 200, shift=3.0 * np.eye(16)[12])
  means = np.array([train[labels == c].mean(axis=0) for c in range(4)])
  kernel, bias = means.T, -0.5 * np.sum(means**2, axis=1)  # nearest-class-mean linear classifier
  mds, knn = posthoc.fit_mds(train, labels), posthoc.fit_knn(train)
  vim = posthoc.fit_vim(train, kernel, bias)
  scorers = {
    "msp": lambda f: posthoc.msp_scores(f @ kernel + bias),
    "energy": lambda f: posthoc.energy_scores(f @ kernel + bias),
    "mds": lambda f: posthoc.mds_scores(mds, f),
    "knn": lambda f: posthoc.knn_scores(knn, f),
    "vim": lambda f: posthoc.vim_scores(vim, f),
  }
  aurocs = {name: metrics.auroc(score(test_in), score(test_out)) for name, score in scorers.items()}
  assert all(a > 0.9 for a in aurocs.values()), aurocs


def _bad_calls():
  f, y = np.ones((10, 3)), np.arange(10) % 2
  f_rand = np.random.default_rng(5).normal(size=(10, 3))
  kernel, bias = np.ones((3, 2)), np.zeros(2)
  mds = posthoc.fit_mds(f_rand, y)
  return [
    (lambda: posthoc.msp_scores(np.ones(5)), ValueError, "logits must be a 2-D"),
    (lambda: posthoc.energy_scores([[1.0, np.nan]]), ValueError, "logits contains NaN"),
    (lambda: posthoc.energy_scores(f, temperature=0.0), ValueError, "temperature"),
    (lambda: posthoc.fit_mds(f, y[:9]), ValueError, "labels_train must be 10 integer"),
    (lambda: posthoc.fit_mds(f, y * 2), ValueError, "labels_train has no image of classes"),
    (lambda: posthoc.fit_mds(f, y - 1), ValueError, r"labels_train must lie in \[0, "),
    (lambda: posthoc.fit_mds(f, y * 1.0), ValueError, "labels_train must be 10 integer"),
    (lambda: posthoc.fit_mds(f[:2], y[:2]), ValueError, "features_train needs more than"),
    (lambda: posthoc.mds_scores(mds, np.ones((2, 4))), ValueError, "features must have 3 col"),
    (lambda: posthoc.fit_knn(f), ValueError, "features_train needs at least k = 50"),
    (lambda: posthoc.fit_knn(f, k=0), ValueError, "k must be >= 1"),
    (lambda: posthoc.fit_knn(np.zeros((0, 3)), k=1), ValueError, "features_train needs at least"),
    (lambda: posthoc.fit_vim(f_rand, kernel.T, bias), ValueError, "kernel must have shape"),
    (lambda: posthoc.fit_vim(f_rand, kernel, np.zeros(3)), ValueError, "bias must be 2"),
    (lambda: posthoc.fit_vim(f_rand, kernel, bias, dim=3), ValueError, "dim must be < D"),
    (lambda: posthoc.fit_vim(f_rand[:2], kernel, bias, dim=2), ValueError, "features_train"),
    (lambda: posthoc.fit_vim(f, kernel, bias, dim=1), ValueError, "features_train lies in"),
    (lambda: posthoc.fit_vim(f_rand, kernel, bias, dim=1.5), TypeError, "dim must be an integer"),
  ]


@pytest.mark.parametrize("call, error, match", _bad_calls())
def test_bad_input(call, error, match):
  with pytest.raises(error, match=match):
    call()
