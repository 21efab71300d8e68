"""Beyond the paper: an attention that works per image and on small batches (split conformal).

  features.py   per-image statistics: the flow's per-scale prior bits/dim (but the last level's)
                and the PNG lengths
  density.py    bagged Gaussian mixtures of those statistics (the per-image score)
  p_values.py   conformal p-values, batch tests (Cauchy, Fisher, Simes), combining the gate's tests
  mean_shift.py the mean-shift test of a batch in whitened pixel space (the combined gate's third test)
  gate.py       ConformalState, fit_conformal: calibrated per-image and per-batch tests
"""
from inflow_jax.conformal.density import check_components
from inflow_jax.conformal.gate import (ConformalState, batch_p_values, check_calibration,
                                       combined_p_values, fit_conformal, image_p_values, image_scores)
from inflow_jax.conformal.mean_shift import MeanShiftState, mean_shift_p_values
from inflow_jax.conformal.p_values import (BATCH_TESTS, COMBINATIONS, batch_p_value, combine_p_values,
                                           conformal_p_values)
