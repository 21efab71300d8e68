"""Detectors on the offline digits shared by the detector tests (one tiny flow: shared compiles)."""

import jax
import pytest

from inflow_jax import InFlowDetector, data
from inflow_jax.model import InFlow


@pytest.fixture(scope="session")
def digits():
  return data.load_images("digits", "train")[0]


def _tiny_flow(digits):
  model = InFlow(num_blocks=2, width=8, paper_compat=True)
  return model, jax.jit(model.init)(jax.random.PRNGKey(0), digits[:2], 1.0)


@pytest.fixture(scope="module")
def fitted_mmd(digits):
  """The paper's gate (batches of 20, threshold at 10% false positives) and 40 unseen digits."""
  detector = InFlowDetector(
    *_tiny_flow(digits), n_permutations=50, batch_size=20, false_positive_rate=0.1
  )
  return detector.fit(digits[:300], x_threshold=digits[300:500]), digits[500:540]


@pytest.fixture(scope="module")
def fitted_combined(digits):
  """The combined gate, calibrated on 200 digits unseen by its density, and the unseen digits."""
  detector = InFlowDetector(
    *_tiny_flow(digits), attention="combined", n_permutations=50, batch_size=10, n_components=2
  )
  return detector.fit(digits[:300], x_calibration=digits[300:500]), digits[500:]
