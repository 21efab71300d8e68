"""The conformal attention: per-image scores, their conformal p-values and a batch test. A
pytree-free state of numpy arrays, fitted once:

    fit:     density  <- fit_density(features(x_density or x_ref))  (the in-distribution statistics)
             calib    <- sorted density_scores(features(x_calibration))
    image:   s(x) = density_scores(features(x)),   p(x) = (1 + #{calib >= s(x)}) / (1 + n)
    batch:   p_batch = cauchy, fisher or simes of the batch's p(x);
             attention 0 when p_batch < level
    mean shift (optional, the combined gate's): a permutation test of the batch's mean in whitened
             pixel space against the calibration images (`inflow_jax.gates.mean_shift`)

Split conformal needs the calibration images to be unseen by everything the score was fitted on: the
flow's training images and the density's fitting set. `fit_conformal` refuses calibration images
that also appear in x_ref, x_density or the training images it is given (exact 8-bit duplicates),
and fewer than 1/level of them (the smallest p-value, 1/(1+n), could not fall below the level).

The density is fitted on x_ref (often the flow's own training images) unless `x_density` is given:
more in-distribution images than the reference set, the flow's training images or unseen ones (the
job's `attention.n_density` training images or `data.density_split`). More images support more
mixture components (`inflow_jax.gates.density`). Since the features leave out the last level's
prior term (where the flow memorises its training images, `inflow_jax.gates.features`), unseen
images buy little over training images (measurements: docs/results.md).
"""

import dataclasses
import hashlib
from typing import Dict, Optional, Tuple

import jax
import numpy as np

from inflow_jax.gates import mean_shift as mean_shift_lib
from inflow_jax.gates.density import (
  check_components,
  density_scores,
  fit_density,
  min_density_images,
)
from inflow_jax.gates.features import CHUNK, flow_features, image_features
from inflow_jax.gates.mean_shift import MeanShiftState, fit_mean_shift
from inflow_jax.gates.p_values import (
  BATCH_TESTS,
  batch_p_value,
  combine_p_values,
  conformal_p_values,
)
from inflow_jax.gates.semantic import SemanticState, semantic_scores
from inflow_jax.gates.views import calibrate_views, views_statistic
from inflow_jax.utils.batching import fixed_size

_density_scores = jax.jit(density_scores)


@dataclasses.dataclass
class ConformalState:
  """density: the mixture's arrays (`inflow_jax.gates.density`); calibration_scores: (n,)
  ascending; mean_shift: the mean-shift test (`inflow_jax.gates.mean_shift`) or None; semantic:
  the trained encoder's view (`inflow_jax.gates.semantic`) or None. With it an image's score is
  the statistic T of its pixel and semantic p-values (`inflow_jax.gates.views`, calibrated on
  view_calibration) and calibration_scores are the calibration images' T."""

  density: Dict[str, np.ndarray]
  calibration_scores: np.ndarray
  level: float
  batch_test: str = "auto"
  mean_shift: Optional[MeanShiftState] = None
  semantic: Optional[SemanticState] = None
  view_calibration: Optional[Dict[str, np.ndarray]] = None  # with semantic: `gates.views`

  @property
  def n_calibration(self) -> int:
    return int(self.calibration_scores.shape[0])


def image_hashes(x: np.ndarray) -> set:
  """SHA-1 digests of each image's 8-bit values round(255 x)."""
  images = np.round(np.asarray(x, np.float64) * 255.0).astype(np.uint8)
  return {hashlib.sha1(image.tobytes()).hexdigest() for image in images}


def check_disjoint(
  x: np.ndarray, what: str, others: Dict[str, Optional[np.ndarray]], why: str
) -> None:
  """Raises ValueError "<k> <what> also appear in <name>: <why>" when x shares an image (exact 8-bit
  duplicate) with one of `others` (name -> images or None)."""
  hashes = image_hashes(x)
  for name, other in others.items():
    if other is not None:
      shared = len(hashes & image_hashes(other))
      if shared:
        raise ValueError(f"{shared} {what} also appear in {name}: {why}")


