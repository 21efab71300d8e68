"""A detector with a trained in-distribution encoder (`trained_encoder`): the semantic score is ViM
of the encoder's outputs (or the feature flow's NLL), the per-image score is the
Fisher statistic of the pixel and semantic conformal p-values (against a direct computation), the
p-values are calibrated, scores do not depend on batching, the encoder's predictions are reachable,
save/load keep everything, the MMD test may embed with the encoder's features, and mismatched parts
fail with one line."""

import json

import jax
import numpy as np
import pytest
from helpers import semantic_detector
from scipy.special import log_softmax, logsumexp

from configs import default
from inflow_jax import InFlowDetector, data, gates
from inflow_jax.detector import files
from inflow_jax.detector import gate as gate_lib
from inflow_jax.gates import posthoc, trained_embedder
from inflow_jax.gates import semantic as semantic_lib
from inflow_jax.gates.features import image_features
from inflow_jax.model import ClassifierEncoder, TrainedEncoder
from inflow_jax.model.classifier_encoder import encode
from inflow_jax.training.encoder import train_encoder
from inflow_jax.training.feature_flow import feature_flow_nll
from inflow_jax.utils import integrity


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
  """A tiny encoder trained on 600 digits with labels, a tiny flow, the conformal gate calibrated on
  200 unseen digits; the feature flow fitted on the encoder's training images."""
  x, y = data.load_images("digits", "train")
  encoder = ClassifierEncoder(num_classes=10, stem_width=4, widths=(16, 32))
  config = default.get_config()
  config.encoder.train.update(
    num_steps=60, batch_size=32, learning_rate=0.01, warmup_steps=4, decay_steps=56, log_every=20
  )
  workdir = tmp_path_factory.mktemp("enc")
  result = train_encoder(encoder, x[:600], y[:600], config, workdir, progress=False)
  trained = TrainedEncoder(encoder, result.variables)
  detector = semantic_detector(trained, x[:300], x[900:1100], x[:600])
  return detector, x, y


def _rank_p(calibration, scores):
  """(1 + #{c >= s}) / (1 + n), by direct counting."""
  return np.array([(1 + np.sum(calibration >= s)) / (1 + len(calibration)) for s in scores])


def _views(detector, images):
  """{view: (N,) scores}: the pixel density's and each semantic score's."""
  state = detector.conformal_state_
  pixel = gates.conformal.scores_of_features(
    state.density, image_features(detector.model, detector.variables, images)
  )
  return {"pixel": pixel, **semantic_lib.semantic_scores(state.semantic, images)}


def _leave_one_out_counts(c):
  """1 + #{j != i: c_j >= c_i} for each calibration score, by direct counting."""
  return np.array([1 + np.sum(np.delete(c, i) >= c[i]) for i in range(len(c))])


