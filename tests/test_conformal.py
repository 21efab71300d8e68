"""The conformal attention: flow statistics, p-values, batch tests, the density, and the detector's
"conformal" / "combined" kinds (fit, per-image scores and p-values, batch tests, save/load, errors)."""

import copy
import dataclasses
import io
import json

import jax
import numpy as np
import pytest
from helpers import fast_jit
from PIL import Image
from scipy import stats
from sklearn.mixture import GaussianMixture

from inflow_jax import InFlowDetector, data
from inflow_jax.data.jpeg import jpeg_round_trip
from inflow_jax.detector.files import model_config
from inflow_jax.gates import batch_p_value, combine_p_values, conformal_p_values
from inflow_jax.gates.density import (
  check_components,
  choose_components,
  density_scores,
  fit_density,
  min_density_images,
)
from inflow_jax.gates.features import complexity_bits, half_resolution, image_features, n_features
from inflow_jax.model import InFlow
from inflow_jax.model.density import gaussian_log_prob, make_score_fn
from inflow_jax.model.flow_file import load_flow_file


def test_statistics_sum_to_the_forward_pass():
  model = InFlow(num_blocks=1, width=4, glow=True, num_scales=2)
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 8, 8, 3))
  variables = fast_jit(model.init)(jax.random.PRNGKey(0), x, 1.0)
  attention = np.array([1.0, 0.5, 0.0], np.float32)
  z, log_det, stats_ = fast_jit(
    lambda v, x, a: model.apply(v, x, a) + (model.apply(v, x, a, method=InFlow.statistics),)
  )(variables, x, attention)
  assert stats_["log_det_blocks"].shape == (3, 2) and stats_["log_prior_scales"].shape == (3, 2)
  np.testing.assert_allclose(stats_["log_det_blocks"].sum(1), log_det, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(
    stats_["log_prior_scales"].sum(1), gaussian_log_prob(z, 1.0), rtol=1e-6
  )
  np.testing.assert_allclose(
    stats_["sq_norm_scales"].sum(1), np.sum(np.square(z), axis=(1, 2, 3)), rtol=1e-6
  )
  np.testing.assert_allclose(stats_["log_det_blocks"][2], 0.0, atol=1e-6)  # a = 0: the identity


@pytest.mark.parametrize("num_scales", [1, 3])
def test_image_features_leave_out_the_last_levels_prior(num_scales):
  """Per image: the prior bits/dim of every level but the last (the only one of a 1-scale flow), then
  the PNG bits/dim at full and half resolution."""
  model = InFlow(num_blocks=1, width=4, glow=True, num_scales=num_scales)
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (4, 16, 16, 3)))
  x = np.round(x * 255) / 255
  variables = fast_jit(model.init)(jax.random.PRNGKey(0), x, 1.0)
  stats_ = fast_jit(lambda v, x: model.apply(v, x, 1.0, method=InFlow.statistics))(variables, x)
  features = image_features(model, variables, x)
  n_prior = max(num_scales - 1, 1)
  assert features.shape == (4, n_prior + 2) == (4, n_features(model))
  np.testing.assert_allclose(
    features[:, :n_prior],
    -np.asarray(stats_["log_prior_scales"])[:, :n_prior] / (x[0].size * np.log(2)),
    rtol=1e-5,
  )
  np.testing.assert_array_equal(features[:, n_prior:], complexity_bits(x))


def test_conformal_p_values_formula_and_uniformity():
  rng = np.random.default_rng(0)
  calibration = np.sort(rng.normal(size=2000))
  scores = np.r_[rng.normal(size=5000), calibration[[0, 10, -1]]]
  p = conformal_p_values(calibration, scores)
  brute = (1 + (calibration[None, :] >= scores[:, None]).sum(1)) / 2001
  np.testing.assert_array_equal(p, brute)
  assert p.min() >= 1 / 2001 and p.max() <= 1.0
  # marginally (fresh calibration and test draws) p is uniform on {1, ..., n+1}/(n+1): KS on a null
  null = np.array(
    [conformal_p_values(np.sort(rng.normal(size=999)), rng.normal(size=1))[0] for _ in range(3000)]
  )
  assert stats.kstest(null, "uniform").pvalue > 0.01
  for u in (0.01, 0.05, 0.2):
    assert np.mean(null <= u) <= u + 3 * np.sqrt(u / 3000)


