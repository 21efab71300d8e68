"""InFlowDetector (`inflow_jax.detector.detector`) with the conformal gates ("conformal",
"combined"): fit, per-image scores and p-values, batch tests, save/load, errors."""

import copy
import dataclasses

import jax
import numpy as np
import pytest

from inflow_jax import InFlowDetector, data
from inflow_jax.data.jpeg import jpeg_round_trip
from inflow_jax.gates import batch_p_value, combine_p_values, conformal_p_values
from inflow_jax.gates.density import fit_density
from inflow_jax.gates.features import image_features
from inflow_jax.model.density import make_score_fn


@pytest.fixture(scope="module")
def fitted(fitted_combined):
  return fitted_combined[0]


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
  # predict: each image's own verdict, p(x) < level (the clean images of a flagged batch pass)
  assert np.all(batch.attention[10:15] == 0.0)  # clean images of the flagged second batch
  np.testing.assert_array_equal(
    detector.predict(mixed), (batch.image_p_values < detector.level).astype(int)
  )
  assert detector.predict(mixed)[15:].all() and not detector.predict(mixed)[10:15].any()


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
