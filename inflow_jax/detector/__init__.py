"""The detector users hold: `InFlowDetector` (detector.py), its files (files.py) and batch scoring
with the paper's gate (batch_scores.py)."""

from inflow_jax.detector.detector import ATTENTION_KINDS, BatchTest, InFlowDetector

__all__ = ["ATTENTION_KINDS", "BatchTest", "InFlowDetector"]
