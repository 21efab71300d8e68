"""The gates: tests that decide whether images are in-distribution, and the attention a they set.

encoder.py      the untrained random conv encoder that embeds images (the paper's)
trained_embedder.py  the trained in-distribution encoder's features as the MMD test's embedding
kernels.py      Gaussian kernels as matrix products, the median heuristic, random subsets
mmd_fit.py      MMDState, fit_mmd: fitting the MMD test on the reference images
mmd.py          mmd_test: the paper's kernel MMD permutation test (re-exports fit_mmd, MMDState)
mmd_batches.py  attention_tests: the MMD test on each consecutive batch of a set
streaming.py    gate_stream, StreamingGate: the windowed MMD test for images one at a time
features.py     per-image statistics of the flow (prior bits/dim per scale) and PNG lengths
density.py      bagged Gaussian mixtures of those statistics (the per-image score)
p_values.py     conformal p-values, batch tests (Cauchy, Fisher, Simes), combining p-values
mean_shift.py   the mean-shift test of a batch in whitened pixel space
conformal.py    ConformalState, fit_conformal: calibrated per-image and per-batch tests

The gate that runs these tests on each batch and combines them is `inflow_jax.detector.gate`.
"""

from inflow_jax.gates.conformal import (
  ConformalState,
  batch_p_values,
  check_calibration,
  combined_p_values,
  fit_conformal,
  image_p_values,
  image_scores,
)
from inflow_jax.gates.density import check_components
from inflow_jax.gates.encoder import Embedder, load_reference_encoder, make_encoder
from inflow_jax.gates.mean_shift import MeanShiftState, mean_shift_p_values
from inflow_jax.gates.mmd import (
  MMDResult,
  MMDState,
  fit_mmd,
  fit_mmd_embedded,
  mmd2_embedded,
  mmd_test,
  mmd_test_embedded,
)
from inflow_jax.gates.mmd_batches import BatchTests, attention_tests
from inflow_jax.gates.p_values import (
  BATCH_TESTS,
  COMBINATIONS,
  batch_p_value,
  combine_p_values,
  conformal_p_values,
)
from inflow_jax.gates.streaming import StreamingGate, gate_stream
from inflow_jax.gates.trained_embedder import TrainedEmbedder
