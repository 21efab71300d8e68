"""The detector users hold: `InFlowDetector` (detector.py), its files (files.py) and batch scoring
with the paper's gate (batch_scores.py)."""

from inflow_jax.detector.detector import InFlowDetector
from inflow_jax.detector.fitting import ATTENTION_KINDS
from inflow_jax.detector.scoring import BatchTest

__all__ = ["ATTENTION_KINDS", "BatchTest", "InFlowDetector"]