def test_batch_tests_match_their_definitions_and_hold_the_level():
  rng = np.random.default_rng(1)
  p = rng.uniform(size=7)
  assert batch_p_value(p, "fisher") == pytest.approx(stats.combine_pvalues(p, method="fisher")[1])
  assert batch_p_value(p, "simes") == pytest.approx(
    min(1.0, np.min(7 * np.sort(p) / np.arange(1, 8)))
  )
  assert combine_p_values([0.01, 0.3], "bonferroni") == pytest.approx(0.02)
  assert combine_p_values([0.01, 0.3, 0.5], "bonferroni") == pytest.approx(0.03)
  assert combine_p_values([0.01, 0.3, 0.5], "bonferroni", (0.5, 0.25, 0.25)) == pytest.approx(0.02)
  assert combine_p_values([0.2, 0.01], "bonferroni", (0.5, 0.5)) == pytest.approx(0.02)
  weighted = (
    0.5 - np.arctan(np.sum(np.array([0.5, 0.25, 0.25]) * np.tan((0.5 - p[:3]) * np.pi))) / np.pi
  )
  assert combine_p_values(p[:3], "cauchy", (0.5, 0.25, 0.25)) == pytest.approx(weighted)
  assert combine_p_values([0.3, 0.3], "cauchy") == pytest.approx(0.3)
  null = rng.uniform(size=(4000, 5))
  assert batch_p_value(p, "cauchy") == pytest.approx(
    0.5 - np.arctan(np.mean(np.tan((0.5 - p) * np.pi))) / np.pi
  )
  for test in ("cauchy", "fisher", "simes"):
    rate = np.mean([batch_p_value(row, test) < 0.05 for row in null])
    assert 0.04 < rate < 0.06, (test, rate)
  for method in ("bonferroni", "cauchy"):
    for k, weights in ((2, None), (3, None), (3, (0.5, 0.25, 0.25))):
      rate = np.mean([combine_p_values(row, method, weights) < 0.05 for row in null[:, :k]])
      assert 0.03 < rate < 0.06, (method, k, weights, rate)
  # 'auto': Cauchy while n level / m >= 10 calibration scores resolve its tail, else Fisher
  assert batch_p_value(p, "auto", n_calibration=1400, level=0.05) == batch_p_value(p, "cauchy")
  assert batch_p_value(p, "auto", n_calibration=1399, level=0.05) == batch_p_value(p, "fisher")
  with pytest.raises(ValueError, match="n_calibration"):
    batch_p_value(p, "auto")
  # power: one very small p-value among 10 is found by Simes
  assert batch_p_value(np.r_[1e-4, rng.uniform(size=9)], "simes") < 0.05


def test_complexity_features_are_png_lengths_at_two_resolutions():
  rng = np.random.default_rng(3)
  x = np.round(rng.uniform(size=(4, 6, 5, 3)) * 255) / 255
  half = half_resolution(x)
  assert half.shape == (4, 3, 2, 3)  # the odd last column dropped
  np.testing.assert_allclose(half[:, 1, 0], np.round(255 * x[:, 2:4, 0:2].mean(axis=(1, 2))) / 255)
  bits = complexity_bits(x)
  for i, image in enumerate((x, half)):
    buffer = io.BytesIO()
    Image.fromarray(np.round(image[1] * 255).astype(np.uint8)).save(
      buffer, format="PNG", compress_level=9
    )
    assert bits[1, i] == pytest.approx(8 * buffer.getbuffer().nbytes / image[1].size)


def test_density_scores_equal_sklearn():
  rng = np.random.default_rng(2)
  features = np.c_[
    rng.normal(3.0, 2.0, 600), rng.normal(size=600) * 0.1 + 1.0, rng.gamma(2.0, size=600)
  ]
  density = fit_density(features, n_components=3, seed=0, n_bags=1)
  mixture = GaussianMixture(3, covariance_type="full", reg_covar=1e-3, random_state=0)
  standardised = (features - features.mean(0)) / features.std(0)
  mixture.fit(standardised)
  np.testing.assert_allclose(
    density_scores(density, features), -mixture.score_samples(standardised), rtol=1e-5, atol=1e-5
  )


