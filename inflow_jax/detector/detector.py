"""`InFlowDetector`: the user-facing OOD detector, in the spirit of PyOD and alibi-detect.

    detector = InFlowDetector(model, variables).fit(x_ref)
    scores = detector.score(x)        # (N,), higher = more OOD
    labels = detector.predict(x)      # (N,), 1 = OOD
    detector.save(directory); detector = InFlowDetector.load(directory)

    detector = InFlowDetector(model, variables, attention="combined", jpeg_quality=75).fit(
        x_ref, x_calibration=x_cal)
    detector.image_scores(x); detector.image_p_values(x); detector.test_batch(x, key)

Attention kinds (`attention=`):
* "mmd" (default, the paper's): the batch's MMD test against x_ref (`inflow_jax.gates.mmd`).
* "conformal": per-image conformal p-values of a density of the flow's statistics
  (`inflow_jax.gates`, fitted on x_ref or on the optional x_density of images the flow did not
  train on, calibrated on x_calibration) and a batch test of them
  (`batch_test`: 'auto' = Cauchy for batches the calibration set resolves, else Fisher; or Cauchy,
  Fisher, Simes); an image gets a = 0 when its batch is flagged or its own p < level.
* "combined": the conformal batch test, the MMD test and (unless `mean_shift_components=None`) the
  mean-shift test of the batch's mean in whitened pixel space (`inflow_jax.gates.mean_shift`:
  shifts every image of a batch shares, such as faces, which no per-image score sees) in one gate
  (`combination`: Bonferroni or Cauchy of their p-values, weighted 1/2 for the conformal test and
  1/2 shared by the batch tests, `inflow_jax.gates.combined_p_values`); per-image p-values as
  "conformal".
Preprocessing is part of the detector: with `jpeg_quality`, every image it fits on or scores goes
through that JPEG round trip first (`inflow_jax.data.jpeg`), so that sets from different pipelines
are compared by content.

`fit` fits the attention (the MMD test's reference embeddings, `inflow_jax.gates.mmd.fit_mmd`) on
x_ref and sets the decision threshold to the (1 - false_positive_rate) quantile of the scores of
in-distribution images with a = 1 (x_threshold, default x_ref). `predict` labels an image OOD when
the attention test flags its batch (a = 0: the whole batch is OOD, InFlow's verdict) or, in a batch
that passes, when its score is above the threshold (about `false_positive_rate` of in-distribution
images are). The scores of flagged batches (a = 0) are not compared with the threshold: with the
paper's score they are the prior log-density of x, on another scale than the a = 1 scores of an
arbitrary flow. Given training data, `fit` first trains the flow
(`inflow_jax.training.train_on_batches`).

`score(x)` tests x in batches of `batch_size` (or all of x as one batch when smaller; >= 2 images),
see `inflow_jax.detector.batch_scores.score_batches`. With the conformal kinds `predict` is 1 - a
(the flow's score is not thresholded: the p-values are the calibrated decision). Every test runs in
one place, `inflow_jax.detector.gate.gate_batches`. Methods with `preprocessed=True` take images
that went through `preprocess` already and skip the checks (for callers that checked a whole set
once).
"""

from typing import Optional, Tuple

import numpy as np

from inflow_jax import gates
from inflow_jax.data.jpeg import check_jpeg_quality, jpeg_round_trip
from inflow_jax.detector import fitting
from inflow_jax.detector.files import check_finite_variables, load_detector, save_detector
from inflow_jax.detector.scoring import DetectorScoring
from inflow_jax.gates.encoder import Embedder, make_encoder
from inflow_jax.gates.mean_shift import check_components as check_mean_shift_components
from inflow_jax.gates.trained_embedder import TrainedEmbedder
from inflow_jax.model import InFlow
from inflow_jax.model.classifier_encoder import TrainedEncoder
from inflow_jax.model.density import (
  make_score_fn,
)
from inflow_jax.utils.checks import check_test_size


