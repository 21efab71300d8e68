"""The pieces of `InFlowDetector.fit`: its checks, the tests it fits and the threshold.

Each takes the detector (for its settings) and returns what `fit` stores; none changes it.
"""

import functools
import itertools

import jax
import numpy as np

from inflow_jax import gates, training
from inflow_jax.data.jpeg import jpeg_round_trip
from inflow_jax.detector.batch_scores import score_batches
from inflow_jax.detector.files import check_finite_variables
from inflow_jax.gates.semantic import fit_semantic, resolved_scores
from inflow_jax.model.classifier_encoder import TrainedEncoder
from inflow_jax.model.density import CONVENTIONS
from inflow_jax.utils.checks import check_images

ATTENTION_KINDS = ("mmd", "conformal", "combined")


def check_settings(attention, convention, batch_test, combination, false_positive_rate) -> None:
  """Raises ValueError naming the first setting outside its allowed values."""
  for name, value, allowed in (
    ("attention", attention, ATTENTION_KINDS),
    ("convention", convention, CONVENTIONS),
    ("batch_test", batch_test, gates.BATCH_TESTS),
    ("combination", combination, gates.COMBINATIONS),
  ):
    if value not in allowed:
      raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
  if not 0.0 < false_positive_rate < 1.0:
    raise ValueError(f"false_positive_rate must lie in (0, 1), got {false_positive_rate}")


def checked_images(x, name: str, min_batch: int = 1, image_shape=None) -> np.ndarray:
  """x checked as float NHWC images in [0, 1] (of image_shape (H, W, C) when given), as C-contiguous
  float32 (no preprocessing)."""
  x = check_images(
    x, name=name, min_batch=min_batch, value_range=(0.0, 1.0), **shape_checks(image_shape)
  )
  return np.ascontiguousarray(x, np.float32)


def shape_checks(image_shape) -> dict:
  """`check_images`'s arguments that require images of image_shape (H, W, C); {} for None."""
  return {} if image_shape is None else dict(spatial=image_shape[:2], channels=image_shape[2])


def prepare_inputs(detector, x_ref, preprocessed: bool):
  """(x_ref checked and preprocessed, `prepare(x, name, min_batch=1)`: the same for fit's other
  images, which must have x_ref's image shape). preprocessed: skip the JPEG round trip."""

  def prepare(x, name: str, min_batch: int = 1, image_shape=None) -> np.ndarray:
    x = checked_images(x, name, min_batch, image_shape)
    if preprocessed or detector.jpeg_quality is None:
      return x
    return jpeg_round_trip(x, detector.jpeg_quality)

  x_ref = prepare(x_ref, "x_ref", min_batch=2)
  try:  # the flow's own check (channels, size) on one image, traced only
    jax.eval_shape(lambda x: detector.model.apply(detector.variables, x, 1.0), x_ref[:1])
  except ValueError as error:
    raise ValueError(f"x_ref (shape {x_ref.shape}) does not fit the flow: {error}") from error
  return x_ref, functools.partial(prepare, image_shape=x_ref.shape[1:])


def check_conformal_state(detector, state, x_density) -> None:
  """A conformal state given to `fit` must match the detector's kind, level, batch test and
  mean-shift test."""
  if not detector.uses_conformal:
    raise ValueError("conformal_state given to a detector with attention='mmd'")
  if x_density is not None:
    raise ValueError("x_density and conformal_state given: the state's density is already fitted")
  if (state.level, state.batch_test) != (detector.level, detector.batch_test):
    raise ValueError(
      f"conformal_state has level={state.level}, batch_test={state.batch_test!r}; the detector "
      f"{detector.level}, {detector.batch_test!r}"
    )
  components = None if state.mean_shift is None else state.mean_shift.n_components
  if components != detector.gate_mean_shift_components:
    raise ValueError(
      f"conformal_state has a mean-shift test of {components} components; this detector "
      f"(attention={detector.attention!r}) needs {detector.gate_mean_shift_components}"
    )


def conformal_inputs(detector, prepare, x_ref, x_calibration, x_train, x_density):
  """(x_calibration, x_density) preprocessed and checked: calibration images given, >= 1/level of
  them, none of them in x_ref, x_density or x_train."""
  if x_calibration is None:
    raise ValueError(
      f"attention={detector.attention!r} needs x_calibration: held-out in-distribution "
      "images, disjoint from x_ref and from the flow's training images"
    )
  x_calibration = prepare(x_calibration, "x_calibration")
  x_density = None if x_density is None else prepare(x_density, "x_density", min_batch=2)
  x_train_seen = None if x_train is None else prepare(x_train, "x_train")
  gates.check_calibration(
    x_calibration,
    detector.level,
    {"x_ref": x_ref, "x_density": x_density, "the training images (x_train)": x_train_seen},
  )
  return x_calibration, x_density


def train_flow(detector, x_train, config):
  """(variables, losses): the detector's flow trained on x_train with `config.train`."""
  if config is None:
    raise ValueError("training the flow (x_train given) needs config (with a `train` sub-config)")
  x_train = check_images(x_train, name="x_train", value_range=(0.0, 1.0))
  batches = itertools.islice(
    training.local_batches(
      np.asarray(x_train, np.float32), batch_size=config.train.batch_size, seed=detector.seed
    ),
    config.train.num_steps,
  )
  variables, losses = training.train_on_batches(detector.model, detector.variables, batches, config)
  check_finite_variables(variables, "the trained flow's variables")
  return variables, losses


