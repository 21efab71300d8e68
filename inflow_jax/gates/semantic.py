"""The semantic view: per-image scores from a trained in-distribution encoder, combined with the
pixel flow's into one conformal p-value.

For an image x with encoder features f(x) (`ClassifierEncoder`'s pooled penultimate layer, averaged
over x and its mirror image with `flip_average`, at twice the encoder's time) and class logits
l(x) = f(x) W + b, the semantic scores s_v are some of

    "vim":          alpha ||(f(x) - u) R|| - logsumexp_c l_c(x)     (ViM, Wang et al. 2022,
                    `gates.posthoc`: the features' residual off the training features' principal
                    subspace, matched to the logits' scale, minus the logits' energy; W, b, u, R,
                    alpha from the encoder's training images; W, b the network's own head)
    "energy":       -logsumexp_c l_c(x)                             (Liu et al. 2020)
    "rotation":     -log softmax(r(x))_0 = logsumexp_k r_k(x) - r_0(x)
                    (the rotation head's doubt that x is upright: RotPred, Hendrycks et al.
                    2019, on x itself only, so it costs nothing beside the class logits)
    "feature_flow": -log p_F(u(x)) / D,  u(x) = standardise(f(x) / ||f(x)||)
                    (nats per dimension; p_F: an InFlow on features, `training.feature_flow`,
                    trained by maximum likelihood on the encoder's training images)

named by `semantic_score`: one name or several joined by "+" ("auto": "vim+energy+rotation" for an
encoder with class logits and a trained rotation head, "vim+energy" without one, else
"feature_flow"). The pixel view and these scores become one conformal p-value in
`inflow_jax.gates.views`.

Why "vim+energy+rotation" by default: on the trained CIFAR-10 encoder, with the pixel view, it had
the best near- and far-OOD averages of the measured choices (ViM: faces and digits; energy:
near-OOD; the rotation head: SVHN and faces, the best far-OOD average alone; the feature flow,
which the encoder's memorised training features make see unseen in-distribution images as
atypical, was behind them). A rotation head counts as trained when it tells the four turns of the
fit images apart at least twice as often as chance (`rotation_accuracy`): an encoder trained
without rotations (`encoder.rotation_fraction = 0`) has an untrained head. Why normalised features
for the flow: a density of the raw ones follows the feature norm, which OOD images shrink
(measurements: docs/results.md, "The trained encoder and the two views", "The semantic view on
encoder run 2", "The semantic view: the rotation head, pooled").
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np
from scipy.special import logsumexp

from inflow_jax.gates import posthoc
from inflow_jax.model.classifier_encoder import ClassifierEncoder, EncoderOutput, encode
from inflow_jax.training.feature_flow import FittedFeatureFlow, feature_flow_nll, fit_feature_flow

SCORE_NAMES = ("vim", "energy", "rotation", "feature_flow")
CLASS_SCORES = ("vim", "energy")  # need class logits
ROTATION_CHECK_IMAGES = 500  # fit images the rotation head is checked on, in each of 4 turns
TRAINED_ROTATION_ACCURACY = 0.5  # twice chance: the head was trained on rotations


class SemanticState(NamedTuple):
  """A trained encoder and its fitted semantic scores (names in `scores`): ViM's state with "vim",
  the feature flow (on its normalised features) with "feature_flow"."""

  encoder: ClassifierEncoder
  encoder_variables: Any
  scores: Tuple[str, ...]
  feature_flow: Optional[FittedFeatureFlow] = None
  vim: Optional[posthoc.ViMState] = None
  flip_average: bool = True  # the encoder's outputs averaged over x and its mirror image
  pooled: bool = True  # the scores form one view beside the pixel view (`gates.views`)


def resolved_scores(
  setting: str, num_classes: int, rotation_trained: bool = True
) -> Tuple[str, ...]:
  """The semantic scores that `setting` ("auto", or names of SCORE_NAMES joined by "+") gives for
  an encoder with num_classes class logits and a rotation head trained or not; ValueError naming
  the problem."""
  if setting == "auto":
    if not num_classes:
      return ("feature_flow",)
    return CLASS_SCORES + ("rotation",) if rotation_trained else CLASS_SCORES
  names = tuple(str(setting).split("+"))
  if any(n not in SCORE_NAMES for n in names) or len(set(names)) != len(names):
    raise ValueError(
      f"semantic_score must be 'auto' or distinct names of {SCORE_NAMES} joined by '+', got "
      f"{setting!r}"
    )
  if not num_classes and set(names) & set(CLASS_SCORES):
    raise ValueError(
      f"semantic_score={setting!r} needs an encoder with class logits (this one has none: "
      "trained without labels); use 'feature_flow' or 'auto'"
    )
  if "rotation" in names and not rotation_trained:
    raise ValueError(
      f"semantic_score={setting!r} needs a trained rotation head: this encoder's tells the turns "
      f"of the fit images apart less than {TRAINED_ROTATION_ACCURACY:.0%} of the time (it was "
      "trained without rotations); drop 'rotation'"
    )
  return names


def rotation_accuracy(encoder: ClassifierEncoder, encoder_variables, x: np.ndarray) -> float:
  """The rotation head's accuracy at telling x[:ROTATION_CHECK_IMAGES] turned by k = 0, 1, 2, 3
  quarter turns (np.rot90 over H, W, the training's turns) apart: one pass each, no mirror average
  (a mirrored turn is another turn); 0.0 for an encoder without a 4-way rotation head, or for
  images that are not square (no rotation head can be trained on them). Chance is 0.25."""
  x = np.asarray(x[:ROTATION_CHECK_IMAGES], np.float32)
  if x.shape[1] != x.shape[2]:
    return 0.0
  turned = np.concatenate([np.rot90(x, k, axes=(1, 2)) for k in range(4)])
  outputs = encode(encoder, encoder_variables, turned, flip_average=False)
  logits = np.asarray(outputs.rotation_logits)
  if logits.ndim != 2 or logits.shape[1] != 4:
    return 0.0
  return float(np.mean(np.argmax(logits, axis=1) == np.repeat(np.arange(4), len(x))))


def rotation_scores(rotation_logits) -> np.ndarray:
  """(N, 4) rotation logits -> (N,) -log softmax(r)_0: the head's doubt that x is upright."""
  r = np.asarray(rotation_logits, np.float64)
  return logsumexp(r, axis=1) - r[:, 0]


def _normalised(features) -> np.ndarray:
  """f / ||f|| per row, float64."""
  features = np.asarray(features, np.float64)
  return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def fit_semantic(
  encoder: ClassifierEncoder,
  encoder_variables,
  x: np.ndarray,
  *,
  score: str = "auto",
  num_epochs: int = 10,
  seed: int = 0,
  flip_average: bool = True,
) -> SemanticState:
  """Fits the semantic scores (module docstring) on the encoder's outputs of x (N, H, W, 3) in
  [0, 1], preprocessed; N > D with "vim"."""
  outputs = encode(encoder, encoder_variables, x, flip_average=flip_average)
  num_classes = outputs.class_logits.shape[1]
  wants_rotation = "rotation" in str(score).split("+") or (score == "auto" and num_classes > 0)
  rotation_trained = (
    wants_rotation and rotation_accuracy(encoder, encoder_variables, x) >= TRAINED_ROTATION_ACCURACY
  )
  scores = resolved_scores(score, num_classes, rotation_trained)
  state = SemanticState(encoder, encoder_variables, scores, flip_average=flip_average)
  if "vim" in scores:
    features = np.asarray(outputs.features, np.float64)
    head = posthoc.linear_head(features, outputs.class_logits)
    state = state._replace(vim=posthoc.fit_vim(features, *head))
  if "feature_flow" in scores:
    flow = fit_feature_flow(_normalised(outputs.features), num_epochs=num_epochs, seed=seed)
    state = state._replace(feature_flow=flow)
  return state


def encoder_outputs(state: SemanticState, x: np.ndarray) -> EncoderOutput:
  """The encoder's outputs of preprocessed x (unchecked) as the semantic scores read them."""
  return encode(state.encoder, state.encoder_variables, x, flip_average=state.flip_average)


def semantic_scores(
  state: SemanticState, x: np.ndarray, outputs: Optional[EncoderOutput] = None
) -> Dict[str, np.ndarray]:
  """{name: (N,) s_name} of preprocessed x (unchecked), higher = less typical; outputs:
  `encoder_outputs(state, x)` when the caller has them (the encoder is then not run)."""
  outputs = encoder_outputs(state, x) if outputs is None else outputs
  compute = {
    "vim": lambda: posthoc.vim_scores(state.vim, outputs.features),
    "energy": lambda: posthoc.energy_scores(outputs.class_logits),
    "rotation": lambda: rotation_scores(outputs.rotation_logits),
    "feature_flow": lambda: feature_flow_nll(
      state.feature_flow, _normalised(outputs.features)
    ).astype(np.float64),
  }
  return {name: compute[name]() for name in state.scores}
