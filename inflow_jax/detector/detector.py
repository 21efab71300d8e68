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
  1/2 shared by the batch tests, `conformal.gate.combined_p_values`); per-image p-values as
  "conformal".
Preprocessing is part of the detector: with `jpeg_quality`, every image it fits on or scores goes
through that JPEG round trip first (`inflow_jax.data.jpeg`), so that sets from different pipelines
are compared by content.

`fit` fits the attention (the MMD test's reference embeddings, `inflow_jax.gates.mmd.fit_mmd`) on x_ref
and sets the decision threshold to the (1 - false_positive_rate) quantile of the scores of in-distribution
images with a = 1 (x_threshold, default x_ref). `predict` labels an image OOD when the attention test
flags its batch (a = 0: the whole batch is OOD, InFlow's verdict) or, in a batch that passes, when its
score is above the threshold (about `false_positive_rate` of in-distribution images are). The scores of
flagged batches (a = 0) are not compared with the threshold: with the paper's score they are the prior
log-density of x, on another scale than the a = 1 scores of an arbitrary flow. Given training data, `fit`
first trains the flow (`inflow_jax.training.train_on_batches`).

`score(x)` tests x in batches of `batch_size` (or all of x as one batch when smaller; >= 2 images), see
`inflow_jax.model.density.score_batches`. With the conformal kinds `predict` is 1 - a (the flow's
score is not thresholded: the p-values are the calibrated decision).
"""

import itertools
from typing import NamedTuple, Optional

import jax
import numpy as np

from inflow_jax import gates as conformal
from inflow_jax import training
from inflow_jax.data.jpeg import check_jpeg_quality, jpeg_round_trip
from inflow_jax.detector.batch_scores import BatchScores, score_batches
from inflow_jax.detector.files import check_finite_variables, load_detector, save_detector
from inflow_jax.gates.encoder import Embedder, make_encoder
from inflow_jax.gates.mean_shift import check_components as check_mean_shift_components
from inflow_jax.gates.mmd import MMDState, fit_mmd
from inflow_jax.gates.mmd_batches import attention_tests
from inflow_jax.model import InFlow
from inflow_jax.model.density import CONVENTIONS, make_score_fn, scores_from_terms
from inflow_jax.utils.batching import batch_starts
from inflow_jax.utils.checks import check_images, check_key, check_test_size

ATTENTION_KINDS = ("mmd", "conformal", "combined")


class _Gate(NamedTuple):
  """Per batch: the gate's p-value and attention, the MMD, conformal and mean-shift p-values (NaN
  when unused); per image (conformal kinds, else None): p-values and the flow's score at a = 1."""

  p_value: np.ndarray
  attention: np.ndarray
  p_mmd: np.ndarray
  p_conformal: np.ndarray
  p_mean_shift: np.ndarray
  image_p: Optional[np.ndarray]
  flow_score: Optional[np.ndarray]


class BatchTest(NamedTuple):
  """`test_batch`'s result: the gate's p-value, attention (1.0 passed, 0.0 flagged) and the parts
  (NaN where the kind has no such test)."""

  p_value: float
  attention: float
  p_mmd: float
  p_conformal: float
  p_mean_shift: float = float("nan")


class InFlowDetector:
  """An InFlow flow plus its attention test and a decision threshold.

  Args:
    model, variables: the InFlow flow and its variables.
    encoder: the MMD test's image encoder (an `inflow_jax.gates.encoder.Embedder`); default
      `make_encoder(seed)`.
    attention: "mmd" | "conformal" | "combined" (module docstring).
    n_permutations, level: the MMD test's permutations; the significance level of every test.
    batch_size: images per tested batch in `score`/`predict`.
    convention: the flow's score, 'paper' (default) or 'nll' (see `inflow_jax.model.density`).
    false_positive_rate: ("mmd") the fraction of in-distribution images (of passed batches) above the
      threshold.
    batch_test, combination, n_components: the conformal batch test ('auto' | 'cauchy' | 'fisher' | 'simes'), the
      combination with the MMD test ('bonferroni' | 'cauchy'), the density's mixture components (an
      int, or 'auto': chosen by held-out likelihood, `inflow_jax.gates.density`).
    mean_shift_components: ("combined") the principal components of the mean-shift test, or None:
      the combined gate without it.
    jpeg_quality: None, or the JPEG round trip every input goes through first.
    seed: seed of the encoder (when not given), the density fit and the permutation tests.
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
  ):
    for name, value, allowed in (
      ("attention", attention, ATTENTION_KINDS),
      ("convention", convention, CONVENTIONS),
      ("batch_test", batch_test, conformal.BATCH_TESTS),
      ("combination", combination, conformal.COMBINATIONS),
    ):
      if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if not 0.0 < false_positive_rate < 1.0:
      raise ValueError(f"false_positive_rate must lie in (0, 1), got {false_positive_rate}")
    if batch_size < 2:
      raise ValueError(
        f"batch_size must be >= 2 (the attention test needs 2 images), got {batch_size}"
      )
    check_finite_variables(variables, "the flow's variables")
    self.model, self.variables = model, variables
    self.encoder = make_encoder(seed) if encoder is None else encoder
    self.attention, self.batch_test, self.combination = attention, batch_test, combination
    self.n_components = conformal.check_components(n_components)
    self.mean_shift_components = check_mean_shift_components(mean_shift_components)
    self.jpeg_quality = check_jpeg_quality(jpeg_quality)
    self.n_permutations, self.level = check_test_size(n_permutations, level)
    self.batch_size = int(batch_size)
    self.convention, self.false_positive_rate, self.seed = (
      convention,
      float(false_positive_rate),
      int(seed),
    )
    self.mmd_state_: Optional[MMDState] = None
    self.conformal_state_: Optional[conformal.ConformalState] = None
    self.threshold_: Optional[float] = None
    self._score_fn = make_score_fn(model, variables, convention)

  @property
  def uses_mmd(self) -> bool:
    return self.attention in ("mmd", "combined")

  @property
  def uses_conformal(self) -> bool:
    return self.attention in ("conformal", "combined")

  @property
  def _mean_shift_components(self) -> Optional[int]:
    """The mean-shift test's components where the gate has one (the combined kind), else None."""
    return self.mean_shift_components if self.attention == "combined" else None

  def preprocess(self, x, name: str = "x", min_batch: int = 1) -> np.ndarray:
    """Checks x (N, H, W, C) float in [0, 1] and applies the detector's preprocessing (JPEG)."""
    x = np.asarray(
      check_images(x, name=name, min_batch=min_batch, value_range=(0.0, 1.0)), np.float32
    )
    return x if self.jpeg_quality is None else jpeg_round_trip(x, self.jpeg_quality)

  def fit(
    self,
    x_ref,
    *,
    x_calibration=None,
    x_threshold=None,
    x_train=None,
    config=None,
    mmd_state: Optional[MMDState] = None,
    conformal_state: Optional[conformal.ConformalState] = None,
    preprocessed: bool = False,
    x_density=None,
  ) -> "InFlowDetector":
    """Fits the attention (and threshold); optionally trains the flow on x_train first.

    Args:
      x_ref: (n, H, W, C) float32 in-distribution reference images in [0, 1] (the MMD reference and
        the density's fitting set; may be the flow's training images).
      x_calibration: ("conformal", "combined") in-distribution images unseen by the flow's training
        and disjoint from x_ref (and from x_train): their scores calibrate the p-values. >= 1/level.
      x_threshold: ("mmd") in-distribution images whose a = 1 scores set the threshold (default x_ref).
      x_train: optional training images: the flow is trained on them with `config.train` first.
      config: a full config (e.g. `configs/cifar10.py`), needed with x_train.
      mmd_state: the MMD test already fitted on x_ref with this encoder (`fit_mmd`), used as it is.
      conformal_state: the conformal attention already fitted (`conformal.fit_conformal` on x_ref
        and a calibration set, with this level and batch test), used as it is.
      preprocessed: the images already went through the detector's preprocessing (JPEG): skip it.
      x_density: ("conformal", "combined") optional in-distribution images, disjoint from
        x_calibration, the density is fitted on instead of x_ref: more of the flow's training images
        (more images support more mixture components) or unseen ones (see `conformal.gate`).
    """
    prepare = (
      self.preprocess
      if not preprocessed
      else (
        lambda x, name, min_batch=1: np.asarray(
          check_images(x, name=name, min_batch=min_batch, value_range=(0.0, 1.0)), np.float32
        )
      )
    )
    x_ref = prepare(x_ref, "x_ref", min_batch=2)
    if conformal_state is not None:
      if not self.uses_conformal:
        raise ValueError("conformal_state given to a detector with attention='mmd'")
      if x_density is not None:
        raise ValueError(
          "x_density and conformal_state given: the state's density is already fitted"
        )
      if (conformal_state.level, conformal_state.batch_test) != (self.level, self.batch_test):
        raise ValueError(
          f"conformal_state has level={conformal_state.level}, batch_test="
          f"{conformal_state.batch_test!r}; the detector {self.level}, {self.batch_test!r}"
        )
      state_components = (
        None if conformal_state.mean_shift is None else conformal_state.mean_shift.n_components
      )
      if state_components != self._mean_shift_components:
        raise ValueError(
          f"conformal_state has a mean-shift test of {state_components} components; "
          f"this detector (attention={self.attention!r}) needs "
          f"{self._mean_shift_components}"
        )
    elif self.uses_conformal:
      x_calibration, x_density = self._conformal_inputs(
        prepare, x_ref, x_calibration, x_train, x_density
      )
    elif x_density is not None:
      raise ValueError("x_density is for the conformal density; attention='mmd' has none")
    if x_train is not None:
      self._train(x_train, config)
    if self.uses_mmd:
      self._fit_mmd(x_ref, mmd_state)
    if self.uses_conformal:
      self.conformal_state_ = conformal_state or conformal.fit_conformal(
        self.model,
        self.variables,
        x_ref,
        x_calibration,
        level=self.level,
        batch_test=self.batch_test,
        n_components=self.n_components,
        seed=self.seed,
        x_density=x_density,
        mean_shift_components=self._mean_shift_components,
      )
    else:
      x_threshold = x_ref if x_threshold is None else prepare(x_threshold, "x_threshold")
      self._fit_threshold(x_threshold)
    return self

  def _conformal_inputs(self, prepare, x_ref, x_calibration, x_train, x_density):
    """(x_calibration, x_density) preprocessed and checked: calibration images given, >= 1/level of
    them, none of them in x_ref, x_density or x_train."""
    if x_calibration is None:
      raise ValueError(
        f"attention={self.attention!r} needs x_calibration: held-out in-distribution "
        "images, disjoint from x_ref and from the flow's training images"
      )
    x_calibration = prepare(x_calibration, "x_calibration")
    x_density = None if x_density is None else prepare(x_density, "x_density", min_batch=2)
    x_train_seen = None if x_train is None else prepare(x_train, "x_train")
    conformal.check_calibration(
      x_calibration,
      self.level,
      {"x_ref": x_ref, "x_density": x_density, "the training images (x_train)": x_train_seen},
    )
    return x_calibration, x_density

  def _train(self, x_train, config):
    if config is None:
      raise ValueError("training the flow (x_train given) needs config (with a `train` sub-config)")
    x_train = check_images(x_train, name="x_train", value_range=(0.0, 1.0))
    batches = itertools.islice(
      training.local_batches(
        np.asarray(x_train, np.float32), batch_size=config.train.batch_size, seed=self.seed
      ),
      config.train.num_steps,
    )
    self.variables, self.train_losses_ = training.train_on_batches(
      self.model, self.variables, batches, config
    )
    check_finite_variables(self.variables, "the trained flow's variables")
    self._score_fn = make_score_fn(self.model, self.variables, self.convention)

  def _fit_mmd(self, x_ref, mmd_state):
    if mmd_state is None:
      mmd_state = fit_mmd(x_ref, self.encoder, self.n_permutations, self.level)
    elif (mmd_state.n_permutations, mmd_state.level) != (self.n_permutations, self.level):
      raise ValueError(
        f"mmd_state has n_permutations={mmd_state.n_permutations}, level="
        f"{mmd_state.level}; the detector {self.n_permutations}, {self.level}"
      )
    self.mmd_state_ = mmd_state

  def _fit_threshold(self, x_threshold):
    scores = score_batches(
      self._score_fn, None, x_threshold, min(self.batch_size, len(x_threshold)), attention=1.0
    ).scores
    if not np.all(np.isfinite(scores)):
      raise ValueError(
        f"{int(np.sum(~np.isfinite(scores)))} of the {len(scores)} threshold scores "
        "(of x_threshold, or x_ref) are NaN or infinite: the flow gives no finite "
        "density there, so no threshold can be set"
      )
    self.threshold_ = float(np.quantile(scores, 1.0 - self.false_positive_rate))

  def _check_fitted(self, conformal_needed: bool = False):
    if (self.mmd_state_ is None) == self.uses_mmd or (
      self.conformal_state_ is None
    ) == self.uses_conformal:
      raise RuntimeError("the detector is not fitted: call fit(x_ref) (or load a saved one) first")
    if conformal_needed and not self.uses_conformal:
      raise ValueError(
        "per-image scores and p-values need attention='conformal' or 'combined'; this "
        "detector uses the paper's MMD gate, which tests batches only"
      )

  def image_scores(self, x) -> np.ndarray:
    """(N,) per-image scores (the density of the flow's statistics), higher = more OOD; they do not
    depend on how x is batched. x: (N, H, W, C) float32 in [0, 1], N >= 1."""
    self._check_fitted(conformal_needed=True)
    return self._image_scores(self.preprocess(x))

  def _image_scores(self, x: np.ndarray) -> np.ndarray:
    return conformal.image_scores(
      self.conformal_state_, self.model, self.variables, x, self.convention
    )[0]

  def image_p_values(self, x) -> np.ndarray:
    """(N,) conformal p-values in (0, 1]: P(p <= u) <= u for in-distribution x."""
    return conformal.image_p_values(self.conformal_state_, self.image_scores(x))

  def test_batch(self, x, key: Optional[jax.Array] = None) -> BatchTest:
    """The gate on x as one batch (>= 2 images): p-value and attention (1.0 passed, 0.0 flagged)."""
    self._check_fitted()
    x = self.preprocess(x, min_batch=2)
    gate = self._gate(x, len(x), self._key(key))
    return BatchTest(
      *(
        float(v[0])
        for v in (gate.p_value, gate.attention, gate.p_mmd, gate.p_conformal, gate.p_mean_shift)
      )
    )

  def _key(self, key):
    if key is None:
      return jax.random.PRNGKey(self.seed)
    check_key(key)
    return key

  def _gate(self, x: np.ndarray, batch_size: int, key, first_batch: int = 0) -> "_Gate":
    """The gate on each batch (`batch_starts(len(x), batch_size)`) of preprocessed x (unchecked);
    batch i's MMD test (`attention_tests`) uses the key fold_in(key, first_batch + i)."""
    starts = batch_starts(len(x), batch_size)
    n_batches = len(starts) - 1
    p_mmd = p_conformal = p_mean_shift = np.full(n_batches, np.nan)
    image_p = flow_score = None
    if self.uses_mmd:
      p_mmd = attention_tests(self.mmd_state_, x, batch_size, key, first_batch=first_batch).p_values
    if self.uses_conformal:
      scores, flow_score = conformal.image_scores(
        self.conformal_state_, self.model, self.variables, x, self.convention
      )
      image_p = conformal.image_p_values(self.conformal_state_, scores)
      p_conformal = conformal.batch_p_values(self.conformal_state_, image_p, starts)
    if self.attention == "mmd":
      p = p_mmd
    elif self.attention == "conformal":
      p = p_conformal
    else:
      p, p_mean_shift = conformal.combined_p_values(
        self.conformal_state_, self.combination, p_conformal, p_mmd, x, starts, key, first_batch
      )
    return _Gate(
      p, np.where(p < self.level, 0.0, 1.0), p_mmd, p_conformal, p_mean_shift, image_p, flow_score
    )

  def score_batches(
    self,
    x,
    key: Optional[jax.Array] = None,
    *,
    batch_size: Optional[int] = None,
    first_batch: int = 0,
    preprocessed: bool = False,
  ) -> BatchScores:
    """Per-image flow scores at the gate's attention, per batch of `batch_size` (default the
    detector's; see `inflow_jax.model.density.score_batches`, also for `first_batch`). Conformal
    kinds: a = 0 also where an image's own p-value < level, and BatchScores.image_p_values holds
    them; the flow runs once, at a = 1 (at a = 0 the flow is a fixed permutation, so the score there
    is that of z = x with log_det 0). preprocessed: x already went through `preprocess`."""
    self._check_fitted()
    x = check_images(x, name="x", min_batch=2) if preprocessed else self.preprocess(x, min_batch=2)
    key = self._key(key)
    size = min(batch_size or self.batch_size, len(x))
    if self.attention == "mmd":
      return score_batches(self._score_fn, self.mmd_state_, x, size, key, first_batch=first_batch)
    starts = batch_starts(len(x), size)
    gate = self._gate(x, size, key, first_batch)
    batch_index = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    per_image = (gate.attention[batch_index] * (gate.image_p >= self.level)).astype(np.float32)
    at_zero = scores_from_terms(
      np.sum(np.square(x, dtype=np.float64), axis=(1, 2, 3)),
      0.0,
      int(np.prod(x.shape[1:])),
      self.convention,
    )
    scores = np.where(per_image == 1.0, gate.flow_score, at_zero).astype(np.float32)
    return BatchScores(
      scores=scores,
      attention=per_image,
      p_values=gate.p_value,
      flagged=gate.attention == 0.0,
      batch_index=batch_index,
      batch_starts=starts,
      image_p_values=gate.image_p,
    )

  def score(self, x, key: Optional[jax.Array] = None) -> np.ndarray:
    """(N,) scores, higher = more OOD; x (N, H, W, C) float32 in [0, 1], N >= 2."""
    return self.score_batches(x, key).scores

  def predict(self, x, key: Optional[jax.Array] = None) -> np.ndarray:
    """(N,) int labels, 1 = OOD: the image got a = 0 (its batch, or with the conformal kinds its own
    p-value, was flagged), or ("mmd") its score is above the fitted threshold; 0 = in-distribution."""
    result = self.score_batches(x, key)
    return self.decide(result.attention, result.scores)

  def decide(self, attention: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """`predict`'s labels from per-image attention and scores."""
    self._check_fitted()
    flagged = np.asarray(attention) == 0.0
    if self.threshold_ is not None:
      flagged = flagged | (np.asarray(scores) > self.threshold_)
    return flagged.astype(np.int64)

  def save(self, directory):
    """Writes the detector to `directory` (created; must not exist yet); see `detector_files`."""
    self._check_fitted()
    return save_detector(self, directory)

  @classmethod
  def load(cls, directory) -> "InFlowDetector":
    """Reads a detector written by `save`."""
    return load_detector(cls, directory)
