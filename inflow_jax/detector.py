"""`InFlowDetector`: the user-facing OOD detector, in the spirit of PyOD and alibi-detect.

    detector = InFlowDetector(model, variables).fit(x_ref)
    scores = detector.score(x)        # (N,), higher = more OOD
    labels = detector.predict(x)      # (N,), 1 = OOD
    detector.save(directory); detector = InFlowDetector.load(directory)

`fit` fits the attention (the MMD test's reference embeddings, `inflow_jax.attention.mmd.fit_mmd`) on x_ref
and sets the decision threshold to the (1 - false_positive_rate) quantile of the scores of in-distribution
images with a = 1 (x_threshold, default x_ref). `predict` labels an image OOD when the attention test
flags its batch (a = 0: the whole batch is OOD, InFlow's verdict) or, in a batch that passes, when its
score is above the threshold (about `false_positive_rate` of in-distribution images are). The scores of
flagged batches (a = 0) are not compared with the threshold: with the paper's score they are the prior
log-density of x, on another scale than the a = 1 scores of an arbitrary flow. Given training data, `fit`
first trains the flow (`inflow_jax.training.train_on_batches`).

`score(x)` tests x in batches of `batch_size` (or all of x as one batch when smaller; >= 2 images), see
`inflow_jax.evaluation.scores.score_batches`.
"""
import dataclasses
import itertools
import json
import pathlib
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from inflow_jax import integrity, training
from inflow_jax.attention.encoder import Embedder, make_encoder
from inflow_jax.attention.mmd import MMDState, fit_mmd
from inflow_jax.checks import check_images, check_test_size
from inflow_jax.evaluation.scores import CONVENTIONS, BatchScores, make_score_fn, score_batches
from inflow_jax.model import InFlow
from inflow_jax.workdir import tuples_from_json

_SETTINGS = ("n_permutations", "level", "batch_size", "convention", "false_positive_rate", "seed")
_MMD_ARRAYS = ("reference", "center", "sigma", "kernel_offset", "reference_row_sums", "reference_total")


def _model_config(model: InFlow) -> Dict[str, Any]:
  return {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
          if f.name not in ("parent", "name")}


def _check_finite_variables(variables, what: str):
  """Raises ValueError naming the first leaf of `variables` holding NaN or infinite values."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
    array = np.asarray(leaf)
    if np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
      raise ValueError(f"{what} contain NaN or infinite values (in {jax.tree_util.keystr(path)}): "
                       "the flow is corrupt (a damaged checkpoint or a diverged training run?)")


def _read_config(path: pathlib.Path) -> Dict[str, Any]:
  """The saved detector's config.json, or a ValueError naming the path when it is not valid JSON."""
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(f"{path} is corrupt (not valid JSON: {error}); the saved detector cannot be "
                     "read") from error


def _restore_as_numpy(path: pathlib.Path):
  """The arrays saved at `path` as host numpy arrays, whatever the process topology that saved them
  (so several `jax.distributed` processes can each load a detector saved by one)."""
  with ocp.PyTreeCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path)
    tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", metadata)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


