"""What a fitted detector answers: per-image scores and p-values, the gate on batches, scores at
the gate's attention, labels. `DetectorScoring` is `InFlowDetector`'s base: it reads the fitted
states (`mmd_state_`, `conformal_state_`, `threshold_`) and settings that `InFlowDetector` sets.

Methods with `preprocessed=True` take images that went through `preprocess` already and skip the
checks (for callers that checked a whole set once, as the evaluation does).
"""

from typing import Dict, NamedTuple, Optional

import jax
import numpy as np

from inflow_jax import gates
from inflow_jax.detector.batch_scores import BatchScores, score_batches
from inflow_jax.detector.fitting import shape_checks
from inflow_jax.detector.gate import GatePValues, gate_batches
from inflow_jax.detector.stream import score_stream
from inflow_jax.model.classifier_encoder import encode
from inflow_jax.model.density import flow_scores, make_sharded_score_fn, scores_from_terms
from inflow_jax.utils.batching import batched
from inflow_jax.utils.checks import check_images, check_key


class BatchTest(NamedTuple):
  """`test_batch`'s result: the gate's p-value, attention (1.0 passed, 0.0 flagged) and the parts
  (NaN where the detector has no such test)."""

  p_value: float
  attention: float
  p_mmd: float
  p_conformal: float
  p_mean_shift: float = float("nan")


class DetectorScoring:
  """The scoring methods of `InFlowDetector` (see its docstring for the settings they read)."""

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
    """(N,) per-image scores (the density of the flow's statistics; with a trained encoder, Fisher's
    statistic of that and the feature flow's p-values), higher = more OOD; they do not
    depend on how x is batched. x: (N, H, W, C) float32 in [0, 1], N >= 1."""
    self._check_fitted(conformal_needed=True)
    x = self._prepared(x, preprocessed)
    return gates.image_scores(
      self.conformal_state_, self.model, self.variables, x, self.convention
    )[0]

  def class_logits(self, x, *, preprocessed: bool = False) -> np.ndarray:
    """(N, num_classes) the trained encoder's flip-averaged class logits of x (N, H, W, C) float32
    in [0, 1]: its predictions, for detectors built with a classifier encoder."""
    if self.trained_encoder is None or not self.trained_encoder.model.num_classes:
      raise ValueError("class_logits needs a detector with a trained classifier encoder")
    x = self._prepared(x, preprocessed)
    return encode(*self.trained_encoder, x).class_logits

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
      x = check_images(x, name="x", min_batch=2, **shape_checks(self.image_shape))
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
    """(N,) int labels, 1 = OOD, 0 = in-distribution (`decide`): with a conformal gate
    ("conformal", "combined") each image's own verdict, p(x) < level, whatever its neighbours;
    with the paper's gate ("mmd") its batch's verdict (a = 0) or its score above the fitted
    threshold."""
    result = self.score_batches(x, key)
    return self.decide(result.attention, result.scores, result.image_p_values)

  def decide(
    self, attention: np.ndarray, scores: np.ndarray, image_p: Optional[np.ndarray] = None
  ) -> np.ndarray:
    """`predict`'s labels from per-image attention, scores and (conformal gates) own p-values.

    Why per image with a conformal gate: a batch's verdict condemns its clean images with the
    outliers beside them, while the image's own p-value flags a clean image with probability
    <= level whatever else is in the batch (the batch's verdict is reported beside it).
    """
    self._check_fitted()
    if self.conformal_state_ is not None:
      if image_p is None:
        raise ValueError("a detector with a conformal gate decides from the images' own p-values")
      return (np.asarray(image_p) < self.level).astype(np.int64)
    flagged = np.asarray(attention) == 0.0
    if self.threshold_ is not None:
      flagged = flagged | (np.asarray(scores) > self.threshold_)
    return flagged.astype(np.int64)