def test_the_score_is_the_pooled_statistic_of_the_pixel_and_semantic_views(fitted):
  """T = -log p_pixel - log p_S, p_S the rank of the semantic scores' Fisher statistic F among the
  calibration images' F (`gates.views`), recomputed here by direct counting: in integer counts
  F >= F_i <=> prod a <= prod a_i, so no float ties decide a rank."""
  detector, x, y = fitted
  state = detector.conformal_state_
  x_new, x_cal = x[1100:1140], x[900:1100]
  cal, new = _views(detector, x_cal), _views(detector, x_new)
  assert list(new) == ["pixel", "vim", "energy", "rotation"] and state.semantic.pooled
  n = len(x_cal)
  count = lambda calibration, s: (_rank_p(calibration, s) * (1 + n)).round()
  semantic = ("vim", "energy", "rotation")
  product_cal = np.prod([_leave_one_out_counts(cal[v]) for v in semantic], axis=0)
  product_new = np.prod([count(cal[v], new[v]) for v in semantic], axis=0)
  a_semantic_new = np.array([1 + np.sum(product_cal <= q) for q in product_new])
  a_semantic_cal = _leave_one_out_counts(-product_cal)  # higher F = lower product
  a_pixel_new, a_pixel_cal = count(cal["pixel"], new["pixel"]), _leave_one_out_counts(cal["pixel"])
  scores = detector.image_scores(x_new)
  expected = 2 * np.log(1 + n) - np.log(a_pixel_new * a_semantic_new)
  np.testing.assert_allclose(scores, expected, rtol=1e-12)
  # p(x): the rank of T among the calibration images' T, each ranked among the others
  t_product_cal, t_product_new = a_pixel_cal * a_semantic_cal, a_pixel_new * a_semantic_new
  expected_p = np.array([(1 + np.sum(t_product_cal <= q)) / (1 + n) for q in t_product_new])
  np.testing.assert_array_equal(detector.image_p_values(x_new), expected_p)
  np.testing.assert_allclose(
    state.calibration_scores, np.sort(2 * np.log(1 + n) - np.log(t_product_cal)), rtol=1e-12
  )
  np.testing.assert_allclose(
    scores,
    np.concatenate([detector.image_scores(x[i : min(i + 7, 1140)]) for i in range(1100, 1140, 7)]),
  )
  p = detector.image_p_values(x[1100:1400])
  assert np.all((p > 0) & (p <= 1))
  # unseen digits: Binomial(300, <= 0.05) flagged; 36 is 5 standard deviations above 15
  assert np.sum(p < 0.05) <= 36
  noise = np.random.default_rng(0).random((20,) + x.shape[1:]).astype(np.float32)
  assert np.mean(detector.image_p_values(noise) < 0.05) >= 0.9
  logits = detector.class_logits(x[1100:1300])
  assert logits.shape == (200, 10) and np.mean(logits.argmax(-1) == y[1100:1300]) > 0.4


@pytest.fixture(scope="module")
def fitted_flow(fitted):
  """The same encoder with the feature flow as the semantic score."""
  detector, x, y = fitted
  return (
    semantic_detector(detector.trained_encoder, x[:300], x[900:1100], x[:600], "feature_flow"),
    x,
    y,
  )


def test_the_default_semantic_scores_are_vim_energy_and_rotation_of_the_encoders_outputs(
  fitted, fitted_flow
):
  """ViM from the encoder's own head parameters (numpy, `posthoc`), the energy of its logits and
  -log softmax of its rotation logits at 'upright', on the flip-averaged outputs (the encoder was
  trained on rotations); the feature flow's NLL of the normalised features for
  semantic_score='feature_flow'."""
  detector, x, _ = fitted
  semantic = detector.conformal_state_.semantic
  assert detector.semantic_score == "auto" and semantic.scores == ("vim", "energy", "rotation")
  model, variables = detector.trained_encoder
  head = variables["params"]["class_head"]
  train = encode(model, variables, x[:600]).features.astype(np.float64)
  vim = posthoc.fit_vim(train, np.asarray(head["kernel"]), np.asarray(head["bias"]))
  outputs = encode(model, variables, x[1100:1140])
  features, logits = outputs.features, np.asarray(outputs.class_logits, np.float64)
  got = semantic_lib.semantic_scores(semantic, x[1100:1140])
  np.testing.assert_allclose(got["vim"], posthoc.vim_scores(vim, features), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["energy"], -logsumexp(logits, axis=1), rtol=1e-6)
  rotation = np.asarray(outputs.rotation_logits, np.float64)
  np.testing.assert_allclose(got["rotation"], -log_softmax(rotation, axis=1)[:, 0], rtol=1e-6)
  flow_state = fitted_flow[0].conformal_state_.semantic
  assert flow_state.scores == ("feature_flow",) and flow_state.vim is None
  unit = features / np.linalg.norm(features, axis=1, keepdims=True)
  np.testing.assert_allclose(
    semantic_lib.semantic_scores(flow_state, x[1100:1140])["feature_flow"],
    feature_flow_nll(flow_state.feature_flow, unit),
    rtol=1e-5,
  )
  # flip_average False: the energy of one pass's logits (not the mirror-averaged ones)
  single = semantic_lib.fit_semantic(model, variables, x[:600], score="energy", flip_average=False)
  plain = encode(model, variables, x[1100:1140], flip_average=False).class_logits
  np.testing.assert_allclose(
    semantic_lib.semantic_scores(single, x[1100:1140])["energy"],
    -logsumexp(np.asarray(plain, np.float64), axis=1),
    rtol=1e-6,
  )
  assert not np.allclose(plain, outputs.class_logits)