def test_bagged_density_is_the_average_of_its_mixtures():
  rng = np.random.default_rng(4)
  features = np.c_[rng.normal(3.0, 2.0, 500), rng.gamma(2.0, size=500)]
  density = fit_density(features, n_components=3, seed=1, n_bags=4)
  assert density["means"].shape == (12, 2)
  u = (features[:50] - density["mean"]) / density["scale"]
  mixtures = []
  for b in range(4):  # each bag's 3 components as scipy normals, weights renormalised to 1
    part = slice(3 * b, 3 * b + 3)
    weights = np.exp(density["log_weights"][part].astype(np.float64))
    covariances = [
      np.linalg.inv(c @ c.T) for c in density["precisions_cholesky"][part].astype(np.float64)
    ]
    mixtures.append(
      sum(
        w * stats.multivariate_normal(m, c).pdf(u)
        for w, m, c in zip(weights / weights.sum(), density["means"][part], covariances)
      )
    )
    assert weights.sum() == pytest.approx(0.25, rel=1e-5)
  np.testing.assert_allclose(
    density_scores(density, features[:50]), -np.log(np.mean(mixtures, axis=0)), rtol=1e-4, atol=1e-4
  )


@pytest.mark.parametrize("true_components", [1, 4])
def test_auto_components_find_the_generating_mixture(true_components):
  rng = np.random.default_rng(true_components)
  centres = 8.0 * np.array([[0, 0], [1, 0], [0, 1], [1, 1]])[:true_components]
  u = centres[rng.integers(0, true_components, 2000)] + rng.normal(size=(2000, 2))
  assert choose_components((u - u.mean(0)) / u.std(0)) == true_components
  assert min_density_images("auto") == 13 and min_density_images(4) == 41
  with pytest.raises(ValueError, match="positive int or 'auto', got 2.5"):
    check_components(2.5)


def test_jpeg_round_trip_is_pil():
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
  out = jpeg_round_trip(images / 255.0, 75)
  buffer = io.BytesIO()
  Image.fromarray(images[1]).save(buffer, format="JPEG", quality=75)
  np.testing.assert_array_equal(
    np.round(out[1] * 255).astype(np.uint8), np.asarray(Image.open(buffer))
  )
  assert out.dtype == np.float32 and jpeg_round_trip(images[..., :1] / 255.0, 50).shape == (
    2,
    16,
    16,
    1,
  )


def test_auto_batch_test_holds_the_level_given_the_calibration_set():
  """Batches of 50 with 2500 calibration scores: 'auto' (Fisher here) keeps the false-alarm rate of
  each calibration draw near the level; the Cauchy test rests on the top ~2.5 calibration scores."""
  rng = np.random.default_rng(3)
  rates = {"auto": [], "cauchy": []}
  for _ in range(120):
    p = conformal_p_values(np.sort(rng.normal(size=2500)), rng.normal(size=2500))
    batches = np.concatenate([rng.permutation(2500) for _ in range(6)]).reshape(300, 50)
    for test in rates:
      rates[test].append(np.mean([batch_p_value(p[i], test, 2500, 0.05) < 0.05 for i in batches]))
  auto, cauchy = np.asarray(rates["auto"]), np.asarray(rates["cauchy"])
  assert 0.04 < auto.mean() < 0.06, auto.mean()
  assert auto.std() < 0.9 * cauchy.std(), (auto.std(), cauchy.std())
  assert np.mean((auto < 0.02) | (auto > 0.08)) < np.mean((cauchy < 0.02) | (cauchy > 0.08))


@pytest.fixture(scope="module")
def digits():
  return data.load_images("digits", "train")[0]


@pytest.fixture(scope="module")
def fitted(digits):
  model = InFlow(num_blocks=2, width=8, paper_compat=True)  # as test_detector: shared compilations
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), digits[:2], 1.0)
  detector = InFlowDetector(
    model, variables, attention="combined", n_permutations=50, batch_size=10, n_components=2
  )
  return detector.fit(digits[:300], x_calibration=digits[300:500])


def test_combined_detector_scores_p_values_and_batches(fitted, digits):
  detector, x_in = fitted, digits[500:560]
  noise = data.load_images("uniform_noise", "test", max_images=30)[0]
  scores = detector.image_scores(x_in)
  np.testing.assert_array_equal(
    np.concatenate([detector.image_scores(x_in[:7]), detector.image_scores(x_in[7:])]), scores
  )
  p_in, p_out = detector.image_p_values(x_in), detector.image_p_values(noise)
  assert np.all((p_in > 0) & (p_in <= 1)) and p_out.max() == pytest.approx(1 / 201)
  result = detector.test_batch(noise[:5], jax.random.PRNGKey(0))
  assert result.attention == 0.0 and result.p_value < 0.05
  assert 0 < result.p_mean_shift <= 1  # the combined gate's three tests
  assert result.p_value == pytest.approx(
    combine_p_values(  # half for the per-image evidence
      [result.p_conformal, result.p_mmd, result.p_mean_shift], "bonferroni", (0.5, 0.25, 0.25)
    )
  )
  # 'auto' with 200 calibration images: 200 * 0.05 / 5 < 10 tail scores, hence Fisher
  assert result.p_conformal == pytest.approx(batch_p_value(p_out[:5], "fisher"))
  # score: the flow's score at the per-image attention; predict = 1 - a
  mixed = np.concatenate([x_in[:15], noise[:5]])
  batch = detector.score_batches(mixed)
  direct = make_score_fn(detector.model, detector.variables, "paper")(mixed, batch.attention)
  np.testing.assert_allclose(batch.scores, direct, rtol=1e-4)
  assert np.all(batch.attention[15:] == 0.0)
  np.testing.assert_array_equal(detector.predict(mixed), (batch.attention == 0.0).astype(int))