def mmd_reference(detector, x_ref, x_calibration):
  """The MMD test's reference images: x_ref, or with mmd_encoder "trained" the calibration images.
  Why: the trained encoder's features of its own training images are tighter than those of unseen
  images, so a reference of images it saw would not be exchangeable with new in-distribution
  batches; the calibration images are unseen by everything fitted (the Bonferroni combination with
  the conformal test stays valid under any dependence)."""
  if detector.mmd_encoder != "trained":
    return x_ref
  if x_calibration is None:
    raise ValueError(
      "mmd_encoder='trained' fits the MMD test on the calibration images: pass x_calibration "
      "(or a fitted mmd_state)"
    )
  return x_calibration


def mmd_test(detector, x_ref, x_calibration, mmd_state):
  """The MMD test on `mmd_reference`'s images with the detector's encoder, or the given state after
  checking that its permutations and level are the detector's."""
  if mmd_state is None:
    reference = mmd_reference(detector, x_ref, x_calibration)
    return gates.fit_mmd(reference, detector.mmd_embedder, detector.n_permutations, detector.level)
  if (mmd_state.n_permutations, mmd_state.level) != (detector.n_permutations, detector.level):
    raise ValueError(
      f"mmd_state has n_permutations={mmd_state.n_permutations}, level="
      f"{mmd_state.level}; the detector {detector.n_permutations}, {detector.level}"
    )
  return mmd_state


def check_semantic_score(score: str, trained_encoder) -> str:
  """The semantic score setting, checked (unknown names; class scores for an encoder without
  classes)."""
  num_classes = getattr(getattr(trained_encoder, "model", None), "num_classes", 1)
  resolved_scores(score, num_classes)
  return score


MMD_ENCODERS = ("random", "trained")


def check_mmd_encoder(mmd_encoder: str, trained_encoder) -> str:
  """The MMD test's embedding setting, checked ("trained" needs the trained encoder)."""
  if mmd_encoder not in MMD_ENCODERS:
    raise ValueError(f"mmd_encoder must be one of {MMD_ENCODERS}, got {mmd_encoder!r}")
  if mmd_encoder == "trained" and trained_encoder is None:
    raise ValueError("mmd_encoder='trained' embeds with the trained encoder: pass trained_encoder")
  return mmd_encoder


def check_trained_encoder(trained_encoder, attention: str):
  """The trained encoder, or None; it needs a conformal kind (its score joins the per-image one)."""
  if trained_encoder is None:
    return None
  if not isinstance(trained_encoder, TrainedEncoder):
    raise TypeError(
      "trained_encoder must be an inflow_jax.model.TrainedEncoder(model, variables), got "
      f"{type(trained_encoder).__name__}"
    )
  if attention == "mmd":
    raise ValueError(
      "a trained encoder's score joins the per-image score: use attention 'conformal' or "
      "'combined' (the paper's 'mmd' gate has no per-image density)"
    )
  return trained_encoder


def feature_images(detector, prepare, x_features):
  """x_features preprocessed and checked (None stays None); only with a trained encoder."""
  if x_features is None:
    return None
  if detector.trained_encoder is None:
    raise ValueError("x_features trains the feature flow of a trained encoder; none was given")
  return prepare(x_features, "x_features", min_batch=2)


def semantic_view(detector, x_features):
  """The trained encoder's view fitted on x_features (preprocessed), or None without an encoder."""
  if detector.trained_encoder is None:
    return None
  model, variables = detector.trained_encoder
  return fit_semantic(
    model,
    variables,
    x_features,
    score=detector.semantic_score,
    seed=detector.seed,
    flip_average=detector.semantic_flip_average,
  )


def conformal_test(detector, x_ref, x_calibration, x_density, x_features=None):
  """The conformal state: density on x_density (None: x_ref), calibrated on x_calibration; with a
  trained encoder, its feature flow fitted on x_features (None: x_density, else x_ref)."""
  fit_images = x_ref if x_density is None else x_density
  semantic = semantic_view(detector, fit_images if x_features is None else x_features)
  return gates.fit_conformal(
    detector.model,
    detector.variables,
    x_ref,
    x_calibration,
    level=detector.level,
    batch_test=detector.batch_test,
    n_components=detector.n_components,
    seed=detector.seed,
    x_density=x_density,
    mean_shift_components=detector.gate_mean_shift_components,
    semantic=semantic,
  )


def threshold(detector, x_threshold) -> float:
  """The (1 - false_positive_rate) quantile of the a = 1 scores of x_threshold."""
  scores = score_batches(
    detector._score_fn,  # noqa: SLF001  (the detector's own jitted score function)
    None,
    x_threshold,
    min(detector.batch_size, len(x_threshold)),
    attention=1.0,
  ).scores
  if not np.all(np.isfinite(scores)):
    raise ValueError(
      f"{int(np.sum(~np.isfinite(scores)))} of the {len(scores)} threshold scores "
      "(of x_threshold, or x_ref) are NaN or infinite: the flow gives no finite "
      "density there, so no threshold can be set"
    )
  return float(np.quantile(scores, 1.0 - detector.false_positive_rate))
