"""The job's evaluation: the fitted detector against the config's OOD sets (and, with
config.adversarial.enabled, the adversarial sets), as one table.

Key streams: PRNGKey(seed) for the evaluation (`inflow_jax.evaluation.protocols`), fold_in(it, 1)
for the attacks (`inflow_jax.adversarial.evaluation`).
"""

import time
from typing import Dict, Tuple

import jax
import ml_collections

from inflow_jax.adversarial.evaluation import evaluate_adversarial
from inflow_jax.adversarial.names import set_name_prefix
from inflow_jax.detector import InFlowDetector
from inflow_jax.evaluation.anchors import fit_anchors, near_far_averages
from inflow_jax.evaluation.protocols import EvalSettings, detector_table


def eval_settings(config: ml_collections.ConfigDict) -> EvalSettings:
  e = config.eval
  return EvalSettings(
    batch_size=e.batch_size,
    protocols=tuple(e.protocols),
    baselines=e.baselines,
    mixed_rhos=tuple(e.mixed_rhos),
    mixed_batch_sizes=tuple(e.mixed_batch_sizes),
    mixed_n_batches=e.mixed_n_batches,
    n_bootstrap=e.n_bootstrap,
    seed=config.seed,
  )


def evaluate(
  detector: InFlowDetector,
  sets,
  config: ml_collections.ConfigDict,
  timings: Dict[str, float],
  progress: bool = True,
) -> Tuple[Dict, Dict]:
  """(table, the scores its figures plot). Stage seconds go to `timings`; progress: a bar."""
  tick = time.perf_counter()
  key = jax.random.PRNGKey(config.seed)
  anchor_state = None
  labels = sets.get("encoder_labels", {}).get("train")
  encoder = detector.trained_encoder
  if encoder is not None and encoder.model.num_classes and labels is not None:
    anchor_state = fit_anchors(encoder, sets["train"], labels)
  table, figure_scores = detector_table(
    detector,
    sets["test"],
    sets["ood"],
    eval_settings(config),
    key,
    sets["heldout"],
    progress,
    anchor_state,
  )
  table["averages"] = near_far_averages(table, config.eval.near_ood)
  table["settings"].update(attention=config.attention.kind, jpeg_quality=config.data.jpeg_quality)
  timings["evaluate"] = time.perf_counter() - tick
  if config.adversarial.enabled:
    tick, labels = time.perf_counter(), sets.get("labels", {})  # only when the classifier runs
    table["adversarial"] = evaluate_adversarial(
      config,
      model=detector.model,
      variables=detector.variables,
      mmd_state=detector.mmd_state_,
      x_test=sets["test"],
      ood_sets=sets["ood"],
      x_heldout=sets["heldout"],
      key=jax.random.fold_in(key, 1),
      x_train=sets["train"],
      y_train=labels.get("train"),
      y_test=labels.get("test"),
      in_name=set_name_prefix(config.data.test),
      conformal_state=detector.conformal_state_,
      combination=config.attention.combination,
    )
    timings["adversarial"] = time.perf_counter() - tick
  return table, figure_scores