@pytest.mark.parametrize("name", ["fitted", "fitted_flow"])
def test_save_and_load_keep_the_encoder_and_the_semantic_score(name, request, tmp_path):
  detector, x, _ = request.getfixturevalue(name)
  detector.save(tmp_path / "det")
  loaded = InFlowDetector.load(tmp_path / "det")
  np.testing.assert_array_equal(
    loaded.image_scores(x[1100:1120]), detector.image_scores(x[1100:1120])
  )
  np.testing.assert_array_equal(
    loaded.class_logits(x[1100:1105]), detector.class_logits(x[1100:1105])
  )
  meta = json.loads((tmp_path / "det" / "config.json").read_text())
  assert meta["format_version"] == files.FORMAT_VERSION
  assert loaded.semantic_score == detector.semantic_score
  assert loaded.conformal_state_.semantic.scores == detector.conformal_state_.semantic.scores


def _tamper(directory, change):
  path = directory / "config.json"
  meta = json.loads(path.read_text())
  change(meta)
  path.write_text(json.dumps(meta))
  (directory / integrity.MANIFEST).unlink(missing_ok=True)


def test_mismatched_or_newer_files_fail_with_one_line(fitted, fitted_flow, tmp_path):
  detector, _, _ = fitted
  newer = detector.save(tmp_path / "newer")
  _tamper(newer, lambda m: m.update(format_version=files.FORMAT_VERSION + 1))
  with pytest.raises(ValueError, match="saved by a newer inflow_jax"):
    InFlowDetector.load(newer)
  for saved, name in ((detector, "ViM score"), (fitted_flow[0], "feature flow")):
    wider = saved.save(tmp_path / name.replace(" ", "_"))
    _tamper(wider, lambda m: m["trained_encoder"].update(widths=[16, 64]))
    with pytest.raises(ValueError, match=f"{name} takes 32 features, the encoder gives 64"):
      InFlowDetector.load(wider)


def test_a_format_2_detector_loads_with_its_feature_flow(fitted_flow, tmp_path):
  """Format 2 stored neither the setting nor the score names: its semantic view is the flow."""
  detector, x, _ = fitted_flow
  old = detector.save(tmp_path / "old")
  drop = lambda m: (m.pop("semantic_scores"), m["settings"].pop("semantic_score"))
  _tamper(old, lambda meta: (meta.update(format_version=2), drop(meta)))
  loaded = InFlowDetector.load(old)
  assert loaded.semantic_score == "feature_flow"
  assert loaded.conformal_state_.semantic.scores == ("feature_flow",)
  np.testing.assert_array_equal(
    loaded.image_scores(x[1100:1110]), detector.image_scores(x[1100:1110])
  )
  assert files._view_calibration({"pixel": [1.0], "semantic": [2.0]}).keys() == {
    "pixel",
    "feature_flow",
  }


def test_class_scores_need_class_logits_and_unknown_scores_are_refused(fitted):
  detector, _, _ = fitted
  rotations_only = TrainedEncoder(
    ClassifierEncoder(num_classes=0, stem_width=4, widths=(16, 32)),
    detector.trained_encoder.variables,
  )
  kwargs = dict(attention="conformal", trained_encoder=rotations_only)
  with pytest.raises(ValueError, match="'energy' needs an encoder with class logits"):
    InFlowDetector(detector.model, detector.variables, semantic_score="energy", **kwargs)
  for bad in ("knn", "vim+vim"):
    with pytest.raises(ValueError, match="semantic_score must be 'auto' or distinct names"):
      InFlowDetector(detector.model, detector.variables, semantic_score=bad, **kwargs)
  auto = InFlowDetector(detector.model, detector.variables, **kwargs)
  assert auto.semantic_score == "auto"  # resolves to the feature flow when fitted


