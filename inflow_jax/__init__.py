"""inflow_jax: InFlow outlier detection (attention-gated normalizing flows) in JAX/Flax.

The architecture, one concept per module:
  model.py, flows/      the attention-gated flow `InFlow` and its layers
  torch_checkpoint.py   the original PyTorch weights in and out
  attention/            the attention: random encoder, MMD permutation test, per-batch and streaming
  data/                 input pipelines (offline sets, user files, tfds)
  training/             the jitted data-parallel step, the flow's loop, orbax checkpoints
  evaluation/           per-image scores, metrics, baselines, protocols (tables)
  adversarial/          attacks, the classifier they target, the adversarial evaluation (tables)
  report/               markdown tables, figures, the job's report files
  detector.py           `InFlowDetector` (fit / score / predict / save / load)
  job.py                what `run.py` runs: check, load, train or restore, fit the attention, evaluate
  checks.py, batching.py  input checks; consecutive batches of a set
"""

from inflow_jax.data import batches, load_images, load_split, preprocess
from inflow_jax.detector import InFlowDetector
from inflow_jax.detector.batch_scores import score_batches
from inflow_jax.evaluation.metrics import aupr_in, aupr_out, auroc, fpr_at_95_tpr, ood_metrics
from inflow_jax.gates import (
  StreamingGate,
  fit_mmd,
  fit_mmd_embedded,
  gate_stream,
  load_reference_encoder,
  make_encoder,
  mmd_test,
  mmd_test_embedded,
)
from inflow_jax.model import InFlow
from inflow_jax.model.density import make_score_fn
from inflow_jax.model.torch_checkpoint import (
  load_reference_checkpoint,
  state_dict_to_variables,
  variables_to_state_dict,
)
from inflow_jax.report.evaluate import evaluate_ood
from inflow_jax.report.tables import format_table
from inflow_jax.training import load_flow, make_optimizer, train_on_batches

__all__ = [
  "InFlow",
  "load_reference_checkpoint",
  "state_dict_to_variables",
  "variables_to_state_dict",
  "load_split",
  "load_images",
  "preprocess",
  "batches",
  "make_encoder",
  "load_reference_encoder",
  "fit_mmd",
  "fit_mmd_embedded",
  "mmd_test",
  "mmd_test_embedded",
  "gate_stream",
  "StreamingGate",
  "make_score_fn",
  "score_batches",
  "auroc",
  "aupr_in",
  "aupr_out",
  "fpr_at_95_tpr",
  "ood_metrics",
  "evaluate_ood",
  "format_table",
  "InFlowDetector",
  "train_on_batches",
  "make_optimizer",
  "load_flow",
]
