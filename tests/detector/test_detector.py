"""InFlowDetector (`inflow_jax.detector.detector`) with the paper's MMD gate: fit / score / predict
behaviour, training the flow on fit, errors."""

import jax
import numpy as np
import pytest

from configs.tiny import get_config
from inflow_jax import InFlowDetector, data
from inflow_jax.model.density import make_score_fn


def test_threshold_score_predict(fitted_mmd):
  detector, x_in = fitted_mmd
  x_ood = data.load_images("uniform_noise", "test", max_images=40)[0]
  # The threshold is the 90% quantile of the a = 1 scores of the threshold images.
  digits = data.load_images("digits", "train")[0]
  direct = make_score_fn(detector.model, detector.variables, "paper")(digits[300:500], 1.0)
  assert detector.threshold_ == pytest.approx(float(np.quantile(np.asarray(direct), 0.9)), rel=1e-6)
  labels_ood = detector.predict(x_ood)
  # noise batches are flagged (a = 0)
  assert labels_ood.dtype == np.int64 and np.all(labels_ood == 1)
  result = detector.score_batches(x_in)
  labels_in = detector.predict(x_in)
  np.testing.assert_array_equal(
    labels_in, (result.attention == 0) | (result.scores > detector.threshold_)
  )
  assert labels_in.mean() < 0.5
  scores = detector.score(x_ood)
  np.testing.assert_array_equal(scores, detector.score(x_ood))  # same default key: deterministic


def test_errors(fitted_mmd):
  detector, x_in = fitted_mmd
  unfitted = InFlowDetector(detector.model, detector.variables)
  with pytest.raises(RuntimeError, match="not fitted"):
    unfitted.score(x_in)
  with pytest.raises(ValueError, match="at least 2"):
    detector.score(x_in[:1])
  with pytest.raises(ValueError, match="NaN"):
    bad = x_in.copy()
    bad[0, 0, 0, 0] = np.nan
    detector.predict(bad)
  with pytest.raises(ValueError, match="convention"):
    InFlowDetector(detector.model, detector.variables, convention="logp")
  with pytest.raises(ValueError, match="config"):
    unfitted.fit(x_in, x_train=x_in)


def test_fit_trains_the_flow_when_given_training_data(fitted_mmd):
  detector, x_in = fitted_mmd
  config = get_config()
  config.train.update(num_steps=2, batch_size=16)
  digits = data.load_images("digits", "train")[0]
  fresh = InFlowDetector(detector.model, detector.variables, n_permutations=50, batch_size=20)
  fresh.fit(digits[:300], x_threshold=digits[300:500], x_train=digits[600:664], config=config)
  assert fresh.train_losses_.shape == (2,) and np.all(np.isfinite(fresh.train_losses_))
  before = jax.tree_util.tree_leaves(detector.variables)
  after = jax.tree_util.tree_leaves(fresh.variables)
  assert any(not np.allclose(a, b) for a, b in zip(before, after))  # the flow was trained
  assert fresh.score(x_in).shape == (len(x_in),)


def test_non_finite_flows_are_rejected(fitted_mmd):
  detector, x_in = fitted_mmd
  leaves, treedef = jax.tree_util.tree_flatten(detector.variables)
  broken = jax.tree_util.tree_unflatten(treedef, [leaves[0] * np.nan] + leaves[1:])
  with pytest.raises(ValueError, match="variables contain NaN or infinite"):
    InFlowDetector(detector.model, broken)
  fresh = InFlowDetector(detector.model, detector.variables, n_permutations=50, batch_size=20)
  fresh._score_fn = lambda x, attention: np.full(len(x), np.nan, np.float32)
  with pytest.raises(ValueError, match="threshold scores"):
    fresh.fit(x_in)


def test_bad_test_sizes_are_rejected(fitted_mmd):
  detector, _ = fitted_mmd
  with pytest.raises(TypeError, match="n_permutations must be an integer"):
    InFlowDetector(detector.model, detector.variables, n_permutations=2.7)
  with pytest.raises(ValueError, match=r"never reject.*n_permutations >= 20"):
    InFlowDetector(detector.model, detector.variables, n_permutations=10)