def test_conformal_kind_save_load_and_jpeg(fitted, digits, tmp_path):
  detector = InFlowDetector(
    fitted.model,
    fitted.variables,
    attention="conformal",
    batch_test="simes",
    n_components=2,
    jpeg_quality=80,
    batch_size=10,
  )
  detector.fit(digits[:300], x_calibration=digits[300:500])
  assert detector.mmd_state_ is None and detector.threshold_ is None
  plain = InFlowDetector(fitted.model, fitted.variables, attention="conformal", n_components=2)
  plain.fit(jpeg_round_trip(digits[:300], 80), x_calibration=jpeg_round_trip(digits[300:500], 80))
  np.testing.assert_allclose(
    detector.image_scores(digits[500:520]),
    plain.image_scores(jpeg_round_trip(digits[500:520], 80)),
    rtol=1e-6,
  )
  loaded = InFlowDetector.load(detector.save(tmp_path / "det"))
  assert (loaded.attention, loaded.batch_test, loaded.jpeg_quality) == ("conformal", "simes", 80)
  np.testing.assert_array_equal(
    loaded.image_p_values(digits[500:520]), detector.image_p_values(digits[500:520])
  )
  np.testing.assert_array_equal(
    loaded.test_batch(digits[500:520]), detector.test_batch(digits[500:520])
  )


def test_combined_gate_with_and_without_the_mean_shift_test(fitted, digits, tmp_path):
  """The combined detector saves and loads its mean-shift test; mean_shift_components=None gives the
  gate of the conformal and MMD tests alone; a conformal_state that does not match is refused."""
  x, key = digits[500:510], jax.random.PRNGKey(1)
  state = fitted.conformal_state_
  assert state.mean_shift.n_components == 64 and state.mean_shift.pool.shape == (200, 64)
  loaded = InFlowDetector.load(fitted.save(tmp_path / "combined"))
  assert loaded.mean_shift_components == 64
  np.testing.assert_array_equal(loaded.test_batch(x, key), fitted.test_batch(x, key))
  without = InFlowDetector(
    fitted.model,
    fitted.variables,
    attention="combined",
    n_permutations=50,
    batch_size=10,
    n_components=2,
    mean_shift_components=None,
  )
  without.fit(digits[:300], x_calibration=digits[300:500], mmd_state=fitted.mmd_state_)
  result = without.test_batch(x, key)
  assert without.conformal_state_.mean_shift is None and np.isnan(result.p_mean_shift)
  assert result.p_value == pytest.approx(
    combine_p_values([result.p_mmd, result.p_conformal], "bonferroni")
  )
  with pytest.raises(
    ValueError,
    match=r"conformal_state has a mean-shift test of None components; this "
    r"detector \(attention='combined'\) needs 64",
  ):
    InFlowDetector(fitted.model, fitted.variables, attention="combined", n_components=2).fit(
      digits[:300], conformal_state=without.conformal_state_
    )
  with pytest.raises(
    ValueError,
    match=r"64 principal components needs more fitting images \(x_ref\) "
    r"and pixels than that, got 60 images",
  ):
    InFlowDetector(
      fitted.model, fitted.variables, attention="combined", n_components=2, n_permutations=50
    ).fit(digits[:60], x_calibration=digits[300:500], mmd_state=fitted.mmd_state_)


def test_load_rejects_a_density_of_another_feature_length(fitted, tmp_path):
  """A detector saved when the features had another length (an older version) is refused on load."""
  detector = copy.copy(fitted)
  state = detector.conformal_state_
  wider = {
    k: (np.concatenate([v, v[..., :1]], axis=-1) if k in ("mean", "scale", "means") else v)
    for k, v in state.density.items()
  }
  detector.conformal_state_ = dataclasses.replace(state, density=wider)
  path = detector.save(tmp_path / "wider")
  with pytest.raises(
    ValueError,
    match=r"saved density takes 4 features per image but this version "
    r"computes 3 for this flow.*fit the detector again",
  ):
    InFlowDetector.load(path)


