"""The attention: is a batch in-distribution? A kernel MMD two-sample test (the paper's gate).

  encoder.py    the untrained random conv encoder that embeds images
  kernels.py    Gaussian kernels as matrix products, the median heuristic, Floyd's random subsets
  mmd.py        MMDState, fit_mmd, mmd_test: the permutation test (alibi-detect's MMDDrift, exactly)
  batches.py    attention_tests: the test on each consecutive batch of a set
  streaming.py  gate_stream, StreamingGate: the windowed test for images arriving one at a time
"""
from inflow_jax.attention.batches import BatchTests, attention_tests
from inflow_jax.attention.encoder import Embedder, load_reference_encoder, make_encoder
from inflow_jax.attention.mmd import (MMDResult, MMDState, fit_mmd, fit_mmd_embedded, mmd2_embedded,
                                      mmd_test, mmd_test_embedded)
from inflow_jax.attention.streaming import StreamingGate, gate_stream