def test_an_encoder_needs_a_per_image_gate(fitted):
  detector, _, _ = fitted
  with pytest.raises(ValueError, match="use attention 'conformal' or 'combined'"):
    InFlowDetector(detector.model, detector.variables, trained_encoder=detector.trained_encoder)
  with pytest.raises(TypeError, match="TrainedEncoder"):
    InFlowDetector(
      detector.model, detector.variables, attention="conformal", trained_encoder=(1, 2)
    )


def test_the_mmd_test_on_the_trained_encoders_features_survives_save_and_load(
  fitted, tmp_path, monkeypatch
):
  """mmd_encoder='trained': the combined gate's MMD p-value is the permutation test of the
  encoder's features (one pass: semantic_flip_average False) against the calibration images'
  (direct: fit_mmd_embedded on them), before and after save; a batch test runs the encoder once
  for both tests, with the p-values of two separate passes."""
  detector, x, _ = fitted
  trained = InFlowDetector(
    detector.model,
    detector.variables,
    attention="combined",
    n_components=1,
    mean_shift_components=None,
    n_permutations=50,
    trained_encoder=detector.trained_encoder,
    mmd_encoder="trained",
    semantic_flip_average=False,
  ).fit(x[:300], x_calibration=x[900:1100], x_features=x[:600])
  model, variables = detector.trained_encoder
  features = lambda images: encode(model, variables, images, flip_average=False).features
  reference = gates.fit_mmd_embedded(features(x[900:1100]), None, n_permutations=50)
  key = jax.random.PRNGKey(7)
  batch = x[1100:1105]
  expected = gates.mmd_test_embedded(reference, features(batch), jax.random.fold_in(key, 0))
  calls = {"semantic": 0, "mmd": 0}
  count = lambda name, run: lambda *a, **k: calls.update({name: calls[name] + 1}) or run(*a, **k)
  monkeypatch.setattr(semantic_lib, "encode", count("semantic", semantic_lib.encode))
  monkeypatch.setattr(trained_embedder, "_embed", count("mmd", trained_embedder._embed))
  got = trained.test_batch(batch, key)
  np.testing.assert_allclose(got.p_mmd, float(expected.p_value))
  assert calls == {"semantic": 1, "mmd": 0}
  monkeypatch.setattr(gate_lib, "_shared_encoder_outputs", lambda *args: None)
  np.testing.assert_array_equal(trained.test_batch(batch, key), got)  # NaN mean shift: equal
  assert calls == {"semantic": 2, "mmd": 1}
  monkeypatch.undo()
  trained.save(tmp_path / "trained")
  loaded = InFlowDetector.load(tmp_path / "trained")
  assert loaded.mmd_encoder == "trained" and not loaded.semantic_flip_average
  np.testing.assert_array_equal(loaded.image_scores(batch), trained.image_scores(batch))
  np.testing.assert_array_equal(loaded.test_batch(batch, key).p_mmd, got.p_mmd)
  with pytest.raises(ValueError, match="mmd_encoder='trained' embeds with the trained encoder"):
    InFlowDetector(detector.model, detector.variables, attention="combined", mmd_encoder="trained")
  with pytest.raises(ValueError, match="mmd_encoder must be one of"):
    InFlowDetector(detector.model, detector.variables, mmd_encoder="pixels")


def test_a_format_4_detector_keeps_each_semantic_score_a_view(fitted, tmp_path):
  """Formats <= 4 were calibrated with T = -sum_v log p_v over the pixel view and every semantic
  score: loaded, they score that way (the direct sum of the views' log p-values)."""
  detector, x, _ = fitted
  old = detector.save(tmp_path / "old")
  _tamper(old, lambda meta: (meta.update(format_version=4), meta.pop("semantic_pooled")))
  loaded = InFlowDetector.load(old)
  assert not loaded.conformal_state_.semantic.pooled
  cal, new = _views(detector, x[900:1100]), _views(detector, x[1100:1120])
  expected = -sum(np.log(_rank_p(cal[v], new[v])) for v in new)
  np.testing.assert_allclose(loaded.image_scores(x[1100:1120]), expected, rtol=1e-12)
  assert not np.allclose(detector.image_scores(x[1100:1120]), expected)
