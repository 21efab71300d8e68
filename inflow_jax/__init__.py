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
  pretrained/   detectors trained by the project's jobs, shipped in the package: `load(name)`
  evaluation/   metrics, baselines, one evaluator per protocol: tables
  adversarial/  attacks, the classifier they target, the adversarial evaluation (tables)
  report/       markdown tables, figures, the job's report files
  app/          what `run.py` runs: the job (train, fit the detector, evaluate), the score mode
This module only re-exports the public names, imported on first use (PEP 562), so that
`run.py --help` and the command line's checks answer without loading JAX.
"""

import importlib
from typing import TYPE_CHECKING

# public name -> the module that defines it
_EXPORTS = {
  "InFlow": "inflow_jax.model",
  "load_reference_checkpoint": "inflow_jax.model.torch_checkpoint",
  "state_dict_to_variables": "inflow_jax.model.torch_checkpoint",
  "variables_to_state_dict": "inflow_jax.model.torch_checkpoint",
  "load_split": "inflow_jax.data",
  "load_images": "inflow_jax.data",
  "preprocess": "inflow_jax.data",
  "batches": "inflow_jax.data",
  "make_encoder": "inflow_jax.gates",
  "load_reference_encoder": "inflow_jax.gates",
  "fit_mmd": "inflow_jax.gates",
  "fit_mmd_embedded": "inflow_jax.gates",
  "mmd_test": "inflow_jax.gates",
  "mmd_test_embedded": "inflow_jax.gates",
  "gate_stream": "inflow_jax.gates",
  "StreamingGate": "inflow_jax.gates",
  "make_score_fn": "inflow_jax.model.density",
  "score_batches": "inflow_jax.detector.batch_scores",
  "auroc": "inflow_jax.evaluation.metrics",
  "aupr_in": "inflow_jax.evaluation.metrics",
  "aupr_out": "inflow_jax.evaluation.metrics",
  "fpr_at_95_tpr": "inflow_jax.evaluation.metrics",
  "ood_metrics": "inflow_jax.evaluation.metrics",
  "evaluate_ood": "inflow_jax.report.evaluate",
  "format_table": "inflow_jax.report.tables",
  "InFlowDetector": "inflow_jax.detector",
  "ClassifierEncoder": "inflow_jax.model",
  "TrainedEncoder": "inflow_jax.model",
  "train_on_batches": "inflow_jax.training",
  "make_optimizer": "inflow_jax.training",
  "load_flow": "inflow_jax.training",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
  if name == "pretrained":  # the subpackage, as inflow_jax.pretrained.load("cifar10")
    return importlib.import_module("inflow_jax.pretrained")
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'inflow_jax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
  from inflow_jax.data import batches, load_images, load_split, preprocess  # noqa: F401
  from inflow_jax.detector import InFlowDetector  # noqa: F401
  from inflow_jax.detector.batch_scores import score_batches  # noqa: F401
  from inflow_jax.evaluation.metrics import (  # noqa: F401
    aupr_in,
    aupr_out,
    auroc,
    fpr_at_95_tpr,
    ood_metrics,
  )
  from inflow_jax.gates import (  # noqa: F401
    StreamingGate,
    fit_mmd,
    fit_mmd_embedded,
    gate_stream,
    load_reference_encoder,
    make_encoder,
    mmd_test,
    mmd_test_embedded,
  )
  from inflow_jax.model import InFlow  # noqa: F401
  from inflow_jax.model.density import make_score_fn  # noqa: F401
  from inflow_jax.model.torch_checkpoint import (  # noqa: F401
    load_reference_checkpoint,
    state_dict_to_variables,
    variables_to_state_dict,
  )
  from inflow_jax.report.evaluate import evaluate_ood  # noqa: F401
  from inflow_jax.report.tables import format_table  # noqa: F401
  from inflow_jax.training import load_flow, make_optimizer, train_on_batches  # noqa: F401