def check_calibration(
  x_calibration: np.ndarray, level: float, others: Dict[str, Optional[np.ndarray]]
) -> None:
  """Raises ValueError when x_calibration has fewer than 1/level images or shares an image with one
  of `others` (name -> images or None)."""
  if len(x_calibration) * level < 1.0:
    raise ValueError(
      f"x_calibration: {len(x_calibration)} calibration images cannot reach level {level}: the "
      f"smallest conformal p-value is 1/(1 + n); give at least {int(np.ceil(1 / level))}"
    )
  check_disjoint(
    x_calibration,
    "calibration images",
    others,
    "split conformal needs calibration images unseen by the flow's training and by the "
    "density's fit (x_ref, or x_density); use a disjoint held-out split",
  )


def check_density_size(n_images: int, n_components, what: str) -> None:
  """Raises ValueError unless n_images can fit a density of `n_components` (an int or "auto"):
  more than `MIN_PER_COMPONENT` images per component."""
  needed = min_density_images(check_components(n_components))
  if n_images < needed:
    raise ValueError(
      f"fitting a density with n_components={n_components!r} needs at least {needed} "
      f"{what}, got {n_images}"
    )


def scores_of_features(density: Dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
  """(N,) float64 density scores of (N, d) features, computed in fixed-size chunks (CHUNK rows), so
  an image's score does not depend on how the caller batched the images."""
  expected = density["mean"].shape[0]
  if features.shape[1] != expected:
    raise ValueError(
      f"the density was fitted on {expected} per-image features, these images have "
      f"{features.shape[1]} (a detector saved by another version of "
      f"inflow_jax.gates.features, or another flow): fit it again"
    )
  scores = fixed_size(lambda f: _density_scores(density, f), features.astype(np.float32), CHUNK)
  return scores.astype(np.float64)


def two_view_scores(
  state: "ConformalState", pixel: np.ndarray, x: np.ndarray, encoder_outputs=None
) -> np.ndarray:
  """(N,) the statistic T of `gates.views` of preprocessed images x (unchecked) with pixel scores
  `pixel`, from the state's semantic view (on `encoder_outputs` of x when given) and its
  calibration."""
  semantic = semantic_scores(state.semantic, x, encoder_outputs)
  return views_statistic(state.view_calibration, pixel, semantic, state.semantic.pooled)


def _calibrate(
  density, semantic, model, variables, x_calibration
) -> Tuple[np.ndarray, Optional[Dict]]:
  """(sorted calibration scores, each view's sorted calibration scores or None)."""
  pixel = scores_of_features(density, image_features(model, variables, x_calibration))
  if semantic is None:
    return np.sort(pixel), None
  views = {"pixel": pixel, **semantic_scores(semantic, x_calibration)}
  return calibrate_views(views, semantic.pooled)


def fit_conformal(
  model,
  variables,
  x_ref: np.ndarray,
  x_calibration: np.ndarray,
  *,
  level: float,
  batch_test: str = "auto",
  n_components="auto",
  seed: int = 0,
  x_train: Optional[np.ndarray] = None,
  x_density: Optional[np.ndarray] = None,
  mean_shift_components: Optional[int] = None,
  semantic: Optional[SemanticState] = None,
) -> ConformalState:
  """Fits the density on the features of x_density (None: x_ref) and calibrates on x_calibration
  (all (n, H, W, C) float32 in [0, 1], already preprocessed; x_train: the flow's training images,
  checked for overlap); with mean_shift_components K, also the mean-shift test (whitening of K
  components fitted on x_ref, the calibration images as its permutation pool); with `semantic`
  (a fitted `gates.semantic.SemanticState`), the score is the views' Fisher statistic."""
  if batch_test not in BATCH_TESTS:
    raise ValueError(f"batch_test must be one of {BATCH_TESTS}, got {batch_test!r}")
  mean_shift_components = mean_shift_lib.check_components(mean_shift_components)
  if mean_shift_components is not None:
    mean_shift_lib.check_fit_size((len(x_ref), x_ref[0].size), mean_shift_components)
  x_fit, fit_name = (
    (x_ref, "reference images (x_ref)")
    if x_density is None
    else (x_density, "density images (x_density)")
  )
  check_density_size(len(x_fit), n_components, fit_name)
  check_calibration(
    x_calibration,
    level,
    {"x_ref": x_ref, "x_density": x_density, "the training images (x_train)": x_train},
  )
  density = fit_density(image_features(model, variables, x_fit), n_components, seed)
  calibration, view_calibration = _calibrate(density, semantic, model, variables, x_calibration)
  if not np.all(np.isfinite(calibration)):
    raise ValueError(
      "some calibration scores are NaN or infinite: the flow gives no finite density there"
    )
  mean_shift = (
    None
    if mean_shift_components is None
    else fit_mean_shift(x_ref, x_calibration, mean_shift_components, seed=seed)
  )
  return ConformalState(
    density=density,
    calibration_scores=calibration,
    level=float(level),
    batch_test=batch_test,
    mean_shift=mean_shift,
    semantic=semantic,
    view_calibration=view_calibration,
  )


def image_scores(
  state: ConformalState,
  model,
  variables,
  x: np.ndarray,
  convention: str = "nll",
  encoder_outputs=None,
):
  """((N,) s(x), higher = more OOD; (N,) the flow's `convention` score at a = 1 from the same pass)
  of preprocessed x (unchecked); encoder_outputs: the semantic view's encoder outputs of x when the
  caller has them (`gates.semantic.encoder_outputs`)."""
  features, flow_score = flow_features(model, variables, x, convention)
  pixel = scores_of_features(state.density, features)
  if state.semantic is None:
    return pixel, flow_score
  return two_view_scores(state, pixel, x, encoder_outputs), flow_score


def image_p_values(state: ConformalState, scores: np.ndarray) -> np.ndarray:
  """(N,) conformal p-values of the scores."""
  return conformal_p_values(state.calibration_scores, scores)


def batch_p_values(state: ConformalState, p_values: np.ndarray, starts: np.ndarray) -> np.ndarray:
  """(n_batches,) the batch test's p-value of each batch p_values[starts[i]:starts[i+1]]."""
  return np.array(
    [
      batch_p_value(p_values[lo:hi], state.batch_test, state.n_calibration, state.level)
      for lo, hi in zip(starts[:-1], starts[1:])
    ]
  )


def combined_p_values(
  state: ConformalState,
  combination: str,
  p_conformal: np.ndarray,
  p_mmd: Optional[np.ndarray],
  x: np.ndarray,
  starts: np.ndarray,
  key,
  first_batch: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
  """((n_batches,) the combined gate's p-values, (n_batches,) the mean-shift test's, NaN without
  one) of the batches x[starts[i]:starts[i+1]] (preprocessed): `combination` of the conformal batch
  test's p_conformal, with weight 1/2 (the per-image evidence), and the batch-distribution tests,
  sharing the other 1/2: the MMD test's p_mmd (None: not run, e.g. single images) and, when the
  state has one, the mean-shift test's (keys as `inflow_jax.gates.mean_shift.mean_shift_p_values`).
  With the MMD test alone this is the plain two-test combination; the one-outlier power of the
  conformal part is that of level/2.

  Why these weights: the halves give the conformal part the one-outlier power of the two-test gate
  (conformal and MMD), which equal thirds lose, while the batch tests keep the mean-shift test's
  power on small batches (measurements: docs/results.md)."""
  batch_tests = [] if p_mmd is None else [p_mmd]
  p_mean_shift = np.full(len(starts) - 1, np.nan)
  if state.mean_shift is not None:
    p_mean_shift = mean_shift_lib.mean_shift_p_values(state.mean_shift, x, starts, key, first_batch)
    batch_tests.append(p_mean_shift)
  weights = [1.0] if not batch_tests else [0.5] + [0.5 / len(batch_tests)] * len(batch_tests)
  combined = np.array(
    [combine_p_values(batch, combination, weights) for batch in zip(p_conformal, *batch_tests)]
  )
  return combined, p_mean_shift
