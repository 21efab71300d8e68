"""The training log (`inflow_jax.training.metrics`): a non-finite loss fails without the skip guard
and is logged with it."""

import numpy as np
import pytest

from inflow_jax.training import metrics


def test_a_nonfinite_loss_fails_without_the_skip_guard_and_is_logged_with_it():
  values = np.array([3.0, np.nan, 2.0])
  with pytest.raises(FloatingPointError, match="skip_factor"):
    metrics._log_record(10, values, 1.0)
  record = metrics._log_record(10, values, 1.0, skipped=1)
  assert (record["loss"], record["last_loss"], record["skipped_steps"]) == (2.5, 2.0, 1)
  with pytest.raises(FloatingPointError, match="nan"):
    metrics._log_record(10, np.full(3, np.nan), 1.0, skipped=3)
