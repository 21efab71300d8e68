"""The detector users hold: `InFlowDetector` (detector.py), its files (files.py) and batch scoring
with the paper's gate (batch_scores.py)."""

from inflow_jax.detector.detector import BatchTest, InFlowDetector
from inflow_jax.detector.fitting import ATTENTION_KINDS

__all__ = ["ATTENTION_KINDS", "BatchTest", "InFlowDetector"]
