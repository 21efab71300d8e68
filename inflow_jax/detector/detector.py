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
in-distribution images with a = 1 (x_threshold, default x_ref). `predict` labels an image OOD when the
attention test flags its batch (a = 0: the whole batch is OOD, InFlow's verdict) or, in a batch that
passes, when its score is above the threshold (about `false_positive_rate` of in-distribution images
are). The scores of flagged batches (a = 0) are not compared with the threshold: with the paper's score
they are the prior log-density of x, on another scale than the a = 1 scores of an arbitrary flow. Given
training data, `fit` first trains the flow (`inflow_jax.training.train_on_batches`).

`score(x)` tests x in batches of `batch_size` (or all of x as one batch when smaller; >= 2 images),
see `inflow_jax.detector.batch_scores.score_batches`. With the conformal kinds `predict` is 1 - a (the
flow's score is not thresholded: the p-values are the calibrated decision). Every test runs in one
place, `inflow_jax.detector.gate.gate_batches`. Methods with `preprocessed=True` take images that went
through `preprocess` already and skip the checks (for callers that checked a whole set once).
"""

from typing import Dict, NamedTuple, Optional

import jax
import numpy as np

from inflow_jax import gates
from inflow_jax.data.jpeg import check_jpeg_quality, jpeg_round_trip
from inflow_jax.detector import fitting
from inflow_jax.detector.batch_scores import BatchScores, score_batches
from inflow_jax.detector.files import check_finite_variables, load_detector, save_detector
from inflow_jax.detector.gate import GatePValues, gate_batches
from inflow_jax.detector.stream import score_stream
from inflow_jax.gates.encoder import Embedder, make_encoder
from inflow_jax.gates.mean_shift import check_components as check_mean_shift_components
from inflow_jax.model import InFlow
from inflow_jax.model.density import (
  flow_scores,
  make_score_fn,
  make_sharded_score_fn,
  scores_from_terms,
)
from inflow_jax.utils.batching import batched
from inflow_jax.utils.checks import check_images, check_key, check_test_size


class BatchTest(NamedTuple):
  """`test_batch`'s result: the gate's p-value, attention (1.0 passed, 0.0 flagged) and the parts
  (NaN where the detector has no such test)."""

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
    false_positive_rate: ("mmd") the fraction of in-distribution images (of passed batches) above
      the threshold.
    batch_test, combination, n_components: the conformal batch test ('auto' | 'cauchy' | 'fisher' |
      'simes'), the combination with the MMD test ('bonferroni' | 'cauchy'), the density's mixture
      components (an int, or 'auto': chosen by held-out likelihood, `inflow_jax.gates.density`).
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
    fitting.check_settings(attention, convention, batch_test, combination, false_positive_rate)
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
    self._score_fn = make_score_fn(model, variables, convention)

  @classmethod
  def from_states(
    cls, model, variables, mmd_state, conformal_state=None, *, combination="bonferroni", **settings
  ) -> "InFlowDetector":
    """A detector around tests fitted elsewhere: the MMD test's state (its encoder, permutations and
    level) and, optionally, a conformal state (then attention "combined" with its mean-shift test
    when the state has one, else "mmd"). No threshold: for evaluating the tests."""
    mean_shift = None if conformal_state is None else conformal_state.mean_shift
    detector = cls(
      model,
      variables,
      encoder=mmd_state.embed,
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
  def uses_mmd(self) -> bool:
    return self.attention in ("mmd", "combined")

  @property
  def uses_conformal(self) -> bool:
    return self.attention in ("conformal", "combined")

  @property
  def gate_mean_shift_components(self) -> Optional[int]:
    """The mean-shift test's components where the gate has one (the combined kind), else None."""
    return self.mean_shift_components if self.attention == "combined" else None

  def preprocess(self, x, name: str = "x", min_batch: int = 1) -> np.ndarray:
    """Checks x (N, H, W, C) float in [0, 1] and applies the detector's preprocessing (JPEG)."""
    x = np.asarray(
      check_images(x, name=name, min_batch=min_batch, value_range=(0.0, 1.0)), np.float32
    )
    return x if self.jpeg_quality is None else jpeg_round_trip(x, self.jpeg_quality)

  def _prepared(self, x, preprocessed: bool, min_batch: int = 1, name: str = "x") -> np.ndarray:
    return np.asarray(x, np.float32) if preprocessed else self.preprocess(x, name, min_batch)

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
  ) -> "InFlowDetector":
    """Fits the attention (and threshold); optionally trains the flow on x_train first.

    Args:
      x_ref: (n, H, W, C) float32 in-distribution reference images in [0, 1] (the MMD reference and
        the density's fitting set; may be the flow's training images).
      x_calibration: ("conformal", "combined") in-distribution images unseen by the flow's training
        and disjoint from x_ref (and from x_train): their scores calibrate the p-values. >= 1/level.
      x_threshold: ("mmd") in-distribution images whose a = 1 scores set the threshold (default
        x_ref).
      x_train: optional training images: the flow is trained on them with `config.train` first.
      config: a full config (e.g. `configs/cifar10.py`), needed with x_train.
      mmd_state: the MMD test already fitted on x_ref with this encoder (`fit_mmd`), used as it is
        (kept by every kind: the conformal gate does not use it, `test_batch` reports it).
      conformal_state: the conformal attention already fitted (`gates.fit_conformal` on x_ref and a
        calibration set, with this level and batch test), used as it is.
      preprocessed: the images already went through the detector's preprocessing (JPEG): skip it.
      x_density: ("conformal", "combined") optional in-distribution images, disjoint from
        x_calibration, the density is fitted on instead of x_ref: more of the flow's training
        images (more images support more mixture components) or unseen ones (`gates.conformal`).
    """
    prepare = fitting.checked_images if preprocessed else self.preprocess
    x_ref = prepare(x_ref, "x_ref", min_batch=2)
    if conformal_state is not None:
      fitting.check_conformal_state(self, conformal_state, x_density)
    elif self.uses_conformal:
      x_calibration, x_density = fitting.conformal_inputs(
        self, prepare, x_ref, x_calibration, x_train, x_density
      )
    elif x_density is not None:
      raise ValueError("x_density is for the conformal density; attention='mmd' has none")
    if x_train is not None:
      self.variables, self.train_losses_ = fitting.train_flow(self, x_train, config)
      self._score_fn = make_score_fn(self.model, self.variables, self.convention)
    if self.uses_mmd or mmd_state is not None:
      self.mmd_state_ = fitting.mmd_test(self, x_ref, mmd_state)
    if self.uses_conformal:
      self.conformal_state_ = conformal_state or fitting.conformal_test(
        self, x_ref, x_calibration, x_density
      )
    else:
      x_threshold = x_ref if x_threshold is None else prepare(x_threshold, "x_threshold")
      self.threshold_ = fitting.threshold(self, x_threshold)
    return self

  def _check_fitted(self, conformal_needed: bool = False):
    if (self.uses_mmd and self.mmd_state_ is None) or (
      self.uses_conformal and self.conformal_state_ is None
    ):
      raise RuntimeError("the detector is not fitted: call fit(x_ref) (or load a saved one) first")
    if conformal_needed and self.conformal_state_ is None:
      raise ValueError(
        "per-image scores and p-values need attention='conformal' or 'combined'; this "
        "detector uses the paper's MMD gate, which tests batches only"
      )

  def image_scores(self, x, *, preprocessed: bool = False) -> np.ndarray:
    """(N,) per-image scores (the density of the flow's statistics), higher = more OOD; they do not
    depend on how x is batched. x: (N, H, W, C) float32 in [0, 1], N >= 1."""
    self._check_fitted(conformal_needed=True)
    x = self._prepared(x, preprocessed)
    return gates.image_scores(
      self.conformal_state_, self.model, self.variables, x, self.convention
    )[0]

  def p_values_of_scores(self, scores: np.ndarray) -> np.ndarray:
    """(N,) conformal p-values of `image_scores`: (1 + #{calibration scores >= s}) / (1 + n)."""
    self._check_fitted(conformal_needed=True)
    return gates.image_p_values(self.conformal_state_, np.asarray(scores))

  def image_p_values(self, x, *, preprocessed: bool = False) -> np.ndarray:
    """(N,) conformal p-values in (0, 1]: P(p <= u) <= u for in-distribution x."""
    return self.p_values_of_scores(self.image_scores(x, preprocessed=preprocessed))

  def flow_scores(
    self, x, attention=1.0, *, batch_size: Optional[int] = None, preprocessed: bool = False
  ) -> Dict[str, np.ndarray]:
    """{'paper', 'nll'}: (N,) the flow's scores at `attention` (`inflow_jax.model.density`),
    `batch_size` images per pass (default the detector's)."""
    x = self._prepared(x, preprocessed)
    size = batch_size or self.batch_size
    return batched(lambda xb: flow_scores(self.model, self.variables, xb, attention), x, size)

  def mmd_tests(
    self, x, batch_size: int, key: jax.Array, *, preprocessed: bool = False
  ) -> gates.BatchTests:
    """The MMD test on each consecutive batch of x (`gates.attention_tests`; batch i with the key
    fold_in(key, i))."""
    if self.mmd_state_ is None:
      raise RuntimeError(
        "the detector holds no MMD test: fit it with attention 'mmd' or 'combined'"
      )
    x = self._prepared(x, preprocessed, min_batch=2)
    return gates.attention_tests(self.mmd_state_, x, batch_size, key)

  def gate_batches(
    self,
    x,
    key: Optional[jax.Array] = None,
    *,
    batch_size: Optional[int] = None,
    first_batch: int = 0,
    image_p: Optional[np.ndarray] = None,
    preprocessed: bool = False,
  ) -> GatePValues:
    """Every test of the detector on each batch of x (`inflow_jax.detector.gate.gate_batches`)."""
    self._check_fitted()
    x = self._prepared(x, preprocessed)
    size = min(batch_size or self.batch_size, len(x))
    return gate_batches(self, x, size, self._key(key), first_batch=first_batch, image_p=image_p)

  def test_batch(self, x, key: Optional[jax.Array] = None) -> BatchTest:
    """The gate on x as one batch (>= 2 images): p-value and attention (1.0 passed, 0.0 flagged)."""
    self._check_fitted()
    x = self.preprocess(x, min_batch=2)
    gate = gate_batches(self, x, len(x), self._key(key))
    parts = (gate.p_value, gate.attention, gate.p_mmd, gate.p_conformal, gate.p_mean_shift)
    return BatchTest(*(float(v[0]) for v in parts))

  def _key(self, key):
    if key is None:
      return jax.random.PRNGKey(self.seed)
    check_key(key)
    return key

  def score_batches(
    self,
    x,
    key: Optional[jax.Array] = None,
    *,
    batch_size: Optional[int] = None,
    first_batch: int = 0,
    preprocessed: bool = False,
    mesh: Optional[jax.sharding.Mesh] = None,
  ) -> BatchScores:
    """Per-image flow scores at the gate's attention, per batch of `batch_size` (default the
    detector's; see `inflow_jax.detector.batch_scores.score_batches`, also for `first_batch`).
    Conformal kinds: a = 0 also where an image's own p-value < level, and BatchScores.image_p_values
    holds them; the flow runs once, at a = 1 (at a = 0 the flow is a fixed permutation, so the score
    there is that of z = x with log_det 0). mesh: ("mmd") split the flow over its devices."""
    self._check_fitted()
    if preprocessed:
      x = check_images(x, name="x", min_batch=2)
    else:
      x = self.preprocess(x, min_batch=2)
    key = self._key(key)
    size = min(batch_size or self.batch_size, len(x))
    if self.attention == "mmd":
      score_fn = (
        self._score_fn
        if mesh is None
        else make_sharded_score_fn(self.model, self.variables, self.convention, mesh)
      )
      return score_batches(score_fn, self.mmd_state_, x, size, key, first_batch=first_batch)
    gate = gate_batches(self, x, size, key, first_batch=first_batch)
    starts = gate.starts
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

  def score_stream(
    self,
    x,
    window: int,
    key: Optional[jax.Array] = None,
    *,
    mesh: Optional[jax.sharding.Mesh] = None,
    preprocessed: bool = False,
  ) -> Dict[str, np.ndarray]:
    """Images arriving one at a time, each gated by the MMD test of the last `window` images
    (`inflow_jax.detector.stream`): per image score, batch_p_value, attention, is_ood."""
    self._check_fitted()
    x = self._prepared(x, preprocessed, min_batch=2)
    return score_stream(self, x, window, self._key(key), mesh)

  def score(self, x, key: Optional[jax.Array] = None) -> np.ndarray:
    """(N,) scores, higher = more OOD; x (N, H, W, C) float32 in [0, 1], N >= 2."""
    return self.score_batches(x, key).scores

  def predict(self, x, key: Optional[jax.Array] = None) -> np.ndarray:
    """(N,) int labels, 1 = OOD: the image got a = 0 (its batch, or with the conformal kinds its own
    p-value, was flagged), or ("mmd") its score is above the fitted threshold; 0 =
    in-distribution."""
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
    """Writes the detector to `directory` (created; must not exist yet); see `detector.files`."""
    self._check_fitted()
    return save_detector(self, directory)

  @classmethod
  def load(cls, directory) -> "InFlowDetector":
    """Reads a detector written by `save`."""
    return load_detector(cls, directory)