def test_density_fitted_on_x_density_when_given(fitted, digits):
  """With x_density the mixture is fitted on those images' features (the same as fitting it there
  directly), not on x_ref's; the calibration then scores with that mixture."""
  detector = InFlowDetector(fitted.model, fitted.variables, attention="conformal", n_components=2)
  detector.fit(digits[:300], x_calibration=digits[300:500], x_density=digits[500:700])
  direct = fit_density(image_features(fitted.model, fitted.variables, digits[500:700]), 2, seed=0)
  for name, value in direct.items():
    np.testing.assert_allclose(detector.conformal_state_.density[name], value, rtol=1e-6, atol=1e-9)
  assert not np.allclose(
    detector.conformal_state_.density["mean"], fitted.conformal_state_.density["mean"]
  )  # x_ref's fit differs
  x = digits[700:720]
  expected = conformal_p_values(
    detector.conformal_state_.calibration_scores, detector.image_scores(x)
  )
  np.testing.assert_array_equal(detector.image_p_values(x), expected)


def test_conformal_errors(fitted, digits):
  model, variables = fitted.model, fitted.variables
  with pytest.raises(ValueError, match="attention must be one of"):
    InFlowDetector(model, variables, attention="kde")
  detector = InFlowDetector(model, variables, attention="conformal", n_components=2)
  with pytest.raises(ValueError, match="needs x_calibration"):
    detector.fit(digits[:300])
  with pytest.raises(ValueError, match="10 calibration images cannot reach level 0.05"):
    detector.fit(digits[:300], x_calibration=digits[300:310])
  with pytest.raises(ValueError, match="5 calibration images also appear in x_ref"):
    detector.fit(digits[:300], x_calibration=digits[295:400])
  with pytest.raises(ValueError, match=r"also appear in the training images \(x_train\)"):
    detector.fit(digits[:300], x_calibration=digits[300:400], x_train=digits[350:360])
  with pytest.raises(ValueError, match="20 calibration images also appear in x_density"):
    detector.fit(digits[:300], x_calibration=digits[300:400], x_density=digits[380:600])
  with pytest.raises(
    ValueError, match=r"n_components=2 needs at least 21 density images \(x_density\), got 10"
  ):
    detector.fit(digits[:300], x_calibration=digits[300:400], x_density=digits[400:410])
  with pytest.raises(ValueError, match="x_density and conformal_state"):
    detector.fit(digits[:300], conformal_state=fitted.conformal_state_, x_density=digits[400:600])
  with pytest.raises(ValueError, match="attention='mmd' has none"):
    InFlowDetector(model, variables, n_permutations=50).fit(digits[:100], x_density=digits[400:600])
  mmd = InFlowDetector(model, variables, n_permutations=50).fit(digits[:100])
  with pytest.raises(ValueError, match="need attention='conformal' or 'combined'"):
    mmd.image_scores(digits[:5])
  with pytest.raises(RuntimeError, match="not fitted"):
    detector.image_scores(digits[:5])
  stale = copy.deepcopy(fitted)  # a density fitted on one feature fewer (an older saved detector)
  stale.conformal_state_.density = {
    k: v[..., :-1] if k in ("mean", "scale") else v
    for k, v in stale.conformal_state_.density.items()
  }
  with pytest.raises(ValueError, match="fitted on 2 per-image features, these images have 3"):
    stale.image_scores(digits[:5])


def test_load_flow_file(tmp_path):
  model = InFlow(num_blocks=1, width=4, glow=True, num_scales=2)
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 3))
  variables = fast_jit(model.init)(jax.random.PRNGKey(0), x, 1.0)
  flat = {
    "/".join(k.key for k in path): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
  }
  np.savez(tmp_path / "flow.npz", **flat)
  (tmp_path / "flow.json").write_text(
    json.dumps({"model": {"num_blocks": 1, "width": 4, "glow": True, "num_scales": 2}})
  )
  loaded_model, loaded = load_flow_file(tmp_path / "flow.npz")
  assert model_config(loaded_model) == model_config(model)
  assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(
    jax.device_get(variables)
  )
  for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(a, b)
  (tmp_path / "other.npz").write_bytes((tmp_path / "flow.npz").read_bytes())
  with pytest.raises(ValueError, match="is not a flow file"):
    load_flow_file(tmp_path / "other.npz")
