"""The adaptive attack on the two-view score (`adversarial.two_view_objective`): its semantic score
is the detector's, its smoothed statistic tends to Fisher's as the bandwidth shrinks and keeps a
gradient beyond every calibration score, and PGD on it lowers the detector's statistic (PNG
lengths held, as the attack holds them)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import semantic_detector

from inflow_jax import data
from inflow_jax.adversarial.attacks import pgd
from inflow_jax.adversarial.two_view_objective import (
  LowerTwoViewScore,
  semantic_score,
  smoothed_neg_log_p,
  two_view_arrays,
)
from inflow_jax.gates.conformal import scores_of_features, two_view_scores
from inflow_jax.gates.features import complexity_bits, image_features
from inflow_jax.gates.semantic import semantic_scores
from inflow_jax.model import ClassifierEncoder, TrainedEncoder
from inflow_jax.model.density import exact_log_det


def _state(semantic_score: str):
  """A conformal gate with a semantic view (an untrained encoder: the objective's algebra does not
  need a trained one) on digits; the flow and encoder at their initialisation."""
  x, _ = data.load_images("digits", "train")
  encoder = ClassifierEncoder(num_classes=10, stem_width=4, widths=(8,))
  encoder_variables = jax.jit(encoder.init)(jax.random.PRNGKey(1), x[:2])
  trained = TrainedEncoder(encoder, encoder_variables)
  detector = semantic_detector(trained, x[:200], x[900:1000], x[:300], semantic_score)
  return detector, x[1000:1008]


@pytest.fixture(scope="module")
def state():
  """The default semantic view (ViM and energy: the encoder has class logits)."""
  return _state("auto")


def test_semantic_score_is_the_gates(state):
  for detector, x in (state, _state("feature_flow")):
    semantic = detector.conformal_state_.semantic
    views = two_view_arrays(detector.conformal_state_)
    objective = LowerTwoViewScore.for_semantic(None, semantic)
    assert (objective.feature_model is None) == ("feature_flow" not in semantic.scores)
    traced = jax.jit(
      lambda xb: semantic_score(
        semantic.encoder, objective.feature_model, xb, views, semantic.scores
      )
    )(x)
    expected = semantic_scores(semantic, x)
    assert list(expected) == list(semantic.scores) and set(traced) == set(expected)
    for name in semantic.scores:
      np.testing.assert_allclose(traced[name], expected[name], rtol=1e-4, atol=1e-4)
  # the rotation score (this encoder's head is untrained, so "auto" leaves it out: set it here)
  semantic = state[0].conformal_state_.semantic._replace(scores=("energy", "rotation"))
  views = two_view_arrays(state[0].conformal_state_)
  traced = jax.jit(lambda xb: semantic_score(semantic.encoder, None, xb, views, semantic.scores))
  expected = semantic_scores(semantic, state[1])["rotation"]
  np.testing.assert_allclose(traced(state[1])["rotation"], expected, rtol=1e-4, atol=1e-4)


def test_smoothed_p_tends_to_the_conformal_p_and_keeps_a_gradient():
  calibration = jnp.asarray(np.random.default_rng(0).normal(size=200), jnp.float32)
  scores = jnp.asarray([-1.3, 0.1, 0.77, 2.9], jnp.float32)
  exact = np.array([np.mean(np.asarray(calibration) >= s) for s in np.asarray(scores)])
  smoothed = np.exp(-np.asarray(smoothed_neg_log_p(scores, calibration, 1e-4)))
  np.testing.assert_allclose(smoothed, exact, atol=1e-6)
  beyond = jax.grad(lambda s: smoothed_neg_log_p(s, calibration, 0.1).sum())(jnp.asarray([9.0]))
  assert float(beyond[0]) == pytest.approx(10.0, rel=1e-3)  # d/ds (s - max c) / h


def test_pgd_on_the_objective_lowers_the_detectors_statistic(state):
  detector, x = state
  conformal = detector.conformal_state_
  semantic = conformal.semantic
  objective = LowerTwoViewScore.for_semantic(exact_log_det(detector.model), semantic)
  args = (
    detector.variables,
    jax.tree.map(jnp.asarray, conformal.density),
    jnp.asarray(complexity_bits(x), jnp.float32),
    two_view_arrays(conformal),
  )
  x_adv = np.asarray(
    pgd(objective, x, 8 / 255, step_size=1 / 255, num_steps=10, random_start=False, loss_args=args)
  )
  assert np.max(np.abs(x_adv - x)) <= 8 / 255 + 1e-6
  assert np.mean(objective(x_adv, *args)) > np.mean(objective(x, *args))

  def statistic(images):
    """The detector's Fisher statistic with the clean images' PNG lengths (what BPDA attacks)."""
    features = image_features(detector.model, detector.variables, images)
    features[:, -2:] = np.asarray(args[2])
    pixel = scores_of_features(conformal.density, features)
    return two_view_scores(conformal, pixel, images)

  assert np.mean(statistic(x_adv)) < np.mean(statistic(x))
