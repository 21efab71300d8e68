"""inflow_jax: InFlow outlier detection (attention-gated normalizing flows) in JAX/Flax.

The subpackages, lowest layer first (a module imports only its own subpackage and those above it in
this list; `tests/test_layout.py` checks it):
  utils/        input checks, consecutive batches, file manifests, the stored config.json
  data/         input pipelines (offline sets, user files, tfds), JPEG round trip, PNG lengths
  flows/        the flow's layers (attention-gated coupling, ActNorm, 1x1 conv, permutations)
  model/        `InFlow`, its density and scores, the original's PyTorch weights, flow files
  training/     the jitted data-parallel step, the flow's loop, orbax checkpoints
  gates/        the tests that set the attention: MMD (random encoder), conformal, mean shift
  detector/     `InFlowDetector` (fit / score / predict / save / load), the gate in one place
  evaluation/   metrics, baselines, one evaluator per protocol: tables
  adversarial/  attacks, the classifier they target, the adversarial evaluation (tables)
  report/       markdown tables, figures, the job's report files
  app/          what `run.py` runs: the job (train, fit the detector, evaluate), the score mode
This module only re-exports the public names.
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
