"""inflow_jax: InFlow outlier detection (attention-gated normalizing flows) in JAX/Flax.

Public API (each name lives in the module of its concept):
  model: InFlow (the attention-gated flow; layers in inflow_jax.flows)
  convert: load_reference_checkpoint, state_dict_to_variables, variables_to_state_dict (original weights)
  data: load_split, preprocess, load_images, batches (input pipelines; dataset names documented there)
  encoder: make_encoder, load_reference_encoder (the untrained random conv encoder of the attention)
  attention: fit_mmd, mmd_test, mmd_test_embedded (MMD permutation test)
  streaming: gate_stream, StreamingGate (the windowed test for images arriving one at a time)
  scoring: make_score_fn, score_batches (per-image OOD scores, 'paper' and 'nll' conventions)
  metrics: auroc, aupr_in, aupr_out, fpr_at_95_tpr, ood_metrics (OOD positive, higher = more OOD)
  evaluate: evaluate_ood, format_table (paper / strict / mixed protocols and the baselines)
  detector: InFlowDetector (fit / score / predict / save / load)
  train: train_on_batches, make_optimizer (the module `inflow_jax.train` also has `train`, the
    checkpointed data-parallel loop that run.py uses)
"""
from inflow_jax.attention import fit_mmd, fit_mmd_embedded, mmd_test, mmd_test_embedded
from inflow_jax.convert import (load_reference_checkpoint, state_dict_to_variables,
                                variables_to_state_dict)
from inflow_jax.data import batches, load_images, load_split, preprocess
from inflow_jax.detector import InFlowDetector
from inflow_jax.encoder import load_reference_encoder, make_encoder
from inflow_jax.evaluate import evaluate_ood, format_table
from inflow_jax.metrics import aupr_in, aupr_out, auroc, fpr_at_95_tpr, ood_metrics
from inflow_jax.model import InFlow
from inflow_jax.scoring import make_score_fn, score_batches
from inflow_jax.streaming import StreamingGate, gate_stream
from inflow_jax.train import make_optimizer, train_on_batches