class InFlowDetector:
  """An InFlow flow plus its attention test and a decision threshold.

  Args:
    model, variables: the InFlow flow and its variables.
    encoder: the attention's image encoder (an `inflow_jax.attention.encoder.Embedder`); default
      `make_encoder(seed)`.
    n_permutations, level: the attention test's permutations and significance level.
    batch_size: images per tested batch in `score`/`predict`.
    convention: the score, 'paper' (default) or 'nll' (see `inflow_jax.evaluation.scores`).
    false_positive_rate: the fraction of in-distribution images (of passed batches) above the threshold.
    seed: seed of the encoder (when not given) and of the permutation tests.
  """

  def __init__(self, model: InFlow, variables, *, encoder: Optional[Embedder] = None,
               n_permutations: int = 100, level: float = 0.05, batch_size: int = 250,
               convention: str = "paper", false_positive_rate: float = 0.05, seed: int = 0):
    if convention not in CONVENTIONS:
      raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if not 0.0 < false_positive_rate < 1.0:
      raise ValueError(f"false_positive_rate must lie in (0, 1), got {false_positive_rate}")
    if batch_size < 2:
      raise ValueError(f"batch_size must be >= 2 (the attention test needs 2 images), got {batch_size}")
    _check_finite_variables(variables, "the flow's variables")
    self.model, self.variables = model, variables
    self.encoder = make_encoder(seed) if encoder is None else encoder
    self.n_permutations, self.level = check_test_size(n_permutations, level)
    self.batch_size = int(batch_size)
    self.convention, self.false_positive_rate, self.seed = convention, float(false_positive_rate), int(seed)
    self.mmd_state_: Optional[MMDState] = None
    self.threshold_: Optional[float] = None
    self._score_fn = make_score_fn(model, variables, convention)

  def fit(self, x_ref, *, x_threshold=None, x_train=None, config=None,
          mmd_state: Optional[MMDState] = None) -> "InFlowDetector":
    """Fits the attention reference (and threshold); optionally trains the flow on x_train first.

    Args:
      x_ref: (n, 32, 32, 3) float32 in-distribution reference images in [0, 1].
      x_threshold: in-distribution images whose a = 1 scores set the threshold (default x_ref).
      x_train: optional training images: the flow is trained on them with `config.train`
        (`config.train.num_steps` steps of `config.train.batch_size`) before the rest of the fit.
      config: a full config (e.g. `configs/cifar10.py`), needed with x_train.
      mmd_state: the attention test already fitted on x_ref with this encoder (`fit_mmd`): used as it
        is instead of fitting again (its n_permutations and level must be the detector's).
    """
    check_images(x_ref, name="x_ref", min_batch=2, value_range=(0.0, 1.0))
    if x_train is not None:
      if config is None:
        raise ValueError("training the flow (x_train given) needs config (with a `train` sub-config)")
      check_images(x_train, name="x_train", value_range=(0.0, 1.0))
      batches = itertools.islice(
          training.local_batches(np.asarray(x_train, np.float32), batch_size=config.train.batch_size,
                                  seed=self.seed), config.train.num_steps)
      self.variables, self.train_losses_ = training.train_on_batches(
          self.model, self.variables, batches, config)
      _check_finite_variables(self.variables, "the trained flow's variables")
      self._score_fn = make_score_fn(self.model, self.variables, self.convention)
    if mmd_state is None:
      mmd_state = fit_mmd(x_ref, self.encoder, self.n_permutations, self.level)
    elif (mmd_state.n_permutations, mmd_state.level) != (self.n_permutations, self.level):
      raise ValueError(f"mmd_state has n_permutations={mmd_state.n_permutations}, level="
                       f"{mmd_state.level}; the detector {self.n_permutations}, {self.level}")
    self.mmd_state_ = mmd_state
    x_threshold = x_ref if x_threshold is None else x_threshold
    check_images(x_threshold, name="x_threshold", value_range=(0.0, 1.0))
    scores = score_batches(self._score_fn, None, np.asarray(x_threshold, np.float32),
                           min(self.batch_size, len(x_threshold)), attention=1.0).scores
    if not np.all(np.isfinite(scores)):
      raise ValueError(f"{int(np.sum(~np.isfinite(scores)))} of the {len(scores)} threshold scores "
                       "(of x_threshold, or x_ref) are NaN or infinite: the flow gives no finite "
                       "density there, so no threshold can be set")
    self.threshold_ = float(np.quantile(scores, 1.0 - self.false_positive_rate))
    return self

  def _check_fitted(self):
    if self.mmd_state_ is None:
      raise RuntimeError("the detector is not fitted: call fit(x_ref) (or load a saved one) first")

  def score_batches(self, x, key: Optional[jax.Array] = None) -> BatchScores:
    """`inflow_jax.evaluation.scores.score_batches` of x: scores, per-image attention, per-batch p-values."""
    self._check_fitted()
    check_images(x, name="x", min_batch=2, value_range=(0.0, 1.0))
    key = jax.random.PRNGKey(self.seed) if key is None else key
    return score_batches(self._score_fn, self.mmd_state_, np.asarray(x, np.float32),
                         min(self.batch_size, len(x)), key)

  def score(self, x, key: Optional[jax.Array] = None) -> np.ndarray:
    """(N,) scores, higher = more OOD; x (N, 32, 32, 3) float32 in [0, 1], N >= 2."""
    return self.score_batches(x, key).scores

  def predict(self, x, key: Optional[jax.Array] = None) -> np.ndarray:
    """(N,) int labels, 1 = OOD: the image's batch was flagged by the attention test (a = 0), or its
    score is above the fitted threshold; 0 = in-distribution."""
    result = self.score_batches(x, key)
    return self.decide(result.attention, result.scores)

  def decide(self, attention: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """`predict`'s labels from per-image attention and scores: 1 where a = 0 or score > threshold."""
    self._check_fitted()
    return ((np.asarray(attention) == 0.0) | (np.asarray(scores) > self.threshold_)).astype(np.int64)

  # Persistence: <dir>/config.json (model config, settings, threshold, static MMD fields) and
  # <dir>/arrays (orbax: flow variables, encoder parameters, MMD reference statistics).
  def save(self, directory) -> pathlib.Path:
    """Writes the detector to `directory` (created; must not exist yet)."""
    self._check_fitted()
    if not isinstance(self.encoder, Embedder):
      raise TypeError("only detectors with an inflow_jax.attention.encoder.Embedder encoder can be saved")
    directory = pathlib.Path(directory).resolve()
    if directory.exists():
      raise FileExistsError(f"{directory} exists; save into a new directory")
    state = self.mmd_state_
    arrays = {"variables": self.variables, "encoder": self.encoder.params,
              "mmd": {k: getattr(state, k) for k in _MMD_ARRAYS}}
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(directory / "arrays", jax.tree.map(jnp.asarray, arrays))
    meta = {"model": _model_config(self.model),
            "settings": {k: getattr(self, k) for k in _SETTINGS},
            "threshold": self.threshold_,
            "encoder": {"features": list(self.encoder.features),
                        "embedding_dim": self.encoder.embedding_dim,
                        "chunk_size": self.encoder.chunk_size,
                        "early_chunk_size": self.encoder.early_chunk_size,
                        "early_layers": self.encoder.early_layers},
            "mmd": {"image_shape": list(state.image_shape)}}
    (directory / "config.json").write_text(json.dumps(meta, indent=2))
    integrity.write_manifest(directory)
    return directory

  @classmethod
  def load(cls, directory) -> "InFlowDetector":
    """Reads a detector written by `save`."""
    directory = pathlib.Path(directory).resolve()
    if not (directory / "config.json").is_file() or not (directory / "arrays").is_dir():
      raise FileNotFoundError(f"{directory} does not hold a saved InFlowDetector "
                              "(config.json and arrays/ expected)")
    if integrity.has_manifest(directory):
      reason = integrity.verify_manifest(directory)
      if reason is not None:
        raise ValueError(f"{directory}: the saved detector is corrupt: {reason}")
    meta = _read_config(directory / "config.json")
    arrays = _restore_as_numpy(directory / "arrays")
    model = InFlow(**{k: tuples_from_json(v) for k, v in meta["model"].items()})
    encoder = Embedder(params=arrays["encoder"], features=tuple(meta["encoder"]["features"]),
                       embedding_dim=meta["encoder"]["embedding_dim"],
                       **{k: meta["encoder"][k] for k in ("chunk_size", "early_chunk_size",
                                                          "early_layers") if k in meta["encoder"]})
    detector = cls(model, arrays["variables"], encoder=encoder, **meta["settings"])
    detector.mmd_state_ = MMDState(
        embed=encoder, **{k: jnp.asarray(arrays["mmd"][k]) for k in _MMD_ARRAYS},
        n_permutations=detector.n_permutations, level=detector.level,
        image_shape=tuple(meta["mmd"]["image_shape"]))
    detector.threshold_ = meta["threshold"]
    return detector