class InFlowDetector(DetectorScoring):
  """An InFlow flow plus its attention test and a decision threshold.

  Args:
    model, variables: the InFlow flow and its variables.
    encoder: the MMD test's image encoder (an `inflow_jax.gates.encoder.Embedder`); default
      `make_encoder(seed)`.
    attention: "mmd" | "conformal" | "combined" (module docstring).
    n_permutations, level: the MMD test's permutations; the significance level of every test.
    batch_size: images per tested batch in `score`/`predict`.
    convention: the flow's score, 'paper' (default) or 'nll' (see `inflow_jax.model.density`).
    false_positive_rate: ("mmd") the fraction of in-distribution images (of passed batches) above
      the threshold.
    batch_test, combination, n_components: the conformal batch test ('auto' | 'cauchy' | 'fisher' |
      'simes'), the combination with the MMD test ('bonferroni' | 'cauchy'), the density's mixture
      components (an int, or 'auto': chosen by held-out likelihood, `inflow_jax.gates.density`).
    mean_shift_components: ("combined") the principal components of the mean-shift test, or None:
      the combined gate without it.
    jpeg_quality: None, or the JPEG round trip every input goes through first.
    seed: seed of the encoder (when not given), the density fit and the permutation tests.
    trained_encoder: ("conformal", "combined") an in-distribution encoder
      (`inflow_jax.model.TrainedEncoder`: a trained `ClassifierEncoder` and its variables, or your
      own Flax module with the same outputs): its semantic score is fitted on its outputs and the
      per-image score combines both views (`inflow_jax.gates.semantic`); `class_logits` then
      gives its predictions.
    semantic_score: (with trained_encoder) "auto" ("vim+energy+rotation" for an encoder with
      class logits, without "rotation" when its rotation head is untrained, else "feature_flow")
      or names of "vim", "energy", "rotation", "feature_flow" joined by "+"
      (`inflow_jax.gates.semantic`).
    mmd_encoder: what the MMD test embeds images with: "random" (`encoder`, the paper's) or
      "trained" (the trained encoder's features, `inflow_jax.gates.trained_embedder`).
    semantic_flip_average: (with trained_encoder) its outputs averaged over x and its mirror image
      in the semantic scores and the trained MMD embedding (twice the encoder's time).
  """

  def __init__(
    self,
    model: InFlow,
    variables,
    *,
    encoder: Optional[Embedder] = None,
    attention: str = "mmd",
    n_permutations: int = 100,
    level: float = 0.05,
    batch_size: int = 250,
    convention: str = "paper",
    false_positive_rate: float = 0.05,
    batch_test: str = "auto",
    combination: str = "bonferroni",
    n_components="auto",
    mean_shift_components: Optional[int] = 64,
    jpeg_quality: Optional[int] = None,
    seed: int = 0,
    trained_encoder: Optional[TrainedEncoder] = None,
    semantic_score: str = "auto",
    mmd_encoder: str = "random",
    semantic_flip_average: bool = True,
  ):
    fitting.check_settings(attention, convention, batch_test, combination, false_positive_rate)
    self.trained_encoder = fitting.check_trained_encoder(trained_encoder, attention)
    self.semantic_score = fitting.check_semantic_score(semantic_score, self.trained_encoder)
    self.mmd_encoder = fitting.check_mmd_encoder(mmd_encoder, self.trained_encoder)
    self.semantic_flip_average = bool(semantic_flip_average)
    if batch_size < 2:
      raise ValueError(
        f"batch_size must be >= 2 (the attention test needs 2 images), got {batch_size}"
      )
    check_finite_variables(variables, "the flow's variables")
    self.model, self.variables = model, variables
    self.encoder = make_encoder(seed) if encoder is None else encoder
    self.attention, self.batch_test, self.combination = attention, batch_test, combination
    self.n_components = gates.check_components(n_components)
    self.mean_shift_components = check_mean_shift_components(mean_shift_components)
    self.jpeg_quality = check_jpeg_quality(jpeg_quality)
    self.n_permutations, self.level = check_test_size(n_permutations, level)
    self.batch_size = int(batch_size)
    self.convention, self.seed = convention, int(seed)
    self.false_positive_rate = float(false_positive_rate)
    self.mmd_state_: Optional[gates.MMDState] = None
    self.conformal_state_: Optional[gates.ConformalState] = None
    self.threshold_: Optional[float] = None
    self.image_shape_: Optional[Tuple[int, int, int]] = None
    self._score_fn = make_score_fn(model, variables, convention)

  @classmethod
  def from_states(
    cls, model, variables, mmd_state, conformal_state=None, *, combination="bonferroni", **settings
  ) -> "InFlowDetector":
    """A detector around tests fitted elsewhere: the MMD test's state (its encoder, random or
    trained, its permutations and level) and, optionally, a conformal state (then attention
    "combined" with its mean-shift test when the state has one, else "mmd"). No threshold: for
    evaluating the tests."""
    mean_shift = None if conformal_state is None else conformal_state.mean_shift
    embed, trained = mmd_state.embed, isinstance(mmd_state.embed, TrainedEmbedder)
    if trained:  # the test on the trained encoder's features
      settings = dict(mmd_encoder="trained", semantic_flip_average=embed.flip_average, **settings)
      settings.setdefault("trained_encoder", TrainedEncoder(embed.model, embed.variables))
    detector = cls(
      model,
      variables,
      encoder=None if trained else embed,
      attention="mmd" if conformal_state is None else "combined",
      n_permutations=mmd_state.n_permutations,
      level=mmd_state.level,
      batch_test="auto" if conformal_state is None else conformal_state.batch_test,
      combination=combination,
      mean_shift_components=None if mean_shift is None else mean_shift.n_components,
      **settings,
    )
    detector.mmd_state_, detector.conformal_state_ = mmd_state, conformal_state
    return detector

  @property
  def mmd_embedder(self):
    """What the MMD test embeds images with (`mmd_encoder`)."""
    if self.mmd_encoder == "trained":
      return TrainedEmbedder.of(self.trained_encoder, self.semantic_flip_average)
    return self.encoder

  @property
  def uses_mmd(self) -> bool:
    return self.attention in ("mmd", "combined")

  @property
  def uses_conformal(self) -> bool:
    return self.attention in ("conformal", "combined")

  @property
  def gate_mean_shift_components(self) -> Optional[int]:
    """The mean-shift test's components where the gate has one (the combined kind), else None."""
    return self.mean_shift_components if self.attention == "combined" else None

  @property
  def image_shape(self) -> Optional[Tuple[int, int, int]]:
    """(H, W, C) of the images the detector was fitted on, which it scores (None before fit)."""
    if self.image_shape_ is None and self.mmd_state_ is not None:
      return tuple(self.mmd_state_.image_shape)
    return self.image_shape_

  def preprocess(self, x, name: str = "x", min_batch: int = 1) -> np.ndarray:
    """Checks x (N, H, W, C) float in [0, 1] (of `image_shape` once fitted) and applies the
    detector's preprocessing (JPEG); float32, C-contiguous."""
    x = fitting.checked_images(x, name, min_batch, self.image_shape)
    return x if self.jpeg_quality is None else jpeg_round_trip(x, self.jpeg_quality)

  def _prepared(self, x, preprocessed: bool, min_batch: int = 1, name: str = "x") -> np.ndarray:
    if preprocessed:
      return np.ascontiguousarray(x, np.float32)
    return self.preprocess(x, name, min_batch)

  def fit(
    self,
    x_ref,
    *,
    x_calibration=None,
    x_threshold=None,
    x_train=None,
    config=None,
    mmd_state: Optional[gates.MMDState] = None,
    conformal_state: Optional[gates.ConformalState] = None,
    preprocessed: bool = False,
    x_density=None,
    x_features=None,
  ) -> "InFlowDetector":
    """Fits the attention (and threshold); optionally trains the flow on x_train first.

    Args:
      x_ref: (n, H, W, C) float32 in-distribution reference images in [0, 1] (the MMD reference and
        the density's fitting set; may be the flow's training images).
      x_calibration: ("conformal", "combined") in-distribution images unseen by the flow's training
        and disjoint from x_ref (and from x_train): their scores calibrate the p-values. >= 1/level.
      x_threshold: ("mmd") images whose a = 1 scores set the threshold (default x_ref).
      x_train, config: optional training images: the flow is trained on them with `config.train`
        (a full config, e.g. `configs/cifar10.py`) first.
      mmd_state: the MMD test already fitted on x_ref with this encoder (`fit_mmd`), used as it is
        (kept by every kind: the conformal gate does not use it, `test_batch` reports it). With
        mmd_encoder "trained" its reference is x_calibration (`fitting.mmd_reference`).
      conformal_state: the conformal attention already fitted (`gates.fit_conformal` on x_ref and a
        calibration set, with this level and batch test), used as it is.
      preprocessed: the images already went through the detector's preprocessing (JPEG): skip it.
      x_density: ("conformal", "combined") optional in-distribution images, disjoint from
        x_calibration, the density is fitted on instead of x_ref (`gates.conformal`).
      x_features: images the trained encoder's feature flow fits (default x_density or x_ref).
    """
    x_ref, prepare = fitting.prepare_inputs(self, x_ref, preprocessed)
    if x_threshold is not None and not self.uses_conformal:  # checked before anything is fitted
      x_threshold = prepare(x_threshold, "x_threshold", min_batch=2)
    if conformal_state is not None:
      fitting.check_conformal_state(self, conformal_state, x_density)
      x_calibration = None if x_calibration is None else prepare(x_calibration, "x_calibration")
    elif self.uses_conformal:
      x_calibration, x_density = fitting.conformal_inputs(
        self, prepare, x_ref, x_calibration, x_train, x_density
      )
    elif x_density is not None:
      raise ValueError("x_density is for the conformal density; attention='mmd' has none")
    x_features = fitting.feature_images(self, prepare, x_features)
    if x_train is not None:
      self.variables, self.train_losses_ = fitting.train_flow(self, x_train, config)
      self._score_fn = make_score_fn(self.model, self.variables, self.convention)
    if self.uses_mmd or mmd_state is not None:
      self.mmd_state_ = fitting.mmd_test(self, x_ref, x_calibration, mmd_state)
    if self.uses_conformal:
      self.conformal_state_ = conformal_state or fitting.conformal_test(
        self, x_ref, x_calibration, x_density, x_features
      )
    else:
      self.threshold_ = fitting.threshold(self, x_ref if x_threshold is None else x_threshold)
    self.image_shape_ = tuple(int(s) for s in x_ref.shape[1:])
    return self

  def save(self, directory):
    """Writes the detector to `directory` (created; must not exist yet); see `detector.files`."""
    self._check_fitted()
    return save_detector(self, directory)

  @classmethod
  def load(cls, directory) -> "InFlowDetector":
    """Reads a detector written by `save`."""
    return load_detector(cls, directory)
