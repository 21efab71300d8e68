"""The anchors: OpenOOD's post-hoc baselines on the detector's own trained encoder, so that the
report shows InFlow's per-image rows beside what the OOD literature compares against, on the same
network and data (`inflow_jax.gates.posthoc`: MSP, energy, MDS, KNN k = 50, ViM; every score
higher = more OOD). MDS, KNN and ViM are fitted on the encoder's training images (their
flip-averaged features and labels), as OpenOOD fits them on its training split; ViM's head is the
network's own map from features to logits (`posthoc.linear_head`: a logit scale included).

    fit_anchors(trained_encoder, x_train, y_train) -> AnchorState
    anchor_scores(state, x) -> {baseline: (N,) scores}
"""

from typing import Dict, NamedTuple

import numpy as np

from inflow_jax.gates import posthoc
from inflow_jax.model.classifier_encoder import TrainedEncoder, encode

ANCHORS = ("msp", "energy", "mds", "knn", "vim")


class AnchorState(NamedTuple):
  encoder: TrainedEncoder
  mds: posthoc.MDSState
  knn: posthoc.KNNState
  vim: posthoc.ViMState


def fit_anchors(encoder: TrainedEncoder, x_train: np.ndarray, y_train: np.ndarray) -> AnchorState:
  """The feature-based baselines fitted on the encoder's training images x_train (preprocessed) and
  their labels y_train (N,)."""
  outputs = encode(*encoder, x_train)
  features = outputs.features.astype(np.float64)
  return AnchorState(
    encoder,
    posthoc.fit_mds(features, y_train, encoder.model.num_classes),
    posthoc.fit_knn(features),
    posthoc.fit_vim(features, *posthoc.linear_head(features, outputs.class_logits)),
  )


def near_far_averages(table: Dict, near) -> Dict[str, Dict[str, float]]:
  """{score: {"near": mean AUROC over the near-OOD sets, "far": over the others}} of the table's
  per-image scores (the anchors and InFlow's per-image score), as OpenOOD reports them; a group
  with no set is left out."""
  groups = {"near": [n for n in table["ood"] if n in near]}
  groups["far"] = [n for n in table["ood"] if n not in near]
  out = {}
  for score in ("image_score",) + ANCHORS:
    row = {}
    for group, names in groups.items():
      values = [table["ood"][n][score]["auroc"] for n in names if score in table["ood"][n]]
      if values and len(values) == len(names):
        row[group] = float(np.mean(values))
    if row:
      out[score] = row
  return out


def anchor_scores(state: AnchorState, x: np.ndarray) -> Dict[str, np.ndarray]:
  """{baseline: (N,) scores, higher = more OOD} of preprocessed images x."""
  out = encode(*state.encoder, x)
  features = out.features.astype(np.float64)
  return {
    "msp": posthoc.msp_scores(out.class_logits),
    "energy": posthoc.energy_scores(out.class_logits),
    "mds": posthoc.mds_scores(state.mds, features),
    "knn": posthoc.knn_scores(state.knn, features),
    "vim": posthoc.vim_scores(state.vim, features),
  }
